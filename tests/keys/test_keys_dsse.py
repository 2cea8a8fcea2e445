"""DSSE envelopes and signing policies: round trips, co-signing, tampering, domain
separation, PAE vectors, and interoperability with securesystemslib."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib import dsse as sslib_dsse
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from keys import dsse
from keys.ed25519 import SigningKey, VerifyKey, identity_id
from keys.encoding import b64std_encode
from keys.errors import DecodeError, PolicyNotMet, TooLarge, VerificationError
from keys.policy import AllOf, AnyOf, AtLeast, Signer

TYPE_A = "application/vnd.backchannel.test-a+json"
TYPE_B = "application/vnd.backchannel.test-b+json"


def _key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


KYIV, MOSCOW, ICRC, VATICAN, OUTSIDER = (_key(i) for i in range(1, 6))


# -- PAE ------------------------------------------------------------------------------

def test_pae_matches_dsse_spec_example() -> None:
    # https://github.com/secure-systems-lab/dsse/blob/master/protocol.md (test vector)
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


def test_pae_lengths_are_byte_lengths() -> None:
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "
    # "é" is 2 bytes in UTF-8; the payload may hold any bytes, spaces included.
    assert dsse.pae("é", b"a b\x00") == b"DSSEv1 2 \xc3\xa9 4 a b\x00"


def test_pae_is_injective_on_type_payload_boundary() -> None:
    assert dsse.pae("a b", b"c") != dsse.pae("a", b"b c")


# -- round trips ----------------------------------------------------------------------

def test_sign_round_trip() -> None:
    env = dsse.sign(TYPE_A, b'{"hello":"world"}', KYIV)
    parsed = dsse.Envelope.from_json(env.to_json())
    assert parsed == env
    verified = dsse.verify(parsed, Signer(KYIV.public), payload_type=TYPE_A)
    assert verified.payload == b'{"hello":"world"}'
    assert verified.signers == {KYIV.id}
    assert verified.digest == env.digest()
    # Wire form is the DSSE JSON envelope with standard padded base64.
    wire = json.loads(env.to_json())
    assert set(wire) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(wire["payload"], validate=True) == b'{"hello":"world"}'
    assert wire["signatures"][0]["keyid"] == KYIV.id


def test_cosign_round_trip() -> None:
    env = dsse.sign(TYPE_A, b"terms", KYIV)
    for signer in (MOSCOW, ICRC):
        env = dsse.cosign(env, signer)
    parsed = dsse.Envelope.from_json(env.to_json())
    assert parsed.signer_ids() == (KYIV.id, MOSCOW.id, ICRC.id)
    policy = AllOf(Signer(KYIV.public), Signer(MOSCOW.public),
                   AtLeast(1, Signer(ICRC.public), Signer(VATICAN.public)))
    assert dsse.verify(parsed, policy, payload_type=TYPE_A).signers == {
        KYIV.id, MOSCOW.id, ICRC.id}
    with pytest.raises(ValueError):
        dsse.cosign(env, KYIV)


def test_cosign_rejects_bad_payload_type() -> None:
    with pytest.raises(ValueError):
        dsse.sign("", b"x", KYIV)
    with pytest.raises(ValueError):
        dsse.sign("x" * 129, b"x", KYIV)


# -- policies -------------------------------------------------------------------------

def _signed_by(*signers: SigningKey) -> dsse.Envelope:
    env = dsse.Envelope(TYPE_A, b"deal")
    for s in signers:
        env = dsse.cosign(env, s)
    return env


GUARANTORS = AnyOf(Signer(ICRC.public), Signer(VATICAN.public))
BOTH_AND_GUARANTOR = AllOf(Signer(KYIV.public), Signer(MOSCOW.public), GUARANTORS)


@pytest.mark.parametrize(("signers", "ok"), [
    ((KYIV, MOSCOW, ICRC), True),
    ((KYIV, MOSCOW, VATICAN), True),
    ((VATICAN, MOSCOW, KYIV), True),
    ((KYIV, MOSCOW, ICRC, VATICAN), True),
    ((KYIV, MOSCOW), False),
    ((KYIV, ICRC, VATICAN), False),
    ((OUTSIDER, MOSCOW, ICRC), False),
    ((), False),
])
def test_all_of_any_of(signers: tuple[SigningKey, ...], ok: bool) -> None:
    env = _signed_by(*signers)
    if ok:
        dsse.verify(env, BOTH_AND_GUARANTOR, payload_type=TYPE_A)
    else:
        with pytest.raises(PolicyNotMet):
            dsse.verify(env, BOTH_AND_GUARANTOR, payload_type=TYPE_A)


def test_policy_not_met_names_present_and_missing() -> None:
    env = _signed_by(KYIV, OUTSIDER)
    with pytest.raises(PolicyNotMet) as info:
        dsse.verify(env, BOTH_AND_GUARANTOR, payload_type=TYPE_A)
    # The outsider's signature is ignored: it is neither present nor missing.
    assert info.value.present == {KYIV.id}
    assert info.value.missing == {MOSCOW.id, ICRC.id, VATICAN.id}
    assert "all of" in str(info.value)


def test_at_least() -> None:
    two_of_three = AtLeast(2, Signer(KYIV.public), Signer(MOSCOW.public), Signer(ICRC.public))
    dsse.verify(_signed_by(KYIV, ICRC), two_of_three, payload_type=TYPE_A)
    with pytest.raises(PolicyNotMet) as info:
        dsse.verify(_signed_by(MOSCOW), two_of_three, payload_type=TYPE_A)
    assert info.value.present == {MOSCOW.id}
    assert info.value.missing == {KYIV.id, ICRC.id}
    assert "at least 2 of" in str(info.value)
    for bad in (0, 4):
        with pytest.raises(ValueError):
            AtLeast(bad, Signer(KYIV.public), Signer(MOSCOW.public), Signer(ICRC.public))


def test_signer_label_in_description() -> None:
    policy = AllOf(Signer(KYIV.public, "Kyiv"), Signer(MOSCOW.public, "Moscow"))
    with pytest.raises(PolicyNotMet, match=r"all of \(Kyiv, Moscow\)"):
        dsse.verify(_signed_by(KYIV), policy, payload_type=TYPE_A)


# -- tampering ------------------------------------------------------------------------

def test_every_signature_bit_flip_rejected() -> None:
    env = dsse.sign(TYPE_A, b"payload", KYIV)
    sig = env.signatures[0].sig
    for i in range(len(sig)):
        for mask in (0x01, 0x80):
            bad = bytearray(sig)
            bad[i] ^= mask
            forged = dsse.Envelope(TYPE_A, b"payload",
                                   (dsse.Signature(KYIV.id, bytes(bad)),))
            with pytest.raises(VerificationError):
                dsse.verify(forged, Signer(KYIV.public), payload_type=TYPE_A)


def test_every_payload_byte_flip_rejected() -> None:
    payload = b'{"v":1,"terms":"exchange 20 for 20"}'
    env = dsse.sign(TYPE_A, payload, KYIV)
    for i in range(len(payload)):
        bad = bytearray(payload)
        bad[i] ^= 0x01
        forged = dsse.Envelope(TYPE_A, bytes(bad), env.signatures)
        with pytest.raises(VerificationError):
            dsse.verify(forged, Signer(KYIV.public), payload_type=TYPE_A)


def test_one_bad_signature_fails_the_envelope_even_if_policy_met() -> None:
    env = _signed_by(KYIV, MOSCOW)
    forged_sig = dsse.Signature(MOSCOW.id, bytes(64))
    forged = dsse.Envelope(env.payload_type, env.payload, (env.signatures[0], forged_sig))
    # Kyiv alone would satisfy AnyOf, but a forged known signature is tampering.
    with pytest.raises(VerificationError) as info:
        dsse.verify(forged, AnyOf(Signer(KYIV.public), Signer(MOSCOW.public)),
                    payload_type=TYPE_A)
    assert not isinstance(info.value, PolicyNotMet)


def test_signature_under_wrong_keyid_does_not_count() -> None:
    # Kyiv's valid signature relabelled as Moscow's: fails (it is not Moscow's).
    env = dsse.sign(TYPE_A, b"x", KYIV)
    relabelled = dsse.Envelope(TYPE_A, b"x", (dsse.Signature(MOSCOW.id, env.signatures[0].sig),))
    with pytest.raises(VerificationError):
        dsse.verify(relabelled, Signer(MOSCOW.public), payload_type=TYPE_A)


def test_unsigned_envelope_fails() -> None:
    with pytest.raises(PolicyNotMet):
        dsse.verify(dsse.Envelope(TYPE_A, b"x"), Signer(KYIV.public), payload_type=TYPE_A)


# -- domain separation ----------------------------------------------------------------

def test_wrong_payload_type_rejected() -> None:
    env = dsse.sign(TYPE_A, b"same bytes", KYIV)
    with pytest.raises(VerificationError):
        dsse.verify(env, Signer(KYIV.public), payload_type=TYPE_B)


def test_signature_is_bound_to_payload_type() -> None:
    # Relabel an A-signature as a B-envelope and ask for B: the type check passes, so
    # only the signature over PAE(type, payload) can (and must) reject it.
    env = dsse.sign(TYPE_A, b"same bytes", KYIV)
    relabelled = dsse.Envelope(TYPE_B, env.payload, env.signatures)
    with pytest.raises(VerificationError):
        dsse.verify(relabelled, Signer(KYIV.public), payload_type=TYPE_B)
    # And a raw signature over the payload alone (no PAE) is worthless.
    raw = dsse.Envelope(TYPE_A, b"same bytes",
                        (dsse.Signature(KYIV.id, KYIV.sign(b"same bytes")),))
    with pytest.raises(VerificationError):
        dsse.verify(raw, Signer(KYIV.public), payload_type=TYPE_A)


# -- strict parsing -------------------------------------------------------------------

def _wire(**over: object) -> bytes:
    env = dsse.sign(TYPE_A, b"x", KYIV).to_dict()
    env.update(over)
    return json.dumps(env).encode()


@pytest.mark.parametrize("doc", [
    _wire(extra=1),
    _wire(payloadType=""),
    _wire(payloadType="x" * 129),
    _wire(payloadType=7),
    _wire(payload="eA"),  # unpadded
    _wire(signatures={}),
    _wire(signatures=[{"keyid": "k", "sig": b64std_encode(bytes(63))}]),
    _wire(signatures=[{"keyid": "k", "sig": b64std_encode(bytes(64)), "x": 1}]),
    _wire(signatures=[{"keyid": "", "sig": b64std_encode(bytes(64))}]),
    _wire(signatures=[{"keyid": "k" * 65, "sig": b64std_encode(bytes(64))}]),
    _wire(signatures=[{"keyid": "k", "sig": b64std_encode(bytes(64))}] * 2),
    _wire(signatures=[{"keyid": f"k{i}", "sig": b64std_encode(bytes(64))}
                      for i in range(dsse.MAX_SIGNATURES + 1)]),
    b"[]",
])
def test_from_json_rejects(doc: bytes) -> None:
    with pytest.raises(DecodeError):
        dsse.Envelope.from_json(doc)


def test_from_json_payload_limit() -> None:
    env = dsse.sign(TYPE_A, b"x" * 101, KYIV)
    with pytest.raises(TooLarge):
        dsse.Envelope.from_json(env.to_json(), max_payload=100)
    assert dsse.Envelope.from_json(env.to_json(), max_payload=101) == env


def test_keyid_is_identity_id() -> None:
    assert KYIV.id == identity_id(KYIV.public.raw)
    assert len(KYIV.id) == 32 and KYIV.id.isalnum() and KYIV.id.islower()
    assert VerifyKey(KYIV.public.raw) == KYIV.public
    assert KYIV.id != MOSCOW.id


# -- interoperability -----------------------------------------------------------------

def _sslib_key(key: VerifyKey) -> SSlibKey:
    return SSlibKey(key.id, "ed25519", "ed25519", {"public": key.raw.hex()})


def test_securesystemslib_verifies_our_envelope() -> None:
    env = dsse.cosign(dsse.sign(TYPE_A, b'{"n":1}', KYIV), MOSCOW)
    theirs = sslib_dsse.Envelope.from_dict(json.loads(env.to_json()))
    accepted = theirs.verify([_sslib_key(KYIV.public), _sslib_key(MOSCOW.public)], 2)
    assert set(accepted) == {KYIV.id, MOSCOW.id}
    # And it rejects a tampered one (so the check above can fail).
    tampered = json.loads(dsse.Envelope(TYPE_A, b'{"n":2}', env.signatures).to_json())
    with pytest.raises(SslibVerificationError):
        sslib_dsse.Envelope.from_dict(tampered).verify([_sslib_key(KYIV.public)], 1)


def test_we_verify_securesystemslib_envelope() -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    ours = SigningKey(bytes([9]) * 32).public
    signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid=ours.id))
    theirs = sslib_dsse.Envelope(b'{"from":"sslib"}', TYPE_A, {})
    theirs.sign(signer)
    parsed = dsse.Envelope.from_json(json.dumps(theirs.to_dict()))
    verified = dsse.verify(parsed, Signer(ours), payload_type=TYPE_A)
    assert verified.payload == b'{"from":"sslib"}'
    with pytest.raises(VerificationError):
        dsse.verify(parsed, Signer(ours), payload_type=TYPE_B)
