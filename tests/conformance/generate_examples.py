#!/usr/bin/env python3
"""Generate the worked examples of docs/protocol.md with the reference code (``keys/``).

    .venv/bin/python tests/conformance/generate_examples.py            # print the JSON
    .venv/bin/python tests/conformance/generate_examples.py OUT.json   # write it

Fixed clock (2026-11-23T09:00:00Z) and SHAKE-256 counter "randomness", so every value is
reproducible except what depends on the HPKE ephemeral keys, which ``cryptography``
draws itself: the sealed messages and everything that names them (content ids, routing
envelopes, statements; :data:`RANDOMISED`). That is why ``examples.json`` is a frozen
file: ``test_conformance.py`` regenerates everything else and compares it byte for byte,
and the conformance reader checks the frozen sealed messages by opening them. After a
deliberate format change, regenerate the file and update the examples of
docs/protocol.md from it (each frozen value must appear there verbatim).

The identities' private keys are published on purpose: they are test keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nacl.pwhash

from keys import dsse, httpsig, keystore, padding, statements
from keys import envelope as envmod
from keys import seal as sealmod
from keys.card import HomeNode, safety_number
from keys.clock import FixedClock
from keys.encoding import b64url_encode
from keys.errors import PolicyNotMet
from keys.identity import Identity
from keys.policy import AllOf, AnyOf, Signer

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PASSPHRASE = "correct horse battery staple"
EXAMPLE_TYPE = "application/vnd.backchannel.example+json"
#: Keys whose values change on every run (they depend on HPKE ephemeral keys).
RANDOMISED = frozenset({
    "seal.data", "seal.header", "seal.content_id", "seal2.data", "seal2.header",
    "env.payload", "env.json", "env.id", "env.id_check", "st.opened.json",
    *(f"st.{kind}.{part}" for kind in statements.KINDS for part in ("payload", "id")),
})
ABOUT = ("Worked examples of docs/protocol.md, produced by tests/conformance/generate_examples.py "
         "with the reference code (keys/) on a fixed clock with deterministic key material. "
         "Frozen: the sealed messages and what names them depend on HPKE ephemeral keys and "
         "change on every run; test_conformance.py regenerates every other value and compares "
         "it, and checks that each example appears verbatim in docs/protocol.md. Test keys only.")


class Det:
    """Deterministic bytes: SHAKE-256(seed || counter), the counter starting at 0."""

    def __init__(self, seed: bytes) -> None:
        self.seed, self.n = seed, 0

    def __call__(self, k: int) -> bytes:
        out = hashlib.shake_256(self.seed + self.n.to_bytes(4, "big")).digest(k)
        self.n += 1
        return out


def _ub64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate() -> dict[str, Any]:
    clock = FixedClock(T0)
    out: dict[str, Any] = {}

    north = Identity.create("North Delegation", "delegation", suite="X25519", clock=clock,
                            random=Det(b"example/north"))
    south = Identity.create("South Delegation", "delegation", suite="X25519", clock=clock,
                            random=Det(b"example/south"))
    node = Identity.create("North relay", "node", suite="X25519", clock=clock,
                           random=Det(b"example/node"))
    geneva = Identity.create("Geneva relay", "node", suite="X25519", clock=clock,
                             random=Det(b"example/geneva"))
    snode = Identity.create("South relay", "node", suite="X25519", clock=clock,
                            random=Det(b"example/snode"))
    guarantor = Identity.create("Guarantor", "intermediary", clock=clock,
                                random=Det(b"example/guarantor"),
                                home=HomeNode(node.id, "https://relay.example.org"))
    cast = (("north", north), ("south", south), ("node", node), ("geneva", geneva),
            ("snode", snode), ("guarantor", guarantor))
    for name, ident in cast:
        xs, ms = ident.encryption_key.secrets()
        out[name + ".seed"] = ident.signing_key.seed().hex()
        out[name + ".pub"] = ident.signing_key.public.raw.hex()
        out[name + ".id"] = ident.id
        out[name + ".x25519_secret"] = xs.hex()
        out[name + ".x25519_public"] = ident.encryption_key.public.x25519.hex()
        if ms:
            out[name + ".mlkem_seed"] = ms.hex()
        out[name + ".card_payload"] = ident.card.envelope.payload.decode()
        out[name + ".card_json"] = ident.card.to_json().decode()
        out[name + ".fingerprint"] = ident.card.fingerprint
        out[name + ".pae_len"] = len(dsse.pae(ident.card.envelope.payload_type,
                                              ident.card.envelope.payload))

    # Identity id and fingerprint derivations, step by step (sections 3 and 7).
    pk = north.signing_key.public.raw
    digest = hashlib.sha256(b"backchannel/v1/identity-id\x00" + pk).digest()
    out["id.sha256"] = digest.hex()
    out["id.first20"] = digest[:20].hex()
    out["id.b32"] = base64.b32encode(digest[:20]).decode()
    fp = hashlib.sha512(b"backchannel/v1/fingerprint\x00" + pk).digest()
    out["fp.sha512"] = fp.hex()
    out["fp.groups"] = [(fp[i * 5:i * 5 + 5].hex(), int.from_bytes(fp[i * 5:i * 5 + 5], "big"),
                         int.from_bytes(fp[i * 5:i * 5 + 5], "big") % 100000) for i in range(6)]
    out["safety"] = safety_number(north.signing_key.public, south.signing_key.public)
    out["safety_rev"] = safety_number(south.signing_key.public, north.signing_key.public)
    out["north.armor"] = north.card.armored()
    out["pae.example"] = dsse.pae("application/vnd.backchannel.statement+json",
                                  b'{"v":1}').decode()

    # Co-signing (section 4.6).
    doc = dsse.sign(EXAMPLE_TYPE, b'{"v":1,"terms":"45 for 45"}', north.signing_key)
    doc3 = dsse.cosign(dsse.cosign(doc, south.signing_key), guarantor.signing_key)
    policy = AllOf(Signer(north.signing_key.public, "north"),
                   Signer(south.signing_key.public, "south"),
                   AnyOf(Signer(guarantor.signing_key.public, "guarantor"),
                         Signer(geneva.signing_key.public, "geneva")))
    out["cosign.verified"] = sorted(dsse.verify(doc3, policy, payload_type=EXAMPLE_TYPE).signers)
    try:
        dsse.verify(doc, policy, payload_type=EXAMPLE_TYPE)
    except PolicyNotMet as exc:
        out["cosign.partial_err"] = [type(exc).__name__, str(exc), sorted(exc.present),
                                     sorted(exc.missing)]
    out["cosign.json"] = doc3.to_json().decode()
    out["cosign.digest"] = b64url_encode(doc3.digest())
    out["cosign.digest_one"] = b64url_encode(doc.digest())

    # Keystore (section 9.8).
    unlocked = keystore.Unlocked(north, Det(b"example/local")(32))
    ks = keystore.encrypt_keystore(unlocked, PASSPHRASE, params=keystore.FLOOR_PARAMS,
                                   random=Det(b"example/keystore"))
    out["keystore.file"] = ks.decode()
    out["keystore.plain"] = keystore._plaintext(unlocked).decode()
    ko = json.loads(ks)
    salt, nonce, ct = _ub64(ko["kdf"]["salt"]), _ub64(ko["nonce"]), _ub64(ko["ct"])
    out["keystore.salt"] = salt.hex()
    out["keystore.nonce"] = nonce.hex()
    out["keystore.ctlen"] = len(ct)
    ops, mem = keystore.FLOOR_PARAMS.opslimit, keystore.FLOOR_PARAMS.memlimit
    out["keystore.check_hex"] = hashlib.sha256(
        b"backchannel/v1/keystore-check\x00" + ops.to_bytes(8, "big") + mem.to_bytes(8, "big")
        + salt + nonce + ct).hexdigest()
    out["keystore.key"] = nacl.pwhash.argon2id.kdf(32, PASSPHRASE.encode(), salt, opslimit=ops,
                                                   memlimit=mem).hex()
    out["padme"] = [(n, padding.padme_length(n + 1), len(padding.pad(b"x" * n)))
                    for n in (0, 100, 1023, 1024, 1500, 5000, 70000, 1000000, 4000000)]

    # A sealed message North -> South (section 10.9); X25519 only, to stay short.
    body = {"entries": [{"family_name": "Example", "given_names": "Person",
                         "date_of_birth": "1990-01-01"}]}
    sealed = sealmod.seal(north, [south.card], "namelist", body, allow_classical=True,
                          clock=clock, random=Det(b"example/seal"))
    out["seal.data"] = sealed.data.decode()
    out["seal.header"] = _ub64(json.loads(sealed.data)["header"]).decode()
    out["seal.content_id"] = sealed.content_id
    out["seal.inner_digest"] = b64url_encode(sealed.inner_digest)
    out["seal.len"] = len(sealed.data)
    out["seal.ctlen"] = len(sealmod.parse_sealed_unverified(sealed.data).ciphertext)
    opened = sealmod.open_sealed(sealed.data, south, lambda _id: north.card)
    out["seal.inner"] = opened.inner.to_json().decode()
    out["seal.inner_payload"] = opened.inner.payload.decode()
    out["seal.inner_len"] = len(opened.inner.to_json())
    # seal() draws the message id (16), then K (32), then the nonce (24).
    draws = Det(b"example/seal")
    mid, key, nonce = draws(16), draws(32), draws(24)
    out["seal.K"] = key.hex()
    out["seal.nonce"] = nonce.hex()
    out["seal.mid"] = b64url_encode(mid)
    out["seal.info_hex"] = (b"backchannel/v1/wrap\x00" + nonce + south.id.encode()).hex()

    # Routing envelope (section 12.4) and statements (section 13.4).
    routing = envmod.make_envelope(north.signing_key, sealed.data, to=[south.id], origin=node.id,
                                   destination=snode.id, route=[geneva.id], clock=clock)
    out["env.hops"] = list(routing.hops)
    out["env.payload"] = routing.envelope.payload.decode()
    out["env.json"] = routing.envelope.to_json().decode()
    out["env.id"] = routing.id
    out["env.id_check"] = b64url_encode(hashlib.sha256(
        dsse.pae(envmod.ENVELOPE_TYPE, routing.envelope.payload)).digest())
    inner = b64url_encode(opened.inner_digest)
    made = {
        "accepted": statements.make_statement("accepted", routing.id, node.signing_key,
                                              clock=clock, sender=north.id),
        "relayed": statements.make_statement("relayed", routing.id, geneva.signing_key,
                                             clock=clock, previous=node.id, next=snode.id),
        "delivered": statements.make_statement("delivered", routing.id, snode.signing_key,
                                               clock=clock, recipient=south.id),
        "opened": statements.make_statement("opened", routing.id, south.signing_key,
                                            clock=clock, recipient=south.id, inner=inner),
    }
    made["countersigned"] = statements.make_statement(
        "countersigned", routing.id, geneva.signing_key, clock=clock,
        statement=made["opened"].id)
    made["failed"] = statements.make_statement("failed", routing.id, node.signing_key,
                                               clock=clock, next=geneva.id,
                                               reason="peer unreachable for 7 days")
    for kind, statement in made.items():
        assert statement.signed is not None
        out[f"st.{kind}.payload"] = statement.signed.payload.decode()
        out[f"st.{kind}.id"] = statement.id
    out["st.opened.json"] = made["opened"].to_json().decode()

    # Request signature (section 14).
    created = int(T0.timestamp())
    url = "https://relay.example.org/v1/envelopes"
    headers = httpsig.sign_request(north.signing_key, method="POST", url=url, body=b'{"x":1}',
                                   created=created, nonce="bm9uY2UtMDAwMQ")
    out["httpsig"] = headers
    out["httpsig.base"] = httpsig._signature_base(
        ["@method", "@target-uri", "content-digest"],
        {"created": created, "nonce": "bm9uY2UtMDAwMQ", "keyid": north.id, "alg": "ed25519"},
        "POST", url, {"content-digest": headers["Content-Digest"]}).decode()

    # A message to an X25519 and a hybrid recipient (section 10.9, last example).
    sealed2 = sealmod.seal(north, [south.card, guarantor.card], "proposal",
                           {"text": "45 for 45, border crossing, 1 December"},
                           allow_classical=True, clock=clock, random=Det(b"example/seal2"))
    out["seal2.data"] = sealed2.data.decode()
    out["seal2.header"] = _ub64(json.loads(sealed2.data)["header"]).decode()
    out["seal2.len"] = len(sealed2.data)
    out["seal2.inner_digest"] = b64url_encode(sealed2.inner_digest)
    return out


def render(examples: dict[str, Any]) -> str:
    """The file format of examples.json (the note first, then the examples)."""
    return json.dumps({"_about": ABOUT, **examples}, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(generate())
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
