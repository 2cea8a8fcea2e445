"""`backchannel relay …` through the real `backchannel` entry point."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import relay.cli as relay_cli
from client.cli import main
from keys.card import load_card
from keys.clock import SYSTEM_CLOCK, FixedClock
from keys.encoding import format_time, parse_time
from relay.invitations import parse_invitation


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_PASSPHRASE", "operator passphrase")
    monkeypatch.setenv("BACKCHANNEL_KDF", "floor")
    for name in ("BACKCHANNEL_RELAY_PORT", "BACKCHANNEL_RELAY_DATABASE"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["relay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def init(capsys, node: Path) -> str:
    code, out, _ = run(capsys, "init", "--dir", str(node), "--name", "Geneva node",
                       "--url", "https://relay.example.org")
    assert code == 0
    return out


def test_init_card_invite_members_revoke(tmp_path: Path, capsys, monkeypatch):
    node = tmp_path / "node"
    out = init(capsys, node)
    assert "fingerprint" in out
    assert stat.S_IMODE(node.stat().st_mode) == 0o700
    for name in ("node.keystore", "relay.toml", "relay.db"):
        assert stat.S_IMODE((node / name).stat().st_mode) == 0o600, name

    code, card_json, _ = run(capsys, "card", "--dir", str(node))
    card = load_card(card_json, now=SYSTEM_CLOCK.now())
    assert card.role == "node" and card.home is not None
    code, _, _ = run(capsys, "card", "--dir", str(node), "--out", str(tmp_path / "c.asc"),
                     "--armor")
    assert load_card((tmp_path / "c.asc").read_text(), now=SYSTEM_CLOCK.now()).id == card.id

    code, out, _ = run(capsys, "invite", "--dir", str(node), "--name", "Kyiv delegation",
                       "--role", "intermediary", "--expires", "12h")
    assert code == 0
    assert " for an intermediary, valid until " in out
    invitation = parse_invitation(out.strip().splitlines()[-1])
    assert invitation.node == card.id and invitation.role == "intermediary"
    assert invitation.fingerprint == card.fingerprint.replace(" ", "")
    assert invitation.url == "https://relay.example.org"

    code, out, _ = run(capsys, "members", "--dir", str(node), "--json")
    listing = json.loads(out)
    assert listing["members"] == []
    [pending] = listing["invitations"]
    assert pending["label"] == "Kyiv delegation" and pending["role"] == "intermediary"

    # An absolute expiry comes out exactly as given, however long the command takes
    # (here the clock moves a second at each reading).
    until = format_time((SYSTEM_CLOCK.now() + timedelta(days=2)).replace(microsecond=0))
    ticking = FixedClock(SYSTEM_CLOCK.now())

    def tick() -> datetime:
        ticking.advance(seconds=1)
        return ticking.current

    with monkeypatch.context() as patched:
        patched.setattr(relay_cli.SYSTEM_CLOCK, "now", tick)
        code, out, _ = run(capsys, "invite", "--dir", str(node), "--name", "later",
                           "--expires", until)
    assert code == 0 and f"for a delegation, valid until {until}, single use" in out
    assert parse_invitation(out.strip().splitlines()[-1]).expires == parse_time(
        until, field="t")
    later = [i for i in json.loads(run(capsys, "members", "--dir", str(node), "--json")[1])
             ["invitations"] if i["label"] == "later"]
    assert run(capsys, "revoke", "--dir", str(node), later[0]["id"])[0] == 0

    assert run(capsys, "revoke", "--dir", str(node), pending["id"])[0] == 0
    assert json.loads(run(capsys, "members", "--dir", str(node), "--json")[1])["invitations"] \
        == []
    # The secret is stored only as a hash.
    assert invitation.secret not in (node / "relay.db").read_bytes()


@pytest.mark.parametrize("argv", [
    ("members", "--dir", "{missing}"),
    ("invite", "--dir", "{node}", "--name", "x", "--expires", "soon"),
    ("invite", "--dir", "{node}", "--name", "x", "--expires", "90d"),
    ("invite", "--dir", "{node}", "--name", "x", "--expires", "\u0663d"),  # Arabic-Indic 3
    ("invite", "--dir", "{node}", "--name", "Kyiv\nrevoked: everyone"),
    ("invite", "--dir", "{node}", "--name", "Kyiv \x1b[2J"),
    ("invite", "--dir", "{node}", "--name", "Kyiv \u202eVH"),
    ("revoke", "--dir", "{node}", "nobody"),
    ("init", "--dir", "{node}", "--name", "again", "--url", "https://x.example"),
    ("serve", "--dir", "{node}", "--database", "mysql://nope"),
])
def test_errors_are_one_line(tmp_path: Path, capsys, argv):
    node = tmp_path / "node"
    init(capsys, node)
    args = [a.format(node=node, missing=tmp_path / "missing") for a in argv]
    code, _out, err = run(capsys, *args)
    assert code == 1
    assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    assert "\x1b" not in err


def test_labels_in_any_script_are_accepted(tmp_path: Path, capsys):
    node = tmp_path / "node"
    init(capsys, node)
    # Persian with a zero-width non-joiner, as it is written.
    code, _out, err = run(capsys, "invite", "--dir", str(node), "--name", "می\u200cخواهم")
    assert code == 0, err


def test_serve_with_wrong_passphrase_fails_cleanly(tmp_path: Path, capsys, monkeypatch):
    node = tmp_path / "node"
    init(capsys, node)
    monkeypatch.setenv("BACKCHANNEL_PASSPHRASE", "wrong")
    code, _out, err = run(capsys, "serve", "--dir", str(node))
    assert code == 1 and "wrong passphrase" in err


def test_init_refuses_a_bad_url(tmp_path: Path, capsys):
    code, _out, err = run(capsys, "init", "--dir", str(tmp_path / "n"), "--name", "x",
                          "--url", "relay.example.org")
    assert code == 1 and "url" in err
    assert not (tmp_path / "n" / "node.keystore").exists()


@pytest.mark.parametrize("database", [
    "sqlite+aiosqlite://",  # in memory: not a file the node can keep
    "postgresql+asyncpg://u:p@127.0.0.1:notaport/db",
    "postgresql+asyncpg://u:p@127.0.0.1:1/db",  # nothing listens there
])
def test_init_with_an_unusable_database_leaves_nothing_and_can_be_retried(
        tmp_path: Path, capsys, database: str):
    node = tmp_path / "n"
    code, _out, err = run(capsys, "init", "--dir", str(node), "--name", "x",
                          "--url", "http://127.0.0.1:8471", "--database", database)
    assert code == 1 and err.count("\n") == 1, err
    assert "p@" not in err  # the URL's password is not repeated
    assert not node.exists() or sorted(p.name for p in node.iterdir()) == []
    code, _out, err = run(capsys, "init", "--dir", str(node), "--name", "x",
                          "--url", "http://127.0.0.1:8471")
    assert code == 0, err
    assert (node / "node.keystore").exists() and (node / "relay.db").exists()


@pytest.mark.postgres
def test_cli_on_postgresql(tmp_path: Path, capsys, pg_server):
    import asyncio

    url = asyncio.run(pg_server.create_database())
    node = tmp_path / "node"
    code, _out, err = run(capsys, "init", "--dir", str(node), "--name", "PG node",
                          "--url", "https://relay.example.org", "--database", url)
    assert code == 0, err
    assert not (node / "relay.db").exists()
    code, out, _ = run(capsys, "invite", "--dir", str(node), "--name", "Kyiv")
    assert code == 0 and parse_invitation(out.splitlines()[-1]).role == "delegation"
    listing = json.loads(run(capsys, "members", "--dir", str(node), "--json")[1])
    assert [i["label"] for i in listing["invitations"]] == ["Kyiv"]


# --- peers ---------------------------------------------------------------------------------

def _node_with_card(capsys, tmp_path: Path, name: str, url: str) -> tuple[Path, Path]:
    node = tmp_path / name
    code, _out, _err = run(capsys, "init", "--dir", str(node), "--name", f"{name} node",
                           "--url", url)
    assert code == 0
    card = tmp_path / f"{name}.card"
    assert run(capsys, "card", "--dir", str(node), "--out", str(card), "--armor")[0] == 0
    return node, card


def test_peers_add_list_remove(tmp_path: Path, capsys):
    geneva, _ = _node_with_card(capsys, tmp_path, "geneva", "https://ge.example")
    istanbul, istanbul_card = _node_with_card(capsys, tmp_path, "istanbul",
                                              "https://tr.example:8443")
    peer = load_card(istanbul_card.read_text(), now=SYSTEM_CLOCK.now())
    code, out, _ = run(capsys, "peers", "list", "--dir", str(geneva))
    assert code == 0 and "no peers" in out
    code, out, _ = run(capsys, "peers", "add", "--dir", str(geneva), str(istanbul_card))
    assert code == 0, out
    assert f"pinned peer istanbul node ({peer.id}) at https://tr.example:8443" in out
    assert f"fingerprint: {peer.fingerprint}" in out
    code, out, _ = run(capsys, "peers", "add", "--dir", str(geneva), str(istanbul_card))
    assert code == 0 and out.startswith("already pinned: peer istanbul node")
    listing = json.loads(run(capsys, "peers", "list", "--dir", str(geneva), "--json")[1])
    assert listing["peers"] == [{"id": peer.id, "name": "istanbul node",
                                 "url": "https://tr.example:8443",
                                 "fingerprint": peer.fingerprint,
                                 "added": listing["peers"][0]["added"],
                                 "queued": {"envelopes": 0, "receipts": 0}}]
    assert listing["unpinned_with_queued"] == []
    code, out, _ = run(capsys, "peers", "list", "--dir", str(geneva))
    assert peer.id in out and peer.fingerprint in out
    # Pinning is per direction: Istanbul has not pinned Geneva.
    empty = {"peers": [], "unpinned_with_queued": []}
    assert json.loads(run(capsys, "peers", "list", "--dir", str(istanbul), "--json")[1]) \
        == empty
    code, out, _ = run(capsys, "peers", "remove", "--dir", str(geneva), peer.id)
    assert code == 0 and out == f"removed peer {peer.id}\n"  # nothing was queued for it
    assert json.loads(run(capsys, "peers", "list", "--dir", str(geneva), "--json")[1]) \
        == empty


def test_peers_remove_says_what_stays_queued():
    # The queue itself is read from a real outbox in
    # test_federation.py::test_receipts_for_a_peer_unpinned_meanwhile_wait_and_are_shown.
    from relay.storage.federation import PeerQueue

    queue = PeerQueue("p" * 32, envelopes=1, receipts=3, oldest=0, next_attempt=60,
                      attempts=2, last_error="ClientConnectorError")
    assert relay_cli.removal_text("p" * 32, queue) == [
        f"removed peer {'p' * 32}",
        "1 envelope queued for it is retried until it expires, then reported to the sender "
        "as failed",
        "3 receipts queued for it wait until it is pinned again (`backchannel relay peers "
        "list` shows them) or retention purges their envelopes"]
    assert relay_cli.queue_text(queue) == (
        "queued: 1 envelope and 3 receipts since 1970-01-01T00:00:00Z; 2 attempts so far, "
        "last error ClientConnectorError; next attempt 1970-01-01T00:01:00Z")


@pytest.mark.parametrize("what", ["own", "member", "garbage", "missing", "unknown-id"])
def test_peers_errors_are_one_line(tmp_path: Path, capsys, what: str):
    from keys.identity import Identity

    node, own_card = _node_with_card(capsys, tmp_path, "geneva", "https://ge.example")
    member = tmp_path / "member.card"
    member.write_bytes(Identity.create("Kyiv HQ", "delegation").card.to_json())
    garbage = tmp_path / "garbage.card"
    garbage.write_bytes(b'{"payload": "AAAA", "payloadType": "x", "signatures": []}')
    argv = {
        "own": ("peers", "add", "--dir", str(node), str(own_card)),
        "member": ("peers", "add", "--dir", str(node), str(member)),
        "garbage": ("peers", "add", "--dir", str(node), str(garbage)),
        "missing": ("peers", "add", "--dir", str(node), str(tmp_path / "nope.card")),
        "unknown-id": ("peers", "remove", "--dir", str(node), "nobody"),
    }[what]
    code, _out, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    expected = {"own": "own card", "member": "not of a node", "garbage": "not a usable node card",
                "missing": "cannot read", "unknown-id": "no pinned peer"}[what]
    assert expected in err
    assert json.loads(run(capsys, "peers", "list", "--dir", str(node), "--json")[1]) \
        == {"peers": [], "unpinned_with_queued": []}


def test_a_peer_card_without_its_own_home_is_refused(tmp_path: Path, capsys):
    from keys.card import HomeNode
    from keys.identity import Identity

    node, _ = _node_with_card(capsys, tmp_path, "geneva", "https://ge.example")
    bare = tmp_path / "bare.card"
    bare.write_bytes(Identity.create("Bare node", "node").card.to_json())
    code, _out, err = run(capsys, "peers", "add", "--dir", str(node), str(bare))
    assert code == 1 and "does not name its own URL" in err
    other = Identity.create("Other node", "node")
    lying = Identity.create("Lying node", "node").reissue(
        home=HomeNode(other.id, "https://other.example"))
    bare.write_bytes(lying.card.to_json())
    code, _out, err = run(capsys, "peers", "add", "--dir", str(node), str(bare))
    assert code == 1 and "does not name its own URL" in err


@pytest.mark.parametrize(("url", "flags", "port"), [
    ("http://127.0.0.1:8471", (), 8471),  # reached directly: listen where it points
    ("http://localhost:9001", (), 9001),
    ("http://127.0.0.1:8471", ("--port", "9000"), 9000),  # the flag wins
    ("https://relay.example.org:8443", (), 8470),  # may be a proxy: the default
    ("https://127.0.0.1:8443", (), 8470),  # a local TLS proxy owns that port
    ("http://[::1]:8471", (), 8470),  # the node listens on IPv4 by default
    ("http://127.0.0.1:0", (), 8470),
    ("http://127.0.0.1", (), 8470),
])
def test_init_listens_where_a_loopback_url_points(tmp_path: Path, capsys, url, flags, port):
    node = tmp_path / "node"
    code, out, _ = run(capsys, "init", "--dir", str(node), "--name", "Istanbul node",
                       "--url", url, *flags)
    assert code == 0 and f"listens on:  127.0.0.1:{port} " in out
    assert f"port = {port}\n" in (node / "relay.toml").read_text(encoding="utf-8")


def test_init_port_from_the_environment_wins_over_the_url(tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_RELAY_PORT", "9100")
    node = tmp_path / "node"
    code, out, _ = run(capsys, "init", "--dir", str(node), "--name", "Istanbul node",
                       "--url", "http://127.0.0.1:8471")
    assert code == 0 and "listens on:  127.0.0.1:9100 " in out
