"""Invitation strings, as printed by ``backchannel relay invite``.

Format (``docs/protocol.md``)::

    bcinv1.<b64url(JSON {"url": node URL, "node": node id,
                         "fp": node fingerprint, 30 digits without spaces,
                         "secret": b64url 32 random bytes,
                         "role": "delegation" | "intermediary", "expires": time})>

The client uses ``url`` to reach the node, then pins the node's key: the card the
node serves must have the id ``node`` and the fingerprint ``fp`` before the secret
is presented. The secret is shown nowhere and never written to the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keys import invitation as wire
from keys.card import Card
from keys.errors import DecodeError

from .errors import InvalidInvitation, InvitationExpired, NodeKeyMismatch


@dataclass(frozen=True, repr=False)
class Invitation(wire.Invitation):
    #: The string as given (sent to the node, which accepts it whole).
    text: str = ""


def parse_invitation(text: str) -> Invitation:
    """Raises :class:`InvalidInvitation`."""
    compact = "".join(text.split())  # line breaks from e-mail clients
    if len(compact) > wire.MAX_INVITATION_CHARS or not compact.startswith(wire.PREFIX):
        raise InvalidInvitation("this is not a Backchannel invitation (those start with "
                                "bcinv1.); copy the whole last line the operator sent")
    try:
        parsed = wire.parse_invitation(compact)
    except wire.BadNodeAddress:
        raise InvalidInvitation("the invitation's node address is not an http(s) URL") from None
    except DecodeError as exc:
        raise InvalidInvitation(f"the invitation is damaged or incomplete ({exc}); copy "
                                "it again, in one piece") from None
    return Invitation(parsed.url.rstrip("/"), parsed.node, parsed.fingerprint, parsed.secret,
                      parsed.role, parsed.expires, compact)


def check_not_expired(invitation: Invitation, now: datetime) -> None:
    if invitation.expires <= now:
        raise InvitationExpired("this invitation has expired; ask the node's operator for "
                                "a new one")


def check_node_card(invitation: Invitation, card: Card) -> None:
    """The node's card must be the one the invitation names (trust on first use is
    replaced by trust in the invitation, which came out of band)."""
    if card.role != "node":
        raise NodeKeyMismatch(f"the server at {invitation.url} is not a Backchannel node "
                              "(its card is not a node card)")
    if card.id != invitation.node or card.fingerprint.replace(" ", "") != invitation.fingerprint:
        raise NodeKeyMismatch(
            f"the node at {invitation.url} presents a key that is not the one in the "
            "invitation: do not join; tell the operator (someone may be impersonating "
            "the node)")
