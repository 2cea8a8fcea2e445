"""A negotiation end to end over the command line and a real node.

Kyiv and Moscow delegations and an ICRC guarantor are members of one node (SQLite,
127.0.0.1, a subprocess); every step is the ``backchannel`` command in a subprocess:
propose -> accept -> the proposer confirms -> the guarantor co-signs -> the exported
agreement verifies offline (and stops verifying when a byte changes).

Ids are base64url and may begin with "-": they are passed after "--".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import RU_PASSPHRASE, UA_PASSPHRASE, Env, Node, free_port
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from keys.encoding import b64url_decode
from keys.exported import verify_exported

pytestmark = pytest.mark.slow

ICRC_PASSPHRASE = "Geneva guarantor"
GIVE = "family_name,given_names,date_of_birth\nШевченко,Тарас,1990-03-09\nКоваленко,Олена,1985-01-02\n"
RECEIVE = "family_name,given_names,date_of_birth\nSmirnov,Ivan,1979-11-30\n"


@dataclass
class World:
    env: Env
    node: Node
    cards: dict[str, Path]

    def icrc(self, *args: str):
        return self.env.ok(*args, home="icrc", passphrase=ICRC_PASSPHRASE)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("negotiation")
    env = Env(root)
    node = Node(env, root / "node", free_port())
    node.init("Geneva node")
    node.start()
    try:
        env.ok("init", "--name", "Kyiv Coordination HQ", home="ua", passphrase=UA_PASSPHRASE)
        env.ok("init", "--name", "Moscow Delegation", home="ru", passphrase=RU_PASSPHRASE)
        env.ok("init", "--name", "ICRC Geneva", "--role", "intermediary", home="icrc",
               passphrase=ICRC_PASSPHRASE)
        world = World(env, node, {})
        env.ua("register", node.invite("Kyiv HQ"))
        env.ru("register", node.invite("Moscow delegation"))
        invitation = env.ok("relay", "invite", "--dir", str(node.directory), "--name", "ICRC",
                            "--role", "intermediary").out.strip().splitlines()[-1]
        world.icrc("register", invitation)
        cards = world.cards
        for who, run in (("ua", env.ua), ("ru", env.ru), ("icrc", world.icrc)):
            cards[who] = root / f"{who}.card"
            run("card", "--out", str(cards[who]))
        for run, others in ((env.ua, ("ru", "icrc")), (env.ru, ("ua", "icrc")),
                            (world.icrc, ("ua", "ru"))):
            for other in others:
                run("contacts", "add", str(cards[other]), "--alias", other.upper())
                run("contacts", "verify", other.upper(), "--yes")
        yield world
    finally:
        node.stop()


def test_propose_accept_countersign_export(world: World, tmp_path: Path) -> None:
    env = world.env
    give, receive = tmp_path / "give.csv", tmp_path / "receive.csv"
    give.write_text(GIVE)
    receive.write_text(RECEIVE)
    proposed = json.loads(env.ua(
        "propose", "--to", "RU", "--guarantor", "ICRC", "--give", str(give),
        "--receive", str(receive), "--place", "Sumy border crossing",
        "--window", "2030-12-01/2030-12-03", "--json").out)
    proposal_id = proposed["id"]

    # Moscow sees the thread (fetched from its inbox), open, with counts and no names.
    seen = json.loads(env.ru("thread", "--json", "--", proposal_id).out)
    assert seen["state"] == "open" and [m["kind"] for m in seen["messages"]] == ["proposal"]
    transfers = seen["messages"][0]["transfers"]
    assert [t["entries"] for t in transfers] == [2, 1]
    assert "Шевченко" not in json.dumps(seen) and "Smirnov" not in json.dumps(seen)

    accepted = json.loads(env.ru("accept", "--json", "--", proposal_id).out)
    agreement_id = accepted["id"]
    # A guarantor cannot sign before both parties have.
    early = env.run("countersign", "--", agreement_id, home="icrc", passphrase=ICRC_PASSPHRASE)
    assert early.error_line()

    confirmed = json.loads(env.ua("countersign", "--json", "--", agreement_id).out)
    assert confirmed["signatures"]["complete"] is False
    signed = json.loads(world.icrc("countersign", "--json", "--", agreement_id).out)
    assert signed["signatures"]["complete"] is True

    # Kyiv merges the returned copy and exports; anyone verifies offline.
    export = tmp_path / "agreement.json"
    human = env.ua("thread", "--export", str(export), "--", proposal_id).out
    assert f"Agreement {agreement_id}: complete" in human
    assert "accepted" in human.splitlines()[0]
    report = verify_exported(export.read_bytes())
    assert report.ok, report.lines()
    assert all(s.complete for s in report.signatures.values())
    # A changed byte (the place) no longer verifies.
    data = json.loads(export.read_bytes())
    assert data["kind"] == "agreement" and len(data["thread"]) == 2
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(export.read_bytes().replace(b'"sig":"', b'"sig":"A', 1))
    assert not verify_exported(tampered.read_bytes()).ok
    # The same through the command line, with the parties' cards pinned.
    verified = env.ok("verify", str(export), "--card", str(world.cards["ua"]),
                      "--card", str(world.cards["icrc"]))
    assert verified.out.startswith(f"agreement {agreement_id}: VERIFIED")
    assert "missing: none" in verified.out and "ICRC Geneva (intermediary)" in verified.out
    refused = env.run("verify", str(tampered))
    assert refused.out.splitlines()[0].endswith("NOT VERIFIED")
    assert refused.error_line().startswith(f"{tampered}: ")

    # The handover: who crossed, typed in other scripts; Kyiv records (it holds the
    # lists' salts), Moscow signs, the ICRC witness countersigns, anyone verifies.
    crossed = tmp_path / "crossed.csv"
    crossed.write_text("family_name,given_names,date_of_birth\nShevchenko,Taras,1990-03-09\n"
                       "Kovalenko,Olena,1985-01-02\nСмирнов,Иван,1979-11-30\n")
    recorded = json.loads(env.ua(
        "handover", "record", "--agreement", agreement_id, "--transferred", str(crossed),
        "--place", "Sumy border crossing", "--at", "2030-12-02T10:00:00Z",
        "--witness", "ICRC", "--json").out)
    record_id = recorded["id"]
    early = env.run("countersign", "--", record_id, home="icrc", passphrase=ICRC_PASSPHRASE)
    assert early.error_line()  # a witness signs only after both parties
    env.ru("handover", "sign", "--", record_id)
    witnessed = json.loads(world.icrc("countersign", "--json", "--", record_id).out)
    assert witnessed["kind"] == "handover record" and witnessed["signatures"]["complete"]
    handover_file = tmp_path / "handover.json"
    exported = env.ua("handover", "export", "--out", str(handover_file), "--", record_id).out
    assert f"Handover record {record_id}: complete" in exported
    checked = env.ok("verify", str(handover_file)).out
    assert checked.startswith(f"handover {record_id}: VERIFIED"), checked
    report = verify_exported(handover_file.read_bytes())
    assert report.ok and all(s.complete for s in report.signatures.values())
    # An independent DSSE implementation accepts every signature on both exports.
    exported = json.loads(handover_file.read_bytes())
    keys = [SSlibKey(keyid=i, keytype="ed25519", scheme="ed25519",
                     keyval={"public": b64url_decode(k, max_bytes=32).hex()})
            for i, k in exported["keys"].items()]
    for name in ("agreement", "handover"):
        envelope = SslibEnvelope.from_dict(exported[name])
        assert len(envelope.verify(keys, threshold=3)) == 3

    # Refused, one line each, nothing sent: a person on no agreed list; the accepting
    # side (it never held the salts of the lists).
    stranger = tmp_path / "stranger.csv"
    stranger.write_text("family_name,given_names,date_of_birth\nNowak,Jan,1966-06-06\n")
    refused = env.run("handover", "record", "--agreement", agreement_id, "--transferred",
                      str(stranger), "--place", "Sumy", home="ua", passphrase=UA_PASSPHRASE)
    assert "1 of 1 persons" in refused.error_line()
    no_salts = env.run("handover", "record", "--agreement", agreement_id, "--transferred",
                       str(crossed), "--place", "Sumy", home="ru", passphrase=RU_PASSPHRASE)
    assert "does not hold the agreed lists" in no_salts.error_line()


def test_refusals(world: World) -> None:
    env = world.env
    unknown = "A" * 43
    assert "no proposal or decision" in env.run(
        "accept", unknown, home="ru", passphrase=RU_PASSPHRASE).error_line()
    assert "--window is FROM/TO" in env.run(
        "propose", "--to", "RU", "--give", "x", "--receive", "y", "--place", "p",
        "--window", "2030-12-01", home="ua", passphrase=UA_PASSPHRASE).error_line()


def test_counter_then_reject(world: World, tmp_path: Path) -> None:
    env = world.env
    give, receive, fewer = (tmp_path / n for n in ("give.csv", "receive.csv", "fewer.csv"))
    give.write_text(GIVE)
    receive.write_text(RECEIVE)
    fewer.write_text("family_name,given_names\nПетров,Іван\n")
    first = json.loads(env.ua(
        "propose", "--to", "RU", "--guarantor", "ICRC", "--give", str(give),
        "--receive", str(receive), "--place", "Sumy", "--window", "2030-12-01/2030-12-03",
        "--json").out)["id"]
    # Moscow answers with another place and its own (shorter) list.
    countered = json.loads(env.ru("counter", "--place", "Kharkiv", "--give", str(fewer),
                                  "--json", "--", first).out)
    second = countered["id"]
    assert countered["supersedes"] == first
    # The superseded proposal can no longer be accepted; the counter can be answered.
    refused = env.run("accept", "--", first, home="ua", passphrase=UA_PASSPHRASE)
    assert "superseded" in refused.error_line()
    env.ua("reject", "--reason", "Kharkiv is not agreed", "--", second)
    timeline = json.loads(env.ua("thread", "--json", "--", first).out)
    assert timeline["state"] == "rejected"
    assert [m["kind"] for m in timeline["messages"]] == ["proposal", "proposal", "rejection"]
    assert timeline["messages"][1]["place"] == "Kharkiv"
    assert timeline["messages"][1]["transfers"][1]["entries"] == 1
    assert timeline["messages"][2]["reason"] == "Kharkiv is not agreed"
    # Moscow sees the same thread, and nothing can follow a rejection.
    theirs = json.loads(env.ru("thread", "--json", "--", second).out)
    assert [m["id"] for m in theirs["messages"]] == [m["id"] for m in timeline["messages"]]
    late = env.run("accept", "--", second, home="ru", passphrase=RU_PASSPHRASE)
    assert late.error_line()
    again = env.run("counter", "--place", "Sumy", "--", second, home="ru",
                    passphrase=RU_PASSPHRASE)
    assert "closed" in again.error_line()
