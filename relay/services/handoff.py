"""A forward push built by the service that stored the envelope (the origin's
submission, an intermediary's acceptance) and handed to the outbox worker
(:meth:`relay.services.forwarder.Forwarder.handoff`), so that it starts without
reading the envelope, its statements and cards back from the database."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from keys.encoding import b64url_encode, json_dumps
from keys.envelope import Routing


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
    """The ``POST /v1/federation/envelopes`` document (statements and cards as stored)."""
    return json_dumps({"envelope": routing.envelope.to_dict(),
                       "sealed": b64url_encode(sealed),
                       "statements": [json.loads(b) for b in statements],
                       "cards": [json.loads(c) for c in cards]})
