"""WebSocket sessions at scale: fan-out to many sessions, the shared membership
re-check, and the bounded backlog of one session (relay.websocket, relay.notify)."""

from __future__ import annotations

import asyncio

import aiohttp
from relay_support import Member, RunningNode, sealed_for, start_node

from relay import appkeys
from relay.notify import OVERFLOW, REVOKED, Notice, Notifier, Subscription


async def _sessions(member: Member, count: int) -> list[aiohttp.ClientWebSocketResponse]:
    return list(await asyncio.gather(*(member.client.websocket() for _ in range(count))))


async def _metric(node: RunningNode, name: str) -> float:
    client = await node.client()
    text = (await client.send("GET", "/metrics")).raw.decode()
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values)


async def test_every_session_of_every_recipient_gets_its_push(node: RunningNode):
    alice, bob, carol = (await node.join("Kyiv"), await node.join("Moscow"),
                         await node.join("Geneva"))
    bobs, carols, alices = (await _sessions(bob, 12), await _sessions(carol, 12),
                            await _sessions(alice, 3))
    try:
        assert await _metric(node, "backchannel_websocket_sessions") == 27
        first, sealed1 = sealed_for(alice, [bob, carol], node.id)
        second, sealed2 = sealed_for(alice, [bob], node.id)
        assert (await alice.client.submit(first, sealed1)).status == 201
        assert (await alice.client.submit(second, sealed2)).status == 201
        for ws in bobs:
            got = [(await ws.receive_json(timeout=10))["id"] for _ in range(2)]
            assert got == [first.id, second.id]  # in commit order
        for ws in carols:
            assert (await ws.receive_json(timeout=10))["id"] == first.id
        # The sender's own sessions got nothing: the next thing they see is their own.
        own, sealed3 = sealed_for(alice, [alice], node.id)
        assert (await alice.client.submit(own, sealed3)).status == 201
        for ws in alices:
            assert (await ws.receive_json(timeout=10))["id"] == own.id
    finally:
        for ws in bobs + carols + alices:
            await ws.close()
    # Closed sessions leave the registry (nothing kept per closed session).
    for _ in range(200):
        if await _metric(node, "backchannel_websocket_sessions") == 0:
            break
        await asyncio.sleep(0.05)
    assert await _metric(node, "backchannel_websocket_sessions") == 0
    assert node.app[appkeys.NOTIFIER].sessions == 0


async def test_shared_recheck_closes_every_session_of_a_revoked_member_only(database_url: str):
    node = await start_node(database_url, ws_recheck_seconds=0.05)
    try:
        alice, bob, carol = (await node.join("Kyiv"), await node.join("Moscow"),
                             await node.join("Geneva"))
        bobs, carols = await _sessions(bob, 5), await _sessions(carol, 5)
        await node.membership().revoke(bob.id)  # as `relay revoke` would, from outside
        for ws in bobs:
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4403
        # Carol's sessions, open all along and re-checked many times, still get pushes.
        routing, sealed = sealed_for(alice, [carol], node.id)
        assert (await alice.client.submit(routing, sealed)).status == 201
        for ws in carols:
            assert (await ws.receive_json(timeout=10))["id"] == routing.id
            assert not ws.closed
            await ws.close()
    finally:
        await node.stop()


class _Recorder(Subscription):
    """A subscription whose session only counts its wake-ups (the real session sends)."""

    __slots__ = ("wakes",)

    def __init__(self, member: str, limit: int) -> None:
        super().__init__(member, limit)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def test_a_session_more_than_queue_max_behind_ends_with_overflow():
    notifier = Notifier(queue_max=3)
    slow, other = _Recorder("m1", 3), _Recorder("m2", 3)
    notifier.add(slow)
    notifier.add(other)
    notices = [Notice("m1", cursor, f"e{cursor}") for cursor in range(1, 5)]
    for notice in notices[:3]:
        notifier.dispatch(notice)
    assert slow.take() == notices[:3] and slow.ended is None
    slow.sent()  # one of three written; two still outstanding
    notifier.dispatch(notices[3])
    assert slow.ended is None and slow.take() == [notices[3]]
    notifier.dispatch(Notice("m1", 9, "e9"))  # three outstanding: the fourth overflows
    assert slow.ended == OVERFLOW and slow.pending == []
    notifier.dispatch(Notice("m1", 10, "e10"))  # an ended session takes nothing more
    assert slow.pending == [] and other.wakes == 0 and other.ended is None
    notifier.end_member("m2", REVOKED)
    assert other.ended == REVOKED and other.wakes == 1
    notifier.remove(slow)
    notifier.remove(other)
    assert notifier.sessions == 0 and notifier.members() == set()
