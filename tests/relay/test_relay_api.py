"""The HTTP API of a real node on a 127.0.0.1 port, on both backends.

Every rejection asserts the status, the problem type, and that nothing was stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import http_message_signatures as hms
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519 as crypto_ed25519
from openapi_spec_validator import validate as validate_openapi
from relay_support import Member, Reply, RunningNode, SignedClient, sealed_for, start_node

from keys import dsse
from keys.card import load_card
from keys.clock import SYSTEM_CLOCK, FixedClock
from keys.encoding import b64url_decode, b64url_encode
from keys.envelope import make_envelope
from keys.identity import Identity
from keys.seal import open_sealed
from keys.statements import load_statement, make_statement, verify_statement
from relay import appkeys
from relay.invitations import encode_invitation, parse_invitation
from relay.services.membership import Membership


def now() -> int:
    return int(SYSTEM_CLOCK.now().timestamp())


async def pair(node: RunningNode) -> tuple[Member, Member]:
    return await node.join("Kyiv"), await node.join("Moscow")


def opened_for(member: Member, routing_id: str, sealed: bytes, sender: Member):
    opened = open_sealed(sealed, member.identity, lambda _i: sender.card)
    return make_statement("opened", routing_id, member.identity.signing_key,
                          recipient=member.id, inner=b64url_encode(opened.inner_digest))


# --- node information, health, metrics, OpenAPI ------------------------------------------

async def test_node_info_carries_a_verifiable_node_card(node: RunningNode):
    client = await node.client()
    reply = await client.send("GET", "/v1/node")
    assert reply.status == 200 and reply.body["api"] == 1
    card = load_card(dsse.Envelope.from_dict(reply.body["card"]), now=SYSTEM_CLOCK.now())
    assert card.id == node.id and card.role == "node"
    assert card.home is not None and card.home.url == node.config.url
    assert reply.body["limits"]["max_sealed_bytes"] == node.config.max_sealed_bytes


async def test_healthz_metrics_and_unknown_route(node: RunningNode):
    client = await node.client()
    assert (await client.send("GET", "/healthz")).body == {"status": "ok"}
    (await client.send("GET", "/v1/nothing-here")).problem(404, "not-found")
    (await client.send("DELETE", "/v1/inbox")).problem(405, "method-not-allowed")
    metrics = await client.send("GET", "/metrics")
    assert metrics.status == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    text = metrics.raw.decode()
    assert 'backchannel_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' \
        in text
    assert 'backchannel_problems_total{type="not-found"}' not in text  # aiohttp's own 404
    assert "backchannel_envelopes_accepted_total 0.0" in text


async def test_openapi_describes_exactly_the_routes(node: RunningNode):
    client = await node.client()
    doc = (await client.send("GET", "/v1/openapi.json")).body
    assert doc["openapi"] == "3.1.0"
    validate_openapi(doc)  # an independent OpenAPI 3.1 validator
    routes = {(r.resource.canonical, r.method.lower()) for r in node.app.router.routes()
              if r.method != "HEAD"}
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == described
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["responses"], path
            refs = str(op)
            if "'security'" in refs:
                assert "401" in op["responses"], path


# --- registration -------------------------------------------------------------------------

async def test_register_then_invitation_is_spent(node: RunningNode):
    invitation = await node.invite(label="Kyiv coordination HQ")
    parsed = parse_invitation(invitation)
    assert parsed.node == node.id and parsed.url == node.config.url
    assert parsed.fingerprint == node.identity.card.fingerprint.replace(" ", "")
    alice = Identity.create("Kyiv", "delegation")
    client = await node.client(alice)
    reply = await client.register(invitation)
    assert reply.status == 201
    assert reply.body["member"] == {"id": alice.id, "role": "delegation",
                                    "label": "Kyiv coordination HQ"}
    assert load_card(dsse.Envelope.from_dict(reply.body["node"]), now=SYSTEM_CLOCK.now()).id \
        == node.id
    before = await node.counts()
    # Reused by someone else, and by the same identity: one and the same answer.
    other = await node.client(Identity.create("Other", "delegation"))
    (await other.register(invitation)).problem(403, "invitation-invalid")
    (await client.register(invitation)).problem(403, "invitation-invalid")
    assert await node.counts() == before


async def test_forged_expired_and_wrong_role_invitations(node: RunningNode):
    alice = Identity.create("Kyiv", "delegation")
    client = await node.client(alice)
    real = parse_invitation(await node.invite())
    forged = encode_invitation(type(real)(real.url, real.node, real.fingerprint,
                                          secrets.token_bytes(32), real.role, real.expires))
    past = FixedClock(datetime.now(UTC) - timedelta(days=3))
    expired = await node.invite(lifetime=timedelta(hours=1), clock=past)
    for_intermediary = await node.invite(role="intermediary")
    before = await node.counts()
    (await client.register(forged)).problem(403, "invitation-invalid")
    (await client.register(expired)).problem(403, "invitation-invalid")
    (await client.register(for_intermediary)).problem(403, "invitation-invalid")
    # The bare secret is accepted in place of the whole string, with the same checks.
    (await client.register(b64url_encode(secrets.token_bytes(32)))).problem(
        403, "invitation-invalid")
    assert await node.counts() == before


async def test_register_requires_proof_of_possession(node: RunningNode):
    alice = Identity.create("Kyiv", "delegation")
    mallory = Identity.create("Mallory", "delegation")
    client = await node.client(mallory)
    invitation = await node.invite()
    before = await node.counts()
    # Mallory presents Alice's card but can only sign with her own key.
    (await client.register(invitation, card=alice.card)).problem(401, "signature-invalid")
    assert await node.counts() == before
    # The invitation is still usable by its rightful holder.
    assert (await (await node.client(alice)).register(invitation)).status == 201


async def test_register_malformed_inputs(node: RunningNode):
    alice = Identity.create("Kyiv", "delegation")
    client = await node.client(alice)
    invitation = await node.invite()
    before = await node.counts()
    card = alice.card.envelope.to_dict()
    (await client.call("POST", "/v1/register", {"invitation": invitation})).problem(
        400, "bad-request")
    (await client.call("POST", "/v1/register", {"invitation": "bcinv1.!!!", "card": card})
     ).problem(400, "bad-request")
    tampered = dict(card, payload=card["payload"][:-8] + "AAAAAAA=")
    (await client.call("POST", "/v1/register", {"invitation": invitation, "card": tampered})
     ).problem(400, "bad-request")
    (await client.call("POST", "/v1/register", body=b'{"invitation": "x", "card": ')
     ).problem(400, "bad-request")
    (await client.call("POST", "/v1/register", body=b"[]")).problem(400, "bad-request")
    (await client.call("POST", "/v1/register", {"invitation": invitation, "card": card},
                       content_type="text/plain")).problem(415, "unsupported-media-type")
    node_card = Identity.create("Rogue node", "node")
    (await (await node.client(node_card)).register(invitation)).problem(403, "forbidden")
    assert await node.counts() == before


async def test_register_twice_is_a_conflict(node: RunningNode):
    alice = await node.join("Kyiv")
    second = await node.invite()
    before = await node.counts()
    (await alice.client.register(second)).problem(409, "conflict")
    assert await node.counts() == before


# --- request authentication ---------------------------------------------------------------

async def test_unsigned_forged_expired_and_unknown_signatures(node: RunningNode):
    alice = await node.join("Kyiv")
    client = alice.client
    before = await node.counts()
    (await client.send("GET", "/v1/inbox")).problem(401, "signature-missing")
    headers = client.signed_headers("GET", "/v1/inbox", b"")
    headers["Signature"] = headers["Signature"][:8] + ("A" if headers["Signature"][8] != "A"
                                                       else "B") + headers["Signature"][9:]
    (await client.send("GET", "/v1/inbox", headers=headers)).problem(401, "signature-invalid")
    # Signed for another path: the target URI is covered.
    headers = client.signed_headers("GET", "/v1/inbox?after=5", b"")
    (await client.send("GET", "/v1/inbox", headers=headers)).problem(401, "signature-invalid")
    (await client.call("GET", "/v1/inbox", created=now() - 3600)).problem(
        401, "signature-expired")
    (await client.call("GET", "/v1/inbox", created=now() + 3600)).problem(
        401, "signature-expired")
    stranger = Identity.create("Stranger", "delegation")
    (await client.call("GET", "/v1/inbox", identity=stranger)).problem(401, "signature-invalid")
    # The body is covered by Content-Digest.
    headers = client.signed_headers("POST", "/v1/envelopes/x/ack", b'{"opened":null}')
    (await client.send("POST", "/v1/envelopes/x/ack", body=b'{"opened": null}',
                       headers=headers)).problem(401, "signature-invalid")
    assert await node.counts() == before


async def test_replayed_request_is_refused(node: RunningNode):
    alice, bob = await pair(node)
    routing, sealed = sealed_for(alice, [bob], node.id)
    body = b'{"envelope": %b, "sealed": "%b"}' % (routing.envelope.to_json(),
                                                  b64url_encode(sealed).encode())
    headers = alice.client.signed_headers("POST", "/v1/envelopes", body)
    first = await alice.client.send("POST", "/v1/envelopes", body=body, headers=headers)
    assert first.status == 201
    again = await alice.client.send("POST", "/v1/envelopes", body=body, headers=headers)
    again.problem(401, "replay")
    # A replayed GET too (a fresh signature of the same request is fine).
    headers = alice.client.signed_headers("GET", "/v1/inbox", b"")
    assert (await alice.client.send("GET", "/v1/inbox", headers=headers)).status == 200
    (await alice.client.send("GET", "/v1/inbox", headers=headers)).problem(401, "replay")
    assert (await alice.client.inbox()).status == 200


async def test_revoked_member_is_refused(node: RunningNode):
    alice, bob = await pair(node)
    assert await node.membership().revoke(alice.id) == "member"
    routing, sealed = sealed_for(alice, [bob], node.id)
    before = await node.counts()
    (await alice.client.submit(routing, sealed)).problem(403, "forbidden")
    (await alice.client.inbox()).problem(403, "forbidden")
    assert await node.counts() == before
    # Unknown and revoked members look the same to other members.
    unknown = await bob.client.card_of(Identity.create("x", "delegation").id)
    revoked = await bob.client.card_of(alice.id)
    unknown.problem(404, "not-found")
    revoked.problem(404, "not-found")
    assert unknown.body == revoked.body
    # And as recipients.
    routing, sealed = sealed_for(bob, [alice], node.id)
    (await bob.client.submit(routing, sealed)).problem(404, "not-found")
    assert await node.counts() == before


async def test_member_keys_are_cached_at_registration_and_at_start(database_url: str):
    """A member's first request needs no database read: its key is cached when it
    registers, and every member's (with its revocation) when the node starts."""
    node = await start_node(database_url)
    try:
        alice, bob = await pair(node)
        known = node.app[appkeys.AUTH]._known
        assert {alice.id, bob.id} <= known.keys()
        assert await node.membership().revoke(bob.id) == "member"
    finally:
        await node.stop()
    again = await start_node(database_url)
    try:
        known = again.app[appkeys.AUTH]._known
        assert not known[alice.id].revoked and known[bob.id].revoked
        assert known[alice.id].caller.key.raw == alice.identity.signing_key.public.raw
        as_alice = SignedClient(await again.session(), again, alice.identity)
        as_bob = SignedClient(await again.session(), again, bob.identity)
        assert (await as_alice.inbox()).status == 200
        (await as_bob.inbox()).problem(403, "forbidden")
        # A revocation once cached is never reset by refilling the cache.
        again.app[appkeys.AUTH].welcome(bob.id, "delegation", bob.identity.signing_key.public)
        assert known[bob.id].revoked
        (await as_bob.inbox()).problem(403, "forbidden")
    finally:
        await again.stop()


async def test_interop_request_signed_by_http_message_signatures(node: RunningNode):
    """A request signed by an independent RFC 9421 implementation is accepted."""
    alice = await node.join("Kyiv")
    path = "/v1/inbox?after=0&limit=10"
    url = node.signed_url + path

    class Message:
        def __init__(self) -> None:
            self.method, self.url, self.headers = "GET", url, {}

    message = Message()
    key = crypto_ed25519.Ed25519PrivateKey.from_private_bytes(alice.identity.signing_key.seed())
    signer = hms.HTTPMessageSigner(signature_algorithm=hms.algorithms.ED25519,
                                   key_resolver=hms.MappingKeyResolver(
                                       public_keys={}, private_keys={alice.id: key}))
    signer.sign(message, key_id=alice.id, nonce=secrets.token_urlsafe(12), label="sig1",
                body=b"", created=dt.datetime.now(dt.UTC),
                covered_component_ids=("@method", "@authority", "@target-uri",
                                       "content-digest"))
    reply = await alice.client.send("GET", path, headers=dict(message.headers))
    assert reply.status == 200, reply.body
    assert reply.body == {"items": [], "next": 0}
    # The same signature again is a replay, whoever produced it.
    (await alice.client.send("GET", path, headers=dict(message.headers))).problem(401, "replay")


async def test_rate_limit_per_identity(database_url: str):
    node = await start_node(database_url, rate_per_second=0.01, rate_burst=4)
    try:
        alice, bob = await pair(node)  # registering spends one token each
        statuses = [(await alice.client.inbox()).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = (await alice.client.inbox()).problem(429, "rate-limited")
        assert int(limited.headers["Retry-After"]) >= 1
        # Another identity has its own bucket.
        assert (await bob.client.inbox()).status == 200
    finally:
        await node.stop()


# --- submission ---------------------------------------------------------------------------

async def test_submit_is_idempotent_and_receipted(node: RunningNode):
    alice, bob = await pair(node)
    carol = await node.join("Geneva")
    routing, sealed = sealed_for(alice, [bob, carol], node.id)
    first = await alice.client.submit(routing, sealed)
    assert first.status == 201 and first.body["id"] == routing.id
    receipt = load_statement(first.body["receipt"])
    verify_statement(receipt, node.identity.card.verify_key)
    assert (receipt.kind, receipt.envelope, receipt.fields["sender"]) == \
        ("accepted", routing.id, alice.id)
    counts = await node.counts()
    assert (counts["envelopes"], counts["deliveries"], counts["statements"]) == (1, 2, 1)
    again = await alice.client.submit(routing, sealed)
    assert again.status == 200 and again.body == first.body
    assert await node.counts() == counts


async def test_same_content_under_another_envelope_conflicts(node: RunningNode):
    alice, bob = await pair(node)
    routing, sealed = sealed_for(alice, [bob], node.id)
    assert (await alice.client.submit(routing, sealed)).status == 201
    before = await node.counts()
    other = make_envelope(alice.identity.signing_key, sealed, to=[bob.id], origin=node.id,
                          destination=node.id, lifetime=timedelta(hours=5))
    assert other.id != routing.id and other.content == routing.content
    (await alice.client.submit(other, sealed)).problem(409, "conflict")
    assert await node.counts() == before


async def test_submission_rejections_store_nothing(node: RunningNode):
    alice, bob = await pair(node)
    carol = await node.join("Geneva")
    before = await node.counts()
    client = alice.client

    # Someone else's envelope, submitted by Alice.
    routing, sealed = sealed_for(carol, [bob], node.id)
    (await client.submit(routing, sealed)).problem(403, "forbidden")
    # Sealed bytes that are not the envelope's content.
    routing, sealed = sealed_for(alice, [bob], node.id)
    _, other_sealed = sealed_for(alice, [bob], node.id)
    (await client.submit(routing, other_sealed)).problem(400, "envelope-invalid")
    # A signature that does not verify.
    bad = dsse.Envelope(routing.envelope.payload_type, routing.envelope.payload,
                        (dsse.Signature(alice.id, bytes(64)),))
    (await client.call("POST", "/v1/envelopes", {"envelope": bad.to_dict(),
                                                 "sealed": b64url_encode(sealed)})
     ).problem(400, "envelope-invalid")
    # Another destination node.
    routing2, sealed2 = sealed_for(alice, [bob], node.id,
                                   destination=Identity.create("n", "node").id)
    (await client.submit(routing2, sealed2)).problem(400, "unroutable")
    # Expired.
    past = FixedClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=2))
    routing3, sealed3 = sealed_for(alice, [bob], node.id, clock=past, lifetime=timedelta(days=1))
    (await client.submit(routing3, sealed3)).problem(400, "expired")
    # An unknown recipient.
    ghost = Member(Identity.create("Ghost", "delegation"), client)
    routing4, sealed4 = sealed_for(alice, [bob, ghost], node.id)
    (await client.submit(routing4, sealed4)).problem(404, "not-found")
    # Sealed header recipients differing from the envelope's.
    _, sealed5 = sealed_for(alice, [bob, carol], node.id)
    routing5 = make_envelope(alice.identity.signing_key, sealed5, to=[bob.id],
                             origin=node.id, destination=node.id)
    (await client.submit(routing5, sealed5)).problem(400, "bad-request")
    # Malformed documents.
    env = routing.envelope.to_dict()
    for doc in ({"envelope": env}, {"envelope": env, "sealed": "not base64!"},
                {"envelope": env, "sealed": b64url_encode(sealed), "extra": 1},
                {"envelope": {"payload": "x"}, "sealed": b64url_encode(sealed)},
                {"envelope": env, "sealed": b64url_encode(b"{}")}):
        (await client.call("POST", "/v1/envelopes", doc)).problem(400, "bad-request")
    (await client.call("POST", "/v1/envelopes", body=b"\xff\xfe")).problem(400, "bad-request")
    (await client.call("POST", "/v1/envelopes", {"envelope": env},
                       content_type="application/x-www-form-urlencoded")).problem(
        415, "unsupported-media-type")
    assert await node.counts() == before


async def test_oversize_bodies_are_refused_before_buffering(database_url: str):
    node = await start_node(database_url, max_sealed_bytes=4096, max_json_bytes=4096)
    try:
        alice, bob = await pair(node)
        before = await node.counts()
        limit = 4096 * 4 // 3 + 64 * 1024
        body = b'{"envelope": {}, "sealed": "' + b"A" * limit + b'"}'
        headers = alice.client.signed_headers("POST", "/v1/envelopes", body)
        # Declared length over the limit.
        (await alice.client.send("POST", "/v1/envelopes", body=body, headers=headers)
         ).problem(413, "too-large")

        # Chunked (no declared length): refused while streaming.
        async def chunks():
            for start in range(0, len(body), 8192):
                yield body[start:start + 8192]

        async with alice.client.session.post(node.url + "/v1/envelopes", data=chunks(),
                                             headers={**headers,
                                                      "Content-Type": "application/json"}
                                             ) as resp:
            assert resp.status == 413
            assert (await resp.json(content_type=None))["type"].endswith("/too-large")
        # Within the HTTP limit but a sealed message above max_sealed_bytes.
        routing, sealed = sealed_for(alice, [bob], node.id, body={"pad": "x" * 6000})
        (await alice.client.submit(routing, sealed)).problem(413, "too-large")
        # Small JSON endpoints have their own limit.
        (await alice.client.call("POST", "/v1/envelopes/x/ack", body=b" " * 5000)).problem(
            413, "too-large")
        assert await node.counts() == before
    finally:
        await node.stop()


# --- inbox, fetch, ack, receipts ----------------------------------------------------------

async def test_inbox_fetch_ack_receipts(node: RunningNode):
    alice, bob = await pair(node)
    carol = await node.join("Geneva")
    routing, sealed = sealed_for(alice, [bob], node.id)
    assert (await alice.client.submit(routing, sealed)).status == 201

    page = (await bob.client.inbox()).body
    assert [i["id"] for i in page["items"]] == [routing.id]
    item = page["items"][0]
    assert item["size"] == len(sealed) and page["next"] == item["cursor"]
    assert dsse.Envelope.from_dict(item["envelope"]).digest() == routing.envelope.digest()
    assert (await bob.client.inbox(after=page["next"])).body == {"items": [],
                                                                 "next": page["next"]}
    assert (await alice.client.inbox()).body["items"] == []  # senders have no copy

    # Strangers learn nothing, whatever they ask.
    before = await node.counts()
    for reply in (await carol.client.fetch(routing.id), await carol.client.receipts(routing.id),
                  await carol.client.ack(routing.id), await bob.client.fetch("A" * 43),
                  await bob.client.fetch("short")):
        reply.problem(404, "not-found")
    assert await node.counts() == before

    fetched = await bob.client.fetch(routing.id)
    assert fetched.status == 200
    assert b64url_decode(fetched.body["sealed"], max_bytes=10**7) == sealed
    assert (await bob.client.fetch(routing.id)).status == 200  # a second fetch...
    statements = [load_statement(s) for s in (await alice.client.receipts(routing.id))
                  .body["statements"]]
    assert [s.kind for s in statements] == ["accepted", "delivered"]  # ...signs nothing new
    verify_statement(statements[1], node.identity.card.verify_key)
    assert statements[1].fields["recipient"] == bob.id
    assert (await alice.client.fetch(routing.id)).status == 200  # the sender may fetch

    opened = opened_for(bob, routing.id, sealed, alice)
    assert (await bob.client.ack(routing.id, opened.signed.to_dict())).body == \
        {"acknowledged": True}
    assert (await bob.client.ack(routing.id)).status == 200  # idempotent
    assert (await bob.client.inbox()).body["items"] == []
    bundle = [load_statement(s) for s in (await bob.client.receipts(routing.id))
              .body["statements"]]
    assert [s.kind for s in bundle] == ["accepted", "delivered", "opened"]
    verify_statement(bundle[2], bob.card.verify_key)


async def test_ack_rejects_bad_opened_statements(node: RunningNode):
    alice, bob = await pair(node)
    routing, sealed = sealed_for(alice, [bob], node.id)
    other, other_sealed = sealed_for(alice, [bob], node.id)
    assert (await alice.client.submit(routing, sealed)).status == 201
    assert (await alice.client.submit(other, other_sealed)).status == 201
    before = await node.counts()
    wrong_envelope = opened_for(bob, other.id, other_sealed, alice)
    (await bob.client.ack(routing.id, wrong_envelope.signed.to_dict())).problem(
        400, "statement-invalid")
    by_alice = make_statement("opened", routing.id, alice.identity.signing_key,
                              recipient=alice.id, inner=b64url_encode(bytes(32)))
    (await bob.client.ack(routing.id, by_alice.signed.to_dict())).problem(
        400, "statement-invalid")
    good = opened_for(bob, routing.id, sealed, alice)
    forged = dsse.Envelope(good.signed.payload_type, good.signed.payload,
                           (dsse.Signature(bob.id, bytes(64)),))
    (await bob.client.ack(routing.id, forged.to_dict())).problem(400, "statement-invalid")
    accepted = make_statement("accepted", routing.id, bob.identity.signing_key, sender=bob.id)
    (await bob.client.ack(routing.id, accepted.signed.to_dict())).problem(
        400, "statement-invalid")
    (await bob.client.ack(routing.id, {"payload": 1})).problem(400, "bad-request")
    (await bob.client.call("POST", f"/v1/envelopes/{routing.id}/ack", {"opened": None,
                                                                       "more": 1})
     ).problem(400, "bad-request")
    # The sender is not a recipient: nothing to acknowledge.
    (await alice.client.ack(routing.id)).problem(404, "not-found")
    assert await node.counts() == before
    assert len((await bob.client.inbox()).body["items"]) == 2


async def test_inbox_paging_and_bounds(node: RunningNode):
    alice, bob = await pair(node)
    ids = []
    for _ in range(5):
        routing, sealed = sealed_for(alice, [bob], node.id)
        assert (await alice.client.submit(routing, sealed)).status == 201
        ids.append(routing.id)
    seen, after = [], 0
    while True:
        page = (await bob.client.inbox(after=after, limit=2)).body
        if not page["items"]:
            break
        cursors = [i["cursor"] for i in page["items"]]
        assert cursors == sorted(cursors) and cursors[0] > after
        seen += [i["id"] for i in page["items"]]
        after = page["next"]
    assert seen == ids
    for query in ("?limit=0", "?limit=501", "?after=-1", "?after=abc", "?limit=1e3"):
        (await bob.client.call("GET", "/v1/inbox" + query)).problem(400, "bad-request")


async def test_member_card_lookup(node: RunningNode):
    alice, bob = await pair(node)
    reply = await alice.client.card_of(bob.id)
    assert reply.status == 200
    assert load_card(dsse.Envelope.from_dict(reply.body["card"]), now=SYSTEM_CLOCK.now()).id \
        == bob.id
    (await alice.client.card_of("x" * 200)).problem(404, "not-found")


# --- WebSocket push -----------------------------------------------------------------------

async def test_websocket_push_of_new_deliveries(node: RunningNode):
    alice, bob = await pair(node)
    ws = await bob.client.websocket()
    try:
        routing, sealed = sealed_for(alice, [bob], node.id)
        assert (await alice.client.submit(routing, sealed)).status == 201
        push = await ws.receive_json(timeout=10)
        cursor = (await bob.client.inbox()).body["items"][0]["cursor"]
        assert push == {"type": "envelope", "cursor": cursor, "id": routing.id}
        # A duplicate submission is not a new delivery: the next push is the next envelope.
        assert (await alice.client.submit(routing, sealed)).status == 200
        routing2, sealed2 = sealed_for(alice, [bob], node.id)
        assert (await alice.client.submit(routing2, sealed2)).status == 201
        assert (await ws.receive_json(timeout=10))["id"] == routing2.id
    finally:
        await ws.close()


async def test_websocket_bad_auth_closes_4401(node: RunningNode):
    alice, bob = await pair(node)
    stranger = Identity.create("Stranger", "delegation")
    session = bob.client.session
    cases = [
        lambda c: {"type": "auth", "id": bob.id, "sig": b64url_encode(bytes(64))},
        lambda c: {"type": "auth", "id": stranger.id, "sig": b64url_encode(
            stranger.signing_key.sign(b"backchannel/v1/ws-auth\x00" + node.id.encode()
                                      + b"\x00" + b64url_decode(c["nonce"], max_bytes=32)))},
        # Alice signs, claiming to be Bob.
        lambda c: {"type": "auth", "id": bob.id, "sig": b64url_encode(
            alice.identity.signing_key.sign(b"backchannel/v1/ws-auth\x00" + node.id.encode()
                                            + b"\x00" + b64url_decode(c["nonce"],
                                                                      max_bytes=32)))},
        lambda c: {"type": "hello"},
        lambda c: "not json",
        # Deeper than any JSON decoder's recursion; a NUL and a wrong alphabet in the
        # id (PostgreSQL refuses a NUL in text: it must never reach a query).
        lambda c: "[" * 2000 + "]" * 2000,
        lambda c: {"type": "auth", "id": "a\u0000b", "sig": b64url_encode(bytes(64))},
        lambda c: {"type": "auth", "id": bob.id.upper(), "sig": b64url_encode(bytes(64))},
    ]
    for make in cases:
        ws = await session.ws_connect(node.url + "/v1/ws")
        challenge = await ws.receive_json(timeout=10)
        payload = make(challenge)
        if isinstance(payload, str):
            await ws.send_str(payload)
        else:
            await ws.send_json(payload)
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401, (payload, msg)
        await ws.close()


async def test_websocket_session_of_revoked_member_is_closed(database_url: str):
    node = await start_node(database_url, ws_recheck_seconds=0.05)
    try:
        alice, bob = await pair(node)
        ws = await bob.client.websocket()
        await node.membership().revoke(bob.id)  # as `relay revoke` would, from outside
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4403
        # Alice's session is unaffected.
        ws_alice = await alice.client.websocket()
        routing, sealed = sealed_for(alice, [alice], node.id)
        assert (await alice.client.submit(routing, sealed)).status == 201
        assert (await ws_alice.receive_json(timeout=10))["id"] == routing.id
        await ws_alice.close()
    finally:
        await node.stop()


async def test_ids_that_cannot_exist_are_not_found_on_every_backend(node: RunningNode):
    # PostgreSQL answers an error, not "no row", for a NUL in text: such an id must
    # be refused before any query, with the same answer as an unknown id.
    alice, _bob = await pair(node)
    before = await node.counts()
    nul_envelope = "A" * 42 + "%00"
    for reply in (await alice.client.card_of("%00" * 10),
                  await alice.client.card_of("A" * 32),
                  await alice.client.fetch(nul_envelope),
                  await alice.client.receipts(nul_envelope),
                  await alice.client.ack(nul_envelope),
                  await alice.client.fetch("A" * 42 + "%C3%A9")):
        reply.problem(404, "not-found")
    assert await node.counts() == before


async def _deliver(node: RunningNode, sender: Identity, recipient: Identity) -> int:
    """Submit one envelope from ``sender`` to ``recipient``; the recipient's inbox
    cursor for it."""
    alice = Member(sender, await node.client(sender))
    bob = Member(recipient, await node.client(recipient))
    routing, sealed = sealed_for(alice, [bob], node.id)
    assert (await alice.client.submit(routing, sealed)).status == 201
    items = (await bob.client.inbox()).body["items"]
    return next(i["cursor"] for i in items if i["id"] == routing.id)


async def test_inbox_cursors_only_grow_over_a_restore_from_a_backup(tmp_path: Path):
    """A member holds the cursors it was given; a node restored from an older backup
    must not hand them out again (a watching client skips a cursor at or below its
    own): the cursor sequence leaps at every start."""
    import sqlite3

    from relay.storage.database import sqlite_url
    from relay.storage.mailbox import CURSOR_LEAP

    url = sqlite_url(tmp_path)
    node = await start_node(url)
    alice, bob = await pair(node)
    try:
        first = await _deliver(node, alice.identity, bob.identity)
        backup = tmp_path / "backup.db"
        source, copy = sqlite3.connect(tmp_path / "relay.db"), sqlite3.connect(backup)
        source.backup(copy)
        source.close()
        copy.close()
        handed_out = [await _deliver(node, alice.identity, bob.identity) for _ in range(2)]
    finally:
        await node.stop()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"relay.db{suffix}").unlink(missing_ok=True)
    backup.rename(tmp_path / "relay.db")
    node = await start_node(url)
    try:
        after = await _deliver(node, alice.identity, bob.identity)
    finally:
        await node.stop()
    assert first < max(handed_out) < after
    assert after > first + CURSOR_LEAP


async def test_inbox_cursors_leap_at_each_start_on_every_backend(database_url: str):
    node = await start_node(database_url)
    alice, bob = await pair(node)
    try:
        before = await _deliver(node, alice.identity, bob.identity)
    finally:
        await node.stop()
    node = await start_node(database_url)
    try:
        after = await _deliver(node, alice.identity, bob.identity)
    finally:
        await node.stop()
    from relay.storage.mailbox import CURSOR_LEAP

    assert before + CURSOR_LEAP < after < before + 3 * CURSOR_LEAP


async def test_websocket_auth_timeout(database_url: str):
    node = await start_node(database_url, ws_auth_timeout=0.2)
    try:
        session = (await node.client()).session
        ws = await session.ws_connect(node.url + "/v1/ws")
        await ws.receive_json(timeout=10)
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4408
    finally:
        await node.stop()


async def test_websocket_auth_deadline_is_not_reset_by_pings(database_url: str):
    # aiohttp's receive(timeout=...) restarts its timer after each ping it answers:
    # a client pinging every 0.1 s must still be closed at the 0.5 s deadline.
    node = await start_node(database_url, ws_auth_timeout=0.5)
    try:
        session = (await node.client()).session
        ws = await session.ws_connect(node.url + "/v1/ws", autoping=False)
        await ws.receive_json(timeout=10)
        started = asyncio.get_running_loop().time()

        async def ping() -> None:
            while not ws.closed:
                await ws.ping()
                await asyncio.sleep(0.1)

        pinger = asyncio.create_task(ping())
        try:
            msg = await ws.receive(timeout=10)
            while (msg.type == aiohttp.WSMsgType.PONG
                   and asyncio.get_running_loop().time() - started < 5):
                msg = await ws.receive(timeout=10)
        finally:
            pinger.cancel()
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4408, msg
    finally:
        await node.stop()


async def test_websockets_waiting_to_authenticate_are_bounded(database_url: str, caplog):
    """Beyond ``ws_unauthenticated_max`` connections in the auth phase, the upgrade is
    refused with a 429 problem; a slot frees when a connection authenticates, fails
    or goes away, and authenticated sessions do not count."""
    node = await start_node(database_url, ws_unauthenticated_max=2, ws_auth_timeout=30)
    gate = node.app[appkeys.WS_GATE]
    try:
        alice = await node.join("Kyiv")
        session = (await node.client()).session
        waiting = [await session.ws_connect(node.url + "/v1/ws") for _ in range(2)]
        for ws in waiting:
            assert (await ws.receive_json(timeout=10))["type"] == "challenge"

        async def refused() -> aiohttp.WSServerHandshakeError:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(node.url + "/v1/ws")
            return caught.value

        with caplog.at_level("WARNING", logger="relay.ws"):
            error = await refused()
            assert (await refused()).status == 429
        assert error.status == 429 and error.headers is not None
        assert error.headers["Retry-After"] == "32"  # the auth timeout and the close
        assert error.headers["Content-Type"].startswith("application/problem+json")
        # One warning for the two refusals (it is throttled), and the gauge.
        assert [r.getMessage() for r in caplog.records if r.name == "relay.ws"] == [
            "websocket connections waiting to authenticate are at ws_unauthenticated_max; "
            "refusing new ones"]
        metrics = (await (await node.client()).send("GET", "/metrics")).raw.decode()
        assert "backchannel_websocket_unauthenticated 2.0" in metrics
        # A request that is no upgrade is still told so, full or not.
        plain = await (await node.client()).send("GET", "/v1/ws")
        assert plain.status == 400
        # A failed authentication frees its slot; then an authenticated session takes
        # one only until it is ready.
        await waiting[0].send_json({"type": "auth", "id": alice.id, "sig": "AAAA"})
        msg = await waiting[0].receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and waiting[0].close_code == 4401
        sessions = [await alice.client.websocket() for _ in range(3)]
        third = await session.ws_connect(node.url + "/v1/ws")
        assert (await third.receive_json(timeout=10))["type"] == "challenge"
        assert (await refused()).status == 429  # waiting[1] and third hold both slots
        assert gate.open == 2
        # A client that goes away frees its slot too.
        await waiting[1].close()
        await third.close()
        for _ in range(200):
            if gate.open == 0:
                break
            await asyncio.sleep(0.05)
        assert gate.open == 0
        for ws in sessions:
            await ws.close()
    finally:
        await node.stop()


async def test_a_websocket_that_never_authenticates_frees_its_slot_soon(database_url: str):
    """Timed out at ``ws_auth_timeout``, a connection whose client never answers the
    close frame keeps its slot only for the short close handshake, not aiohttp's
    default 10 s, so the Retry-After a refused client gets holds."""
    from relay.websocket import CLOSE_TIMEOUT

    node = await start_node(database_url, ws_auth_timeout=0.3)
    gate = node.app[appkeys.WS_GATE]
    try:
        session = (await node.client()).session
        silent = await session.ws_connect(node.url + "/v1/ws", autoclose=False)
        await silent.receive_json(timeout=10)
        started = asyncio.get_running_loop().time()
        assert gate.open == 1
        while gate.open and asyncio.get_running_loop().time() - started < 15:
            await asyncio.sleep(0.05)
        held = asyncio.get_running_loop().time() - started
        assert gate.open == 0
        assert held < 0.3 + CLOSE_TIMEOUT + 1.5, held
        await silent.close()
    finally:
        await node.stop()


async def test_concurrent_duplicate_submissions_store_once(node: RunningNode):
    alice, bob = await pair(node)
    routing, sealed = sealed_for(alice, [bob], node.id)
    replies: list[Reply] = await asyncio.gather(*(alice.client.submit(routing, sealed)
                                                  for _ in range(8)))
    statuses = sorted(r.status for r in replies)
    assert statuses.count(201) == 1 and statuses.count(200) == 7, [r.body for r in replies]
    assert len({str(r.body["receipt"]) for r in replies}) == 1
    counts = await node.counts()
    assert (counts["envelopes"], counts["deliveries"], counts["statements"]) == (1, 1, 1)


async def test_invitation_ids_never_begin_with_a_dash(node: RunningNode):
    # b64url maps 0xF8..0xFB in the first byte to '-': an id an operator could not
    # pass to `relay revoke` without `--`. Such draws are drawn again.
    draws = iter([b"\xf8" + bytes(8), b"\xfb" + bytes(8), b"\x00" * 9])

    def random(n: int) -> bytes:
        return next(draws) if n == 9 else secrets.token_bytes(n)

    membership = Membership(node.db, node.identity.card, node.config.url, random=random)
    issued = await membership.invite("label", "delegation", timedelta(days=1))
    assert issued.id == "AAAAAAAAAAAA"
    assert [row.id for row in await membership.invitations()] == ["AAAAAAAAAAAA"]
