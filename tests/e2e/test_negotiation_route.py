"""A negotiation between delegations on two nodes that are not peers, through a third.

Kyiv node <-> Istanbul node <-> Moscow node (each a ``relay serve`` subprocess with
its own SQLite file). The Kyiv delegation is on the Kyiv node, the Moscow delegation
on the Moscow node, the ICRC guarantor on the Istanbul node. The delegations reach
each other only with ``--via TR``; the guarantor, on the route's intermediary node
itself, is reached by the route up to it (one message per destination node). Every
step is the ``backchannel`` command in a subprocess.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import Env, Node, Result, eventually, free_port, parallel

pytestmark = pytest.mark.slow

PASSPHRASES = {"ua": "Kyiv passphrase ї", "ru": "Moscow passphrase ё", "icrc": "Geneva"}
GIVE = "family_name,given_names,date_of_birth\nШевченко,Тарас,1990-03-09\n"
RECEIVE = "family_name,given_names,date_of_birth\nSmirnov,Ivan,1979-11-30\n"


@dataclass
class World:
    env: Env
    root: Path
    nodes: dict[str, Node]

    def run(self, who: str, *args: str) -> Result:
        return self.env.run(*args, home=who, passphrase=PASSPHRASES[who])

    def ok(self, who: str, *args: str) -> str:
        result = self.run(who, *args)
        assert result.code == 0, (who, args, result.out, result.err)
        return result.out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("negotiation-route")
    env = Env(root)
    names = {"kyiv": "Kyiv node", "istanbul": "Istanbul node", "moscow": "Moscow node"}
    nodes = {key: Node(env, root / key, free_port()) for key in names}
    parallel(*(lambda key=key, name=name: nodes[key].init(name)
               for key, name in names.items()))
    parallel(*(lambda a=a, b=b: nodes[a].peer(nodes[b])
               for a, b in (("kyiv", "istanbul"), ("istanbul", "kyiv"),
                            ("istanbul", "moscow"), ("moscow", "istanbul"))))
    world = World(env, root, nodes)
    try:
        parallel(*(node.start for node in nodes.values()))
        homes = {"ua": ("Kyiv Coordination HQ", "kyiv", ()),
                 "ru": ("Moscow Delegation", "moscow", ()),
                 "icrc": ("ICRC Geneva", "istanbul", ("--role", "intermediary"))}

        def join(who: str) -> None:
            name, node, role = homes[who]
            world.ok(who, "init", "--name", name, *role)
            invitation = env.ok("relay", "invite", "--dir", str(nodes[node].directory),
                                "--name", name, *role).out.strip().splitlines()[-1]
            world.ok(who, "register", invitation)
            world.ok(who, "card", "--out", str(root / f"{who}.card"))

        parallel(*(lambda who=who: join(who) for who in homes))

        def contacts(who: str) -> None:
            for other in homes:
                if other != who:
                    # Left unverified (a warning on each use): the safety-number
                    # comparison is tested elsewhere and costs a command each here.
                    world.ok(who, "contacts", "add", str(root / f"{other}.card"), "--alias",
                             other.upper())
            if who != "icrc":
                world.ok(who, "contacts", "add", str(nodes["istanbul"].card), "--alias", "TR")

        parallel(*(lambda who=who: contacts(who) for who in homes))
        yield world
    finally:
        for node in nodes.values():
            node.stop()


def test_negotiation_through_an_intermediary_node(world: World, tmp_path: Path) -> None:
    give, receive = tmp_path / "give.csv", tmp_path / "receive.csv"
    give.write_text(GIVE)
    receive.write_text(RECEIVE)
    propose = ("propose", "--to", "RU", "--guarantor", "ICRC", "--give", str(give),
               "--receive", str(receive), "--place", "Sumy border crossing",
               "--window", "2030-12-01/2030-12-03", "--json")
    # Kyiv's node is no peer of Moscow's: without a route the proposal is refused
    # before anything is sent; with --via TR it goes through Istanbul.
    direct = world.run("ua", *propose)
    assert direct.code == 1 and "peer" in direct.err, direct.err
    proposed = json.loads(world.ok("ua", *propose, "--via", "TR"))
    proposal = proposed["id"]
    # One message to Moscow (through Istanbul), one to the ICRC on Istanbul, and the
    # lists disclosed to Moscow.
    assert len(proposed["messages"]) == 2 and len(proposed["disclosed"]) == 1

    def arrived(who: str, ident: str, want: str) -> dict[str, object] | None:
        result = world.run(who, "thread", "--json", "--", ident)
        if result.code != 0:
            return None
        seen = json.loads(result.out)
        return seen if seen["state"] == want else None

    eventually(lambda: arrived("ru", proposal, "open"), timeout=60, what="the proposal")
    eventually(lambda: arrived("icrc", proposal, "open"), timeout=60, what="ICRC's copy")
    agreement = json.loads(world.ok("ru", "accept", "--via", "TR", "--json", "--",
                                    proposal))["id"]
    eventually(lambda: arrived("ua", proposal, "accepted"), timeout=60, what="the acceptance")
    world.ok("ua", "countersign", "--via", "TR", "--", agreement)

    def guarantor_signs() -> dict[str, object] | None:
        result = world.run("icrc", "countersign", "--json", "--", agreement)
        return json.loads(result.out) if result.code == 0 else None

    signed = eventually(guarantor_signs, timeout=60, what="both parties' signatures")
    assert signed["signatures"]["complete"] is True  # type: ignore[index]

    def complete(who: str) -> dict[str, object] | None:
        seen = arrived(who, proposal, "accepted")
        if seen is None or not seen["agreement"]["signatures"]["complete"]:  # type: ignore[index]
            return None
        return seen

    # The guarantor's signature reaches both delegations, on their own nodes.
    eventually(lambda: complete("ua"), timeout=60, what="the co-signed agreement in Kyiv")
    eventually(lambda: complete("ru"), timeout=60, what="the co-signed agreement in Moscow")
