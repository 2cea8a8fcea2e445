"""Changing a passphrase (``backchannel passphrase``, ``backchannel relay passphrase``)
and the warning for a short new one, as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import Env

OLD = "the old passphrase ї"
NEW = "four unrelated words here"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_a_profile_passphrase_is_changed_and_the_keys_stay(env: Env, tmp_path: Path) -> None:
    env.ok("init", "--name", "Kyiv HQ", home="ua", passphrase=OLD)
    before = json.loads(env.ok("whoami", "--json", home="ua", passphrase=OLD).out)
    keystore = (env.root / "ua" / "keystore.json").read_bytes()
    new_file = _file(tmp_path, "new.txt", NEW)

    wrong = env.run("passphrase", "--new-passphrase-file", str(new_file), home="ua",
                    passphrase="not the passphrase")
    assert "passphrase" in wrong.error_line()
    same = env.run("passphrase", "--new-passphrase-file", str(_file(tmp_path, "same", OLD)),
                   home="ua", passphrase=OLD)
    assert same.error_line() == "the new passphrase is the one already in use"
    assert (env.root / "ua" / "keystore.json").read_bytes() == keystore  # untouched

    changed = env.ok("passphrase", "--new-passphrase-file", str(new_file), home="ua",
                     passphrase=OLD)
    assert changed.out.startswith("Passphrase changed for ") and changed.err == ""
    assert NEW not in changed.out + changed.err and OLD not in changed.out + changed.err
    assert "passphrase" in env.run("whoami", home="ua", passphrase=OLD).error_line()
    after = json.loads(env.ok("whoami", "--json", home="ua", passphrase=NEW).out)
    assert after == before  # the same identity, node pin and all
    # Without a file, in a script: the new one comes from BACKCHANNEL_NEW_PASSPHRASE only.
    missing = env.run("passphrase", home="ua", passphrase=NEW)
    assert "BACKCHANNEL_NEW_PASSPHRASE" in missing.error_line()


def test_a_short_new_passphrase_is_warned_about(env: Env, tmp_path: Path) -> None:
    created = env.ok("init", "--name", "Kyiv HQ", home="ua", passphrase="short")
    assert created.err.startswith("backchannel: warning: this passphrase has only 5 "
                                  "characters")
    assert "short" not in created.err.replace("short passphrases", "")
    quiet = env.ok("init", "--name", "Moscow", home="ru", passphrase=NEW)
    assert quiet.err == ""
    again = env.ok("passphrase", "--new-passphrase-file", str(_file(tmp_path, "n", "tiny")),
                   home="ua", passphrase="short")
    assert again.err.startswith("backchannel: warning: this passphrase has only 4 ")


def test_a_node_passphrase_is_changed(env: Env, tmp_path: Path) -> None:
    node = tmp_path / "node"
    init = env.ok("relay", "init", "--dir", str(node), "--name", "Geneva",
                  "--url", "http://127.0.0.1:18999", passphrase=OLD)
    assert "warning" not in init.err
    new_file = _file(tmp_path, "new.txt", NEW)
    wrong = env.run("relay", "passphrase", "--dir", str(node), "--new-passphrase-file",
                    str(new_file), passphrase="nope")
    assert "passphrase" in wrong.error_line()
    changed = env.ok("relay", "passphrase", "--dir", str(node), "--new-passphrase-file",
                     str(new_file), passphrase=OLD)
    assert "changed" in changed.out and "next start" in changed.out
    card = env.ok("relay", "card", "--dir", str(node)).out
    # The old passphrase no longer opens the node key; the new one does, same key.
    refused = env.run("relay", "serve", "--dir", str(node), "--port", "0", passphrase=OLD)
    assert "passphrase" in refused.error_line()
    again = env.ok("relay", "passphrase", "--dir", str(node), "--new-passphrase-file",
                   str(_file(tmp_path, "third.txt", OLD + " again")), passphrase=NEW)
    assert "changed" in again.out
    assert env.ok("relay", "card", "--dir", str(node)).out == card
    short = env.ok("relay", "passphrase", "--dir", str(node), "--new-passphrase-file",
                   str(_file(tmp_path, "short.txt", "tiny")), passphrase=OLD + " again")
    assert short.err.startswith("backchannel: warning: this passphrase has only 4 ")
