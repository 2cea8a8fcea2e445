"""The parts without sockets: configuration, invitations, rate limiting, rules,
retention, migrations, logs."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from relay_support import Member, RunningNode, sealed_for, start_node

from keys.clock import FixedClock
from keys.errors import DecodeError
from keys.identity import Identity
from relay.config import RelayConfig, load_config, render_config
from relay.errors import ConfigError
from relay.invitations import (
    Invitation,
    encode_invitation,
    parse_invitation,
    presented_secret,
    secret_hash,
)
from relay.logs import JsonFormatter
from relay.ratelimit import RateLimiter
from relay.services.retention import Retention
from relay.storage import schema
from relay.storage.database import Database, head_revision

# --- configuration ------------------------------------------------------------------------


def test_config_layers_file_then_environment_then_flags(tmp_path: Path):
    base = RelayConfig(name="Geneva", url="https://relay.example.org")
    (tmp_path / "relay.toml").write_text(render_config(replace(base, port=9000)))
    assert load_config(tmp_path, environ={}).port == 9000
    env = {"BACKCHANNEL_RELAY_PORT": "9100", "BACKCHANNEL_RELAY_RATE_PER_SECOND": "2.5",
           "OTHER": "ignored"}
    config = load_config(tmp_path, environ=env)
    assert (config.port, config.rate_per_second, config.name) == (9100, 2.5, "Geneva")
    assert load_config(tmp_path, environ=env, overrides={"port": 9200, "host": None}).port == 9200
    # The rendered file round-trips every key.
    assert load_config(tmp_path, environ={}) == replace(base, port=9000)


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nport = 70000\n", "port"),
    ("[server]\nport = \"x\"\n", "port"),
    ("[server]\nprt = 1\n", "unknown key"),
    ("[serverz]\nport = 1\n", "unknown section"),
    ("[limits]\nmax_sealed_bytes = 10\n", "max_sealed_bytes"),
    ("[limits]\nws_unauthenticated_max = 0\n", "ws_unauthenticated_max"),
    ("[node]\nurl = \"ftp://x\"\n", "url"),
    ("[server]\ndatabase = \"mysql://x\"\n", "database"),
    ("[log]\nlog_level = \"loud\"\n", "log_level"),
    ("[rate]\nrate_per_second = 0\n", "rate_per_second"),
    ("[rate]\nrate_burst = true\n", "rate_burst"),
    ("not toml =", "TOML"),
])
def test_config_rejects_invalid_values(tmp_path: Path, text: str, message: str):
    (tmp_path / "relay.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, environ={})


def test_config_errors_for_environment_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="BACKCHANNEL_RELAY_PROT"):
        load_config(None, environ={"BACKCHANNEL_RELAY_PROT": "1"})
    with pytest.raises(ConfigError, match="must be a int"):
        load_config(None, environ={"BACKCHANNEL_RELAY_PORT": "eighty"})
    with pytest.raises(ConfigError, match="relay init"):
        load_config(tmp_path, environ={})


def test_default_config_is_safe():
    config = RelayConfig()
    assert config.host == "127.0.0.1"
    assert config.signature_window == 300
    assert config.max_sealed_bytes <= 8 * 1024 * 1024


# --- invitations --------------------------------------------------------------------------

def _invitation(secret: bytes = bytes(range(32))) -> Invitation:
    return Invitation("https://relay.example.org", "a" * 32, "1" * 30, secret, "delegation",
                      datetime(2026, 12, 1, 9, tzinfo=UTC))


def test_invitation_round_trip_and_secret_forms():
    invitation = _invitation()
    text = encode_invitation(invitation)
    assert text.startswith("bcinv1.") and "\n" not in text
    assert parse_invitation(text) == invitation
    assert presented_secret(text) == invitation.secret
    from keys.encoding import b64url_encode

    assert presented_secret(b64url_encode(invitation.secret)) == invitation.secret
    assert secret_hash(invitation.secret) != invitation.secret
    assert "secret" not in repr(invitation) and b64url_encode(invitation.secret) not in \
        repr(invitation)


@given(st.text(max_size=300))
def test_invitation_parser_raises_only_decode_errors(text: str):
    with contextlib.suppress(DecodeError):
        parse_invitation("bcinv1." + text)
    with contextlib.suppress(DecodeError):
        presented_secret(text)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("secret"),
    lambda d: d.update(role="node"),
    lambda d: d.update(fp="12345"),
    lambda d: d.update(secret="AAAA"),
    lambda d: d.update(extra=1),
])
def test_invitation_parser_rejects_tampering(mutate):
    from keys.encoding import b64url_decode, b64url_encode

    text = encode_invitation(_invitation())
    doc = json.loads(b64url_decode(text[len("bcinv1."):], max_bytes=4096))
    mutate(doc)
    with pytest.raises(DecodeError):
        parse_invitation("bcinv1." + b64url_encode(json.dumps(doc).encode()))


# --- rate limiting ------------------------------------------------------------------------

def test_token_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(2.0, 3, monotonic=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.check("a") == 1
    assert limiter.check("b") == 0  # per identity
    now[0] += 0.5  # one token back
    assert limiter.check("a") == 0
    assert limiter.check("a") >= 1
    now[0] += 100
    assert [limiter.check("a") for _ in range(3)] == [0, 0, 0]  # capped at the burst


# --- migrations ---------------------------------------------------------------------------

async def test_migrations_create_exactly_the_schema(database_url: str):
    db = Database.open(database_url)
    try:
        await db.migrate()
        await db.migrate()  # idempotent
        assert await db.current_revision() == head_revision()
        async with db.read() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), schema.metadata))
        assert diff == []
    finally:
        await db.dispose()


# --- retention ----------------------------------------------------------------------------

async def test_retention_purges_acknowledged_and_expired(database_url: str):
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    node = await start_node(database_url, clock=clock, acknowledged_retention_days=1,
                            receipt_retention_days=2)
    try:
        alice, bob = await node.join("Kyiv"), await node.join("Moscow")
        acked, acked_sealed = sealed_for(alice, [bob], node.id, clock=clock,
                                         lifetime=timedelta(days=10))
        pending, pending_sealed = sealed_for(alice, [bob], node.id, clock=clock,
                                             lifetime=timedelta(days=3))
        for routing, sealed in ((acked, acked_sealed), (pending, pending_sealed)):
            assert (await alice.client.submit(routing, sealed)).status == 201
        assert (await bob.client.ack(acked.id)).status == 200
        retention = Retention(node.db, node.config, clock=clock)
        assert (await retention.purge()).sealed == 0
        clock.advance(days=1, seconds=1)  # acknowledged a day ago: sealed bytes dropped
        result = await retention.purge()
        assert (result.sealed, result.envelopes) == (1, 0)
        (await bob.client.fetch(acked.id)).problem(410, "gone")
        assert (await bob.client.receipts(acked.id)).status == 200  # receipts are kept
        clock.advance(days=2)  # the pending one expired: dropped from the inbox
        assert (await retention.purge()).sealed == 1
        assert (await bob.client.inbox()).body["items"] == []
        clock.advance(days=2, seconds=1)  # two days past its expiry: deleted entirely
        assert (await retention.purge()).envelopes == 1
        (await alice.client.receipts(pending.id)).problem(404, "not-found")
        # A resubmission after the purge is refused as expired, so never delivered twice.
        (await alice.client.submit(pending, pending_sealed)).problem(400, "expired")
        assert (await node.counts())["envelopes"] == 1
    finally:
        await node.stop()


# --- logs ---------------------------------------------------------------------------------

class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_logs_never_contain_names_labels_or_secrets(tmp_path: Path):
    from relay.storage.database import sqlite_url

    captured = _Records()
    logger = logging.getLogger("relay")
    old_level = logger.level
    logger.addHandler(captured)
    logger.setLevel(logging.DEBUG)
    node: RunningNode = await start_node(sqlite_url(tmp_path))
    try:
        invitation = await node.invite(label="Secret Label Коваленко")
        identity = Identity.create("Kyiv Coordination Шевченко", "delegation")
        client = await node.client(identity)
        assert (await client.register(invitation)).status == 201
        bob = await node.join("Moscow Delegation Name")
        alice = Member(identity, client)
        routing, sealed = sealed_for(alice, [bob], node.id, body={"names": ["Тарас Шевченко"]})
        assert (await client.submit(routing, sealed)).status == 201
        await client.call("POST", "/v1/register", {"invitation": invitation,
                                                   "card": identity.card.envelope.to_dict()})
    finally:
        await node.stop()
        logger.removeHandler(captured)
        logger.setLevel(old_level)
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in captured.records]
    text = "\n".join(lines)
    assert any('"route": "/v1/envelopes"' in line for line in lines)
    secret = invitation.split(".", 1)[1]
    for forbidden in ("Secret Label", "Коваленко", "Шевченко", "Kyiv Coordination",
                      "Moscow Delegation", secret, "Signature", "sealed"):
        assert forbidden not in text, forbidden
    assert identity.id in text  # identity ids are what an operator needs


async def test_sqlite_connections_are_wal_and_synchronous_full(tmp_path: Path):
    from sqlalchemy import text

    from relay.storage.database import sqlite_url

    db = Database.open(sqlite_url(tmp_path))
    try:
        await db.migrate()
        for open_tx in (db.read, db.write, db.read):
            async with open_tx() as conn:
                mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
                sync = (await conn.execute(text("PRAGMA synchronous"))).scalar()
                fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
                assert (mode, sync, fks) == ("wal", 2, 1)  # 2 = FULL
    finally:
        await db.dispose()


def test_serving_node_freezes_its_start_up_heap():
    """relay.server.settle_heap: objects alive at start-up are out of the cyclic GC's
    reach (a full collection over them paused the loop for about 100 ms under load)."""
    import gc

    from relay.server import settle_heap

    assert gc.get_freeze_count() == 0
    keep = [[] for _ in range(1000)]
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()


def test_a_push_that_cannot_be_built_is_left_to_the_outbox_scan(caplog):
    from relay.services.handoff import Handoff, hand_over

    handed: list[Handoff] = []

    def started(ready: Handoff) -> bool:
        handed.append(ready)
        return True

    def broken() -> Handoff:
        raise ValueError("a stored card that does not parse")

    with caplog.at_level(logging.WARNING, logger="relay.federation"):
        # After the commit: must not fail the request; the caller wakes the scan.
        assert hand_over(started, broken) is False
    assert handed == []
    [record] = caplog.records
    assert record.getMessage() == "push not handed over; the outbox scan will send it"
    assert record.error == "ValueError"  # the type only, never the message
    assert "stored card" not in caplog.text
    ready = Handoff("peer", "envelope", "http://127.0.0.1:1", b"{}", 0)
    assert hand_over(started, lambda: ready) is True
    assert hand_over(None, broken) is False  # no worker: nothing is even built
    assert handed == [ready]


@pytest.mark.parametrize("statements, cards", [(2, 2), (0, 0), (1, 3)])
def test_the_forward_body_is_the_documents_json(statements: int, cards: int):
    """Statements and cards are spliced in as bytes: the result is exactly the compact
    JSON of the whole document, which the next hop parses strictly."""
    from keys.encoding import b64url_encode, json_dumps, json_loads
    from keys.envelope import make_envelope
    from keys.seal import seal
    from keys.statements import make_statement
    from relay.services.handoff import forward_body

    sender, recipient = Identity.create("A", "delegation"), Identity.create("B", "delegation")
    origin, hop = Identity.create("N", "node"), Identity.create("H", "node")
    sealed = seal(sender, [recipient.card], "note", {"text": "45 for 45"}).data
    routing = make_envelope(sender.signing_key, sealed, to=[recipient.id], origin=origin.id,
                            destination=hop.id, lifetime=timedelta(hours=1))
    signed = [make_statement("relayed", routing.id, origin.signing_key, previous=sender.id,
                             next=hop.id).to_json() for _ in range(statements)]
    held = [c.card.to_json() for c in (sender, origin, hop)][:cards]
    body = forward_body(routing, sealed, signed, held)
    assert body == json_dumps({"envelope": routing.envelope.to_dict(),
                               "sealed": b64url_encode(sealed),
                               "statements": [json.loads(s) for s in signed],
                               "cards": [json.loads(c) for c in held]})
    assert json_loads(body, max_bytes=len(body))["sealed"] == b64url_encode(sealed)


def test_aiohttp_server_errors_are_one_json_line_without_traceback(capsys):
    """Malformed HTTP is logged by aiohttp itself (before any handler): through the
    node's formatter, as the exception's type, not a traceback quoting the request."""
    from relay import logs

    names = ("relay", "aiohttp.server", "aiohttp.access", "alembic")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate,
                 logging.getLogger(n).level) for n in names}
    try:
        logs.configure("info", "json")
        try:
            raise ValueError("Invalid header value: b'Kyiv \\xd0\\xa8\\xd0\\xb5'")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
    finally:
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = json.loads(lines[0])
    assert line["logger"] == "aiohttp.server" and line["exception"] == "ValueError"
    assert "Traceback" not in err and "Kyiv" not in err
