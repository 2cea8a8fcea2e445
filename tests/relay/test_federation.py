"""Federation between real nodes in one process (each on its own 127.0.0.1 port and
SQLite file): routing along the sender's route, statements travelling back,
idempotent acceptance, the outbox, and the attacks a peer can try."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from federation_support import (
    as_node,
    chain,
    eventually,
    outbox,
    pin,
    push_doc,
    read_and_ack,
    receipts,
    routed,
    sealed_stored,
    statement_kinds,
    wake,
)
from relay_support import Member, RunningNode
from sqlalchemy import select

from keys import dsse
from keys.clock import SYSTEM_CLOCK, FixedClock
from keys.encoding import b64url_encode, json_dumps
from keys.envelope import parse_routing
from keys.identity import Identity
from keys.seal import SealedHeader
from keys.statements import STATEMENT_TYPE, load_statement, make_statement, parse_statement
from relay import appkeys
from relay.app import create_app
from relay.backoff import next_attempt, retry_delay, uniform
from relay.config import load_config
from relay.errors import BadRequest, ConfigError, StatementInvalid, Unroutable
from relay.rules import check_carried, check_transit
from relay.services.federation import parse_cards
from relay.services.handoff import Handoff
from relay.services.peering import Peering
from relay.storage import schema
from relay.storage.database import Database

ROUTE_KINDS = ["accepted", "relayed", "relayed", "relayed", "delivered", "opened",
               "countersigned", "countersigned"]


# --- pure parts ---------------------------------------------------------------------------

def test_backoff_doubles_is_capped_and_jittered():
    assert retry_delay(1, initial=2, maximum=600, draw=0.0) == 1.0
    assert retry_delay(1, initial=2, maximum=600, draw=0.999) == pytest.approx(2.0, abs=0.01)
    assert retry_delay(4, initial=2, maximum=600, draw=0.0) == 8.0
    assert retry_delay(40, initial=2, maximum=600, draw=0.0) == 300.0  # half the cap
    assert retry_delay(10**6, initial=2, maximum=600, draw=0.5) == 450.0  # no overflow
    with pytest.raises(ValueError):
        retry_delay(0, initial=2, maximum=600, draw=0.0)
    draws = [uniform(lambda n, i=i: bytes([i]) * n) for i in (0, 128, 255)]
    assert draws[0] == 0.0 and 0.49 < draws[1] < 0.51 and 0.99 < draws[2] < 1.0
    # Whole seconds, never sooner than one second after now.
    assert next_attempt(1000, 1, initial=1, maximum=2, random=lambda n: b"\0" * n) == 1001
    later = next_attempt(1000, 30, initial=1, maximum=2, random=lambda n: b"\xff" * n)
    assert later == 1002


@pytest.mark.parametrize("key,value", [
    ("federation_retry_seconds", "0.5"), ("federation_retry_seconds", "nan"),
    ("federation_retry_max_seconds", "1"), ("federation_timeout_seconds", "0"),
    ("federation_poll_seconds", "0.01")])
def test_federation_settings_are_checked(key: str, value: str):
    with pytest.raises(ConfigError, match=key):
        load_config(None, environ={f"BACKCHANNEL_RELAY_{key.upper()}": value})


def _ids(*names: str) -> list[str]:
    return [f"{name}{'x' * (32 - len(name))}" for name in names]


@pytest.fixture(scope="module")
def four(make_identity) -> tuple[Identity, list[Identity], Identity]:
    sender, recipient = make_identity("Kyiv HQ"), make_identity("Moscow")
    nodes = [make_identity(n, "node") for n in ("Kyiv", "Istanbul", "Geneva", "Moscow n")]
    return sender, nodes, recipient


def _routing(sender: Identity, nodes: list[Identity], recipient: Identity):
    from keys.envelope import make_envelope
    from keys.seal import seal

    sealed = seal(sender, [recipient.card], "note", {"text": "x"})
    return make_envelope(sender.signing_key, sealed.data, to=[recipient.id],
                         origin=nodes[0].id, route=[n.id for n in nodes[1:-1]],
                         destination=nodes[-1].id)


def test_cards_verified_once_are_remembered_by_their_exact_bytes(make_identity):
    kyiv = make_identity("Kyiv HQ")
    now = datetime.now(UTC)
    verified: dict = {}
    doc = kyiv.card.envelope.to_dict()
    first = parse_cards([doc], now, verified)
    assert first[kyiv.id].verify_key == kyiv.card.verify_key and len(verified) == 1
    assert parse_cards([doc], now, verified)[kyiv.id] is first[kyiv.id]
    # The same payload under another signature is not the card remembered: verified,
    # and refused.
    forged = {**doc, "signatures": [{**doc["signatures"][0],
                                     "sig": b64url_encode(bytes(64))}]}
    with pytest.raises(BadRequest, match="invalid card"):
        parse_cards([forged], now, verified)
    assert len(verified) == 1


def test_transit_rules(four):
    sender, nodes, recipient = four
    routing = _routing(sender, nodes, recipient)
    k, i, g, m = (n.id for n in nodes)
    check_transit(routing, node_id=g, pusher=i)
    check_transit(routing, node_id=m, pusher=g)
    with pytest.raises(Unroutable, match="skips a hop"):
        check_transit(routing, node_id=m, pusher=i)
    with pytest.raises(Unroutable, match="skips a hop"):
        check_transit(routing, node_id=i, pusher=g)  # backwards
    with pytest.raises(Unroutable, match="not on the envelope's route"):
        check_transit(routing, node_id=k, pusher=i)  # the origin takes members' only
    with pytest.raises(Unroutable, match="not on the envelope's route"):
        check_transit(routing, node_id=_ids("elsewhere")[0], pusher=k)


def test_carried_statement_rules(four):
    sender, nodes, recipient = four
    routing = _routing(sender, nodes, recipient)
    kyiv, ist, gen, mos = nodes
    k, i, g, m = (n.id for n in nodes)
    rid = routing.id

    def st(kind: str, who: Identity, **fields: str):
        return make_statement(kind, rid, who.signing_key, **fields)

    accepted = st("accepted", kyiv, sender=sender.id)
    relayed_k = st("relayed", kyiv, previous=sender.id, next=i)
    relayed_i = st("relayed", ist, previous=k, next=g)
    relayed_g = st("relayed", gen, previous=i, next=m)
    delivered = st("delivered", mos, recipient=recipient.id)
    opened = st("opened", recipient, recipient=recipient.id, inner=b64url_encode(b"1" * 32))
    counter_g = st("countersigned", gen, statement=opened.id)
    # Forward into Geneva: what stands before it.
    for good in (accepted, relayed_k, relayed_i):
        check_carried(good, routing, node_id=g, forward=True)
    for bad in (relayed_g, delivered, opened, counter_g):
        with pytest.raises(StatementInvalid):
            check_carried(bad, routing, node_id=g, forward=True)
    # Back into Istanbul: what comes after it.
    for good in (relayed_g, delivered, opened, counter_g):
        check_carried(good, routing, node_id=i, forward=False)
    for bad in (accepted, relayed_k, relayed_i,
                st("relayed", gen, previous=k, next=m),            # wrong previous hop
                st("relayed", gen, previous=i, next=k),            # wrong next hop
                st("relayed", mos, previous=g, next=k),            # the destination
                st("countersigned", mos, statement=opened.id),     # not an intermediary
                st("delivered", gen, recipient=recipient.id),      # not the destination
                st("delivered", mos, recipient=sender.id),         # not a recipient
                st("opened", sender, recipient=recipient.id,
                   inner=b64url_encode(b"1" * 32)),                # not its own
                st("failed", gen, next=k, reason="x"),             # wrong next hop
                make_statement("delivered", b64url_encode(b"2" * 32), mos.signing_key,
                               recipient=recipient.id)):           # another envelope
        with pytest.raises(StatementInvalid):
            check_carried(bad, routing, node_id=i, forward=False)


# --- four nodes ---------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def four_urls(request: pytest.FixtureRequest):
    """None (SQLite files) or four databases on the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        yield None
        return
    server = request.getfixturevalue("pg_server")
    urls = [await server.create_database() for _ in range(4)]
    yield urls
    for url in urls:
        await server.drop_database(url)


async def test_a_list_travels_four_nodes_and_every_receipt_comes_back(tmp_path: Path,
                                                                      four_urls):
    nodes = await chain(tmp_path, ["Kyiv", "Istanbul", "Geneva", "Moscow"], urls=four_urls)
    kyiv, ist, gen, mos = nodes
    try:
        ua, ru = await kyiv.join("UA"), await mos.join("RU")
        routing, sealed = routed(ua, [ru], nodes)
        reply = await ua.client.submit(routing, sealed)
        assert reply.status == 201, reply.body
        first = await eventually(lambda: _inbox(ru), what="delivery at Moscow")
        assert [item["id"] for item in first] == [routing.id]
        opened = await read_and_ack(ru, ua, routing.id)

        got = await eventually(lambda: _at_least(ua, routing.id, 8), what="receipts")
        assert [s.kind for s in got] == ROUTE_KINDS
        assert [s.by for s in got] == [kyiv.id, kyiv.id, ist.id, gen.id, mos.id, ru.id,
                                       gen.id, ist.id]
        assert [(s.fields.get("previous"), s.fields.get("next")) for s in got[1:4]] == [
            (ua.id, ist.id), (kyiv.id, gen.id), (ist.id, mos.id)]
        assert {s.fields.get("statement") for s in got[6:]} == {opened.id}
        # The origin hands out the cards of every signer, nodes it never met included.
        answer = (await ua.client.receipts(routing.id)).body
        card_ids = {dsse.Envelope.from_dict(c).signatures[0].keyid for c in answer["cards"]}
        assert card_ids == {kyiv.id, ist.id, gen.id, mos.id, ru.id}

        # Exactly one of everything; nothing left to push; no ciphertext in transit.
        # (An intermediary deletes a pushed row in a commit of its own, after the
        # next node has answered: wait for it rather than race it.)
        await eventually(lambda: _quiet(nodes), what="outboxes to drain")
        for node in (kyiv, ist, gen):
            assert await sealed_stored(node, routing.id) is None
        assert await sealed_stored(mos, routing.id) is not None
        assert (await mos.counts())["deliveries"] == 1
        assert sorted(await statement_kinds(ist, routing.id)) == sorted(
            (s.kind, s.by) for s in got)

        # The sender submits again (a retry): the same receipt, nothing pushed again.
        again = await ua.client.submit(routing, sealed)
        assert again.status == 200 and again.body == reply.body
        assert await outbox(kyiv) == []
        assert len(await receipts(ua, routing.id)) == 8
    finally:
        for node in nodes:
            await node.stop()


async def _inbox(member):
    reply = await member.client.inbox()
    return reply.body["items"]


async def _at_least(member, envelope_id: str, count: int):
    got = await receipts(member, envelope_id)
    return got if len(got) >= count else None


async def test_two_nodes_without_intermediaries(tmp_path: Path):
    nodes = await chain(tmp_path, ["North", "South"])
    try:
        alice, bob = await nodes[0].join("Alice"), await nodes[1].join("Bob")
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201
        await eventually(lambda: _inbox(bob), what="delivery")
        await read_and_ack(bob, alice, routing.id)
        got = await eventually(lambda: _at_least(alice, routing.id, 4), what="receipts")
        assert [s.kind for s in got] == ["accepted", "relayed", "delivered", "opened"]
    finally:
        for node in nodes:
            await node.stop()


async def test_the_origin_hands_its_first_push_over_ready_made(tmp_path: Path):
    """The origin's first push is built from what the submission had in hand (no read
    back) and is the push the outbox worker would build from storage."""
    nodes = await chain(tmp_path, ["North", "Hub", "South"])
    north, hub, south = nodes
    try:
        alice, bob = await north.join("Alice"), await south.join("Bob")
        submission = north.app[appkeys.SUBMISSION]
        handed: list[Handoff] = []
        hand_on = submission.handoff
        assert hand_on is not None

        def recorded(ready: Handoff) -> bool:
            handed.append(ready)
            return hand_on(ready)

        submission.handoff = recorded
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201
        [ready] = handed
        assert (ready.peer, ready.envelope_id) == (hub.id, routing.id)
        assert ready.url == hub.identity.card.home.url
        assert ready.expires_at == int(routing.expires.timestamp())
        doc = json.loads(ready.body)
        assert doc["envelope"] == routing.envelope.to_dict()
        assert doc["sealed"] == b64url_encode(sealed)
        carried = [parse_statement(dsse.Envelope.from_dict(s, max_payload=10_000))
                   for s in doc["statements"]]
        assert [(s.kind, s.by) for s in carried] == await statement_kinds(north, routing.id)
        assert [(s.kind, s.by) for s in carried] == [("accepted", north.id),
                                                     ("relayed", north.id)]
        assert list(parse_cards(doc["cards"], datetime.now(UTC))) == [alice.id, north.id]
        # The very documents stored (not statements signed afresh, not other card bytes).
        async with north.db.read() as conn:
            stored = [json.loads(r.body) for r in await conn.execute(
                select(schema.statements.c.body)
                .where(schema.statements.c.envelope_id == routing.id)
                .order_by(schema.statements.c.seq))]
            card = (await conn.execute(select(schema.members.c.card)
                                       .where(schema.members.c.id == alice.id))).scalar_one()
        assert doc["statements"] == stored
        assert doc["cards"] == [json.loads(card), json.loads(north.identity.card.to_json())]
        await eventually(lambda: _inbox(bob), what="delivery")
        await eventually(lambda: _empty(north), what="the origin's outbox emptied")
        # A repeated submission is answered from storage and hands nothing over again.
        assert (await alice.client.submit(routing, sealed)).status == 200
        assert len(handed) == 1
    finally:
        for node in nodes:
            await node.stop()


@pytest.mark.parametrize("started", [True, False])
async def test_the_origin_wakes_the_outbox_scan_only_for_a_push_not_under_way(
        tmp_path: Path, started: bool):
    nodes = await chain(tmp_path, ["North", "South"])
    north, south = nodes
    try:
        alice, bob = await north.join("Alice"), await south.join("Bob")
        submission = north.app[appkeys.SUBMISSION]
        handed: list[Handoff] = []
        wakes: list[None] = []

        def handoff(ready: Handoff) -> bool:
            handed.append(ready)
            return started  # the worker is not given it: only the wake-up is watched

        submission.handoff = handoff
        submission.wake = lambda: wakes.append(None)
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201
        assert [r.envelope_id for r in handed] == [routing.id]
        assert len(wakes) == (0 if started else 1)
        [row] = await outbox(north)  # the record either way
        assert row.envelope_id == routing.id
    finally:
        for node in nodes:
            await node.stop()


async def test_a_scan_owes_no_second_scan_to_a_handed_over_push(tmp_path: Path):
    """A scan that meets the row of a handed-over push under way leaves it alone and
    does not ask for another scan when that push ends (the push deletes its row or
    wakes the worker itself)."""
    nodes = await chain(tmp_path, ["North", "South"])
    north, south = nodes
    try:
        alice, bob = await north.join("Alice"), await south.join("Bob")
        submission = north.app[appkeys.SUBMISSION]
        submission.handoff = lambda ready: True  # claims the push: nothing is sent
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201
        forwarder = north.app[appkeys.FORWARDER]
        key = (south.id, routing.id, True)
        under_way = asyncio.get_running_loop().create_future()
        forwarder._running[key] = (under_way, [])  # as Forwarder.handoff registers one
        try:
            forwarder._deferred = False
            await forwarder.dispatch()
            assert forwarder._running[key][0] is under_way  # not pushed a second time
            assert forwarder._deferred is False
        finally:
            del forwarder._running[key]
            under_way.cancel()
    finally:
        for node in nodes:
            await node.stop()


async def test_the_worker_says_when_a_handed_over_push_did_not_start(tmp_path: Path):
    """Forwarder.handoff answers False, so that the caller wakes the scan, when the push
    is already under way from storage or no slot is free (the body then waits, prepared,
    for the scan)."""
    from relay.services.forwarder import PER_PEER

    nodes = await chain(tmp_path, ["North", "South"])
    north, south = nodes
    try:
        forwarder = north.app[appkeys.FORWARDER]
        loop = asyncio.get_running_loop()
        busy = [loop.create_future() for _ in range(PER_PEER)]

        def ready(envelope: str) -> Handoff:
            return Handoff(south.id, envelope, south.url, b"{}", 2**40)

        forwarder._running[(south.id, "scanned", True)] = (busy[0], [1])
        assert forwarder.handoff(ready("scanned")) is False
        assert (south.id, "scanned", True) not in forwarder._prepared
        for n, future in enumerate(busy[1:], start=2):
            forwarder._running[(south.id, f"other{n}", True)] = (future, [n])
        assert forwarder.handoff(ready("waits")) is False  # the peer's slots are full
        assert (south.id, "waits", True) in forwarder._prepared
        assert (south.id, "waits", True) not in forwarder._running
    finally:
        forwarder._running.clear()
        for future in busy:
            future.cancel()
        for node in nodes:
            await node.stop()


async def _empty(node: RunningNode) -> bool | None:
    return not await outbox(node) or None


async def test_origin_refuses_a_first_hop_it_does_not_peer_with(tmp_path: Path):
    nodes = await chain(tmp_path, ["Kyiv", "Istanbul", "Moscow"])
    kyiv, ist, mos = nodes
    try:
        ua, ru = await kyiv.join("UA"), await mos.join("RU")
        before = await kyiv.counts()
        routing, sealed = routed(ua, [ru], [kyiv, mos])  # skips Istanbul: no peering
        reply = await ua.client.submit(routing, sealed)
        reply.problem(400, "unroutable")
        assert "does not peer with the first hop" in reply.body["detail"]
        # A route that leaves and comes back.
        looped, looped_sealed = routed(ua, [ru], [kyiv, ist, kyiv])
        (await ua.client.submit(looped, looped_sealed)).problem(400, "unroutable")
        assert await kyiv.counts() == before and await outbox(kyiv) == []
    finally:
        for node in nodes:
            await node.stop()


# --- attacks ------------------------------------------------------------------------------

async def _delivered_chain(tmp_path: Path):
    nodes = await chain(tmp_path, ["Kyiv", "Istanbul", "Geneva", "Moscow"])
    kyiv, _ist, _gen, mos = nodes
    ua, ru = await kyiv.join("UA"), await mos.join("RU")
    routing, sealed = routed(ua, [ru], nodes)
    assert (await ua.client.submit(routing, sealed)).status == 201
    await eventually(lambda: _inbox(ru), what="delivery")
    await eventually(lambda: _quiet(nodes), what="outboxes to drain")
    return nodes, ua, ru, routing, sealed


async def _snapshot(nodes: list[RunningNode]):
    return [(await n.counts(), await outbox(n)) for n in nodes]


async def test_pushes_from_strangers_and_off_route_nodes_are_refused(tmp_path: Path,
                                                                     make_identity):
    nodes, ua, ru, routing, _sealed = await _delivered_chain(tmp_path)
    kyiv, _ist, gen, mos = nodes
    try:
        fresh, fresh_sealed = routed(ua, [ru], nodes, text="another list")
        stranger = Identity.create("Rogue node", "node")
        before = await _snapshot(nodes)
        # An unpinned node pushes an envelope (and statements).
        client = await as_node(stranger, gen)
        reply = await client.call("POST", "/v1/federation/envelopes",
                                  push_doc(fresh, fresh_sealed, cards=[ua.card]))
        reply.problem(403, "not-a-peer")
        assert "does not peer with the signing key" in reply.body["detail"]
        reply = await client.call("POST", "/v1/federation/statements",
                                  {"envelope": routing.id, "statements": []})
        reply.problem(403, "not-a-peer")
        # A member's key is no peer either.
        (await (await as_node(ua.identity, gen)).call(
            "POST", "/v1/federation/envelopes",
            push_doc(fresh, fresh_sealed, cards=[ua.card]))).problem(403, "not-a-peer")
        # A pinned peer that is not on the route (Kyiv pins Geneva for this).
        await pin(mos, kyiv)
        reply = await (await as_node(kyiv, mos)).call(
            "POST", "/v1/federation/envelopes", push_doc(fresh, fresh_sealed, cards=[ua.card]))
        reply.problem(400, "unroutable")
        assert "skips a hop" in reply.body["detail"]
        # Unsigned.
        (await client.send("POST", "/v1/federation/envelopes",
                           body=json.dumps(push_doc(fresh, fresh_sealed)).encode())
         ).problem(401, "signature-missing")
        assert await _snapshot(nodes) == before
    finally:
        for node in nodes:
            await node.stop()


async def test_an_intermediary_cannot_alter_the_route_or_skip_a_hop(tmp_path: Path):
    nodes, ua, ru, _routing, _sealed = await _delivered_chain(tmp_path)
    kyiv, ist, gen, mos = nodes
    try:
        fresh, fresh_sealed = routed(ua, [ru], nodes, text="another list")
        from_istanbul = await as_node(ist, gen)
        newcomer = await kyiv.join("UA 2")
        before = await _snapshot(nodes)
        # Istanbul rewrites the route (here: Geneva is to deliver to Istanbul's friend),
        # keeping the sender's signature: it no longer verifies.
        payload = json.loads(fresh.envelope.payload)
        payload["destination"] = Identity.create("Friend node", "node").id
        forged = dataclasses.replace(fresh.envelope, payload=json_dumps(payload))
        forged_routing = parse_routing(forged)
        reply = await from_istanbul.call("POST", "/v1/federation/envelopes",
                                         push_doc(forged_routing, fresh_sealed,
                                                  cards=[ua.card]))
        reply.problem(400, "envelope-invalid")
        assert "altered on the way" in reply.body["detail"]
        # Istanbul drops Geneva and pushes straight to Moscow (Moscow pins Istanbul).
        await pin(mos, ist)
        reply = await (await as_node(ist, mos)).call(
            "POST", "/v1/federation/envelopes", push_doc(fresh, fresh_sealed, cards=[ua.card]))
        reply.problem(400, "unroutable")
        assert f"only from the node before it on the route ({gen.id})" in reply.body["detail"]
        # Istanbul swaps in other sealed bytes.
        _other, other_sealed = routed(ua, [ru], nodes, text="other bytes")
        reply = await from_istanbul.call("POST", "/v1/federation/envelopes",
                                         push_doc(fresh, other_sealed, cards=[ua.card]))
        reply.problem(400, "envelope-invalid")
        # From a sender Geneva has never met, without the sender's card: refused.
        unknown, unknown_sealed = routed(newcomer, [ru], nodes)
        reply = await from_istanbul.call("POST", "/v1/federation/envelopes",
                                         push_doc(unknown, unknown_sealed))
        reply.problem(400, "envelope-invalid")
        assert "sender's card did not come" in reply.body["detail"]
        # A forged "relayed" by Kyiv carried along: Istanbul signs it with its own key.
        body = {"v": 1, "type": "relayed", "envelope": fresh.id, "by": kyiv.id,
                "at": "2026-11-23T09:00:00Z", "previous": ua.id, "next": ist.id}
        fake = parse_statement(dsse.sign(STATEMENT_TYPE, json_dumps(body),
                                         ist.identity.signing_key))
        reply = await from_istanbul.call(
            "POST", "/v1/federation/envelopes",
            push_doc(fresh, fresh_sealed, statements=[fake], cards=[ua.card, kyiv.identity.card]))
        reply.problem(400, "statement-invalid")
        assert "does not verify" in reply.body["detail"]
        assert await _snapshot(nodes) == before
    finally:
        for node in nodes:
            await node.stop()


async def test_replays_are_idempotent_or_refused(tmp_path: Path):
    nodes, ua, ru, routing, sealed = await _delivered_chain(tmp_path)
    _kyiv, ist, gen, mos = nodes
    try:
        await eventually(lambda: _quiet(nodes), what="outboxes to drain")
        before = await _snapshot(nodes)
        from_istanbul = await as_node(ist, gen)
        doc = push_doc(routing, sealed, cards=[ua.card])
        data = json.dumps(doc).encode()
        headers = from_istanbul.signed_headers("POST", "/v1/federation/envelopes", data)
        # Istanbul replays the old envelope: accepted as already stored, nothing happens.
        first = await from_istanbul.send("POST", "/v1/federation/envelopes", body=data,
                                         headers=headers)
        assert first.status == 200 and first.body == {"id": routing.id, "stored": False}
        # The very same signed request again: a replay.
        (await from_istanbul.send("POST", "/v1/federation/envelopes", body=data,
                                  headers=headers)).problem(401, "replay")
        assert await _snapshot(nodes) == before
        assert (await mos.counts())["deliveries"] == 1
        # An old envelope that has expired (and been forgotten) is refused as expired.
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=2))
        old, old_sealed = routed(ua, [ru], nodes, clock=clock, lifetime_seconds=3600)
        (await from_istanbul.call("POST", "/v1/federation/envelopes",
                                  push_doc(old, old_sealed, cards=[ua.card]))
         ).problem(400, "expired")
        assert await _snapshot(nodes) == before
    finally:
        for node in nodes:
            await node.stop()


async def _quiet(nodes):
    # Nodes are read one after another, so a push that moves a row from a node not
    # yet read to one already read slips through a single pass: ask for two passes.
    for _ in range(2):
        if not all([await outbox(n) == [] for n in nodes]):
            return False
        await asyncio.sleep(0.1)
    return True


async def _acked_chain(tmp_path: Path):
    """_delivered_chain, then read and acknowledged: all eight receipts at the origin
    and every outbox empty."""
    nodes, ua, ru, routing, _sealed = await _delivered_chain(tmp_path)
    try:
        await read_and_ack(ru, ua, routing.id)
        await eventually(lambda: _at_least(ua, routing.id, 8), what="receipts")
        await eventually(lambda: _quiet(nodes), what="outboxes to drain")
    except BaseException:
        for node in nodes:
            await node.stop()
        raise
    return nodes, ua, ru, routing


async def test_receipts_cannot_be_forged_or_rewritten_on_the_way_back(tmp_path: Path):
    nodes, ua, _ru, routing = await _acked_chain(tmp_path)
    kyiv, ist, gen, mos = nodes
    try:
        genuine = {s.kind: s for s in await receipts(ua, routing.id)}
        before = await _snapshot(nodes)
        from_geneva = await as_node(gen, ist)

        async def push(statements, cards):
            return await from_geneva.call("POST", "/v1/federation/statements", {
                "envelope": routing.id,
                "statements": [json.loads(s.to_json()) if hasattr(s, "to_json") else s
                               for s in statements],
                "cards": [c.envelope.to_dict() for c in cards]})

        # What can never be an envelope id is refused before any query.
        for bad in ("A" * 42 + "\x00", "A" * 42 + "\u00e9", "A" * 44, 7):
            (await from_geneva.call("POST", "/v1/federation/statements",
                                    {"envelope": bad, "statements": []})
             ).problem(400, "bad-request")

        # Geneva forges a "relayed" in Moscow's name (signed with its own key).
        forged = _forged_relayed(routing, nodes)
        reply = await push([forged], [mos.identity.card])
        reply.problem(400, "statement-invalid")
        # ... or a relayed of its own that hides Istanbul (previous hop: Kyiv).
        own = make_statement("relayed", routing.id, gen.identity.signing_key,
                             previous=kyiv.id, next=mos.id)
        reply = await push([own], [])
        reply.problem(400, "statement-invalid")
        assert "wrong previous hop" in reply.body["detail"]
        # Geneva rewrites Moscow's delivered receipt (to another recipient), keeping the
        # signature.
        delivered = genuine["delivered"].signed
        payload = json.loads(delivered.payload)
        payload["recipient"] = ua.id
        rewritten = dataclasses.replace(delivered, payload=json_dumps(payload))
        reply = await push([rewritten.to_dict()], [mos.identity.card])
        reply.problem(400, "statement-invalid")
        # ... or its time.
        payload = json.loads(delivered.payload)
        payload["at"] = "2026-11-23T09:00:00Z"
        rewritten = dataclasses.replace(delivered, payload=json_dumps(payload))
        (await push([rewritten.to_dict()], [mos.identity.card])).problem(400,
                                                                         "statement-invalid")
        # A countersignature of an opened statement nobody has seen.
        stray = make_statement("countersigned", routing.id, gen.identity.signing_key,
                               statement=b64url_encode(b"\x07" * 32))
        (await push([stray], [])).problem(400, "statement-invalid")
        # Statements from a node that is not the next hop (Moscow pushes to Istanbul).
        await pin(ist, mos)
        reply = await (await as_node(mos, ist)).call(
            "POST", "/v1/federation/statements",
            {"envelope": routing.id, "statements": [json.loads(genuine["delivered"].to_json())]})
        reply.problem(403, "forbidden")
        # The genuine statements again: nothing new is stored, nothing countersigned twice.
        again = await push([genuine["delivered"], genuine["opened"]], [])
        assert again.status == 200 and again.body == {"stored": 0}
        assert await _snapshot(nodes) == before
    finally:
        for node in nodes:
            await node.stop()


async def test_a_signer_states_each_thing_once_forward_and_back(tmp_path: Path):
    nodes, ua, ru, routing = await _acked_chain(tmp_path)
    kyiv, ist, gen, mos = nodes
    try:
        before = await _snapshot(nodes)
        hour_ago = FixedClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))

        # Forward: two *accepted* by the origin (signed at two times). Passed on with
        # Istanbul's own *relayed*, more than the next hop takes: Geneva would refuse
        # and Istanbul would sign *failed*, blaming Geneva. Refused at the door.
        fresh, fresh_sealed = routed(ua, [ru], nodes, text="another list")
        accepted = [make_statement("accepted", fresh.id, kyiv.identity.signing_key,
                                   clock=clock, sender=ua.id)
                    for clock in (SYSTEM_CLOCK, hour_ago)]
        relayed = make_statement("relayed", fresh.id, kyiv.identity.signing_key,
                                 previous=ua.id, next=ist.id)
        from_kyiv = await as_node(kyiv, ist)
        reply = await from_kyiv.call("POST", "/v1/federation/envelopes", push_doc(
            fresh, fresh_sealed, statements=[*accepted, relayed], cards=[ua.card]))
        reply.problem(400, "statement-invalid")
        assert "two accepted statements" in reply.body["detail"]

        # Back: Moscow's *delivered* for RU signed again (another time), and a second
        # *opened* by RU: Istanbul keeps the first of each, passes nothing on, and
        # countersigns nothing more.
        delivered = make_statement("delivered", routing.id, mos.identity.signing_key,
                                   clock=hour_ago, recipient=ru.id)
        opened = make_statement("opened", routing.id, ru.identity.signing_key,
                                clock=hour_ago, recipient=ru.id,
                                inner=b64url_encode(b"\x01" * 32))
        from_geneva = await as_node(gen, ist)
        # ... nor Geneva's countersignature of that second *opened* (passed on, it
        # would make Kyiv refuse the whole push: it never saw the *opened*).
        orphan = make_statement("countersigned", routing.id, gen.identity.signing_key,
                                statement=opened.id)
        for batch in ([delivered], [opened], [delivered, opened], [orphan, opened]):
            reply = await from_geneva.call("POST", "/v1/federation/statements", {
                "envelope": routing.id, "statements": [json.loads(s.to_json()) for s in batch],
                "cards": [mos.identity.card.envelope.to_dict(), ru.card.envelope.to_dict()]})
            assert reply.status == 200 and reply.body == {"stored": 0}, reply.body
        assert await _snapshot(nodes) == before

        # The same forward push with one *accepted* is taken (the refusal above was
        # for the second one).
        reply = await from_kyiv.call("POST", "/v1/federation/envelopes", push_doc(
            fresh, fresh_sealed, statements=[accepted[0], relayed], cards=[ua.card]))
        assert reply.status == 201, reply.body
    finally:
        for node in nodes:
            await node.stop()


async def test_a_statements_push_rolled_back_is_never_answered_2xx(tmp_path: Path,
                                                                   monkeypatch):
    """Whatever breaks a constraint while a push's statements are stored rolls all of
    them back: the answer must be one the pusher retries (5xx), not 200."""
    import relay.services.federation as service
    from relay.storage.committer import IntegrityError as JobIntegrityError

    nodes, _ua, ru, routing = await _acked_chain(tmp_path)
    _kyiv, ist, gen, mos = nodes
    try:
        before = await _snapshot(nodes)

        def broken(*_args):
            raise JobIntegrityError("IntegrityError")

        monkeypatch.setattr(service, "add_statements", broken)
        delivered = make_statement("delivered", routing.id, mos.identity.signing_key,
                                   recipient=ru.id)
        reply = await (await as_node(gen, ist)).call("POST", "/v1/federation/statements", {
            "envelope": routing.id, "statements": [json.loads(delivered.to_json())],
            "cards": [mos.identity.card.envelope.to_dict()]})
        reply.problem(500, "internal")
        assert await _snapshot(nodes) == before
    finally:
        for node in nodes:
            await node.stop()


def _forged_relayed(routing, nodes: list[RunningNode]):
    """A *relayed* in Moscow's name (Geneva → Kyiv), signed by Geneva: refused by
    any node that checks it."""
    kyiv, _ist, gen, mos = nodes
    body = {"v": 1, "type": "relayed", "envelope": routing.id, "by": mos.id,
            "at": "2026-11-23T09:00:00Z", "previous": gen.id, "next": kyiv.id}
    return parse_statement(dsse.sign(STATEMENT_TYPE, json_dumps(body),
                                     gen.identity.signing_key))


async def _queued_back(nodes: list[RunningNode], routing, forged, genuine) -> None:
    """At Kyiv, forget the ``genuine`` statements; at Istanbul, store ``forged`` and
    queue it, then them, back to Kyiv; wake Istanbul's worker."""
    from relay.services.federation import insert_statements
    from relay.storage import federation as stored

    kyiv, ist, _gen, _mos = nodes
    async with kyiv.db.write() as conn:
        await conn.execute(schema.statements.delete().where(
            schema.statements.c.id.in_([s.id for s in genuine])))
    async with ist.db.write() as conn:
        await insert_statements(conn, routing.id, [forged])
        await stored.enqueue(conn, kyiv.id, routing.id,
                             [forged.id, *(s.id for s in genuine)],
                             int(SYSTEM_CLOCK.now().timestamp()))
    wake(ist)


async def _statement_ids(node: RunningNode, envelope_id: str) -> set[str]:
    async with node.db.read() as conn:
        return {row.id for row in await conn.execute(
            select(schema.statements.c.id).where(
                schema.statements.c.envelope_id == envelope_id))}


async def test_one_refused_statement_does_not_take_the_others_with_it(tmp_path: Path):
    """Istanbul holds, queued back to Kyiv, a statement Kyiv refuses for good (here a
    forged one, as a bug or a newer version elsewhere could make) and Moscow's genuine
    *opened*. The refused push is split: the *opened* reaches Kyiv, the other is
    dropped."""
    nodes, ua, _ru, routing = await _acked_chain(tmp_path)
    kyiv = nodes[0]
    try:
        opened = next(s for s in await receipts(ua, routing.id) if s.kind == "opened")
        forged = _forged_relayed(routing, nodes)
        await _queued_back(nodes, routing, forged, [opened])
        await eventually(lambda: _quiet(nodes), what="Istanbul's outbox to drain")
        ids = await _statement_ids(kyiv, routing.id)
        assert opened.id in ids and forged.id not in ids
    finally:
        for node in nodes:
            await node.stop()


async def test_a_split_push_keeps_its_order_through_a_temporary_failure(tmp_path: Path,
                                                                       monkeypatch):
    """The refused push is split; the *opened*'s own push then times out. The
    countersignature queued after it must not go ahead alone (Kyiv would refuse it for
    good, naming an *opened* it has not seen): the rest waits, in order, and arrives."""
    from relay.peer_client import Outcome
    from relay.services.forwarder import STATEMENTS_PATH

    nodes, ua, _ru, routing = await _acked_chain(tmp_path)
    kyiv, ist, _gen, _mos = nodes
    try:
        genuine = await receipts(ua, routing.id)
        opened = next(s for s in genuine if s.kind == "opened")
        counter = next(s for s in genuine if s.kind == "countersigned" and s.by == ist.id)
        forged = _forged_relayed(routing, nodes)
        forwarder = ist.app[appkeys.FORWARDER]
        real_post = forwarder.client.post
        sent: list[list[str]] = []

        async def flaky(url: str, path: str, data: bytes) -> Outcome:
            if path == STATEMENTS_PATH:
                ids = [load_statement(s).id for s in json.loads(data)["statements"]]
                sent.append(ids)
                if ids == [opened.id] and sent.count([opened.id]) == 1:
                    return Outcome(False, True, "TimeoutError")
            return await real_post(url, path, data)

        monkeypatch.setattr(forwarder.client, "post", flaky)
        await _queued_back(nodes, routing, forged, [opened, counter])
        await eventually(lambda: _quiet(nodes), what="Istanbul's outbox to drain")
        assert sent[:3] == [[forged.id, opened.id, counter.id], [forged.id], [opened.id]]
        assert [counter.id] not in sent  # it waited for the opened, and went with it
        ids = await _statement_ids(kyiv, routing.id)
        assert {opened.id, counter.id} <= ids and forged.id not in ids
    finally:
        for node in nodes:
            await node.stop()


@pytest.mark.postgres
async def test_a_statements_push_that_loses_a_race_still_stores_the_rest(tmp_path: Path,
                                                                        pg_server):
    """Two pushes of statements about one envelope overlap: A carries *delivered*, B
    *delivered* and *opened*. B's *delivered* conflicts with A's when A commits; B must
    still store its *opened*, or not answer 2xx (its sender forgets what it pushed)."""
    import asyncpg

    from relay.storage.database import sqlite_url

    url = await pg_server.create_database()
    (tmp_path / "m").mkdir()
    nodes = await chain(tmp_path, ["Kyiv", "Moscow"], urls=[url, sqlite_url(tmp_path / "m")])
    kyiv, mos = nodes
    try:
        ua, ru = await kyiv.join("UA"), await mos.join("RU")
        routing, sealed = routed(ua, [ru], nodes)
        assert (await ua.client.submit(routing, sealed)).status == 201
        await eventually(lambda: sealed_stored(mos, routing.id), what="envelope at Moscow")
        delivered = make_statement("delivered", routing.id, mos.identity.signing_key,
                                   recipient=ru.id)
        opened = make_statement("opened", routing.id, ru.identity.signing_key,
                                recipient=ru.id, inner=b64url_encode(b"\x01" * 32))
        from_moscow = await as_node(mos, kyiv)

        def push(statements, cards):
            return from_moscow.call("POST", "/v1/federation/statements", {
                "envelope": routing.id,
                "statements": [json.loads(s.to_json()) for s in statements],
                "cards": [c.envelope.to_dict() for c in cards]})

        # Push A's transaction is held open after its insert: another transaction holds
        # an uncommitted row of the cards table that A's job then waits for.
        other = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            held = other.transaction()
            await held.start()
            await other.execute("INSERT INTO cards (id, card, added_at) VALUES ($1, $2, 0)",
                                mos.id, mos.identity.card.to_json())
            first = asyncio.create_task(push([delivered], [mos.identity.card]))
            await asyncio.sleep(0.7)
            second = asyncio.create_task(push([delivered, opened],
                                              [mos.identity.card, ru.card]))
            await asyncio.sleep(0.7)
            await held.rollback()
        finally:
            await other.close()
        a, b = await first, await second
        # Whichever committed first (the sleeps only make the race likely), the two
        # answers account for both statements, and both are stored.
        assert a.status == b.status == 200, (a.body, b.body)
        assert a.body["stored"] + b.body["stored"] == 2, (a.body, b.body)
        kinds = sorted(kind for kind, _ in await statement_kinds(kyiv, routing.id))
        assert kinds == ["accepted", "delivered", "opened", "relayed"]
    finally:
        for node in nodes:
            await node.stop()


async def test_receipts_for_a_peer_unpinned_meanwhile_wait_and_are_shown(tmp_path: Path,
                                                                         four_urls):
    """South's operator unpins North while Bob's receipts must still go back there: they
    wait in the outbox (not dropped, not pushed), `relay peers list` names them under
    the unpinned peer, and they go once North is pinned again."""
    from relay.cli import peers_text, queue_json, queue_text, removal_text

    nodes = await chain(tmp_path, ["North", "South"],
                        urls=four_urls[:2] if four_urls else None)
    north, south = nodes
    try:
        alice, bob = await north.join("Alice"), await south.join("Bob")
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201
        await eventually(lambda: _inbox(bob), what="delivery")
        await eventually(lambda: _at_least(alice, routing.id, 2), what="relayed")
        await eventually(lambda: _quiet([south]), what="South's outbox to drain")
        operator = Database.open(south.database_url)
        try:
            assert await Peering(operator, south.id).remove(north.id) is None  # nothing queued
        finally:
            await operator.dispose()
        # Bob fetches and acknowledges: *delivered* and *opened* must go back to North.
        await read_and_ack(bob, alice, routing.id)

        async def waiting():
            queue = (await Peering(south.db, south.id).queues()).get(north.id)
            return queue if queue is not None and queue.receipts == 2 and queue.attempts else None

        queue = await eventually(waiting, what="a refused push of the receipt")
        assert (queue.envelopes, queue.last_error) == (0, "not-a-peer-here")
        pinned = await Peering(south.db, south.id).list()
        assert north.id not in {p.id for p in pinned}
        listed = peers_text(pinned, await Peering(south.db, south.id).queues())
        at = listed.index(f"{north.id}  (not pinned)")
        assert listed[at + 1].startswith("    queued: 2 receipts since ")
        assert listed[at + 1].endswith("; pin it again to deliver them")
        assert removal_text(north.id, queue)[1:] == [
            "2 receipts queued for it wait until it is pinned again (`backchannel relay peers "
            "list` shows them) or retention purges their envelopes"]
        assert queue_json(queue)["receipts"] == 2
        text = queue_text(queue)
        assert text.startswith("queued: 2 receipts since ") and "last error not-a-peer-here" in text
        assert [s.kind for s in await receipts(alice, routing.id)] == [
            "accepted", "relayed"]  # not lost, not yet there
        await pin(south, north)
        wake(south)
        got = await eventually(lambda: _at_least(alice, routing.id, 4), what="opened")
        assert [s.kind for s in got] == ["accepted", "relayed", "delivered", "opened"]
        await eventually(lambda: _quiet([south]), what="South's outbox to drain")
        assert await Peering(south.db, south.id).queues() == {}
    finally:
        for node in nodes:
            await node.stop()


async def test_removing_a_peer_says_what_stays_queued_for_it(tmp_path: Path, four_urls):
    """`relay peers remove` of a peer that is down with an envelope queued for it: the
    removal reports the envelope, read from the outbox after the commit."""
    from relay.cli import removal_text

    nodes = await chain(tmp_path, ["North", "South"],
                        urls=four_urls[:2] if four_urls else None)
    north, south = nodes
    try:
        alice, bob = await north.join("Alice"), await south.join("Bob")
        await south.stop()
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201

        async def tried():
            rows = [r for r in await outbox(north) if r.statement_id is None]
            return rows if rows and rows[0].attempts >= 1 else None

        await eventually(tried, what="a failed push to South")
        queue = await Peering(north.db, north.id).remove(south.id)
        assert queue is not None
        assert (queue.peer, queue.envelopes, queue.receipts, queue.last_error) == (
            south.id, 1, 0, "ClientConnectorError")
        assert removal_text(south.id, queue) == [
            f"removed peer {south.id}",
            "1 envelope queued for it is retried until it expires, then reported to the "
            "sender as failed"]
    finally:
        await north.stop()


# --- failures travel back -----------------------------------------------------------------

async def test_an_unreachable_next_hop_until_expiry_gives_failed(tmp_path: Path):
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    nodes = await chain(tmp_path, ["Kyiv", "Istanbul", "Geneva", "Moscow"], clock=clock)
    kyiv, ist, gen, mos = nodes
    try:
        ua, ru = await kyiv.join("UA"), await mos.join("RU")
        await gen.stop()  # Geneva is down
        routing, sealed = routed(ua, [ru], nodes, clock=clock, lifetime_seconds=600)
        assert (await ua.client.submit(routing, sealed)).status == 201

        async def tried():
            rows = [r for r in await outbox(ist) if r.statement_id is None]
            return rows if rows and rows[0].attempts >= 1 else None

        rows = await eventually(tried, what="a failed push to Geneva")
        assert rows[0].peer == gen.id and rows[0].last_error == "ClientConnectorError"
        assert rows[0].next_attempt_at > int(clock.now().timestamp())
        assert await sealed_stored(ist, routing.id) is not None  # waits in the outbox
        clock.advance(seconds=601)
        wake(ist)
        got = await eventually(lambda: _kinds(ua, routing.id, "failed"), what="failed")
        failed = got["failed"]
        assert failed.by == ist.id and failed.fields["next"] == gen.id
        assert "before the envelope expired" in failed.fields["reason"]
        assert "ClientConnectorError" in failed.fields["reason"]
        # Istanbul deletes the pushed *failed* row after Kyiv answered, in a commit of
        # its own: wait for it rather than race it.
        await eventually(lambda: _quiet([ist]), what="Istanbul's outbox to drain")
        assert await sealed_stored(ist, routing.id) is None
    finally:
        for node in (kyiv, ist, mos):
            await node.stop()


async def _kinds(member, envelope_id: str, wanted: str):
    got = {s.kind: s for s in await receipts(member, envelope_id)}
    return got if wanted in got else None


async def test_a_refusal_by_the_next_hop_gives_failed(tmp_path: Path):
    nodes = await chain(tmp_path, ["North", "South"])
    north, south = nodes
    try:
        alice, bob = await north.join("Alice"), await south.join("Bob")
        await south.membership().revoke(bob.id)
        routing, sealed = routed(alice, [bob], nodes)
        assert (await alice.client.submit(routing, sealed)).status == 201
        got = await eventually(lambda: _kinds(alice, routing.id, "failed"), what="failed")
        assert got["failed"].by == north.id and got["failed"].fields["next"] == south.id
        assert got["failed"].fields["reason"] == "the next hop refused the envelope (not-found)"
        assert (await south.counts())["envelopes"] == 0
    finally:
        for node in nodes:
            await node.stop()


def test_sealed_header_is_checked_at_every_hop():
    # check_fresh is shared with submissions; one case is enough here.
    from relay.errors import BadRequest
    from relay.rules import check_fresh

    origin, destination = (Identity.create(n, "node").id for n in ("A", "B"))
    routing = parse_routing(_routing_for_header(origin, destination))
    header = SealedHeader(b"", b"", (), b"")
    with pytest.raises(BadRequest, match="recipients differ"):
        check_fresh(routing, header, now=routing.created)
    # Ids that no identity can have (a NUL, another alphabet) are refused before any
    # lookup: PostgreSQL fails on a NUL instead of finding nothing.
    for bad in ("a", origin[:-1] + "\x00", origin.upper()):
        routing = parse_routing(_routing_for_header(bad, destination))
        with pytest.raises(BadRequest, match="not an identity id"):
            check_fresh(routing, header, now=routing.created)


def _routing_for_header(origin: str, destination: str):
    from keys.envelope import make_envelope
    from keys.seal import seal

    sender, recipient = Identity.create("S", "delegation"), Identity.create("R", "delegation")
    sealed = seal(sender, [recipient.card], "note", {"text": "x"})
    return make_envelope(sender.signing_key, sealed.data, to=[recipient.id], origin=origin,
                         destination=destination).envelope


async def test_recipients_may_look_up_a_remote_sender_others_may_not(tmp_path: Path):
    nodes, ua, ru, _routing, _sealed = await _delivered_chain(tmp_path)
    mos = nodes[-1]
    try:
        reply = await ru.client.card_of(ua.id)
        assert reply.status == 200
        assert dsse.Envelope.from_dict(reply.body["card"]).signatures[0].keyid == ua.id
        bystander = await mos.join("Bystander")
        (await bystander.client.card_of(ua.id)).problem(404, "not-found")
        # Nodes on the route are not members either.
        (await ru.client.card_of(nodes[1].id)).problem(404, "not-found")
    finally:
        for node in nodes:
            await node.stop()


# --- peer nonces and pinning, inside the accepting transaction ----------------------------

async def _restarted(stopped: RunningNode) -> RunningNode:
    """The same node (identity, configuration, database) started again, on a new port."""
    app = create_app(stopped.config, node=stopped.identity, database_url=stopped.database_url)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return RunningNode(stopped.identity, stopped.config, stopped.database_url,
                       f"http://127.0.0.1:{runner.addresses[0][1]}", runner,
                       Database.open(stopped.database_url), signed_url=stopped.config.url)


async def test_a_peers_replayed_pushes_are_refused_after_a_restart(tmp_path: Path, four_urls):
    """A peer's nonce is committed with the push it came with, also when the push was
    refused (inside the transaction or before it): a replay to the restarted node is
    refused as a replay without being processed."""
    kyiv, ist = await chain(tmp_path, ["Kyiv", "Istanbul"],
                            urls=four_urls[:2] if four_urls else None)
    sent = []
    try:
        ua, ru = await kyiv.join("UA"), await ist.join("RU")
        stranger = Member(Identity.create("Nobody", "delegation"), ua.client)
        from_kyiv = await as_node(kyiv, ist)
        good, good_sealed = routed(ua, [ru], [kyiv, ist])
        lost, lost_sealed = routed(ua, [stranger], [kyiv, ist], text="to nobody here")
        bad, _ = routed(ua, [ru], [kyiv, ist], text="sent with the wrong bytes")
        for doc, status in ((push_doc(good, good_sealed, cards=[ua.card]), 201),
                            (push_doc(lost, lost_sealed, cards=[ua.card]), 404),
                            (push_doc(bad, lost_sealed, cards=[ua.card]), 400)):
            data = json.dumps(doc).encode()
            headers = from_kyiv.signed_headers("POST", "/v1/federation/envelopes", data)
            reply = await from_kyiv.send("POST", "/v1/federation/envelopes", body=data,
                                         headers=headers)
            assert reply.status == status, reply.body
            sent.append((data, headers))
        data = json.dumps({"envelope": good.id, "statements": []}).encode()
        headers = from_kyiv.signed_headers("POST", "/v1/federation/statements", data)
        # Statements about an envelope come back only from the next hop: refused.
        (await from_kyiv.send("POST", "/v1/federation/statements", body=data,
                              headers=headers)).problem(403, "forbidden")
        statements = (data, headers)
        counts = await ist.counts()
    finally:
        await ist.stop()
    second = await _restarted(ist)
    try:
        client = await as_node(kyiv, second)
        for data, headers in sent:
            (await client.send("POST", "/v1/federation/envelopes", body=data,
                               headers=headers)).problem(401, "replay")
        data, headers = statements
        (await client.send("POST", "/v1/federation/statements", body=data,
                           headers=headers)).problem(401, "replay")
        assert await second.counts() == counts
        # Signed afresh, the push refused inside the transaction is processed again.
        (await client.call("POST", "/v1/federation/envelopes",
                           push_doc(lost, lost_sealed, cards=[ua.card]))).problem(404, "not-found")
    finally:
        await second.stop()
        await kyiv.stop()


async def test_a_push_from_a_peer_removed_meanwhile_is_refused_and_stores_nothing(
        tmp_path: Path, four_urls):
    """The peer's key is cached by the node (node ids derive from keys), but whether it
    is still pinned is decided in the transaction that would store the push."""
    kyiv, ist = await chain(tmp_path, ["Kyiv", "Istanbul"],
                            urls=four_urls[:2] if four_urls else None)
    try:
        ua, ru = await kyiv.join("UA"), await ist.join("RU")
        from_kyiv = await as_node(kyiv, ist)
        first, first_sealed = routed(ua, [ru], [kyiv, ist])
        assert (await from_kyiv.call("POST", "/v1/federation/envelopes",
                                     push_doc(first, first_sealed, cards=[ua.card]))
                ).status == 201  # Kyiv's key is now known to Istanbul
        # Istanbul's operator removes Kyiv (`relay peers remove`, another process).
        operator = Database.open(ist.database_url)
        try:
            await Peering(operator, ist.id).remove(kyiv.id)
        finally:
            await operator.dispose()
        before = await ist.counts()
        later, later_sealed = routed(ua, [ru], [kyiv, ist], text="after the removal")
        data = json.dumps(push_doc(later, later_sealed, cards=[ua.card])).encode()
        headers = from_kyiv.signed_headers("POST", "/v1/federation/envelopes", data)
        reply = await from_kyiv.send("POST", "/v1/federation/envelopes", body=data,
                                     headers=headers)
        reply.problem(403, "not-a-peer")
        assert "does not peer with the signing key" in reply.body["detail"]
        (await from_kyiv.call("POST", "/v1/federation/statements",
                              {"envelope": first.id, "statements": []})
         ).problem(403, "not-a-peer")
        # A refused push of an envelope already stored, and a malformed one.
        (await from_kyiv.call("POST", "/v1/federation/envelopes",
                              push_doc(first, first_sealed, cards=[ua.card]))
         ).problem(403, "not-a-peer")
        (await from_kyiv.call("POST", "/v1/federation/envelopes", {"envelope": 1})
         ).problem(403, "not-a-peer")
        assert await ist.counts() == before  # not even the nonces
        # Pinned again, the very same signed push is accepted: the refusal wrote nothing.
        await pin(ist, kyiv)
        reply = await from_kyiv.send("POST", "/v1/federation/envelopes", body=data,
                                     headers=headers)
        assert reply.status == 201, reply.body
    finally:
        await ist.stop()
        await kyiv.stop()
