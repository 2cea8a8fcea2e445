"""The application factory: the one place where the node's parts are wired.

``create_app(config, node=..., database_url=...)`` returns an aiohttp application;
the server (relay.server) and the tests both use it. Startup (a ``cleanup_ctx``)
applies migrations, starts the PostgreSQL listener if any and the retention task;
cleanup closes WebSockets, stops the tasks and disposes of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import WSCloseCode, web

from keys.clock import SYSTEM_CLOCK, Clock, Random, system_random
from keys.identity import Identity

from . import appkeys, errors, handlers, logs, problems
from .config import RelayConfig
from .handlers import _federation_limit
from .metrics import Metrics
from .notify import Announcer, Notifier, PgListener
from .peer_client import PeerClient
from .ratelimit import RateLimiter
from .services.auth import Authenticator
from .services.federation import Federation
from .services.forwarder import Forwarder
from .services.mailbox import Mailbox
from .services.registration import Registration
from .services.retention import Retention
from .services.submission import Submission
from .storage import mailbox
from .storage.database import Database
from .websocket import CLOSE_TIMEOUT, recheck_members, websocket
from .ws_gate import AuthGate

log = logging.getLogger("relay.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes RFC 9457 problem+json, and one log line per request."""
    started = time.perf_counter()
    fields = logs.begin_request()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except errors.RelayError as exc:
        if isinstance(exc, errors.NodeError):
            log.error("node error", extra={"event": "http.node_error",
                                           "error": type(exc).__name__})
        failure = problems.from_error(exc)
        status = failure.status
        request.app[appkeys.METRICS].rejections.labels(exc.slug).inc()
        return failure
    except web.HTTPException as exc:
        if exc.status < 400:
            status = exc.status
            raise
        failure = problems.from_http_exception(exc)
        status = failure.status
        return failure
    except Exception:
        log.exception("unhandled error", extra={"event": "http.crash"})
        return problems.response(500, "internal", "Internal error", "internal error")
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        elapsed = time.perf_counter() - started
        metrics = request.app[appkeys.METRICS]
        metrics.requests.labels(request.method, name, str(status)).inc()
        metrics.latency.labels(name).observe(elapsed)
        extra: dict[str, object] = {"event": "http", "method": request.method, "route": name,
                                    "status": status, "ms": round(elapsed * 1000, 1)}
        extra.update(fields)
        log.info("request", extra=extra)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    db = app[appkeys.DB]
    await db.migrate()
    async with db.write() as conn:
        # Cursors only grow, even over a restore from a backup (storage.mailbox).
        await mailbox.leap_cursors(conn)
    await app[appkeys.AUTH].preload()
    listener = None
    if db.is_postgres:
        listener = PgListener(db, app[appkeys.NOTIFIER])
        await listener.start()
    purger = asyncio.create_task(_purge_loop(app), name="relay-retention")
    forwarder = asyncio.create_task(app[appkeys.FORWARDER].run(), name="relay-forwarder")
    recheck = asyncio.create_task(recheck_members(app), name="relay-ws-recheck")
    try:
        yield
    finally:
        for task in (recheck, forwarder, purger):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[appkeys.FORWARDER].client.close()
        if listener is not None:
            await listener.stop()
        await db.dispose()


async def _close_sockets(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[appkeys.SOCKETS]
    for ws in tuple(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")


async def _purge_loop(app: web.Application) -> None:
    config = app[appkeys.CONFIG]
    retention = Retention(app[appkeys.DB], config, clock=app[appkeys.CLOCK])
    metrics = app[appkeys.METRICS]
    while True:
        try:
            purged = await retention.purge()
        except Exception as exc:  # keep serving; the next round retries
            log.warning("purge failed", extra={"event": "retention.error",
                                               "error": type(exc).__name__})
        else:
            for what in ("nonces", "sealed", "envelopes"):
                metrics.purged.labels(what).inc(getattr(purged, what))
            if purged.sealed or purged.envelopes:
                log.info("purged", extra={"event": "retention", "nonces": purged.nonces,
                                          "sealed": purged.sealed,
                                          "envelopes": purged.envelopes})
        await asyncio.sleep(config.purge_interval_seconds)


def create_app(config: RelayConfig, *, node: Identity, database_url: str,
               clock: Clock = SYSTEM_CLOCK, random: Random = system_random) -> web.Application:
    """Wire the node. No I/O happens until the application starts."""
    # aiohttp refuses bodies above this when read through its own helpers; our
    # handlers stream with tighter per-route limits (relay.inputs.read_body).
    app = web.Application(middlewares=[problem_middleware],
                          client_max_size=_federation_limit(config.max_sealed_bytes))
    db = Database.open(database_url)
    notifier = Notifier(queue_max=config.ws_queue_max)
    limiter = RateLimiter(config.rate_per_second, config.rate_burst)
    app[appkeys.CONFIG] = config
    app[appkeys.NODE] = node
    app[appkeys.CLOCK] = clock
    app[appkeys.RANDOM] = random
    app[appkeys.DB] = db
    app[appkeys.METRICS] = Metrics()
    app[appkeys.NOTIFIER] = notifier
    app[appkeys.LIMITER] = limiter
    app[appkeys.SOCKETS] = weakref.WeakSet()
    gate = AuthGate(config.ws_unauthenticated_max, config.ws_auth_timeout + CLOSE_TIMEOUT)
    app[appkeys.WS_GATE] = gate
    app[appkeys.METRICS].ws_unauthenticated.set_function(lambda: gate.open)
    app[appkeys.AUTH] = Authenticator(db, limiter, window=config.signature_window, clock=clock)
    app[appkeys.REGISTRATION] = Registration(db, node, clock=clock)
    forwarder = Forwarder(db, node, PeerClient(node, timeout=config.federation_timeout_seconds,
                                               clock=clock, random=random),
                          config, metrics=app[appkeys.METRICS], clock=clock, random=random)
    app[appkeys.FORWARDER] = forwarder
    announcer = Announcer(db, notifier)
    app[appkeys.SUBMISSION] = Submission(db, node, announcer, max_sealed=config.max_sealed_bytes,
                                         clock=clock, wake=forwarder.wake,
                                         handoff=forwarder.handoff)
    app[appkeys.MAILBOX] = Mailbox(db, node, page_max=config.inbox_page_max, clock=clock,
                                   wake=forwarder.wake)
    app[appkeys.FEDERATION] = Federation(db, node, announcer,
                                         max_sealed=config.max_sealed_bytes, clock=clock,
                                         wake=forwarder.wake, handoff=forwarder.handoff)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    app.router.add_routes([
        web.get("/v1/node", handlers.node_info),
        web.post("/v1/register", handlers.register),
        web.get("/v1/members/{id}/card", handlers.member_card),
        web.post("/v1/envelopes", handlers.submit),
        web.get("/v1/inbox", handlers.inbox),
        web.get("/v1/envelopes/{id}", handlers.fetch),
        web.post("/v1/envelopes/{id}/ack", handlers.ack),
        web.get("/v1/envelopes/{id}/receipts", handlers.receipts),
        web.post("/v1/federation/envelopes", handlers.federation_envelope),
        web.post("/v1/federation/statements", handlers.federation_statements),
        web.get("/v1/ws", websocket),
        web.get("/healthz", handlers.healthz),
        web.get("/metrics", handlers.metrics),
        web.get("/v1/openapi.json", handlers.openapi),
    ])
    return app
