"""A forward push built by the service that stored the envelope (the origin's
submission, an intermediary's acceptance) and handed to the outbox worker
(:meth:`relay.services.forwarder.Forwarder.handoff`), so that it starts without
reading the envelope, its statements and cards back from the database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from keys.encoding import b64url_encode
from keys.envelope import Routing

log = logging.getLogger("relay.federation")


@dataclass(frozen=True)
class Handoff:
    """A forward push ready to send, built from what the storing transaction had in
    hand (the outbox row stays the source of truth: this only saves the reads)."""

    peer: str
    envelope_id: str
    url: str
    body: bytes
    expires_at: int


def forward_body(routing: Routing, sealed: bytes, statements: Iterable[bytes],
                 cards: Iterable[bytes]) -> bytes:
    """The ``POST /v1/federation/envelopes`` document, with the statements and cards
    spliced in as stored: each is this node's own compact JSON of a document it
    parsed strictly (``to_json``), so parsing and serialising them again on every push
    (about 0.1 ms of a hop on two cores) would produce the same bytes."""
    return b"".join((b'{"envelope":', routing.envelope.to_json(),
                     b',"sealed":"', b64url_encode(sealed).encode("ascii"),
                     b'","statements":[', b",".join(statements),
                     b'],"cards":[', b",".join(cards), b"]}"))


def hand_over(handoff: Callable[[Handoff], bool] | None, build: Callable[[], Handoff]
              ) -> bool:
    """Build a push and hand it to the outbox worker, after the commit that queued it;
    whether the push started (if not, the worker's scan must be woken for the row).

    Only a shortcut: the outbox row is the record, and the worker's scan sends it
    anyway. So a failure here is logged (its type only) and never fails the request
    whose work is already committed."""
    if handoff is None:
        return False
    try:
        return handoff(build())
    except Exception as exc:
        log.warning("push not handed over; the outbox scan will send it",
                    extra={"event": "federation.error", "error": type(exc).__name__})
        return False
