"""RFC 9421 request signatures: our profile, its rejections, and interop with the
independent ``http-message-signatures`` implementation in both directions."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import http_message_signatures as hms
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519 as crypto_ed25519

from keys.ed25519 import SigningKey, VerifyKey
from keys.httpsig import (
    SignatureExpired,
    SignatureInvalid,
    SignatureMissing,
    content_digest,
    sign_request,
    verify_request,
)

NOW = 1_795_000_000
URL = "http://127.0.0.1:8080/v1/envelopes?x=1"
BODY = b'{"hello":"world"}'


@pytest.fixture
def key() -> SigningKey:
    return SigningKey(bytes(range(32)))


def resolver(key: SigningKey):
    return lambda keyid: key.public if keyid == key.id else None


def verify(key: SigningKey, headers, *, method="POST", url=URL, body=BODY, now=NOW):
    return verify_request(method=method, url=url, headers=headers, body=body,
                          resolve_key=resolver(key), now=now)


def signed(key: SigningKey, **kw) -> dict[str, str]:
    args = {"method": "POST", "url": URL, "body": BODY, "created": NOW, "nonce": "n-1"}
    args.update(kw)
    return sign_request(key, **args)


def test_round_trip(key):
    result = verify(key, signed(key))
    assert (result.keyid, result.created, result.nonce) == (key.id, NOW, "n-1")


def test_content_digest_matches_rfc9530_example():
    # RFC 9530 appendix: the sha-256 Content-Digest of {"hello": "world"} plus newline.
    assert content_digest(b'{"hello": "world"}\n') == (
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:")


@pytest.mark.parametrize(("change", "error"), [
    ({"method": "PUT"}, SignatureInvalid),
    ({"url": "http://127.0.0.1:8080/v1/envelopes?x=2"}, SignatureInvalid),
    ({"body": BODY + b" "}, SignatureInvalid),
    ({"now": NOW + 301}, SignatureExpired),
    ({"now": NOW - 301}, SignatureExpired),
])
def test_any_change_is_rejected(key, change, error):
    with pytest.raises(error):
        verify(key, signed(key), **change)


def test_window_edges_accepted(key):
    verify(key, signed(key), now=NOW + 300)
    verify(key, signed(key), now=NOW - 300)


def test_unknown_key_rejected(key):
    other = SigningKey(bytes(32))
    with pytest.raises(SignatureInvalid):
        verify(other, signed(key))


def test_missing_headers(key):
    headers = signed(key)
    for name in ("Signature", "Signature-Input", "Content-Digest"):
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises((SignatureMissing, SignatureInvalid)):
            verify(key, partial)


def test_signature_bytes_flipped(key):
    headers = signed(key)
    sig = headers["Signature"]
    index = sig.index(":") + 5
    flipped = sig[:index] + ("A" if sig[index] != "A" else "B") + sig[index + 1:]
    with pytest.raises(SignatureInvalid):
        verify(key, {**headers, "Signature": flipped})


@pytest.mark.parametrize("signature_input", [
    'bc=("@method" "@target-uri");created=1795000000;nonce="n";keyid="K"',
    'bc=("@method" "@target-uri" "content-digest");nonce="n";keyid="K"',
    'bc=("@method" "@target-uri" "content-digest");created=1795000000;keyid="K"',
    'bc=("@method" "@target-uri" "content-digest");created=1795000000;nonce="n";keyid="K";alg="rsa-pss-sha512"',
    'bc=("@method" "@target-uri" "content-digest");created=1795000000;nonce="n";keyid="K";extra=1',
    'bc=("@method" "@method" "@target-uri" "content-digest");created=1795000000;nonce="n";keyid="K"',
    'bc=("@method" "@target-uri" "content-digest";sf);created=1795000000;nonce="n";keyid="K"',
    'bc=("@method" "@target-uri" "content-digest");created=1795000000;nonce="n";keyid="K", '
    'b2=("@method");created=1;nonce="n";keyid="K"',
    'bc=("@method" "@target-uri" "content-digest"',
    "bc=?1",
])
def test_profile_violations_rejected(key, signature_input):
    headers = signed(key)
    headers["Signature-Input"] = signature_input.replace('"K"', f'"{key.id}"')
    with pytest.raises((SignatureInvalid, SignatureMissing)):
        verify(key, headers)


def test_covered_extra_header(key):
    headers = signed(key, extra_headers={"content-type": "application/json"})
    verify(key, {**headers, "content-type": "application/json"})
    with pytest.raises(SignatureInvalid):
        verify(key, {**headers, "content-type": "text/plain"})


# --- interop with http-message-signatures (an independent RFC 9421 implementation) ---

@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def crypto_key(key: SigningKey) -> crypto_ed25519.Ed25519PrivateKey:
    return crypto_ed25519.Ed25519PrivateKey.from_private_bytes(key.seed())


def test_independent_signer_is_accepted_by_us(key):
    request = Request("POST", URL, {"Content-Type": "application/json"})
    signer = hms.HTTPMessageSigner(
        signature_algorithm=hms.algorithms.ED25519,
        key_resolver=hms.MappingKeyResolver(public_keys={}, private_keys={key.id: crypto_key(key)}))
    # The independent implementation computes the Content-Digest itself.
    signer.sign(request, key_id=key.id, nonce="their-nonce", label="pyhms", body=BODY,
                created=datetime.datetime.fromtimestamp(NOW, datetime.UTC),
                covered_component_ids=("@method", "@authority", "@target-uri",
                                       "content-digest"))
    result = verify(key, request.headers)
    assert result.nonce == "their-nonce"
    with pytest.raises(SignatureInvalid):
        verify(key, request.headers, url=URL.replace("x=1", "x=3"))


def test_our_signature_is_accepted_by_independent_verifier(key):
    request = Request("POST", URL, signed(key))
    verifier = hms.HTTPMessageVerifier(
        signature_algorithm=hms.algorithms.ED25519,
        key_resolver=hms.MappingKeyResolver(
            public_keys={key.id: crypto_key(key).public_key()}, private_keys={}))
    results = verifier.verify(request, max_age=None, body=BODY)
    assert len(results) == 1
    assert results[0].parameters["keyid"] == key.id
    tampered = Request("DELETE", URL, dict(request.headers))
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(tampered, max_age=None)


def test_verify_key_type(key):
    assert isinstance(key.public, VerifyKey)
