"""The messages of a negotiation command, kept before the first leaves.

A command may send several messages: a proposal and the lists disclosed with it, or
one message per destination node. :class:`Outbox` seals and keeps every one
(client.resend) before submitting the first, so that a command stopped by an
uncertain submission is finished with ``backchannel resend`` and the same envelopes
(ADR 0016) instead of run again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from keys.errors import BackchannelError

from .. import messaging, resend, ui
from ..bodies import Outgoing
from ..errors import NodeUnreachable
from ..profile import OpenProfile
from ..relay_client import RelayClient
from ..resend import SendUncertain


def _recipients(opened: OpenProfile, ids: Sequence[str]) -> list[str]:
    """The contacts to send a document to (everyone named, except ourselves)."""
    book = opened.contacts()
    aliases = []
    for identity_id in ids:
        if identity_id == opened.identity.id:
            continue
        contact = book.by_id(identity_id)
        if contact is None:
            ui.warn(f"{identity_id} is not in your contacts: not sent to them")
            continue
        aliases.append(contact.alias)
    return aliases


class Outbox:
    """The messages of one command. Every one is sealed and kept (client.resend) before
    the first is submitted: a command stopped by an uncertain submission is finished
    with ``backchannel resend`` and the same envelopes, where running it again would
    make a new proposal (new ids, new salts) beside the one that may have arrived."""

    def __init__(self, opened: OpenProfile, client: RelayClient) -> None:
        self.opened = opened
        self.client = client
        self.prepared: list[messaging.Prepared] = []

    async def add(self, ids: Sequence[str], document: Outgoing, via: Sequence[str]
                  ) -> list[str]:
        """Seal and keep ``document`` for everyone named (except us): one message per
        destination node, routed through ``via``, or through the part of it before
        the destination when the destination is one of the ``via`` nodes. Returns the
        envelope ids."""
        opened = self.opened
        aliases = _recipients(opened, ids)
        if not aliases:
            return []
        pin = opened.require_node()
        now = opened.clock.now()
        book = opened.contacts()
        nodes = [(alias, book.for_routing(alias, now=now).card.id) for alias in via]
        groups: dict[str, list[str]] = {}
        for alias in aliases:
            destination = messaging.destination_of(book.for_sending(alias, now=now), pin)
            groups.setdefault(destination, []).append(alias)
        ids_on_route = [node for _, node in nodes]
        routes = {}
        for destination in groups:
            route = ([a for a, _ in nodes[:ids_on_route.index(destination)]]
                     if destination in ids_on_route else [a for a, _ in nodes])
            # Every route is checked before the first message is sealed.
            messaging.route_of(book, route, origin=pin.card.id, destination=destination,
                               now=now)
            routes[destination] = route
        ids_kept = []
        for destination, members in groups.items():
            prepared = await messaging.prepare(opened, self.client, members, document,
                                               via=routes[destination])
            self.prepared.append(prepared)
            ids_kept.append(prepared.routing.id)
        return ids_kept

    def drop(self, items: Sequence[messaging.Prepared]) -> None:
        """Messages that will not be submitted: nothing to resend."""
        for item in items:
            resend.refused(self.opened, item.routing.id)

    async def submit(self) -> None:
        """Submit in order. A refusal of the first message ends the command with
        nothing sent (what was kept is dropped). A refusal of a later one stops it
        with what was sent named and the rest kept for ``resend`` (the refused one
        too when the refusal only asks to wait). An uncertain submission, a failure
        to record the node's answer, or an interruption keep that message and the
        rest, and name them."""
        for index, item in enumerate(self.prepared):
            rest = [r.routing.id for r in self.prepared[index + 1:]]
            try:
                await messaging.submit(self.opened, self.client, item,
                                       keep_on_wait=index > 0)
            except SendUncertain as exc:
                raise SendUncertain(exc.envelope_id, exc.cause, rest=rest) from None
            except BackchannelError as exc:
                # A refusal (messaging.submit turns anything else into SendUncertain).
                if index == 0:
                    self.drop(self.prepared[1:])
                    raise
                raise resend.CommandStopped(
                    exc, submitted=[p.routing.id for p in self.prepared[:index]],
                    refused=item.routing.id, rest=rest,
                    waiting=resend.asks_to_wait(exc)) from None
            except (asyncio.CancelledError, KeyboardInterrupt):
                warn_interrupted(item.routing.id, rest)
                raise


def warn_interrupted(envelope_id: str, rest: Sequence[str] = ()) -> None:
    """Ctrl-C while a submission was on its way: as uncertain as a lost answer. Said
    before the interruption goes on (exit status 130)."""
    ui.warn(str(SendUncertain(envelope_id, NodeUnreachable("interrupted"), rest=rest)))


@contextlib.asynccontextmanager
async def sending(opened: OpenProfile, client: RelayClient) -> AsyncIterator[Outbox]:
    """An :class:`Outbox` whose messages are submitted, in order, when the block ends
    without an error; an error in the block drops them all unsubmitted."""
    box = Outbox(opened, client)
    try:
        yield box
    except BaseException:
        box.drop(box.prepared)
        raise
    await box.submit()


async def send_document(opened: OpenProfile, client: RelayClient, ids: Sequence[str],
                        document: Outgoing, via: Sequence[str]) -> list[str]:
    """A command's one document, as :meth:`Outbox.add` and submitted."""
    async with sending(opened, client) as box:
        return await box.add(ids, document, via)
