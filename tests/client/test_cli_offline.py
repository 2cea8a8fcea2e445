"""The CLI commands that need no node: init, whoami, card, contacts, namelist check.

Run in-process through ``client.cli.main`` (the same code path as the console
script) with fast key derivation; the end-to-end test runs them as subprocesses.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from client.cli import main

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> Run:
    monkeypatch.setenv("BACKCHANNEL_KDF", "floor")
    monkeypatch.delenv("BACKCHANNEL_HOME", raising=False)

    def run(*argv: str, passphrase: str | None = "pw", home: str | None = "kyiv"
            ) -> tuple[int, str, str]:
        if passphrase is None:
            monkeypatch.delenv("BACKCHANNEL_PASSPHRASE", raising=False)
        else:
            monkeypatch.setenv("BACKCHANNEL_PASSPHRASE", passphrase)
        args = list(argv)
        if home is not None:
            args += ["--home", str(tmp_path / home)]
        code = main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("backchannel: error: ")
    return lines[0]


def test_init_whoami_card(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("init", "--name", "Kyiv  Coordination HQ", "--json")
    assert code == 0
    me = json.loads(out)
    assert me["name"] == "Kyiv Coordination HQ" and me["role"] == "delegation"
    assert me["suite"] == "MLKEM768-X25519" and me["home"] is None
    assert stat.S_IMODE((tmp_path / "kyiv").stat().st_mode) == 0o700
    code, out, _ = run("whoami", "--json")
    assert code == 0
    who = json.loads(out)
    assert set(who) == {"id", "name", "role", "fingerprint", "suite", "created", "expires",
                        "home", "node", "profile"}
    assert who["id"] == me["id"] and who["node"] is None
    code, out, _ = run("whoami")
    assert code == 0 and me["fingerprint"] in out and "not registered" in out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "Kyiv", "Coordination", "HQ"]
    assert all(line == line.rstrip() for line in lines)  # no padding to the widest line
    code, out, err = run("card", "--out", str(tmp_path / "kyiv.card"))
    assert code == 0 and "names no node yet" in err
    assert (tmp_path / "kyiv.card").read_text().startswith("-----BEGIN BACKCHANNEL CARD-----")
    code, out, _ = run("card")
    assert out == (tmp_path / "kyiv.card").read_text()


def test_init_errors(run: Run, tmp_path: Path) -> None:
    assert run("init", "--name", "A")[0] == 0
    code, _, err = run("init", "--name", "B")
    assert code == 1 and "a profile already exists" in one_line_error(err)
    code, _, err = run("init", "--name", "  ", home="other")
    assert code == 1 and "--name must be 1 to 200 characters" in one_line_error(err)
    code, _, err = run("init", "--name", "C", home="third", passphrase=None)
    assert code == 1 and "no passphrase" in one_line_error(err)
    assert not (tmp_path / "third" / "keystore.json").exists()
    pw = tmp_path / "pw.txt"
    pw.write_text("from a file\n")
    assert run("init", "--name", "D", "--passphrase-file", str(pw), home="fourth",
               passphrase=None)[0] == 0
    assert run("whoami", "--passphrase-file", str(pw), home="fourth", passphrase=None)[0] == 0
    code, _, err = run("whoami", home="fourth", passphrase="from a file!")
    assert code == 1 and one_line_error(err) == ("backchannel: error: wrong passphrase "
                                                 "for this keystore")


def test_bad_kdf_setting_is_refused_before_anything_is_written(
        run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_KDF", "none")
    code, _, err = run("init", "--name", "A")
    assert code == 1 and "BACKCHANNEL_KDF='none' is not understood" in one_line_error(err)
    assert not (tmp_path / "kyiv" / "keystore.json").exists()


def test_no_profile(run: Run) -> None:
    code, _, err = run("contacts", "list", passphrase=None)
    assert code == 1 and "no profile in" in one_line_error(err)


def test_contacts_flow(run: Run, tmp_path: Path) -> None:
    run("init", "--name", "Kyiv")
    run("init", "--name", "Moscow", home="ru", passphrase="ru")
    run("init", "--name", "Impostor", home="fake", passphrase="fake")
    ru_card, fake_card = tmp_path / "ru.card", tmp_path / "fake.card"
    run("card", "--out", str(ru_card), home="ru", passphrase="ru")
    run("card", "--out", str(fake_card), home="fake", passphrase="fake")

    code, out, _ = run("contacts", "add", str(ru_card), "--alias", "RU")
    assert code == 0 and "Added RU: Moscow" in out and "contacts verify RU" in out
    code, out, _ = run("contacts", "list", "--json")
    listed = json.loads(out)["contacts"]
    assert [(c["alias"], c["name"], c["state"]) for c in listed] == [
        ("RU", "Moscow", "unverified")]

    code, out, err = run("contacts", "verify", "RU")  # stdin is not a terminal
    assert code == 1 and "run again with --yes" in one_line_error(err)
    code, out, _ = run("contacts", "verify", "RU", "--yes")
    assert code == 0 and "RU is now verified" in out
    ru_fp = listed[0]["fingerprint"]
    assert ru_fp in out
    digits = [line.strip() for line in out.splitlines() if line.startswith("  ")
              and line.strip().replace(" ", "").isdigit() and len(line.split()) == 6]
    assert len(digits) == 2 and ru_fp in digits

    # The other side computes the same 60 digits.
    kyiv_card = tmp_path / "kyiv.card"
    run("card", "--out", str(kyiv_card))
    run("contacts", "add", str(kyiv_card), "--alias", "UA", home="ru", passphrase="ru")
    _, their_out, _ = run("contacts", "verify", "UA", "--yes", home="ru", passphrase="ru")
    theirs = [line for line in their_out.splitlines() if line in out.splitlines()
              and line.strip().replace(" ", "").isdigit()]
    assert len(theirs) >= 2

    # A different key under the same alias: accepted with a warning, state 'changed'.
    code, out, err = run("contacts", "add", str(fake_card), "--alias", "RU")
    assert code == 0 and "DIFFERENT KEY" in err
    code, out, _ = run("contacts", "list", "--json")
    assert json.loads(out)["contacts"][0]["state"] == "changed"

    code, _, err = run("contacts", "add", str(fake_card), "--alias", "RU2")
    assert code == 1 and "already in your contacts as 'RU'" in one_line_error(err)
    code, _, err = run("contacts", "add", str(kyiv_card), "--alias", "ME")
    assert code == 1 and "your own identity card" in one_line_error(err)
    code, _, err = run("contacts", "add", str(tmp_path / "missing.card"), "--alias", "X")
    assert code == 1 and "cannot read card file" in one_line_error(err)
    junk = tmp_path / "junk.card"
    junk.write_text("hello")
    code, _, err = run("contacts", "add", str(junk), "--alias", "X")
    assert code == 1 and "is not a usable identity card" in one_line_error(err)
    code, _, err = run("contacts", "add", str(ru_card), "--alias", "bad alias")
    assert code == 1 and "is not usable" in one_line_error(err)
    code, _, err = run("contacts", "verify", "NOPE", "--yes")
    assert one_line_error(err) == ("backchannel: error: unknown contact 'NOPE': add it with "
                                   "backchannel contacts add FILE --alias NOPE (backchannel "
                                   "contacts list shows the aliases)")
    # A slip of the shift key points to the contact meant, not to adding it again.
    code, _, err = run("contacts", "verify", "ru", "--yes")
    assert one_line_error(err) == ("backchannel: error: unknown contact 'ru'; did you mean "
                                   "'RU'? (aliases are exact)")
    assert run("contacts", "remove", "RU")[0] == 0
    assert json.loads(run("contacts", "list", "--json")[1]) == {"contacts": []}


def test_namelist_check(run: Run, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("family_name,given_names\nШевченко,Тарас\nKovalenko,Olena\n")
    code, out, _ = run("namelist", "check", str(good), "--show", home=None)
    assert code == 0 and "2 entries, no problems" in out and "Шевченко" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("family_name,date_of_birth\nA,1990-13-01\n,1990\n")
    code, out, _ = run("namelist", "check", str(bad), home=None)
    assert code == 1
    assert out.splitlines() == ["line 2: date_of_birth '1990-13-01' is not a date (YYYY-MM-DD)",
                                "line 3: family_name is empty (it is required)"]
