#!/usr/bin/env python3
"""Generate ``keys-v1.json``: test vectors pinning the wire formats of ``keys/``.

Run with ``make vectors`` (or ``python tests/vectors/generate_keys_vectors.py``).

Everything is deterministic (fixed clock, SHAKE-256 counter "randomness", Ed25519
signatures are deterministic, Argon2id and SecretBox are deterministic given salt and
nonce) except the HPKE key wraps of the sealed message: ``cryptography`` draws HPKE
ephemeral keys itself. So the sealed message is recorded once and reused on later
runs as long as it still opens to the recorded content (``--fresh-seal`` forces a new
one); ``tests/keys/test_keys_vectors.py`` checks it by opening it, and checks every
other byte by regenerating it.

The vectors include private keys and a passphrase: they are test keys, published on
purpose so that an independent implementation can open the sealed message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from keys import dsse
from keys.card import fingerprint, load_card, safety_number
from keys.clock import FixedClock
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, format_time
from keys.envelope import make_envelope
from keys.errors import BackchannelError
from keys.identity import Identity
from keys.kem import SUITE_HYBRID, SUITE_X25519, EncryptionPrivateKey
from keys.keystore import FLOOR_PARAMS, encrypt_keystore, new_unlocked
from keys.seal import open_sealed, seal
from keys.statements import make_statement

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "keys-v1.json"
SEED = b"backchannel/keys-v1 test vectors"
PASSPHRASE = "vector passphrase – not secret"
BODY = {"names": [{"family_name": "Шевченко", "given_names": "Тарас",
                   "date_of_birth": "1994-03-09"},
                  {"family_name": "Kovalenko", "given_names": "Olena",
                   "date_of_birth": "1989-11-02"}],
        "note": "test vector; fictitious names"}


class ShakeRandom:
    """Deterministic bytes: SHAKE-256(seed || label || counter)."""

    def __init__(self, label: str) -> None:
        self._prefix = SEED + b"/" + label.encode() + b"/"
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._prefix + self._counter.to_bytes(8, "big")).digest(n)


def identity_from_secrets(entry: dict[str, Any], clock: FixedClock) -> Identity:
    """Rebuild a private identity from its vector entry (used by the test too)."""
    mlkem = entry["secret"]["mlkem_seed"]
    encryption = EncryptionPrivateKey(
        entry["suite"], bytes.fromhex(entry["secret"]["x25519"]),
        bytes.fromhex(mlkem) if mlkem is not None else None)
    signing = SigningKey(bytes.fromhex(entry["secret"]["ed25519_seed"]))
    return Identity(signing, encryption, load_card(entry["card"], now=clock.now()))


def _identity_entry(ident: Identity) -> dict[str, Any]:
    x_secret, mlkem_seed = ident.encryption_key.secrets()
    return {
        "id": ident.id,
        "name": ident.card.name,
        "role": ident.card.role,
        "suite": ident.encryption_key.suite,
        "secret": {"ed25519_seed": ident.signing_key.seed().hex(), "x25519": x_secret.hex(),
                   "mlkem_seed": mlkem_seed.hex() if mlkem_seed is not None else None},
        "ed25519_public": ident.signing_key.public.raw.hex(),
        "fingerprint": fingerprint(ident.signing_key.public),
        "card": ident.card.to_json().decode(),
        "card_armored": ident.card.armored(),
    }


def _opens_to(data: bytes, recipients: list[Identity], sender: Identity,
              expected: dict[str, Any]) -> bool:
    try:
        for r in recipients:
            opened = open_sealed(data, r, lambda _sid: sender.card)
            if (opened.message.id != expected["message_id"]
                    or b64url_encode(opened.inner_digest) != expected["inner_digest"]):
                return False
    except BackchannelError:
        return False
    return True


def build(sealed_data: bytes | None = None) -> dict[str, Any]:
    """All vectors. ``sealed_data`` reuses a recorded sealed message (its message id,
    inner digest and content key are deterministic; only the HPKE wraps are not)."""
    clock = FixedClock()
    alice = Identity.create("Alice Delegation", "delegation", suite=SUITE_HYBRID,
                            clock=clock, random=ShakeRandom("alice"))
    bob = Identity.create("Bob Delegation", "delegation", suite=SUITE_HYBRID,
                          clock=clock, random=ShakeRandom("bob"))
    xavier = Identity.create("Xavier Intermediary", "intermediary", suite=SUITE_X25519,
                             clock=clock, random=ShakeRandom("xavier"))
    node = Identity.create("Geneva Node", "node", suite=SUITE_HYBRID,
                           clock=clock, random=ShakeRandom("node"))

    sealed = seal(alice, [bob.card, xavier.card], "namelist", BODY, allow_classical=True,
                  clock=clock,
                  random=ShakeRandom("seal"))
    message = sealed.message
    sealed_entry: dict[str, Any] = {
        "sender": alice.id,
        "recipients": [bob.id, xavier.id],
        "message_id": message.id,
        "created": format_time(message.created),
        "kind": message.kind,
        "body": message.body,
        "inner_digest": b64url_encode(sealed.inner_digest),
    }
    if sealed_data is None or not _opens_to(sealed_data, [bob, xavier], alice, sealed_entry):
        sealed_data = sealed.data
    sealed_entry["data"] = sealed_data.decode()
    sealed_entry["content_id"] = b64url_encode(hashlib.sha256(sealed_data).digest())

    routing = make_envelope(alice.signing_key, sealed_data, to=[bob.id, xavier.id],
                            origin=node.id, destination=node.id,
                            lifetime=timedelta(days=7), clock=clock)
    delivered = make_statement("delivered", routing.id, node.signing_key, clock=clock,
                               recipient=bob.id)
    opened = make_statement("opened", routing.id, bob.signing_key, clock=clock,
                            recipient=bob.id, inner=b64url_encode(sealed.inner_digest))
    cosigned = dsse.cosign(dsse.sign("application/vnd.backchannel.test+json",
                                     b'{"terms":"20 for 20"}', alice.signing_key),
                           bob.signing_key)

    keystore_random = ShakeRandom("keystore")
    unlocked = new_unlocked(alice, random=keystore_random)
    keystore_file = encrypt_keystore(unlocked, PASSPHRASE, params=FLOOR_PARAMS,
                                     random=keystore_random)

    return {
        "about": "Backchannel keys/ format vectors, version 1. Generated by "
                 "generate_keys_vectors.py; private keys here are public test keys.",
        "now": format_time(clock.now()),
        "identities": {"alice": _identity_entry(alice), "bob": _identity_entry(bob),
                       "xavier": _identity_entry(xavier), "node": _identity_entry(node)},
        "safety_number_alice_bob": safety_number(alice.signing_key.public,
                                                 bob.signing_key.public),
        "pae": {"payload_type": "http://example.com/HelloWorld", "payload": "hello world",
                "pae": dsse.pae("http://example.com/HelloWorld", b"hello world").decode()},
        "dsse_cosigned": {"envelope": cosigned.to_json().decode(),
                          "signers": [alice.id, bob.id],
                          "digest": b64url_encode(cosigned.digest())},
        "sealed": sealed_entry,
        "routing": {"envelope": routing.envelope.to_json().decode(), "id": routing.id,
                    "signer": alice.id},
        "statements": [
            {"statement": s.to_json().decode(), "id": s.id, "kind": s.kind, "by": s.by}
            for s in (delivered, opened)],
        "keystore": {"file": keystore_file.decode(), "passphrase": PASSPHRASE,
                     "owner": alice.id, "local_key": unlocked.local_key.hex(),
                     "opslimit": FLOOR_PARAMS.opslimit, "memlimit": FLOOR_PARAMS.memlimit},
    }


def render(vectors: dict[str, Any]) -> bytes:
    return (json.dumps(vectors, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fresh-seal", action="store_true",
                        help="seal a new message instead of reusing the recorded one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    recorded: bytes | None = None
    if args.output.exists() and not args.fresh_seal:
        recorded = json.loads(args.output.read_text())["sealed"]["data"].encode()
    data = render(build(recorded))
    changed = not args.output.exists() or args.output.read_bytes() != data
    args.output.write_bytes(data)
    print(f"{args.output}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
