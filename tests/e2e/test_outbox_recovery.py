"""The outbox survives a peer that is down and a node killed in the middle of
forwarding: every envelope arrives, exactly once.

Four real ``relay serve`` subprocesses (Kyiv → Istanbul → Geneva → Moscow, SQLite
files) and two members using the real client library. First Geneva is down: the
envelopes wait in Istanbul's outbox; Istanbul is killed with SIGKILL while they
wait and restarted; Geneva comes back; they arrive. Then Geneva is paused, a
burst of envelopes is sent, and Istanbul is killed while it is forwarding them to
Geneva; after Geneva continues and Istanbul restarts, every
one of them arrives, once, and each node on the route has signed exactly one
*relayed* statement for each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from e2e_support import NODE_PASSPHRASE, Env, Node, eventually, free_port

from client.relay_client import RelayClient
from keys.card import load_card
from keys.clock import SYSTEM_CLOCK
from keys.encoding import b64url_encode
from keys.envelope import Routing, make_envelope
from keys.identity import Identity
from keys.keystore import FLOOR_PARAMS
from keys.seal import open_sealed, seal
from keys.statements import make_statement
from relay.config import RelayConfig
from relay.node import NodeDir, create_node
from relay.services.membership import Membership
from relay.services.peering import Peering
from relay.storage.database import Database, sqlite_url

pytestmark = pytest.mark.slow

NAMES = ("kyiv", "istanbul", "geneva", "moscow")


@dataclass
class Net:
    nodes: dict[str, Node]
    ids: dict[str, str]
    ua: RelayClient
    ru: RelayClient

    def route(self) -> list[str]:
        return [self.ids["istanbul"], self.ids["geneva"]]


async def _prepare(root: Path) -> tuple[dict[str, Node], dict[str, str]]:
    """Node directories made the way `relay init` and `relay peers add` make them,
    in process (the CLI path is exercised by test_four_nodes)."""
    env = Env(root)
    nodes = {name: Node(env, root / name, free_port()) for name in NAMES}
    ids = {}
    for name, node in nodes.items():
        config = RelayConfig(name=f"{name} node", url=node.url, port=node.port).check()
        ids[name] = create_node(NodeDir(node.directory), config, NODE_PASSPHRASE,
                                params=FLOOR_PARAMS).id
    cards = {name: load_card(node.card.read_bytes(), now=SYSTEM_CLOCK.now())
             for name, node in nodes.items()}
    for index, name in enumerate(NAMES):
        db = Database.open(sqlite_url(nodes[name].directory))
        try:
            await db.migrate()
            for other in NAMES[max(0, index - 1):index + 2]:
                if other != name:
                    await Peering(db, ids[name]).add(cards[other])
        finally:
            await db.dispose()
    return nodes, ids


async def _member(session: aiohttp.ClientSession, node: Node, name: str) -> RelayClient:
    db = Database.open(sqlite_url(node.directory))
    try:
        card = load_card(node.card.read_bytes(), now=SYSTEM_CLOCK.now())
        invitation = await Membership(db, card, node.url).invite(name, "delegation",
                                                                 timedelta(hours=1))
    finally:
        await db.dispose()
    client = RelayClient(session, node.url, Identity.create(name, "delegation"), node=card)
    await client.register(invitation.text, client.identity.card)
    return client


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    nodes, ids = await _prepare(tmp_path)
    try:
        await asyncio.gather(*(asyncio.to_thread(nodes[n].start)
                               for n in ("kyiv", "istanbul", "moscow")))
        async with aiohttp.ClientSession() as session:
            ua = await _member(session, nodes["kyiv"], "Kyiv HQ")
            ru = await _member(session, nodes["moscow"], "Moscow delegation")
            yield Net(nodes, ids, ua, ru)
    finally:
        for node in nodes.values():
            node.stop()


def envelope(net: Net, text: str) -> tuple[Routing, bytes]:
    sealed = seal(net.ua.identity, [net.ru.identity.card], "note", {"text": text})
    routing = make_envelope(net.ua.identity.signing_key, sealed.data, to=[net.ru.identity.id],
                            origin=net.ids["kyiv"], route=net.route(),
                            destination=net.ids["moscow"])
    return routing, sealed.data


async def until(probe: Callable[[], object], what: str, timeout: float = 45.0) -> None:
    await asyncio.to_thread(eventually, probe, timeout=timeout, what=what)


def count(node: Node, sql: str, *params: object) -> int:
    value = node.query(sql, *params)[0][0]
    assert isinstance(value, int)
    return value


async def test_the_outbox_survives_a_peer_down_and_a_killed_node(net: Net) -> None:
    kyiv, istanbul, geneva, moscow = (net.nodes[n] for n in NAMES)

    # 1. Geneva is down: three envelopes wait in Istanbul's outbox.
    waiting = [envelope(net, f"list {n}") for n in range(3)]
    for routing, sealed in waiting:
        await net.ua.submit(routing, sealed)
    await until(lambda: count(istanbul, "SELECT count(*) FROM outbox WHERE statement_id IS "
                                        "NULL AND attempts >= 1") == 3,
                "three failed attempts to reach Geneva")
    assert count(moscow, "SELECT count(*) FROM envelopes") == 0
    # 2. Istanbul is killed while they wait, and restarted: the outbox is on disk.
    istanbul.kill()
    await asyncio.to_thread(istanbul.start)
    assert count(istanbul, "SELECT count(*) FROM outbox WHERE statement_id IS NULL") == 3
    # 3. Geneva comes back: they arrive.
    await asyncio.to_thread(geneva.start)
    await until(lambda: count(moscow, "SELECT count(*) FROM deliveries") == 3,
                "the three envelopes at Moscow")

    # 4. A burst; Istanbul is killed while it is forwarding it, then restarted.
    # Geneva is paused (SIGSTOP) so that the kill lands while Istanbul's requests
    # to it are in flight, however fast the machine: the kernel has queued them,
    # and Geneva reads them when it continues, after their sender has died.
    geneva.pause()
    burst = [envelope(net, f"burst {n}") for n in range(20)]
    await asyncio.gather(*(net.ua.submit(r, s) for r, s in burst))
    sent = {r.id for r, _ in waiting + burst}
    await until(lambda: count(istanbul, "SELECT count(*) FROM envelopes") == len(sent)
                and count(istanbul, "SELECT count(*) FROM outbox WHERE attempts >= 1") > 0,
                "Istanbul to take the burst and try to forward it", timeout=30)
    istanbul.kill()
    forwarded_before_kill = count(moscow, "SELECT count(*) FROM envelopes")
    geneva.resume()
    await asyncio.to_thread(istanbul.start)
    await until(lambda: count(moscow, "SELECT count(*) FROM deliveries") >= len(sent),
                "every envelope at Moscow")
    await until(lambda: all(count(n, "SELECT count(*) FROM outbox") == 0
                            for n in net.nodes.values()), "every outbox to drain")

    # Exactly once: no envelope lost, none delivered twice, none unexpected.
    delivered = [row[0] for row in moscow.query("SELECT envelope_id FROM deliveries")]
    assert sorted(delivered) == sorted(sent), (len(delivered), len(sent))
    listed = await net.ru.inbox_all()
    assert sorted(item.id for item in listed) == sorted(sent)
    for node in (kyiv, istanbul, geneva):
        per_envelope = node.query("SELECT envelope_id, count(*) FROM statements WHERE "
                                  "kind = 'relayed' AND signer = ? GROUP BY envelope_id",
                                  net.ids[node.directory.name])
        assert sorted(e for e, _ in per_envelope) == sorted(sent)
        assert {n for _, n in per_envelope} == {1}
    assert forwarded_before_kill == len(waiting)  # the kill did interrupt the burst
    print(f"outbox recovery: {len(sent)} sent, {forwarded_before_kill} at Moscow when "
          f"Istanbul was killed, {len(delivered)} delivered, "
          f"{len(sent - set(delivered))} lost, {len(delivered) - len(set(delivered))} "
          "duplicated")

    # The receipts of one of them still come back exactly once each.
    routing, _ = waiting[0]
    fetched_routing, sealed = await net.ru.fetch(routing.id)
    opened = open_sealed(sealed, net.ru.identity, lambda _i: net.ua.identity.card,
                         envelope_to=fetched_routing.to)
    statement = make_statement("opened", routing.id, net.ru.identity.signing_key,
                               recipient=net.ru.identity.id,
                               inner=b64url_encode(opened.inner_digest))
    await net.ru.ack(routing.id, statement)
    await until(lambda: count(kyiv, "SELECT count(*) FROM statements WHERE envelope_id = ?",
                              routing.id) == 8, "eight statements at Kyiv")
    kinds = [row[0] for row in kyiv.query("SELECT kind FROM statements WHERE envelope_id = ? "
                                          "ORDER BY kind", routing.id)]
    assert kinds == sorted(["accepted", "relayed", "relayed", "relayed", "delivered",
                            "opened", "countersigned", "countersigned"])


@pytest.mark.parametrize("restored", ["istanbul", "geneva"])
async def test_an_intermediary_restored_from_a_backup_gets_the_envelope_again(
        net: Net, restored: str) -> None:
    """An intermediary is restored from a backup older than an envelope it was still
    holding (the node after it down): it forgot the envelope, and the node before it,
    having handed it on, kept nothing to push. The sender submits the same envelope
    again (client.resend): Kyiv answers with its first acceptance and pushes the
    envelope once more, and each hop that still holds it pushes it on; it arrives,
    once, with one *relayed* statement per node."""
    kyiv, istanbul, geneva, moscow = (net.nodes[n] for n in NAMES)
    node = net.nodes[restored]
    after = net.nodes[NAMES[NAMES.index(restored) + 1]]
    if restored == "geneva":
        await asyncio.to_thread(geneva.start)
        moscow.stop()
    backup = node.directory.parent / f"{restored}-backup.db"
    node.back_up(backup)

    routing, sealed = envelope(net, "after the backup")
    first = await net.ua.submit(routing, sealed)
    assert first.new
    await until(lambda: count(node, "SELECT count(*) FROM outbox WHERE statement_id IS "
                                    "NULL AND attempts >= 1") == 1,
                f"{restored} to hold the envelope for the next hop")
    assert count(kyiv, "SELECT count(*) FROM outbox WHERE statement_id IS NULL") == 0
    assert kyiv.query("SELECT sealed FROM envelopes WHERE id = ?", routing.id) == [(None,)]

    # The operator restores the backup (operator guide, section 6).
    await asyncio.to_thread(node.restore, backup)
    await asyncio.to_thread(after.start)
    assert count(node, "SELECT count(*) FROM envelopes") == 0

    again = await net.ua.submit(routing, sealed)
    assert not again.new and again.accepted.id == first.accepted.id
    await until(lambda: count(moscow, "SELECT count(*) FROM deliveries") == 1,
                "the envelope at Moscow")
    await until(lambda: all(count(n, "SELECT count(*) FROM outbox") == 0
                            for n in net.nodes.values()), "every outbox to drain")
    assert [item.id for item in await net.ru.inbox_all()] == [routing.id]
    # Until a statement from the end of the route comes back, a node cannot tell a
    # finished journey from one a restore broke: a third submission travels the route
    # again, and each node answers it as the retry it is -- no second delivery, no
    # second statement, no *failed*.
    await net.ua.submit(routing, sealed)
    await until(lambda: all(count(n, "SELECT count(*) FROM outbox") == 0
                            for n in net.nodes.values()), "every outbox to drain again")
    assert count(moscow, "SELECT count(*) FROM deliveries") == 1
    for hop in (kyiv, istanbul, geneva):
        assert count(hop, "SELECT count(*) FROM statements WHERE envelope_id = ? AND "
                          "kind = 'relayed' AND signer = ?",
                     routing.id, net.ids[hop.directory.name]) == 1
        assert count(hop, "SELECT count(*) FROM statements WHERE kind = 'failed'") == 0


async def test_a_repeated_push_that_cannot_get_through_signs_no_failed(net: Net) -> None:
    """After the envelope went through, a resubmission queues the push again; the first
    hop is then down until the envelope expires. The origin gives the repeated push up
    without signing *failed*: the first hop had taken the envelope, as its *relayed*
    statement shows, and a *failed* would tell the sender it did not get through."""
    kyiv, istanbul, geneva, moscow = (net.nodes[n] for n in NAMES)
    await asyncio.to_thread(geneva.start)
    sealed = seal(net.ua.identity, [net.ru.identity.card], "note", {"text": "short-lived"})
    routing = make_envelope(net.ua.identity.signing_key, sealed.data,
                            to=[net.ru.identity.id], origin=net.ids["kyiv"],
                            route=net.route(), destination=net.ids["moscow"],
                            lifetime=timedelta(seconds=20))
    await net.ua.submit(routing, sealed.data)
    await until(lambda: count(moscow, "SELECT count(*) FROM deliveries") == 1,
                "the envelope at Moscow")
    await until(lambda: count(kyiv, "SELECT count(*) FROM statements WHERE kind = "
                                    "'relayed' AND signer = ?", net.ids["istanbul"]) == 1,
                "Istanbul's relayed statement back at Kyiv")
    istanbul.stop()
    again = await net.ua.submit(routing, sealed.data)
    assert not again.new
    assert count(kyiv, "SELECT count(*) FROM outbox WHERE statement_id IS NULL") == 1
    await until(lambda: count(kyiv, "SELECT count(*) FROM outbox") == 0,
                "the repeated push to be given up at expiry", timeout=60)
    assert count(kyiv, "SELECT count(*) FROM statements WHERE kind = 'failed'") == 0
    assert kyiv.query("SELECT sealed FROM envelopes WHERE id = ?", routing.id) == [(None,)]
