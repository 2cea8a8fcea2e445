"""``backchannel register INVITATION``: join a node and pin its key."""

from __future__ import annotations

import argparse
import sys

from rich.text import Text

from .. import messaging, ui
from ..invitation import parse_invitation
from ..profile import NodePin
from .common import (
    SubParsers,
    common_options,
    connected,
    run_async,
    unlock,
)
from .identity import node_json


def register(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "register", parents=[common_options()], help="join a node with an invitation",
        description="Join the node named in an invitation from its operator. The node's "
                    "key is checked against the fingerprint in the invitation and pinned.")
    parser.add_argument("invitation", metavar="INVITATION",
                        help="the invitation string (bcinv1.…), or '-' to read it from stdin")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_register)


def run_register(args: argparse.Namespace) -> int:
    text = sys.stdin.read(8192) if args.invitation == "-" else args.invitation
    invitation = parse_invitation(text)
    opened, passphrase = unlock(args)

    async def work() -> NodePin:
        async with connected(opened, invitation.url) as client:
            return await messaging.register(opened, client, invitation, passphrase)

    pin = run_async(work())
    if args.json:
        ui.print_json({"node": node_json(pin), "id": opened.identity.id})
        return 0
    console = ui.out()
    console.print(Text(f"Joined node “{pin.card.name}” at {pin.url} as "
                       f"{messaging.with_article(pin.role)}."))
    console.print(f"  node fingerprint  {pin.card.fingerprint} (matches the invitation; "
                  "pinned)")
    console.print(f"  your id           {opened.identity.id}")
    console.print("Your card now names this node. Send it to your counterparts:\n"
                  "  backchannel card --out my.card")
    return 0
