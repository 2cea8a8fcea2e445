"""The typed keys under which the application factory stores its parts."""

from __future__ import annotations

import weakref
from typing import Final

from aiohttp import web

from keys.clock import Clock, Random
from keys.identity import Identity

from .config import RelayConfig
from .metrics import Metrics
from .notify import Notifier
from .ratelimit import RateLimiter
from .services.auth import Authenticator
from .services.federation import Federation
from .services.forwarder import Forwarder
from .services.mailbox import Mailbox
from .services.registration import Registration
from .services.submission import Submission
from .storage.database import Database
from .ws_gate import AuthGate

CONFIG: Final = web.AppKey("config", RelayConfig)
NODE: Final = web.AppKey("node", Identity)
CLOCK: Final = web.AppKey("clock", Clock)
RANDOM: Final[web.AppKey[Random]] = web.AppKey("random")
DB: Final = web.AppKey("db", Database)
METRICS: Final = web.AppKey("metrics", Metrics)
NOTIFIER: Final = web.AppKey("notifier", Notifier)
LIMITER: Final = web.AppKey("limiter", RateLimiter)
AUTH: Final = web.AppKey("auth", Authenticator)
REGISTRATION: Final = web.AppKey("registration", Registration)
SUBMISSION: Final = web.AppKey("submission", Submission)
MAILBOX: Final = web.AppKey("mailbox", Mailbox)
SOCKETS: Final[web.AppKey[weakref.WeakSet[web.WebSocketResponse]]] = web.AppKey("sockets")
WS_GATE: Final = web.AppKey("ws_gate", AuthGate)
FEDERATION: Final = web.AppKey("federation", Federation)
FORWARDER: Final = web.AppKey("forwarder", Forwarder)
