"""The bound on WebSocket connections that have not authenticated yet.

Anyone can open a WebSocket to a node; until it authenticates (or ``ws_auth_timeout``
ends it) the connection holds a socket, a task and about 20 KB. Without a bound, a
client that opens connections faster than they time out exhausts the node.
"""

from __future__ import annotations

import math

from . import errors


class AuthGate:
    """Counts the connections between the upgrade and the end of authentication."""

    __slots__ = ("limit", "open", "retry_after")

    def __init__(self, limit: int, auth_timeout: float) -> None:
        self.limit = limit
        self.open = 0
        self.retry_after = max(1, math.ceil(auth_timeout))

    def enter(self) -> Ticket:
        if self.open >= self.limit:
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
