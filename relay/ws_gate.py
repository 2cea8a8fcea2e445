"""The bound on WebSocket connections that have not authenticated yet.

Anyone can open a WebSocket to a node; until it authenticates (or ``ws_auth_timeout``
ends it) the connection holds a socket, a task and about 20 KB. Without a bound, a
client that opens connections faster than they time out exhausts the node.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final

from . import errors

log = logging.getLogger("relay.ws")

#: A refusal is logged at most this often (a flood would otherwise flood the log).
WARN_EVERY: Final = 60.0


class AuthGate:
    """Counts the connections between the upgrade and the end of authentication.

    ``hold_seconds`` is the longest one can stay: the auth timeout and the close
    handshake after it; a refused client is told to come back after that."""

    __slots__ = ("_refused", "_warned", "limit", "open", "retry_after")

    def __init__(self, limit: int, hold_seconds: float) -> None:
        self.limit = limit
        self.open = 0
        self.retry_after = max(1, math.ceil(hold_seconds))
        self._refused = 0
        self._warned = -math.inf

    def enter(self) -> Ticket:
        if self.open >= self.limit:
            self._refused += 1
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                # count: refusals since the last such line (this one included).
                log.warning("websocket connections waiting to authenticate are at "
                            "ws_unauthenticated_max; refusing new ones", extra={
                                "event": "ws.gate_full", "count": self._refused})
                self._warned, self._refused = now, 0
            raise errors.RateLimited("too many connections are waiting to authenticate; "
                                     "try again shortly", retry_after=self.retry_after)
        self.open += 1
        return Ticket(self)


class Ticket:
    __slots__ = ("gate",)

    def __init__(self, gate: AuthGate) -> None:
        self.gate: AuthGate | None = gate

    def release(self) -> None:
        """Idempotent: after authentication, and again when the connection ends."""
        if self.gate is not None:
            self.gate.open -= 1
            self.gate = None
