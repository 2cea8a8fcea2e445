"""End to end over the command line, as a new user would do it.

A real node (``backchannel relay init/invite/serve``, SQLite, a free 127.0.0.1 port)
in a subprocess; two delegations, each a separate profile driven only through the
``backchannel`` command in subprocesses. One sends a 1,000-name list of Cyrillic and
Latin names; the other lists, reads and gets exactly the same CSV back; the sender's
receipts show accepted, delivered and opened; the exported bundle verifies offline and
stops verifying when any byte changes. Then the ways it can go wrong, each one line
on stderr, exit status 1, and nothing sent.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import first_line
from cli_support import RU_PASSPHRASE, UA_PASSPHRASE, Env, Node, free_port

from client.bundle import verify_bundle
from client.errors import BundleInvalid
from client.namelist import FIELDS
from keys.clock import SYSTEM_CLOCK

pytestmark = pytest.mark.slow

def make_list(count: int, seed: int = 1945) -> bytes:
    """A deterministic list mixing Cyrillic and Latin names, with the characters that
    CSV must carry (commas, quotes, apostrophes, line breaks in notes)."""
    rng = random.Random(seed)
    cyr_family = ["Шевченко", "Коваленко", "Бондаренко", "Мар'яненко", "Іваненко",
                  "Петров", "Смирнов", "Кузнєцова", "Ґудзь", "Соловйов"]
    cyr_given = ["Тарас", "Олена", "Андрій", "Ірина", "Юрій", "Ёлка", "Дмитро", "Наталія"]
    cyr_patronymic = ["Григорович", "Петрівна", "Іванович", "Сергеевна", ""]
    lat_family = ["Kovalenko", "O'Neill", "Müller", "Nowak", "García", "Smith, Jr."]
    lat_given = ["Olena", "John", "Zoë", "Łukasz", "Anne-Marie"]
    rows = []
    for number in range(count):
        if rng.random() < 0.6:
            family, given = rng.choice(cyr_family), rng.choice(cyr_given)
            patronymic, citizenship = rng.choice(cyr_patronymic), rng.choice(
                ["Україна", "Россия"])
        else:
            family, given, patronymic = rng.choice(lat_family), rng.choice(lat_given), ""
            citizenship = rng.choice(["UA", "RU", ""])
        year, month, day = rng.randint(1960, 2005), rng.randint(1, 12), rng.randint(1, 28)
        dob = rng.choice([f"{year}-{month:02d}-{day:02d}", f"{year}", f"{year}-{month:02d}"])
        notes = rng.choice(["", "поранений", 'said "yes"', "line one\nline two", "a, b"])
        rows.append([family, given, patronymic, dob, rng.choice(["сержант", "private", ""]),
                     f"в/ч А{rng.randint(1000, 9999)}", f"SN-{number:05d}", citizenship,
                     rng.choice(["captured", "missing", "полонений"]), notes])
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@dataclass
class World:
    env: Env
    node: Node
    ua_card: Path
    ru_card: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A node, and two delegations that joined it, exchanged and verified cards --
    each step checked as the user would see it."""
    root = tmp_path_factory.mktemp("e2e")
    env = Env(root)
    node = Node(env, root / "node", free_port())
    node.init("Geneva node")
    node.start()
    try:
        invitations = {"ua": node.invite("Kyiv HQ"), "ru": node.invite("Moscow delegation")}
        assert all(text.startswith("bcinv1.") for text in invitations.values())
        env.ok("init", "--name", "Kyiv Coordination HQ", home="ua", passphrase=UA_PASSPHRASE)
        env.ok("init", "--name", "Moscow Delegation", home="ru", passphrase=RU_PASSPHRASE)
        node_fp = json.loads(env.ok("relay", "card", "--dir", str(node.directory)).out)
        assert node_fp["payloadType"] == "application/vnd.backchannel.card+json"
        joined = env.ua("register", invitations["ua"])
        assert "Geneva node" in joined.out and "matches the invitation" in joined.out
        env.ru("register", invitations["ru"])
        who = json.loads(env.ua("whoami", "--json").out)
        assert who["node"]["url"] == node.url and who["home"]["url"] == node.url
        # A spent invitation cannot be used again (by anyone).
        env.ok("init", "--name", "Late", home="late", passphrase="late")
        again = env.run("register", invitations["ua"], home="late", passphrase="late")
        assert again.error_line().startswith("the node refused the invitation: ")
        assert again.error_line().endswith("; ask the operator for a new one (an invitation "
                                           "works once, before it expires, on the node that "
                                           "issued it)")
        # An intermediary's invitation in a delegation's profile: what to do instead.
        icrc = env.ok("relay", "invite", "--dir", str(node.directory), "--name", "ICRC",
                      "--role", "intermediary").out.strip().splitlines()[-1]
        wrong_role = env.run("register", icrc, home="late", passphrase="late").error_line()
        assert wrong_role == (
            "this invitation is for an intermediary, but this profile is a delegation: to act "
            "as an intermediary, create a profile of its own with backchannel init --home DIR "
            "--name NAME --role intermediary; otherwise ask the operator for a delegation "
            "invitation")

        ua_card, ru_card = root / "kyiv.card", root / "moscow.card"
        env.ua("card", "--out", str(ua_card))
        env.ru("card", "--out", str(ru_card))
        env.ua("contacts", "add", str(ru_card), "--alias", "RU")
        env.ru("contacts", "add", str(ua_card), "--alias", "UA")
        # Both sides see the same 60 digits.
        ua_view = env.ua("contacts", "verify", "RU", "--yes").out
        ru_view = env.ru("contacts", "verify", "UA", "--yes").out

        def digits(text: str) -> list[str]:
            lines = text.splitlines()
            start = next(i for i, line in enumerate(lines) if line.startswith("Safety number"))
            return [line.strip() for line in lines[start + 1:start + 3]]

        assert digits(ua_view) == digits(ru_view)
        assert len("".join(digits(ua_view)).replace(" ", "")) == 60
        states = json.loads(env.ua("contacts", "list", "--json").out)["contacts"]
        assert [(c["alias"], c["state"]) for c in states] == [("RU", "verified")]
        yield World(env, node, ua_card, ru_card)
    finally:
        node.stop()


def inbox_ids(world: World) -> list[str]:
    return [m["id"] for m in json.loads(world.env.ru("inbox", "--json").out)["messages"]]


def test_a_thousand_names_there_and_back(world: World, tmp_path: Path) -> None:
    env = world.env
    data = make_list(1000)
    assert "Шевченко".encode() in data and b"O'Neill" in data
    source = tmp_path / "exchange-list.csv"
    source.write_bytes(data)

    # The recipient watches its inbox (WebSocket push) while the list is sent.
    watcher = subprocess.Popen(
        [sys.executable, "-m", "client", "inbox", "--watch", "--json", "--exit-after", "1"],
        env={**env.base, "BACKCHANNEL_HOME": str(env.root / "ru"),
             "BACKCHANNEL_PASSPHRASE": RU_PASSPHRASE},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching for new messages (push)" in first_line(watcher, watcher.stderr)

        sent = env.ua("send", "--to", "RU", "--json", str(source))
        receipt = json.loads(sent.out)
        envelope_id = receipt["id"]
        assert receipt["to"][0]["alias"] == "RU" and receipt["kind"] == "namelist"
        assert receipt["summary"] == "name list of 1,000 entries" and receipt["new"] is True

        pushed_out, _ = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    pushed = [json.loads(line) for line in pushed_out.splitlines()]
    assert [p["id"] for p in pushed] == [envelope_id]
    assert pushed[0]["from"]["alias"] == "UA" and pushed[0]["from"]["trust"] == "verified"

    listed = json.loads(env.ru("inbox", "--json").out)["messages"]
    assert [m["id"] for m in listed] == [envelope_id]
    assert listed[0]["from"] == {"id": listed[0]["from"]["id"], "alias": "UA",
                                 "name": "Kyiv Coordination HQ", "trust": "verified"}
    table = env.ru("inbox").out
    assert envelope_id in table and "UA" in table

    # Read: exactly the same entries come back as CSV (byte for byte: the file used
    # the canonical column names).
    # Over a file others could read: the names must not inherit its mode.
    out_file = tmp_path / "received.csv"
    out_file.write_bytes(b"an older file")
    out_file.chmod(0o644)
    read = env.ru("read", envelope_id, "--format", "csv", "--out", str(out_file))
    assert "1,000 entries written to" in read.out
    assert out_file.read_bytes() == data
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"
    assert env.ru("read", envelope_id, "--format", "csv").out.encode() == data
    shown = env.ru("read", envelope_id).out
    assert "Шевченко" in shown and "1,000 entries" in shown
    as_json = json.loads(env.ru("read", envelope_id, "--format", "json").out)
    assert len(as_json["entries"]) == 1000
    # Read and acknowledged: no longer in the inbox.
    assert inbox_ids(world) == []

    # The sender's receipts: accepted, delivered, opened -- and the opened receipt
    # names exactly the content that was sent.
    bundle = tmp_path / "bundle.json"
    receipts = json.loads(env.ua("receipts", envelope_id, "--json", "--export",
                                 str(bundle)).out)
    assert [s["kind"] for s in receipts["statements"]] == ["accepted", "delivered", "opened"]
    assert receipts["summary"]["accepted"] is True
    ru_id = receipts["envelope"]["to"][0]
    assert receipts["summary"]["delivered"] == [ru_id] == receipts["summary"]["opened"]
    assert list(receipts["content_matches"].values()) == [True]
    assert receipts["ok"] is True
    human = env.ua("receipts", envelope_id).out
    assert "RU: delivered, opened" in human and "matches what was sent" in human
    # The recipient sees the same statements for the message it received.
    theirs = json.loads(env.ru("receipts", envelope_id, "--json").out)
    assert [s["id"] for s in theirs["statements"]] == [s["id"] for s in receipts["statements"]]

    # Offline verification by a third party: no profile, no network.
    verified = env.ok("verify", str(bundle))
    assert "step 6: times: consistent" in verified.out
    assert env.ok("verify", str(bundle), "--card", str(world.ru_card)).code == 0
    report = json.loads(env.ok("verify", "--json", str(bundle)).out)
    assert report["ok"] and {c["name"] for c in report["cards"]} == {
        "Kyiv Coordination HQ", "Moscow Delegation", "Geneva node"}

    # Any changed byte: rejected. A sample through the CLI (letters, digits, base64
    # punctuation, JSON structure, whitespace), then every fifth byte in-process.
    original = bundle.read_bytes()
    text = original.decode()
    positions = sorted({text.index("1,"), text.index("payload") + 14, text.index('"sig"') + 9,
                        text.index("keyid") + 10, text.index(" "), len(text) // 2})
    tampered = tmp_path / "tampered.json"
    for position in positions:
        changed = bytearray(original)
        changed[position] = ord("A") if changed[position] != ord("A") else ord("B")
        tampered.write_bytes(bytes(changed))
        line = env.run("verify", str(tampered)).error_line()
        assert "bundle" in line or "statement" in line, (position, line)
    now = SYSTEM_CLOCK.now()
    verify_bundle(original, now=now).raise_for_failure()
    for position in range(0, len(original), 5):
        changed = bytearray(original)
        changed[position] ^= 0x01
        with pytest.raises(BundleInvalid):
            verify_bundle(bytes(changed), now=now).raise_for_failure()


def test_refusals_are_one_line_and_send_nothing(world: World, tmp_path: Path) -> None:
    env = world.env
    good = tmp_path / "good.csv"
    good.write_text("family_name,given_names\nШевченко,Тарас\n", encoding="utf-8")

    wrong = env.run("send", "--to", "RU", str(good), home="ua", passphrase="not it")
    assert wrong.error_line() == "wrong passphrase for this keystore"

    unknown = env.run("send", "--to", "XX", str(good), home="ua", passphrase=UA_PASSPHRASE)
    assert unknown.error_line() == ("unknown contact 'XX': add it with backchannel contacts "
                                    "add FILE --alias XX (backchannel contacts list shows "
                                    "the aliases)")
    near = env.run("send", "--to", "Ru", str(good), home="ua", passphrase=UA_PASSPHRASE)
    assert near.error_line() == "unknown contact 'Ru'; did you mean 'RU'? (aliases are exact)"

    malformed = tmp_path / "malformed.csv"
    malformed.write_text("family_name,date_of_birth\nКоваленко,1990-01-01\n"
                         "Шевченко,1990-13-01\n", encoding="utf-8")
    bad = env.run("send", "--to", "RU", str(malformed), home="ua", passphrase=UA_PASSPHRASE)
    assert bad.error_line() == (f"{malformed}: line 3: date_of_birth '1990-13-01' is not a "
                                "date (YYYY-MM-DD)")

    letter = tmp_path / "letter.txt"
    letter.write_text("Dear colleagues,\nplease find the list attached.\n", encoding="utf-8")
    not_list = env.run("send", "--to", "RU", str(letter), home="ua", passphrase=UA_PASSPHRASE)
    assert "no name-list columns found" in not_list.error_line()
    assert "use --kind note" in not_list.error_line()
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    not_text = env.run("send", "--to", "RU", str(image), home="ua", passphrase=UA_PASSPHRASE)
    assert "this is not a text file" in not_text.error_line()
    assert "--kind note" not in not_text.error_line()
    # A list in a legacy encoding, and broken JSON: the fix, not a hint about notes.
    cp1251 = tmp_path / "cp1251.csv"
    cp1251.write_bytes("family_name,given_names\nШевченко,Тарас\n".encode("cp1251"))
    legacy = env.run("send", "--to", "RU", str(cp1251), home="ua", passphrase=UA_PASSPHRASE)
    assert "not UTF-8 text; save the file as 'CSV UTF-8'" in legacy.error_line()
    assert "--kind note" not in legacy.error_line()
    broken = tmp_path / "broken.json"
    broken.write_text('[{"family_name": "Шевченко"', encoding="utf-8")
    cut = env.run("send", "--to", "RU", str(broken), home="ua", passphrase=UA_PASSPHRASE)
    assert cut.error_line() == f"{broken}: the file is not valid JSON (line 1, column 28)"
    json_object = tmp_path / "object.json"
    json_object.write_text('{"name": "Шевченко"}', encoding="utf-8")
    not_array = env.run("send", "--to", "RU", str(json_object), home="ua",
                        passphrase=UA_PASSPHRASE)
    assert "not a name list" in not_array.error_line()

    # A contact whose key changed is refused until verified again.
    env.ok("init", "--name", "Impostor", home="impostor", passphrase="imp")
    impostor_card = tmp_path / "impostor.card"
    env.ok("card", "--out", str(impostor_card), home="impostor", passphrase="imp")
    env.ua("contacts", "add", str(world.ru_card), "--alias", "RU")  # unchanged
    changed = env.run("contacts", "add", str(impostor_card), "--alias", "RU", home="ua",
                      passphrase=UA_PASSPHRASE)
    assert changed.code == 0 and "DIFFERENT KEY" in changed.err
    refused = env.run("send", "--to", "RU", str(good), home="ua", passphrase=UA_PASSPHRASE)
    assert "has a NEW KEY" in refused.error_line()
    # Put the real card back (another key change) and verify it again.
    env.ua("contacts", "add", str(world.ru_card), "--alias", "RU")
    env.ua("contacts", "verify", "RU", "--yes")

    # Nothing of the above reached the node.
    assert inbox_ids(world) == []

    # Notes are a body too.
    note = tmp_path / "note.txt"
    note.write_text("Proposal: 45 for 45, Sumy border, 1 December.\n", encoding="utf-8")
    sent = env.ok("send", "--kind", "note", "--to", "RU", str(note), home="ua",
                  passphrase=UA_PASSPHRASE)
    envelope_id = sent.out.strip().splitlines()[-1]
    assert inbox_ids(world) == [envelope_id]
    text = env.ru("read", envelope_id).out
    assert "45 for 45, Sumy border" in text
    csv_note = env.run("read", envelope_id, "--format", "csv", home="ru",
                       passphrase=RU_PASSPHRASE)
    assert "a note has no CSV form" in csv_note.error_line()


def test_unreachable_node_and_a_node_with_another_key(tmp_path: Path) -> None:
    env = Env(tmp_path)
    port = free_port()
    first = Node(env, tmp_path / "first", port)
    first.init("Geneva node")
    first.start()
    try:
        env.ok("init", "--name", "Kyiv", home="ua", passphrase=UA_PASSPHRASE)
        env.ok("init", "--name", "Moscow", home="ru", passphrase=RU_PASSPHRASE)
        env.ua("register", first.invite("Kyiv"))
        env.ru("register", first.invite("Moscow"))
        card = tmp_path / "ru.card"
        env.ru("card", "--out", str(card))
        env.ua("contacts", "add", str(card), "--alias", "RU")
        good = tmp_path / "good.csv"
        good.write_text("family_name\nШевченко\n", encoding="utf-8")
        # An unverified contact: sending works, with a warning.
        # An alias named twice is one recipient, and one warning.
        first_send = env.ua("send", "--to", "RU", "--to", "RU", str(good))
        assert first_send.err.count("RU is not verified") == 1
        assert "sending anyway" in first_send.err
        first_id = first_send.out.strip().splitlines()[-1]
        # RU has not added Kyiv's card: the message opens (the node's copy of the
        # sender's card is bound to the sender's id), flagged as from a stranger.
        stranger = env.ru("read", first_id, "--format", "csv")
        assert stranger.out == "family_name,given_names,patronymic,date_of_birth,rank,unit," \
            "service_number,citizenship,status,notes\nШевченко,,,,,,,,,\n"
        assert "not in your contacts" in stranger.err and "'Kyiv'" in stranger.err
        env.ua("contacts", "verify", "RU", "--yes")
        # An invitation from this node, presented to an impostor, is refused before
        # the secret is sent.
        pending = first.invite("later")
    finally:
        first.stop()

    down = env.run("send", "--to", "RU", str(good), home="ua", passphrase=UA_PASSPHRASE)
    assert f"cannot reach the node at {first.url}" in down.error_line()
    assert "unverified" not in down.error_line()
    offline_inbox = env.run("inbox", home="ru", passphrase=RU_PASSPHRASE)
    assert "cannot reach the node" in offline_inbox.error_line()
    # What was read before stays readable offline, from the encrypted local store;
    # so do the sender's copy and its last receipts.
    assert "Шевченко" in env.ru("read", first_id, "--format", "json").out
    assert "Шевченко" in env.ua("read", first_id).out
    offline = json.loads(env.ua("receipts", first_id, "--offline", "--json").out)
    assert [s["kind"] for s in offline["statements"]] == ["accepted"] and offline["ok"]
    kept = json.loads(env.ua("inbox", "--local", "--json").out)["messages"]
    assert [(m["id"], m["direction"], m["kind"]) for m in kept] == [
        (first_id, "out", "namelist")]
    assert kept[0]["to"][0]["alias"] == "RU"
    assert first_id in env.ru("inbox", "--local").out
    unknown = env.run("read", "A" * 43, home="ru", passphrase=RU_PASSPHRASE)
    assert "cannot reach the node" in unknown.error_line()
    unknown = env.run("read", "A" * 43, "--offline", home="ru", passphrase=RU_PASSPHRASE)
    assert "no message 'AAAA" in unknown.error_line()
    malformed_id = env.run("read", "../../etc/passwd", home="ru", passphrase=RU_PASSPHRASE)
    assert "is not a message id" in malformed_id.error_line()

    # Another node (another key) now answers at the same address.
    impostor = Node(env, tmp_path / "impostor", port)
    impostor.init("Geneva node")
    impostor.start()
    try:
        swapped = env.run("send", "--to", "RU", str(good), home="ua", passphrase=UA_PASSPHRASE)
        line = swapped.error_line()
        assert "presents a different key" in line and "nothing was sent" in line
        assert "different key" in env.run("inbox", home="ru",
                                          passphrase=RU_PASSPHRASE).error_line()
        env.ok("init", "--name", "Newcomer", home="new", passphrase="new")
        joining = env.run("register", pending, home="new", passphrase="new")
        assert "do not join" in joining.error_line()
        assert json.loads(env.ok("whoami", "--json", home="new",
                                 passphrase="new").out)["node"] is None
    finally:
        impostor.stop()
    # Nothing more was recorded as sent than the first message.
    assert len(list((tmp_path / "ua" / "messages").iterdir())) == 1
