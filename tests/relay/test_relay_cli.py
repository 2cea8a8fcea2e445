"""`backchannel relay …` through the real `backchannel` entry point."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client.cli import main
from keys.card import load_card
from keys.clock import SYSTEM_CLOCK
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


def test_init_card_invite_members_revoke(tmp_path: Path, capsys):
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
    invitation = parse_invitation(out.strip().splitlines()[-1])
    assert invitation.node == card.id and invitation.role == "intermediary"
    assert invitation.fingerprint == card.fingerprint.replace(" ", "")
    assert invitation.url == "https://relay.example.org"

    code, out, _ = run(capsys, "members", "--dir", str(node), "--json")
    listing = json.loads(out)
    assert listing["members"] == []
    [pending] = listing["invitations"]
    assert pending["label"] == "Kyiv delegation" and pending["role"] == "intermediary"

    assert run(capsys, "revoke", "--dir", str(node), pending["id"])[0] == 0
    assert json.loads(run(capsys, "members", "--dir", str(node), "--json")[1])["invitations"] \
        == []
    # The secret is stored only as a hash.
    assert invitation.secret not in (node / "relay.db").read_bytes()


@pytest.mark.parametrize("argv", [
    ("members", "--dir", "{missing}"),
    ("invite", "--dir", "{node}", "--name", "x", "--expires", "soon"),
    ("invite", "--dir", "{node}", "--name", "x", "--expires", "90d"),
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
