"""``backchannel resend``: a send whose outcome is unknown, and a node restored from a
backup, settled by submitting the same envelope again -- never a second one.

A real node (subprocess, SQLite) behind a loopback TCP proxy that can lose the answer
to a submission (the node committed, the client sees the connection close) or the
submission itself (the node never saw it). Delegations are driven through the
``backchannel`` command; the expiry paths through the library with a profile whose
clock runs ahead (the node still checks the requests' real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from cli_support import RU_PASSPHRASE, UA_PASSPHRASE, Env, Node, free_port

from client import messaging, resend
from client.bodies import prepare as prepare_body
from client.profile import Profile
from client.relay_client import RelayClient
from keys import dsse
from keys.clock import SYSTEM_CLOCK, FixedClock
from keys.envelope import MAX_LIFETIME
from keys.proposal import message_id

pytestmark = pytest.mark.slow

LIST = ("family_name,given_names,date_of_birth,service_number\n"
        "Шевченко,Тарас,1990-03-09,SN-1\nKovalenko,Olena,1985,SN-2\n")


class LossyProxy:
    """127.0.0.1:port → the node. ``lose`` is None (pass everything), "answer" (the
    node gets a POST /v1/envelopes, its answer is dropped and the client's connection
    closed), "502" (the same, but the client gets a reverse proxy's 502 page),
    "request" (the submission never reaches the node), "stall" (it never reaches
    the node and the connection stays open: ``stalled`` is set) or "hold-second"
    (the first submission passes; the next waits, ``held`` set, until ``release``)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.lose: str | None = None
        self.lost = 0
        self.stalled = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        self.submissions = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return
        submitting = threading.Event()

        def cut() -> None:
            self.lost += 1
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        def forward() -> None:
            while data := _recv(client):
                if data.startswith(b"POST /v1/envelopes ") and self.lose is not None:
                    self.submissions += 1
                    if self.lose == "hold-second":
                        if self.submissions > 1:
                            self.held.set()
                            self.release.wait(60)
                    elif self.lose == "request":
                        cut()
                        return
                    elif self.lose == "stall":
                        self.stalled.set()
                        return  # the client waits for an answer that never comes
                    else:
                        submitting.set()
                try:
                    upstream.sendall(data)
                except OSError:
                    return
            _shut(upstream)

        threading.Thread(target=forward, daemon=True).start()
        while data := _recv(upstream):
            if submitting.is_set():
                if self.lose == "502":
                    with contextlib.suppress(OSError):
                        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html"
                                       b"\r\nContent-Length: 12\r\n\r\n<h1>502</h1>")
                cut()
                break
            try:
                client.sendall(data)
            except OSError:
                break
        _shut(client)
        client.close()
        upstream.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class ProxiedNode(Node):
    """A node whose public URL (in its card's invitations) is the proxy's."""

    proxy_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port or self.port}"


@dataclass
class World:
    env: Env
    node: ProxiedNode
    proxy: LossyProxy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("resend")
    env = Env(root)
    node = ProxiedNode(env, root / "node", free_port())
    proxy = LossyProxy(node.port)
    node.proxy_port = proxy.port
    node.init("Geneva node")
    node.start()
    try:
        for home, name, passphrase in (("ua", "Kyiv HQ", UA_PASSPHRASE),
                                       ("ru", "Moscow delegation", RU_PASSPHRASE)):
            env.ok("init", "--name", name, home=home, passphrase=passphrase)
            env.ok("register", node.invite(name), home=home, passphrase=passphrase)
            env.ok("card", "--out", str(root / f"{home}.card"), home=home,
                   passphrase=passphrase)
        env.ua("contacts", "add", str(root / "ru.card"), "--alias", "RU")
        env.ru("contacts", "add", str(root / "ua.card"), "--alias", "UA")
        env.ua("contacts", "verify", "RU", "--yes")
        env.ru("contacts", "verify", "UA", "--yes")
        yield World(env, node, proxy)
    finally:
        proxy.lose = None
        node.stop()
        proxy.close()


def _uncertain_send(world: World, tmp_path: Path, lose: str) -> tuple[str, str]:
    """Send a list while the proxy loses ``lose``; the one-line error names the id.
    Returns the id and the error line."""
    source = tmp_path / "list.csv"
    source.write_text(LIST, encoding="utf-8")
    world.proxy.lose = lose
    try:
        result = world.env.run("send", "--to", "RU", str(source), home="ua",
                               passphrase=UA_PASSPHRASE)
    finally:
        world.proxy.lose = None
    line = result.error_line()
    assert "may or may not have accepted" in line, line
    found = re.search(r"backchannel resend ([A-Za-z0-9_-]{43})\b", line)
    assert found is not None, line
    return found.group(1), line


def _ru_inbox(world: World) -> list[str]:
    return [m["id"] for m in json.loads(world.env.ru("inbox", "--json").out)["messages"]]


def test_a_lost_answer_is_settled_by_the_same_envelope(world: World, tmp_path: Path) -> None:
    env = world.env
    envelope_id, _ = _uncertain_send(world, tmp_path, "answer")
    assert world.proxy.lost >= 1
    # The node committed it: the recipient already sees it; the sender has no record.
    assert _ru_inbox(world) == [envelope_id]
    def local_state() -> list[bool]:
        local = json.loads(env.ua("inbox", "--local", "--json").out)["messages"]
        return [m["confirmed"] for m in local if m["id"] == envelope_id]

    assert local_state() == [False]
    assert "UNCONFIRMED" in env.ua("inbox", "--local").out

    again = env.ua("resend", envelope_id)
    assert "the node holds it" in again.out and "now kept" in again.out
    assert again.out.strip().splitlines()[-1] == envelope_id
    assert local_state() == [True]
    # The record is complete: receipts verify against the node's key.
    receipts = json.loads(env.ua("receipts", envelope_id, "--json").out)
    assert receipts["ok"] is True and receipts["summary"]["accepted"] is True
    assert [s["kind"] for s in receipts["statements"]][:1] == ["accepted"]
    # Once more: still the one envelope, the same acceptance.
    twice = json.loads(env.ua("resend", envelope_id, "--json").out)
    assert twice["resent"] == [{"id": envelope_id, "new": False, "confirmed": False,
                                "accepted": twice["resent"][0]["accepted"]}]
    assert _ru_inbox(world) == [envelope_id]
    entries = json.loads(env.ru("read", envelope_id, "--format", "json").out)["entries"]
    assert [(e["family_name"], e["service_number"]) for e in entries] == [
        ("Шевченко", "SN-1"), ("Kovalenko", "SN-2")]


def test_a_gateway_error_after_the_commit_is_uncertain_too(world: World,
                                                          tmp_path: Path) -> None:
    """A reverse proxy's 502 page (no problem document) says nothing of the node's
    commit: the send is uncertain, not refused, and resend settles it."""
    before = _ru_inbox(world)
    envelope_id, line = _uncertain_send(world, tmp_path, "502")
    assert "HTTP 502 without a problem document" in line, line
    assert _ru_inbox(world) == [*before, envelope_id]
    done = json.loads(world.env.ua("resend", envelope_id, "--json").out)["resent"]
    assert [(r["new"], r["confirmed"]) for r in done] == [(False, True)]
    assert _ru_inbox(world) == [*before, envelope_id]


def test_a_lost_request_is_submitted_by_resend(world: World, tmp_path: Path) -> None:
    before = _ru_inbox(world)
    envelope_id, _ = _uncertain_send(world, tmp_path, "request")
    assert _ru_inbox(world) == before
    # --all submits only what the node confirmed before (an interrupted send may have
    # been meant to stop); it names the unconfirmed one.
    listed = json.loads(world.env.ua("resend", "--all", "--json").out)
    assert listed["unconfirmed"] == [envelope_id]
    assert envelope_id not in [r["id"] for r in listed["resent"]]
    assert _ru_inbox(world) == before
    done = json.loads(world.env.ua("resend", envelope_id, "--json").out)
    assert [{k: v for k, v in r.items() if k != "accepted"} for r in done["resent"]] == [
        {"id": envelope_id, "new": True, "confirmed": True}]
    assert _ru_inbox(world) == [*before, envelope_id]


def test_a_restored_node_gets_what_it_lost(world: World, tmp_path: Path) -> None:
    env, node = world.env, world.node
    for envelope_id in _ru_inbox(world):
        env.ru("read", envelope_id)
    backup = tmp_path / "backup.db"
    node.back_up(backup)

    # Two notes after the backup: Moscow reads the first before the restore.
    ids = []
    for number, text in enumerate(("Bus at the crossing.", "Second list follows on Friday.")):
        note = tmp_path / f"note{number}.txt"
        note.write_text(text, encoding="utf-8")
        ids.append(json.loads(env.ua("send", "--kind", "note", "--to", "RU", str(note),
                                     "--json").out)["id"])
    read_first, envelope_id = ids
    env.ru("read", read_first)
    first_accepted = json.loads(env.ua("receipts", envelope_id, "--json").out
                                )["statements"][0]["id"]
    assert _ru_inbox(world) == [envelope_id]

    # The operator restores the backup (operator guide, section 6).
    node.restore(backup)
    assert _ru_inbox(world) == []
    lost = env.run("receipts", envelope_id, home="ua", passphrase=UA_PASSPHRASE)
    assert lost.code == 1

    everything = env.ua("resend", "--all").out
    for lost_id in ids:
        assert f"{lost_id}: the node did not hold it and accepted it now" in everything
    assert "FAILED" not in everything and "not confirmed" not in everything
    # What Moscow had read is acknowledged again, with the opened statement it signed
    # then, and not shown as new; the other one arrives.
    assert _ru_inbox(world) == [envelope_id]
    assert "Second list follows on Friday." in env.ru("read", envelope_id).out
    # The receipts verify, with the first acceptance (the one the backup lost, still
    # signed by the node) in the bundle, and the second one named.
    for settled in ids:
        receipts = env.ua("receipts", settled, "--json")
        report = json.loads(receipts.out)
        assert report["ok"] is True, report["checks"]
        # (The opened statement Moscow signed before the restore may come before the
        # restored node's delivered one: the order is by time.)
        assert sorted(s["kind"] for s in report["statements"]) == ["accepted", "delivered",
                                                                    "opened"]
        assert [r["kind"] for r in report["repeated"]] == ["accepted"]
        assert "signed accepted again" in receipts.err
    again = json.loads(env.ua("receipts", envelope_id, "--json").out)
    assert again["statements"][0]["id"] == first_accepted
    assert again["repeated"][0]["id"] != first_accepted


def _delegation(world: World, tmp_path: Path, home: str, name: str, *, alias: str) -> str:
    """Another delegation on the world's node, a verified contact of Kyiv's under
    ``alias`` (its passphrase is ``home``); returns its member id."""
    env = world.env
    env.ok("init", "--name", name, home=home, passphrase=home)
    env.ok("register", world.node.invite(name), home=home, passphrase=home)
    card = tmp_path / f"{home}.card"
    env.ok("card", "--out", str(card), home=home, passphrase=home)
    env.ua("contacts", "add", str(card), "--alias", alias)
    env.ua("contacts", "verify", alias, "--yes")
    return str(json.loads(env.ok("whoami", "--json", home=home, passphrase=home).out)["id"])


def test_a_refused_send_keeps_no_copy(world: World, tmp_path: Path) -> None:
    """A refusal (4xx) is definite: nothing to resend, nothing kept."""
    env, node = world.env, world.node
    member = _delegation(world, tmp_path, "gone", "Left", alias="GONE")
    env.ok("relay", "revoke", "--dir", str(node.directory), member)
    copies = env.root / "ua" / "copies"
    kept = set(os.listdir(copies)) if copies.exists() else set()  # none if run alone
    source = tmp_path / "note.txt"
    source.write_text("to someone no longer there", encoding="utf-8")
    refused = env.run("send", "--kind", "note", "--to", "GONE", str(source), home="ua",
                      passphrase=UA_PASSPHRASE)
    line = refused.error_line()
    assert "resend" not in line, line
    assert (set(os.listdir(copies)) if copies.exists() else set()) == kept
    assert not list((env.root / "ua" / "drafts").glob("*.box"))


def test_resend_errors_are_one_line(world: World) -> None:
    env = world.env
    unknown = env.run("resend", "A" * 43, home="ua", passphrase=UA_PASSPHRASE)
    assert "keeps no copy of message" in unknown.error_line()
    bad = env.run("resend", "not-an-id", home="ua", passphrase=UA_PASSPHRASE)
    assert "is not a message id" in bad.error_line()
    # Someone else's message: the recipient keeps no copy of it.
    theirs = _ru_inbox(world) or [m["id"] for m in json.loads(
        env.ru("inbox", "--local", "--json").out)["messages"]]
    other = env.run("resend", theirs[0], home="ru", passphrase=RU_PASSPHRASE)
    assert "keeps no copy of message" in other.error_line()
    # Several: the first failure ends the run and says how to go on from there.
    unknown_id, later = "A" * 43, "C" * 42 + "A"
    several = env.run("resend", unknown_id, later, "--json", home="ua",
                      passphrase=UA_PASSPHRASE)
    assert several.error_line() == (
        f"message {unknown_id} cannot be submitted again (0 of 2 submitted before it); "
        f"the rest were not tried: backchannel resend {later}")
    shown = json.loads(several.out)
    assert [f["id"] for f in shown["failed"]] == [unknown_id]
    assert shown["not_tried"] == [later] and shown["resent"] == []
    for usage in ((), ("--all", unknown_id)):
        assert env.run("resend", *usage, home="ua", passphrase=UA_PASSPHRASE).code == 2


def _propose(world: World, tmp_path: Path) -> tuple[str, ...]:
    """A propose command line (two messages: the proposal, then both lists disclosed
    to Moscow)."""
    give, receive = tmp_path / "give.csv", tmp_path / "receive.csv"
    give.write_text("family_name,given_names\nШевченко,Тарас\n", encoding="utf-8")
    receive.write_text("family_name,given_names\nSmirnov,Ivan\n", encoding="utf-8")
    return ("propose", "--to", "RU", "--give", str(give), "--receive", str(receive),
            "--place", "Sumy", "--window", "2030-12-01/2030-12-03")


def test_a_command_stopped_by_an_uncertain_send_is_finished_by_resend(
        world: World, tmp_path: Path) -> None:
    """propose sends two messages (the proposal, then both lists disclosed to Moscow).
    The first one's answer is lost: the command stops, names both, and one resend of
    the two finishes it; the same proposal, not a second one."""
    env = world.env
    before = _ru_inbox(world)
    world.proxy.lose = "answer"
    try:
        stopped = env.run(*_propose(world, tmp_path), home="ua", passphrase=UA_PASSPHRASE)
    finally:
        world.proxy.lose = None
    line = stopped.error_line()
    named = re.search(r"Run backchannel resend ((?:[A-Za-z0-9_-]{43} ?)+) to finish it", line)
    assert named is not None and "the message after it is sealed and kept" in line, line
    ids = named.group(1).split()
    assert len(ids) == 2
    # The proposal reached the node (its answer was lost); the disclosure never left.
    assert _ru_inbox(world) == [*before, ids[0]]
    local = {m["id"]: m for m in json.loads(env.ua("inbox", "--local", "--json").out)["messages"]}
    assert [(local[i]["kind"], local[i]["confirmed"]) for i in ids] == [
        ("proposal", False), ("disclosure", False)]
    # resend --all lists them in the command's order (never by id).
    listed = json.loads(env.ua("resend", "--all", "--json").out)["unconfirmed"]
    assert [i for i in listed if i in ids] == ids

    done = env.ua("resend", *ids)
    lines = done.out.strip().splitlines()
    assert lines[0].startswith(f"{ids[0]}: the node holds it"), done.out
    assert lines[1].startswith(f"{ids[1]}: the node did not hold it"), done.out
    assert _ru_inbox(world) == [*before, *ids]
    # Moscow has the one proposal and both lists, checked against it.
    opened = Profile(env.root / "ua").open(UA_PASSPHRASE)
    record = opened.message_record(ids[0])
    assert record is not None
    proposal_id = message_id(dsse.Envelope.from_dict(record.body["proposal"]))
    thread = json.loads(env.ru("thread", "--json", "--", proposal_id).out)
    assert thread["state"] == "open" and len(thread["messages"]) == 1
    disclosed = json.loads(env.ru("disclosed", "--json", "--", proposal_id).out)
    assert disclosed["refused"] == []
    assert sorted(n["family_name"] for d in disclosed["lists"] for n in d["names"]) == [
        "Smirnov", "Шевченко"]


def _interrupted(world: World, *args: str) -> str:
    """Run the ``backchannel`` command ``args`` as Kyiv, press Ctrl-C while its first
    submission waits for the node, and return the warning it printed before ending
    as interrupted (exit status 130)."""
    env = world.env
    world.proxy.stalled.clear()
    world.proxy.lose = "stall"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "client", *args],
            env={**env.base, "BACKCHANNEL_HOME": str(env.root / "ua"),
                 "BACKCHANNEL_PASSPHRASE": UA_PASSPHRASE},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert world.proxy.stalled.wait(60), "the submission never reached the proxy"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        world.proxy.lose = None
    assert proc.returncode == 130, err
    warning, last = err.strip().splitlines()[-2:]
    assert last == "backchannel: interrupted", err
    assert warning.startswith("backchannel: warning: interrupted. The node may or may not "
                              "have accepted"), err
    return warning


def test_an_interrupted_send_names_its_message(world: World, tmp_path: Path) -> None:
    source = tmp_path / "list.csv"
    source.write_text(LIST, encoding="utf-8")
    before = _ru_inbox(world)
    warning = _interrupted(world, "send", "--to", "RU", str(source))
    named = re.search(r"run backchannel resend ([A-Za-z0-9_-]{43}) \(", warning)
    assert named is not None, warning
    assert _ru_inbox(world) == before
    world.env.ua("resend", named.group(1))
    assert _ru_inbox(world) == [*before, named.group(1)]


def test_an_interrupted_command_names_what_to_finish(world: World, tmp_path: Path) -> None:
    """Ctrl-C while the first submission waits for the node: as uncertain as a lost
    answer; the command names both messages and resend finishes it."""
    env = world.env
    before = _ru_inbox(world)
    warning = _interrupted(world, *_propose(world, tmp_path))
    named = re.search(r"Run backchannel resend ((?:[A-Za-z0-9_-]{43} ?)+) to finish it",
                      warning)
    assert named is not None, warning
    ids = named.group(1).split()
    assert len(ids) == 2 and _ru_inbox(world) == before
    done = json.loads(env.ua("resend", *ids, "--json").out)
    assert [(r["id"], r["new"]) for r in done["resent"]] == [(ids[0], True), (ids[1], True)]
    assert _ru_inbox(world) == [*before, *ids]


@contextlib.contextmanager
def _node_configured(world: World, **settings: str) -> Iterator[None]:
    """The world's node restarted with ``BACKCHANNEL_RELAY_<KEY>`` settings, and
    restarted without them afterwards."""
    node = world.node
    node.stop()
    node.serve_env = {f"BACKCHANNEL_RELAY_{key.upper()}": value
                      for key, value in settings.items()}
    node.start()
    try:
        yield
    finally:
        node.stop()
        del node.serve_env  # back to the class's (no overrides)
        node.start()


def test_a_command_failing_before_it_submits_keeps_nothing(world: World,
                                                          tmp_path: Path) -> None:
    """The messages are sealed and kept before the first submission; a command that
    fails while preparing the second (the lists are larger than the node accepts)
    submits nothing and leaves nothing to resend."""
    env = world.env
    give, receive = tmp_path / "give.csv", tmp_path / "receive.csv"
    give.write_text("family_name,given_names\n" + "".join(
        f"Шевченко-{i},Тарас\n" for i in range(400)), encoding="utf-8")
    receive.write_text("family_name,given_names\nSmirnov,Ivan\n", encoding="utf-8")
    before = _ru_inbox(world)
    kept_before = json.loads(env.ua("resend", "--all", "--json").out)
    with _node_configured(world, max_sealed_bytes="8000"):
        failed = env.run("propose", "--to", "RU", "--give", str(give), "--receive",
                         str(receive), "--place", "Sumy", "--window",
                         "2030-12-01/2030-12-03", home="ua", passphrase=UA_PASSPHRASE)
        assert "the node accepts at most 8,000" in failed.error_line()
    assert _ru_inbox(world) == before
    assert json.loads(env.ua("resend", "--all", "--json").out) == kept_before


def test_a_command_stopped_by_the_rate_limit_keeps_the_rest(world: World,
                                                            tmp_path: Path) -> None:
    """The node takes the proposal and refuses the disclosure for now (one request per
    member allowed): the command names what it sent and what is kept, and resend
    finishes it later."""
    env = world.env
    before = _ru_inbox(world)
    with _node_configured(world, rate_per_second="0.001", rate_burst="1"):
        stopped = env.run(*_propose(world, tmp_path), home="ua", passphrase=UA_PASSPHRASE)
        line = stopped.error_line()
        assert line.startswith("the node is limiting requests"), line
        assert "the node did not take message" in line and "it is sealed and kept" in line
        assert "This command had submitted 1 message (" in line
        sent = re.search(r"had submitted 1 message \(([A-Za-z0-9_-]{43})\)", line)
        kept = re.search(r"run backchannel resend ([A-Za-z0-9_-]{43}) to finish", line)
        assert sent is not None and kept is not None, line
        assert _ru_inbox(world) == [*before, sent.group(1)]
    done = json.loads(env.ua("resend", kept.group(1), "--json").out)["resent"]
    assert [(r["id"], r["new"]) for r in done] == [(kept.group(1), True)]
    assert _ru_inbox(world) == [*before, sent.group(1), kept.group(1)]


def test_a_command_stopped_by_a_final_refusal_names_what_it_sent(world: World,
                                                                  tmp_path: Path) -> None:
    """The node takes the proposal, then refuses the disclosure for good: Minsk's
    membership is revoked while the disclosure waits at the proxy. The command names
    the proposal as submitted and the disclosure as refused, and keeps nothing."""
    env, node = world.env, world.node
    member = _delegation(world, tmp_path, "by", "Minsk", alias="BY")
    kept_before = json.loads(env.ua("resend", "--all", "--json").out)
    args = [("BY" if a == "RU" else a) for a in _propose(world, tmp_path)]
    world.proxy.held.clear()
    world.proxy.release.clear()
    world.proxy.submissions = 0
    world.proxy.lose = "hold-second"
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", *args],
        env={**env.base, "BACKCHANNEL_HOME": str(env.root / "ua"),
             "BACKCHANNEL_PASSPHRASE": UA_PASSPHRASE},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert world.proxy.held.wait(60), "the second submission never reached the proxy"
        env.ok("relay", "revoke", "--dir", str(node.directory), member)
        world.proxy.release.set()
        _, err = proc.communicate(timeout=60)
    finally:
        world.proxy.lose = None
        world.proxy.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    line = err.strip().splitlines()[-1]
    sent = re.search(r"This command had submitted 1 message \(([A-Za-z0-9_-]{43})\); "
                     r"message ([A-Za-z0-9_-]{43}) was refused and is not kept$", line)
    assert sent is not None and "not a member of this node" in line, line
    assert "resend" not in line, line
    local = {m["id"]: m for m in json.loads(env.ua("inbox", "--local", "--json").out)["messages"]}
    assert local[sent.group(1)]["kind"] == "proposal" and local[sent.group(1)]["confirmed"]
    assert sent.group(2) not in local
    after = json.loads(env.ua("resend", "--all", "--json").out)
    assert after["unconfirmed"] == kept_before["unconfirmed"]
    assert sent.group(2) not in {r["id"] for r in after["resent"]}


def test_a_rate_limited_resend_keeps_the_copy(world: World, tmp_path: Path) -> None:
    """A 429 says nothing of the envelope: the copy stays for the next resend. The
    node's own rate limiter, turned down to one request per member."""
    env = world.env
    before = _ru_inbox(world)
    envelope_id, _ = _uncertain_send(world, tmp_path, "request")
    with _node_configured(world, rate_per_second="0.001", rate_burst="1"):
        for _ in range(2):  # the one request allowed, then a refused one
            env.run("inbox", home="ua", passphrase=UA_PASSPHRASE)
        limited = env.run("resend", envelope_id, home="ua", passphrase=UA_PASSPHRASE)
        assert "too many requests" in limited.error_line().lower(), limited.error_line()
    local = json.loads(env.ua("inbox", "--local", "--json").out)["messages"]
    assert [m["confirmed"] for m in local if m["id"] == envelope_id] == [False]
    assert _ru_inbox(world) == before
    done = json.loads(env.ua("resend", envelope_id, "--json").out)["resent"]
    assert [(r["id"], r["new"]) for r in done] == [(envelope_id, True)]
    assert _ru_inbox(world) == [*before, envelope_id]


def test_an_answer_that_cannot_be_recorded_leaves_the_send_uncertain(world: World) -> None:
    """The node accepted the message, and this profile cannot write that down (here a
    directory in the record's place; a full disk in life): the send is uncertain,
    draft and copy stay, and resend records the node's acceptance."""
    before = _ru_inbox(world)

    async def send_blocked() -> tuple[str, str]:
        opened = Profile(world.env.root / "ua").open(UA_PASSPHRASE)
        pin = opened.require_node()
        note = prepare_body("note", b"Bus at the crossing.", "note.txt", today=None)
        async with aiohttp.ClientSession() as session:
            client = RelayClient(session, pin.url, opened.identity, node=pin.card)
            prepared = await messaging.prepare(opened, client, ["RU"], note)
            blocker = opened.store.path(f"messages/{prepared.routing.id}")
            blocker.mkdir()
            try:
                with pytest.raises(resend.SendUncertain) as raised:
                    await messaging.submit(opened, client, prepared)
            finally:
                blocker.rmdir()
        return prepared.routing.id, str(raised.value)

    envelope_id, error = asyncio.run(send_blocked())
    assert error.startswith("the node's answer could not be recorded here ("), error
    assert f"run backchannel resend {envelope_id}" in error
    assert _ru_inbox(world) == [*before, envelope_id]
    again = world.env.ua("resend", envelope_id)
    assert "the node holds it" in again.out and "now kept" in again.out


async def _resend_later(world: World, envelope_id: str, *, days: int) -> resend.Resent:
    """resend() with the profile's clock ``days`` ahead; requests carry the real time."""
    clock = FixedClock(SYSTEM_CLOCK.now() + timedelta(days=days))
    opened = Profile(world.env.root / "ua").open(UA_PASSPHRASE, clock=clock)
    pin = opened.require_node()
    async with aiohttp.ClientSession() as session:
        client = RelayClient(session, pin.url, opened.identity, node=pin.card)
        return await resend.resend(opened, client, envelope_id)


def test_an_expired_envelope_is_settled_by_its_receipts(world: World, tmp_path: Path) -> None:
    # The node took it, the answer was lost; eight days later it has expired.
    taken, _ = _uncertain_send(world, tmp_path, "answer")
    settled = asyncio.run(_resend_later(world, taken, days=8))
    assert settled.confirmed and not settled.new
    assert settled.accepted.envelope == taken
    home = world.env.root / "ua"
    assert not (home / "drafts" / f"{taken}.box").exists()
    assert (home / "messages" / f"{taken}.box").exists()
    # Confirmed now, and still expired: nothing to submit; the copy goes, the record
    # and its acceptance stay.
    with pytest.raises(resend.CopyExpired, match="your node accepted it at"):
        asyncio.run(_resend_later(world, taken, days=8))
    assert not (home / "copies" / f"{taken}.box").exists()
    assert (home / "messages" / f"{taken}.box").exists()

    # The node never saw this one: eight days later nothing can deliver it.
    never, _ = _uncertain_send(world, tmp_path, "request")
    with pytest.raises(resend.CopyExpired, match="never reached the node, or the node has "
                                                 "since purged or lost it"):
        asyncio.run(_resend_later(world, never, days=8))
    # The copy is of no use any more; the draft stays, the only record of what was
    # sent (it may have been delivered before the node purged it).
    assert not (home / "copies" / f"{never}.box").exists()
    assert (home / "drafts" / f"{never}.box").exists()
    with pytest.raises(resend.CopyExpired, match="not confirmed by the node before it "
                                                 "expired"):
        asyncio.run(_resend_later(world, never, days=8))


def test_copies_of_expired_envelopes_are_removed(world: World, tmp_path: Path) -> None:
    home = world.env.root / "ua"
    source = tmp_path / "note.txt"
    source.write_text("Old news.", encoding="utf-8")
    old = world.env.ua("send", "--kind", "note", "--to", "RU", str(source)).out
    old_id = old.strip().splitlines()[-1]
    box = home / "copies" / f"{old_id}.box"
    assert box.exists()
    # A copy written longer ago than any envelope lives goes at the next send...
    then = time.time() - (MAX_LIFETIME + timedelta(days=1)).total_seconds()
    os.utime(box, (then, then))
    recent = set((home / "copies").glob("*.box")) - {box}
    world.env.ua("send", "--kind", "note", "--to", "RU", str(source))
    assert not box.exists()
    # ... and only that one: what a restored node may need stays.
    assert recent and recent <= set((home / "copies").glob("*.box"))
    # ... and resend --all reads each copy's own expiry (the profile's clock ahead).
    opened = Profile(home).open(UA_PASSPHRASE, clock=FixedClock(
        SYSTEM_CLOCK.now() + timedelta(days=8)))
    dropped = resend.sweep(opened, deep=True)
    assert dropped and not list((home / "copies").glob("*.box"))


def test_a_send_stopped_before_its_copy_was_written_is_forgotten(world: World,
                                                                  tmp_path: Path) -> None:
    """keep() writes the draft, then the copy, then the submission goes out: a draft
    without its copy (the send stopped in between) was never submitted."""
    home = world.env.root / "ua"
    envelope_id, _ = _uncertain_send(world, tmp_path, "request")
    (home / "copies" / f"{envelope_id}.box").unlink()
    # Just written: it may be a send writing its copy now.
    busy = world.env.run("resend", envelope_id, home="ua", passphrase=UA_PASSPHRASE)
    assert "is being sent" in busy.error_line()
    assert (home / "drafts" / f"{envelope_id}.box").exists()
    then = time.time() - 120
    os.utime(home / "drafts" / f"{envelope_id}.box", (then, then))
    gone = world.env.run("resend", envelope_id, home="ua", passphrase=UA_PASSPHRASE)
    assert "was never submitted" in gone.error_line()
    assert not (home / "drafts" / f"{envelope_id}.box").exists()
    local = json.loads(world.env.ua("inbox", "--local", "--json").out)["messages"]
    assert envelope_id not in [m["id"] for m in local]


def test_a_damaged_copy_fails_resend_all_and_is_not_swept(world: World,
                                                          tmp_path: Path) -> None:
    """A copy box replaced by another one (boxes name themselves inside their
    encryption): `resend --all` names it as FAILED and exits 1, the other copies are
    still submitted, and the sweep leaves the damaged one for the officer."""
    home = world.env.root / "ua"
    ids = []
    for number in range(2):
        note = tmp_path / f"note{number}.txt"
        note.write_text(f"note {number}", encoding="utf-8")
        ids.append(json.loads(world.env.ua("send", "--kind", "note", "--to", "RU",
                                           str(note), "--json").out)["id"])
    damaged, sound = ids
    (home / "copies" / f"{damaged}.box").write_bytes(
        (home / "copies" / f"{sound}.box").read_bytes())
    result = world.env.run("resend", "--all", home="ua", passphrase=UA_PASSPHRASE)
    assert result.code == 1
    assert f"{damaged}: FAILED: " in result.out and "damaged" in result.out
    assert f"{sound}: the node holds it" in result.out
    assert "could not be submitted again" in result.err
    assert (home / "copies" / f"{damaged}.box").exists()
