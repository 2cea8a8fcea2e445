"""Running the node: bind, serve until SIGTERM or SIGINT, shut down cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from keys.clock import SYSTEM_CLOCK, Clock
from keys.identity import Identity

from .app import create_app
from .config import RelayConfig
from .errors import NodeError
from .storage.database import redacted

log = logging.getLogger("relay.server")


def settle_heap() -> None:
    """Move everything alive after start-up (modules, SQLAlchemy, Alembic: about
    100,000 objects) out of the cyclic garbage collector's reach.

    A full collection walks every tracked object; with the start-up heap included it
    stopped the event loop for about 100 ms on a two-core machine, every few seconds
    under load: the whole 99th percentile of the end-to-end latency benchmark. The
    frozen objects live as long as the process anyway."""
    gc.collect()
    gc.freeze()


async def serve(config: RelayConfig, node: Identity, database_url: str, *,
                clock: Clock = SYSTEM_CLOCK) -> None:
    """Serve until SIGTERM or SIGINT. The caller holds the database's serve lock
    (relay.storage.serve_lock.serving; `relay serve` takes it before asking for the
    passphrase)."""
    app = create_app(config, node=node, database_url=database_url, clock=clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise NodeError(f"cannot listen on {config.host}:{config.port}: "
                            f"{exc.strerror}") from None
        port = runner.addresses[0][1] if runner.addresses else config.port
        settle_heap()
        log.info("listening", extra={"event": "serve", "host": config.host, "port": port,
                                     "backend": redacted(database_url).split(":")[0]})
        # Scripts and tests wait for this exact line on stdout.
        print(f"relay: listening on http://{config.host}:{port}", flush=True)
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()
