"""The outbox worker pushes each (peer, envelope) on its own: a peer that hangs holds
only its own pushes (relay.services.forwarder)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from federation_support import chain, eventually, outbox, pin, routed

from keys.card import HomeNode
from keys.envelope import make_envelope
from keys.identity import Identity
from keys.seal import seal
from relay.services.forwarder import PER_PEER


class SilentPeer:
    """A real TCP listener on loopback that reads requests and never answers."""

    def __init__(self) -> None:
        self.requests = 0
        self.open = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self._writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1  # read the head; the body and the answer never matter
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open -= 1

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_peer_that_never_answers_does_not_hold_up_pushes_to_another(tmp_path: Path):
    silent = SilentPeer()
    url = await silent.start()
    first = Identity.create("Silent node", "node")
    hang = first.reissue(home=HomeNode(first.id, url))
    # A timeout far beyond the test: a push to the silent peer ends only when we stop.
    nodes = await chain(tmp_path, ["North", "South"], federation_timeout_seconds=600)
    north, south = nodes
    try:
        await pin(north, hang)
        ua, ru = await north.join("UA"), await south.join("RU")
        stranger = Identity.create("Member of the silent node", "delegation")
        for n in range(PER_PEER + 2):
            sealed = seal(ua.identity, [stranger.card], "note", {"text": f"stuck {n}"})
            stuck = make_envelope(ua.identity.signing_key, sealed.data, to=[stranger.id],
                                  origin=north.id, destination=hang.id,
                                  lifetime=timedelta(hours=1))
            assert (await ua.client.submit(stuck, sealed.data)).status == 201

        async def hanging():
            return silent.requests >= PER_PEER or None

        await eventually(hanging, what="pushes hanging at the silent peer")
        routing, sealed_bytes = routed(ua, [ru], nodes)
        assert (await ua.client.submit(routing, sealed_bytes)).status == 201

        async def delivered():
            items = (await ru.client.inbox()).body["items"]
            return [i for i in items if i["id"] == routing.id] or None

        await eventually(delivered, what="delivery at South while the silent peer hangs")
        # The silent peer's pushes are still in flight, unanswered: nothing waited for them.
        assert silent.requests == PER_PEER and silent.open == PER_PEER
        stuck_rows = [r for r in await outbox(north)
                      if r.peer == hang.id and r.statement_id is None]
        assert len(stuck_rows) == PER_PEER + 2 and all(r.attempts == 0 for r in stuck_rows)
    finally:
        for node in nodes:
            await node.stop()
        await silent.stop()
