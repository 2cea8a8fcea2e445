"""``inbox --watch`` when WebSockets do not get through.

Some networks pass plain HTTP but not WebSocket upgrades (a proxy that answers them
with an error). The node here sits behind such a proxy -- a small aiohttp reverse
proxy that forwards every request byte for byte except ``/v1/ws`` -- and the
watcher must fall back to polling and still see the new message.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cli_process import first_line
from cli_support import NODE_PASSPHRASE, RU_PASSPHRASE, UA_PASSPHRASE, Env, Node, free_port

pytestmark = pytest.mark.slow


class BlockingProxy:
    """Forwards HTTP to ``upstream``; refuses WebSocket upgrades with 502."""

    def __init__(self, port: int, upstream: str) -> None:
        self.port = port
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.refused_ws = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/ws":
            self.refused_ws += 1
            return web.Response(status=502, text="WebSocket not allowed here")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession(auto_decompress=False) as session, \
                session.request(request.method,
                                self.upstream + request.raw_path, data=body,
                                headers=headers, allow_redirects=False) as upstream:
            data = await upstream.read()
            reply = web.Response(status=upstream.status, body=data)
            for key in ("Content-Type", "Retry-After"):
                if key in upstream.headers:
                    reply.headers[key] = upstream.headers[key]
            return reply

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Env, BlockingProxy]]:
    env = Env(tmp_path)
    public, private = free_port(), free_port()
    node = Node(env, tmp_path / "node", public)
    node.init("Node behind a proxy")
    # The node signs and checks URLs as the proxy's (its public URL), but listens here.
    node_process = subprocess.Popen(
        [sys.executable, "-m", "client", "relay", "serve", "--dir", str(node.directory),
         "--port", str(private)],
        env={**env.base, "BACKCHANNEL_PASSPHRASE": NODE_PASSPHRASE},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert first_line(node_process, node_process.stdout).startswith(b"relay: listening on")
    proxy = BlockingProxy(public, f"http://127.0.0.1:{private}")
    proxy.start()
    try:
        env.ok("init", "--name", "Kyiv", home="ua", passphrase=UA_PASSPHRASE)
        env.ok("init", "--name", "Moscow", home="ru", passphrase=RU_PASSPHRASE)
        env.ua("register", node.invite("Kyiv"))
        env.ru("register", node.invite("Moscow"))
        card = tmp_path / "ru.card"
        env.ru("card", "--out", str(card))
        env.ua("contacts", "add", str(card), "--alias", "RU")
        env.ua("contacts", "verify", "RU", "--yes")
        yield env, proxy
    finally:
        proxy.stop()
        node_process.terminate()
        node_process.wait(30)


def test_watch_falls_back_to_polling(proxied: tuple[Env, BlockingProxy], tmp_path: Path) -> None:
    env, proxy = proxied
    watcher = subprocess.Popen(
        [sys.executable, "-m", "client", "inbox", "--watch", "--json", "--exit-after", "1",
         "--poll-interval", "0.5"],
        env={**env.base, "BACKCHANNEL_HOME": str(env.root / "ru"),
             "BACKCHANNEL_PASSPHRASE": RU_PASSPHRASE},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "checking every 0.5 s" in first_line(watcher, watcher.stderr)
        note = tmp_path / "note.txt"
        note.write_text("through the proxy\n", encoding="utf-8")
        sent = env.ua("send", "--kind", "note", "--to", "RU", str(note))
        envelope_id = sent.out.strip().splitlines()[-1]
        out, _ = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == [envelope_id]
    assert proxy.refused_ws >= 1
