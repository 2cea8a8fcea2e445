"""``backchannel init``, ``whoami`` and ``card``: this profile's own identity."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.text import Text

from keys.card import Card
from keys.clock import SYSTEM_CLOCK
from keys.encoding import format_time
from keys.identity import Identity
from keys.kem import SUITE_HYBRID, SUITE_X25519
from keys.passphrase import get_passphrase, new_passphrase, weakness

from .. import ui
from ..errors import BadSetting, ProfileExists
from ..profile import NodePin, OpenProfile, kdf_params_from_env
from .common import SubParsers, common_options, open_profile, profile_of, unlock, write_output

MAX_NAME = 200


def register(sub: SubParsers) -> None:
    common = common_options()
    parser = sub.add_parser(
        "init", parents=[common], help="create this delegation's identity and profile",
        description="Create a new identity (signing and encryption keys) in the profile "
                    "directory, protected by a passphrase.")
    parser.add_argument("--name", required=True,
                        help="the name others will see on your card, e.g. 'Kyiv Coordination HQ'")
    parser.add_argument("--role", choices=("delegation", "intermediary"), default="delegation")
    parser.add_argument("--suite", choices=(SUITE_HYBRID, SUITE_X25519), default=SUITE_HYBRID,
                        help="encryption keys: hybrid post-quantum (default) or X25519 only "
                             "(for interoperability)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_init)

    parser = sub.add_parser(
        "passphrase", parents=[common], help="change this profile's passphrase",
        description="Encrypt the profile's keystore under a new passphrase, asked twice (or "
                    "from --new-passphrase-file, or BACKCHANNEL_NEW_PASSPHRASE). The keys "
                    "stay the same. Backup copies of the keystore made before still open "
                    "with the old passphrase.")
    parser.add_argument("--new-passphrase-file", type=Path, metavar="FILE",
                        help="read the new passphrase from FILE")
    parser.set_defaults(func=run_passphrase)

    parser = sub.add_parser("whoami", parents=[common], help="show this profile's identity")
    parser.add_argument("--json", action="store_true", help="print as JSON (see the user guide)")
    parser.set_defaults(func=run_whoami)

    parser = sub.add_parser("card", parents=[common],
                            help="export this identity's card (armored text) to give to others")
    parser.add_argument("--out", metavar="FILE", help="write the card to FILE instead of stdout")
    parser.set_defaults(func=run_card)


def identity_json(card: Card) -> dict[str, Any]:
    return {"id": card.id, "name": card.name, "role": card.role,
            "fingerprint": card.fingerprint, "suite": card.encryption.suite,
            "created": format_time(card.created), "expires": format_time(card.expires),
            "home": {"node": card.home.node, "url": card.home.url} if card.home else None}


def node_json(pin: NodePin | None) -> dict[str, Any] | None:
    if pin is None:
        return None
    return {"url": pin.url, "id": pin.card.id, "name": pin.card.name,
            "fingerprint": pin.card.fingerprint, "member_role": pin.role, "label": pin.label,
            "registered": format_time(pin.registered)}


def run_init(args: argparse.Namespace) -> int:
    name = " ".join(args.name.split())
    if not name or len(name) > MAX_NAME:
        raise BadSetting(f"--name must be 1 to {MAX_NAME} characters")
    profile = profile_of(args)
    if profile.exists():
        raise ProfileExists(profile.home)
    params = kdf_params_from_env()  # refuse a bad BACKCHANNEL_KDF before any prompt
    passphrase = get_passphrase(args.passphrase_file, confirm=True,
                                prompt="New passphrase for this profile: ")
    _warn_if_weak(passphrase)
    identity = Identity.create(name, args.role, suite=args.suite, clock=SYSTEM_CLOCK)
    opened = profile.create(identity, passphrase, params=params)
    if args.json:
        ui.print_json({**identity_json(identity.card), "profile": str(opened.home)})
        return 0
    console = ui.out()
    console.print(Text(f"Created {args.role} identity “{name}” in {opened.home}"))
    console.print(f"  id           {identity.id}")
    console.print(f"  fingerprint  {identity.card.fingerprint}")
    console.print("Next: join a node with  backchannel register INVITATION")
    return 0


def run_passphrase(args: argparse.Namespace) -> int:
    opened, current = unlock(args)  # the current passphrase is checked before a new one
    new = new_passphrase(args.new_passphrase_file, current=current,
                         prompt="New passphrase for this profile: ")
    _warn_if_weak(new)
    opened.change_passphrase(current, new)
    print(f"Passphrase changed for {opened.home}. The old one no longer opens this profile; "
          "backup copies of its keystore made before still open with the old one.")
    return 0


def _warn_if_weak(passphrase: str) -> None:
    warning = weakness(passphrase)
    if warning:
        ui.warn(warning)


def run_whoami(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    card = opened.identity.card
    pin = opened.node_pin()
    if args.json:
        ui.print_json({**identity_json(card), "node": node_json(pin),
                       "profile": str(opened.home)})
        return 0
    show_identity(opened, pin)
    return 0


def show_identity(opened: OpenProfile, pin: NodePin | None) -> None:
    card = opened.identity.card
    rows = [("name", card.name), ("role", card.role), ("id", card.id),
            ("fingerprint", card.fingerprint), ("encryption", card.encryption.suite),
            ("card valid", f"{format_time(card.created)} to {format_time(card.expires)}")]
    if pin is None:
        rows.append(("node", "not registered (backchannel register INVITATION)"))
    else:
        rows += [("node", f"{pin.url}  {pin.card.name}"),
                 ("node fingerprint", pin.card.fingerprint),
                 ("member since", format_time(pin.registered))]
    rows.append(("profile", str(opened.home)))
    # Lines, not a table: a table pads every line to its widest, and scripts that
    # read this output (or diff it) should not see trailing spaces.
    width = max(len(label) for label, _ in rows)
    console = ui.out()
    for label, value in rows:
        line = Text(f"{label:<{width}}", style="bold")
        line.append(f"  {value}")
        console.print(line)


def run_card(args: argparse.Namespace) -> int:
    opened = open_profile(args)
    armored = opened.identity.card.armored()
    if opened.identity.card.home is None:
        ui.warn("this card names no node yet; after backchannel register, export it again "
                "so that others can reach you")
    if args.out:
        write_output(args.out, armored.encode("ascii"), what="card file")
        ui.note(f"card written to {args.out} (fingerprint {opened.identity.card.fingerprint})")
    else:
        print(armored, end="")
    return 0
