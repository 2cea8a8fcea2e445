"""``backchannel demo``: the cryptographic core end to end, on this machine only.

Two delegations create identities, compare a safety number, and one seals a short
name list to the other; the demo shows what a node would see (ciphertext and
metadata) and what the recipient opens and verifies. The names are fictitious.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from keys.card import load_card, safety_number
from keys.clock import SYSTEM_CLOCK
from keys.encoding import b64url_encode
from keys.envelope import make_envelope, verify_routing
from keys.identity import Identity
from keys.keystore import FLOOR_PARAMS, load_keystore, new_unlocked, save_keystore
from keys.seal import open_sealed, seal
from keys.statements import make_statement, verify_statement

DEMO_LIST = [
    {"family_name": "Шевченко", "given_names": "Тарас", "patronymic": "Григорович",
     "date_of_birth": "1994-03-09", "rank": "сержант"},
    {"family_name": "Kovalenko", "given_names": "Olena", "date_of_birth": "1989-11-02",
     "rank": "lieutenant"},
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run a local demonstration of the crypto core")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    now = SYSTEM_CLOCK.now()
    kyiv = Identity.create("Kyiv Coordination HQ (demo)", "delegation")
    moscow = Identity.create("Moscow Delegation (demo)", "delegation")
    node = Identity.create("Geneva node (demo)", "node")
    print(f"Kyiv   id {kyiv.id}  fingerprint {kyiv.card.fingerprint}")
    print(f"Moscow id {moscow.id}  fingerprint {moscow.card.fingerprint}")

    # Cards travel as armored text; each side imports the other's and compares the
    # safety number out of band (same digits on both screens).
    moscow_card = load_card(moscow.card.armored(), now=now)
    kyiv_card = load_card(kyiv.card.armored(), now=now)
    number = safety_number(kyiv_card.verify_key, moscow_card.verify_key)
    print(f"safety number (both sides): {number}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile" / "keystore.json"
        save_keystore(path, new_unlocked(kyiv), "demo passphrase", params=FLOOR_PARAMS)
        kyiv = load_keystore(path, "demo passphrase").identity
        print(f"keystore written and reopened: {path.name} (Argon2id + XSalsa20-Poly1305)")

    sealed = seal(kyiv, [moscow_card], "namelist", {"entries": DEMO_LIST})
    routing = make_envelope(kyiv.signing_key, sealed.data, to=[moscow.id],
                            origin=node.id, destination=node.id)
    verify_routing(routing, kyiv_card.verify_key)
    print(f"\nwhat a node sees: envelope {routing.id}, {routing.size} bytes of ciphertext "
          f"(padded), from {routing.sender[:8]}…, to {routing.to[0][:8]}…")
    accepted = make_statement("accepted", routing.id, node.signing_key, sender=kyiv.id)
    verify_statement(accepted, node.card.verify_key)
    print(f"node signs 'accepted' statement {accepted.id}")

    opened = open_sealed(sealed.data, moscow, lambda _id: kyiv_card, envelope_to=routing.to)
    print(f"\nMoscow opened and verified a {opened.message.kind} from {opened.sender.name}:")
    for entry in opened.message.body["entries"]:
        print(f"  {entry['family_name']} {entry['given_names']} ({entry['date_of_birth']})")
    receipt = make_statement("opened", routing.id, moscow.signing_key, recipient=moscow.id,
                             inner=b64url_encode(opened.inner_digest))
    verify_statement(receipt, moscow.card.verify_key)
    print(f"Moscow signs 'opened' statement {receipt.id}")
    print("\ndemo complete: every signature verified, nothing left on disk")
    return 0

