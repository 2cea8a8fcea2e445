"""Four real nodes on loopback, driven only through the ``backchannel`` command.

Kyiv node → Istanbul node → Geneva node (ICRC) → Moscow node, each a ``relay serve``
subprocess with its own SQLite file, peered by their operators with ``relay peers
add``. A delegation on Kyiv sends a name list to a delegation on Moscow through
Istanbul and Geneva (``send --via TR --via ICRC``); the recipient reads it; every
receipt comes back to the sender, whose exported bundle verifies offline with the
eight statements in route order, and stops verifying when a bit is changed, a
statement removed or two statements swapped. A unique name in the list appears in
no node's database, WAL or log.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import first_line
from e2e_support import Env, Node, eventually, free_port, parallel

from client.bundle import encode_bundle, make_bundle, verify_bundle
from client.errors import BundleInvalid
from keys import dsse
from keys.card import load_card
from keys.clock import SYSTEM_CLOCK
from keys.envelope import parse_routing
from keys.statements import load_statement

pytestmark = pytest.mark.slow

UA = "Kyiv passphrase ї"
RU = "Moscow passphrase ё"
ROUTE = ["accepted", "relayed", "relayed", "relayed", "delivered", "opened",
         "countersigned", "countersigned"]


@dataclass
class World:
    env: Env
    kyiv: Node
    istanbul: Node
    geneva: Node
    moscow: Node

    @property
    def nodes(self) -> list[Node]:
        return [self.kyiv, self.istanbul, self.geneva, self.moscow]

    def ua(self, *args: str) -> str:
        return self.env.ok(*args, home="ua", passphrase=UA).out

    def ru(self, *args: str) -> str:
        return self.env.ok(*args, home="ru", passphrase=RU).out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("four")
    env = Env(root)
    names = {"kyiv": "Kyiv node", "istanbul": "Istanbul node",
             "geneva": "Geneva node (ICRC)", "moscow": "Moscow node"}
    nodes = {key: Node(env, root / key, free_port()) for key in names}
    parallel(*(lambda key=key, name=name: nodes[key].init(name) for key, name in names.items()))
    # Each operator pins its neighbours' cards (both directions).
    pairs = (("kyiv", "istanbul"), ("istanbul", "geneva"), ("geneva", "moscow"))
    pinned = parallel(*(lambda a=a, b=b: nodes[a].peer(nodes[b]).out
                        for left, right in pairs for a, b in ((left, right), (right, left))))
    assert all("pinned peer" in out for out in pinned)
    world = World(env, **nodes)
    try:
        parallel(*(node.start for node in world.nodes))

        def invite(node: Node, label: str) -> str:
            return env.ok("relay", "invite", "--dir", str(node.directory), "--name",
                          label).out.strip().splitlines()[-1]

        def join(home: str, passphrase: str, name: str, node: Node, label: str) -> None:
            env.ok("init", "--name", name, home=home, passphrase=passphrase)
            env.ok("register", invite(node, label), home=home, passphrase=passphrase)
            env.ok("card", "--out", str(root / f"{home}.card"), home=home,
                   passphrase=passphrase)

        parallel(lambda: join("ua", UA, "Kyiv Coordination HQ", world.kyiv, "Kyiv HQ"),
                 lambda: join("ru", RU, "Moscow Delegation", world.moscow, "Moscow delegation"))
        # Cards name the home node: the sender learns where the recipient lives.
        ru_card = load_card((root / "ru.card").read_bytes(), now=SYSTEM_CLOCK.now())
        assert ru_card.home is not None and ru_card.home.url == world.moscow.url

        def ua_contacts() -> None:
            world.ua("contacts", "add", str(root / "ru.card"), "--alias", "RU")
            # Node cards for the route, from the operators of Istanbul and Geneva.
            added = world.ua("contacts", "add", str(world.istanbul.card), "--alias", "TR")
            assert "Istanbul node (node)" in added and "send --via TR" in added
            world.ua("contacts", "add", str(world.geneva.card), "--alias", "ICRC")
            for alias in ("RU", "TR", "ICRC"):
                world.ua("contacts", "verify", alias, "--yes")

        def ru_contacts() -> None:
            world.ru("contacts", "add", str(root / "ua.card"), "--alias", "UA")
            world.ru("contacts", "verify", "UA", "--yes")

        parallel(ua_contacts, ru_contacts)
        yield world
    finally:
        for node in world.nodes:
            node.stop()


def name_list(canary_latin: str, canary_cyrillic: str) -> bytes:
    rows = ["family_name,given_names,patronymic,date_of_birth,rank,unit,service_number,"
            "citizenship,status,notes",
            f"{canary_cyrillic},Тарас,Григорович,1994-03-09,сержант,в/ч А1234,SN-1,Україна,"
            "captured,",
            f"{canary_latin},Olena,,1990,private,,SN-2,UA,missing,",
            "Коваленко,Андрій,Іванович,1988-11-30,,,SN-3,Україна,captured,поранений"]
    return ("\n".join(rows) + "\n").encode("utf-8")


def test_a_list_through_istanbul_and_geneva(world: World, tmp_path: Path) -> None:
    env = world.env
    canary_latin = f"Canaryvich{secrets.token_hex(6)}"
    canary_cyrillic = "Канарейко" + "".join(secrets.choice("бвгджзклмнпрстфхцчшщ")
                                            for _ in range(10))
    data = name_list(canary_latin, canary_cyrillic)
    source = tmp_path / "list.csv"
    source.write_bytes(data)

    # Unknown or wrong aliases in --via are refused before anything is sent.
    wrong = env.run("send", "--to", "RU", "--via", "RU", str(source), home="ua",
                    passphrase=UA)
    assert "not a node" in wrong.error_line()
    ends = env.run("send", "--to", "RU", "--via", "TR", "--via", "TR", str(source), home="ua",
                   passphrase=UA)
    assert "appears twice" in ends.error_line()

    # The recipient watches its inbox on the Moscow node while the list is sent in Kyiv.
    watcher = subprocess.Popen(
        [sys.executable, "-m", "client", "inbox", "--watch", "--json", "--exit-after", "1"],
        env={**env.base, "BACKCHANNEL_HOME": str(env.root / "ru"),
             "BACKCHANNEL_PASSPHRASE": RU},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching for new messages" in first_line(watcher, watcher.stderr)
        sent = json.loads(world.ua("send", "--to", "RU", "--via", "TR", "--via", "ICRC",
                                   "--json", str(source)))
        pushed_out, _ = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    envelope_id = sent["id"]
    assert len(sent["route"]) == 2
    assert [json.loads(line)["id"] for line in pushed_out.splitlines()] == [envelope_id]

    # The recipient reads exactly what was sent.
    assert world.ru("read", envelope_id, "--format", "csv").encode() == data

    # Every statement comes back to Kyiv: accepted, relayed ×3, delivered, opened,
    # countersigned by Geneva then Istanbul.
    eventually(lambda: world.kyiv.query(
        "SELECT count(*) FROM statements WHERE envelope_id = ?", envelope_id)[0][0] >= 8,
        what="eight statements at the origin")
    bundle = tmp_path / "bundle.json"
    receipts = json.loads(world.ua("receipts", envelope_id, "--json", "--export", str(bundle)))
    assert [s["kind"] for s in receipts["statements"]] == ROUTE
    assert [s["by_name"] for s in receipts["statements"]] == [
        "Kyiv node", "Kyiv node", "Istanbul node", "Geneva node (ICRC)", "Moscow node",
        "Moscow Delegation", "Geneva node (ICRC)", "Istanbul node"]
    assert receipts["ok"] and list(receipts["content_matches"].values()) == [True]
    human = world.ua("receipts", envelope_id)
    assert "RU: delivered, opened" in human and "matches what was sent" in human
    # Relayed hop by hop, each node named by the sender's alias for it or by its card.
    assert "node Kyiv node → ICRC" in human and "TR → node Moscow node" in human
    # The recipient's own view (from the Moscow node) verifies too.
    theirs = json.loads(world.ru("receipts", envelope_id, "--json"))
    assert [s["kind"] for s in theirs["statements"]] == ROUTE[:6] and theirs["ok"]

    # A third party verifies offline: no profile, no network.
    auditor = Env(tmp_path / "auditor")
    verified = auditor.ok("verify", str(bundle)).out
    assert ("step 7: route Kyiv node → Istanbul node → Geneva node (ICRC) → Moscow node, "
            "as the sender signed it; relayed by 3 of 3 nodes; delivered; opened; "
            "countersigned by 2 of 2 intermediaries") in verified
    report = json.loads(auditor.ok("verify", "--json", str(bundle)).out)
    assert report["ok"] and [s["kind"] for s in report["statements"]] == ROUTE
    assert auditor.ok("verify", str(bundle), "--card", str(world.geneva.card)).code == 0

    _tampered_bundles_fail(auditor, bundle, tmp_path)
    _canary_is_nowhere(world, [canary_latin, canary_cyrillic])


def _tampered_bundles_fail(auditor: Env, bundle: Path, tmp_path: Path) -> None:
    original = bundle.read_bytes()
    doc = json.loads(original)
    now = SYSTEM_CLOCK.now()
    verify_bundle(original, now=now).raise_for_failure()

    def encode(value: dict) -> bytes:
        return (json.dumps(value, ensure_ascii=False, indent=1) + "\n").encode()

    assert encode(doc) == original  # the canonical form, so edits below are the only change
    tampered = tmp_path / "tampered.json"
    # One bit changed: a sample through the CLI, then every 37th byte in process. The
    # sample flips the case bit (0x20) of a letter in Istanbul's countersignature, which
    # keeps the base64 well-formed: the signature itself must fail.
    flipped = bytearray(original)
    start = original.rindex(b'"sig": "', 0, original.index(b'"cards"')) + len(b'"sig": "')
    position = next(i for i in range(start, start + 88) if chr(original[i]).isalpha())
    flipped[position] ^= 0x20
    tampered.write_bytes(bytes(flipped))
    line = auditor.run("verify", str(tampered)).error_line()
    assert "step 5: countersigned statement" in line and "does not verify" in line, line
    for position in range(0, len(original), 37):
        changed = bytearray(original)
        changed[position] ^= 0x01
        with pytest.raises(BundleInvalid):
            verify_bundle(bytes(changed), now=now).raise_for_failure()
    # One statement removed, and the rest re-encoded canonically (as a forger would):
    # whichever statement it is, the bundle no longer verifies, for a reason of its own.
    routing = parse_routing(dsse.Envelope.from_dict(doc["envelope"]))
    statements = [load_statement(s) for s in doc["statements"]]
    cards = [load_card(dsse.Envelope.from_dict(c), now=now, allow_expired=True)
             for c in doc["cards"]]
    reasons = []
    for index in range(len(statements)):
        cut = encode_bundle(make_bundle(routing, statements[:index] + statements[index + 1:],
                                        cards))
        report = verify_bundle(cut, now=now)
        failure = report.first_failure()
        assert failure is not None and failure.step != 2, (index, report.checks)
        reasons.append(failure.text)
    assert sum("a hop is missing" in r for r in reasons) >= 2, reasons
    assert any("countersigned by some intermediaries but not by" in r for r in reasons)
    assert any("no delivered statement" in r for r in reasons)
    assert any("no accepted statement" in r for r in reasons)
    tampered.write_bytes(encode_bundle(make_bundle(routing, statements[:2] + statements[3:],
                                                   cards)))
    line = auditor.run("verify", str(tampered)).error_line()
    assert "step 7: route: a hop is missing: no relayed statement by" in line, line
    # Two statements swapped: not the order the route gives them.
    swapped = list(doc["statements"])
    swapped[2], swapped[3] = swapped[3], swapped[2]
    tampered.write_bytes(encode(dict(doc, statements=swapped)))
    line = auditor.run("verify", str(tampered)).error_line()
    assert "step 2: canonical form" in line, line


def _canary_is_nowhere(world: World, canaries: list[str]) -> None:
    """The unique names never reach any node's database file, WAL, shared memory or
    log (the nodes are still running: the WAL holds the latest commits)."""
    needles = [c.encode("utf-8") for c in canaries]
    checked = []
    for node in world.nodes:
        files = node.files()
        assert node.database in files and node.log in files
        assert any(f.name == "relay.db-wal" for f in files), files
        for path in files:
            content = path.read_bytes()
            for needle in needles:
                assert needle not in content, (path, needle)
            checked.append(path.name)
    # Intermediaries keep metadata and receipts only, not even the ciphertext.
    for node in (world.istanbul, world.geneva):
        assert node.query("SELECT count(*) FROM envelopes WHERE sealed IS NOT NULL") == [(0,)]
        assert node.query("SELECT count(*) FROM members") == [(0,)]
    assert len(checked) >= 12
