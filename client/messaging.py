"""What a delegation does with its node: join, send, list, read, collect receipts.

Each operation takes the open profile and a :class:`~client.relay_client.RelayClient`
and returns plain values; the CLI only formats them. The order of the steps is the
security argument, so each is numbered.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from keys.card import Card, HomeNode
from keys.encoding import b64url_decode, b64url_encode, format_time
from keys.envelope import MAX_ROUTE, Routing, make_envelope, verify_routing
from keys.errors import BackchannelError, DecodeError, OpenError, VerificationError
from keys.seal import open_sealed, seal
from keys.statements import Statement, make_statement, verify_statement

from . import resend
from .bodies import Outgoing
from .bundle import (
    BundleReport,
    encode_bundle,
    make_bundle,
    verify_bundle,
    without_repeats,
)
from .contacts import Contact, ContactBook
from .errors import (
    AlreadyRegistered,
    ClientError,
    MessageError,
    NodeProtocolError,
    NotFound,
    RateLimited,
    TooLargeForNode,
    UnknownMessage,
)
from .invitation import Invitation, check_node_card, check_not_expired
from .profile import NodePin, OpenProfile
from .records import ReceivedRecord, Record, SentDraft, SentRecord
from .relay_client import NO_METER, InboxItem, Meter, RelayClient

# --- joining -------------------------------------------------------------------------

async def register(opened: OpenProfile, client: RelayClient, invitation: Invitation,
                   passphrase: str) -> NodePin:
    """Join the node an invitation names and pin its key.

    1. The profile has not joined a node yet; the invitation has not expired and is
       for this identity's role.
    2. The node's card (``GET /v1/node``) is the one the invitation names: id and
       fingerprint. Only then is the secret sent.
    3. The card is reissued naming the node as home (so that others can address this
       identity) and saved before registering: a failed registration leaves a card
       that merely names a node.
    4. Register; the node must answer with the same node card. Save the pin.
    """
    # Step 1.
    now = opened.clock.now()
    current = opened.node_pin()
    if current is not None:
        raise AlreadyRegistered(f"this profile already joined the node at {current.url}; "
                                "create another profile (--home DIR) to join another node")
    check_not_expired(invitation, now)
    role = opened.identity.card.role
    if invitation.role != role:
        wanted, held = with_article(invitation.role), with_article(role)
        raise ClientError(
            f"this invitation is for {wanted}, but this profile is {held}: to act as "
            f"{wanted}, create a profile of its own with backchannel init --home DIR "
            f"--name NAME --role {invitation.role}; otherwise ask the operator for {held} "
            "invitation")
    # Step 2.
    info = await client.node_info()
    check_node_card(invitation, info.card)
    client.node = info.card
    # Step 3.
    home = HomeNode(info.card.id, invitation.url)
    identity = opened.identity
    if identity.card.home != home:
        identity = identity.reissue(home=home, clock=opened.clock)
        opened.replace_identity(identity, passphrase)
        client.identity = identity
    # Step 4.
    membership = await client.register(invitation.text, identity.card)
    pin = NodePin(invitation.url, info.card, membership.member_id, membership.role,
                  membership.label, now, dict(info.limits))
    opened.save_node_pin(pin)
    return pin


# --- sending -------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    record: SentRecord
    unverified: tuple[str, ...]
    new: bool


def destination_of(contact: Contact, pin: NodePin) -> str:
    """The recipient's home node, as its card names it (our own node if it names none)."""
    home = contact.card.home
    return pin.card.id if home is None else home.node


def route_of(book: ContactBook, via: Sequence[str], *, origin: str, destination: str,
             now: datetime) -> tuple[Contact, ...]:
    """The intermediary nodes named by ``via`` (node contacts), in order. Raises
    :class:`ClientError` for a node named twice, or for the sender's or the
    recipients' own node (they are the ends of the route, not intermediaries)."""
    nodes = tuple(book.for_routing(alias, now=now) for alias in via)
    ids = [c.card.id for c in nodes]
    if len(set(ids)) != len(ids):
        raise ClientError("a node appears twice in --via: name each intermediary once")
    for contact in nodes:
        if contact.card.id in (origin, destination):
            end = "your own node" if contact.card.id == origin else "the recipients' node"
            raise ClientError(f"{contact.alias} is {end}: --via names only the nodes in "
                              "between")
    if len(nodes) > MAX_ROUTE:
        raise ClientError(f"a route has at most {MAX_ROUTE} intermediaries")
    return nodes


async def send(opened: OpenProfile, client: RelayClient, aliases: Sequence[str],
               outgoing: Outgoing, *, upload: Meter = NO_METER,
               allow_classical: bool = False, via: Sequence[str] = ()) -> Sent:
    """Seal ``outgoing`` to the contacts named and submit it (:func:`prepare`, then
    :func:`submit`)."""
    prepared = await prepare(opened, client, aliases, outgoing,
                             allow_classical=allow_classical, via=via)
    return await submit(opened, client, prepared, upload=upload)


@dataclass(frozen=True)
class Prepared:
    """A message sealed, signed and kept (client.resend), not yet submitted."""

    routing: Routing
    sealed: bytes
    draft: SentDraft
    unverified: tuple[str, ...]


async def prepare(opened: OpenProfile, client: RelayClient, aliases: Sequence[str],
                  outgoing: Outgoing, *, allow_classical: bool = False,
                  via: Sequence[str] = ()) -> Prepared:
    """Steps 1-4a of sending.

    1. Every alias is a contact that may receive (unknown, changed key, expired: refused);
       they share one home node, the destination; every ``via`` alias is a node
       contact, and the route (origin, the ``via`` nodes in order, destination) is
       signed into the envelope: no node can change it.
    2. The node still presents the pinned key (nothing is sealed or sent otherwise).
    3. Seal to the recipients' cards, sign the routing envelope, check the size limit.
    4a. Keep the exact bytes and a draft record (client.resend) before any submission.
    """
    pin = opened.require_node()
    now = opened.clock.now()
    # Step 1.
    book = opened.contacts()
    contacts = [book.for_sending(alias, now=now) for alias in dict.fromkeys(aliases)]
    destinations = {destination_of(c, pin) for c in contacts}
    if len(destinations) != 1:
        raise ClientError("all recipients of one message must be on the same node")
    destination = destinations.pop()
    route = route_of(book, via, origin=pin.card.id, destination=destination, now=now)
    unverified = tuple(c.alias for c in (*contacts, *route) if c.state != "verified")
    # Step 2.
    info = await client.check_pin()
    # Step 3.
    identity = opened.identity
    cards = [c.card for c in contacts]
    # Built once: for a 100,000-name list the body is 100,000 dicts (~70 ms).
    body = outgoing.body()
    sealed = seal(identity, cards, outgoing.kind, body, clock=opened.clock,
                  allow_classical=allow_classical)
    limit = info.limits.get("max_sealed_bytes")
    if limit is not None and len(sealed.data) > limit:
        raise TooLargeForNode(f"the sealed message is {len(sealed.data):,} bytes; the node "
                              f"accepts at most {limit:,}: split the list", status=413,
                              slug="too-large")
    routing = make_envelope(identity.signing_key, sealed.data, to=[c.id for c in cards],
                            origin=pin.card.id, route=[c.card.id for c in route],
                            destination=destination, clock=opened.clock)
    # Step 4a.
    resend.sweep(opened)
    draft = SentDraft(routing, sealed.message.id, outgoing.kind, body, sealed.inner_digest,
                      tuple((c.alias, c.card.id) for c in contacts), (identity.card, *cards),
                      now)
    resend.keep(opened, routing, sealed.data, draft)
    return Prepared(routing, sealed.data, draft, unverified)


async def submit(opened: OpenProfile, client: RelayClient, prepared: Prepared, *,
                 upload: Meter = NO_METER, keep_on_wait: bool = False) -> Sent:
    """Steps 4b-5 of sending.

    4b. Submit; the node's *accepted* statement verifies with the pinned key. A refusal
        drops what was kept (unless ``keep_on_wait`` and the refusal only asks to
        wait: client.resend.asks_to_wait); any other failure leaves the outcome open:
        SendUncertain names ``backchannel resend ID``, which submits the same envelope
        again.
    5. Remember what was sent (the cards in force, the digest of the signed message).
       If that fails (a full disk), the send is as uncertain as a lost answer: the
       draft and copy stay, and ``resend`` finds the node's acceptance.

    Raises a refusal or :class:`~client.resend.SendUncertain`, nothing else a
    :class:`BackchannelError`.
    """
    routing = prepared.routing
    # Step 4b.
    try:
        submitted = await client.submit(routing, prepared.sealed, upload=upload)
    except BackchannelError as exc:
        if keep_on_wait and resend.asks_to_wait(exc):
            raise
        if resend.is_refusal(exc):
            resend.refused(opened, routing.id)
            raise
        raise resend.SendUncertain(routing.id, exc) from None
    # Step 5.
    try:
        record = resend.confirm(opened, prepared.draft, submitted.accepted)
    except (BackchannelError, OSError) as exc:
        cause = exc if isinstance(exc, BackchannelError) else ClientError(
            f"the node's answer could not be recorded here ({exc.strerror or exc})")
        raise resend.SendUncertain(routing.id, cause) from None
    return Sent(record, prepared.unverified, submitted.new)


# --- the inbox -----------------------------------------------------------------------

@dataclass(frozen=True)
class Listed:
    """An inbox item with what this profile knows about its sender."""

    item: InboxItem
    sender: Contact | None
    #: "verified", "unverified", "changed", "unknown sender" or "BAD SIGNATURE".
    trust: str


def describe_item(opened: OpenProfile, item: InboxItem) -> Listed:
    contact = opened.contacts().by_id(item.routing.sender)
    if contact is None:
        return Listed(item, None, "unknown sender")
    try:
        verify_routing(item.routing, contact.card.verify_key)
    except VerificationError:
        return Listed(item, contact, "BAD SIGNATURE")
    return Listed(item, contact, contact.state)


async def inbox(opened: OpenProfile, client: RelayClient) -> list[Listed]:
    """The node's inbox, less the messages read before that the node delivers again
    (:func:`settle_redelivery`)."""
    await client.check_pin()
    return [describe_item(opened, item) for item in await client.inbox_all()
            if not await settle_redelivery(opened, client, item.id)]


async def settle_redelivery(opened: OpenProfile, client: RelayClient,
                            envelope_id: str) -> bool:
    """A node restored from a backup delivers again what its members had read and
    acknowledged (the sender resubmits it, client.resend). A message this profile
    already read is acknowledged again with the *opened* statement it signed then, and
    not shown as new. Returns whether ``envelope_id`` was such a message."""
    if not opened.has_message(envelope_id):
        return False
    local = opened.message_record(envelope_id)
    if not isinstance(local, ReceivedRecord) or not local.acked:
        return False
    # After a restore that delivered many again the rate limit may refuse some: read
    # already, so not shown as new; the node keeps listing it, and a later listing
    # acknowledges it.
    with contextlib.suppress(RateLimited):
        await client.ack(envelope_id, local.opened)
    return True


# --- reading -------------------------------------------------------------------------

@dataclass(frozen=True)
class Read:
    record: Record
    #: The sender as this profile knows it (None: not a contact).
    contact: Contact | None
    fetched: bool
    notices: tuple[str, ...] = field(default=())


def check_envelope_id(envelope_id: str) -> str:
    try:
        b64url_decode(envelope_id, max_bytes=32, exact=32, field="id")
    except DecodeError:
        raise MessageError(f"{envelope_id[:60]!r} is not a message id (43 characters, as "
                           "shown by backchannel inbox)") from None
    return envelope_id


class OtherKind(MessageError):
    """``read(..., kinds=...)`` opened a message of another kind: it was neither stored
    nor acknowledged, and stays in the inbox for ``backchannel read``."""

    def __init__(self, envelope_id: str, kind: str) -> None:
        super().__init__(f"message {envelope_id} is a {kind}")
        self.kind = kind


async def read(opened: OpenProfile, client: RelayClient | None, envelope_id: str, *,
               download: Meter = NO_METER, kinds: Collection[str] | None = None) -> Read:
    """A message by envelope id: from the local store when it was read before (no
    network), else fetched, opened, verified, stored and acknowledged.

    1. Fetch; the envelope must be addressed to us and name the content received.
    2. Find the sender's card: a contact, else the node's copy (flagged).
    3. The routing envelope is signed by that sender.
    4. Open: decrypt and verify the sender's signature on the inner message, whose
       signed recipients must match the envelope's (keys.seal.open_sealed).
    5. Store the signed inner message and our *opened* statement locally, then
       acknowledge with the statement: a crash in between only repeats the ack.
    """
    check_envelope_id(envelope_id)
    contacts = opened.contacts()
    local = opened.message_record(envelope_id)
    if local is not None:
        notices: list[str] = []
        if isinstance(local, ReceivedRecord) and not local.acked and client is not None:
            await client.check_pin()
            await client.ack(envelope_id, local.opened)
            local = _mark_acked(opened, local)
            notices.append("acknowledgement sent")
        sender_id = local.routing.sender
        return Read(local, contacts.by_id(sender_id), False, tuple(notices))
    if client is None:
        raise UnknownMessage(envelope_id)
    me = opened.identity
    # Step 1.
    await client.check_pin()
    try:
        routing, sealed = await client.fetch(envelope_id, download=download)
    except NotFound:
        raise UnknownMessage(envelope_id) from None
    if me.id not in routing.to:
        raise MessageError("this message was sent by you, not to you; see it with "
                           "backchannel receipts ID")
    # Step 2.
    notices = []
    contact = contacts.by_id(routing.sender)
    if contact is not None:
        sender = contact.card
        if contact.state != "verified":
            notices.append(f"the sender {contact.alias} is {contact.state}: compare the "
                           f"safety number (backchannel contacts verify {contact.alias})")
    else:
        sender = await client.lookup_card(routing.sender)
        notices.append(f"the sender is not in your contacts: the card the node holds says "
                       f"{sender.name!r} (fingerprint {sender.fingerprint}); add and verify "
                       "their card before relying on this")
    # Step 3.
    try:
        verify_routing(routing, sender.verify_key)
    except VerificationError:
        raise OpenError() from None

    # Step 4.
    def resolve(sender_id: str) -> Card:
        if sender_id != routing.sender:
            raise OpenError()
        return sender

    opened_message = open_sealed(sealed, me, resolve, envelope_to=routing.to,
                                 envelope_from=routing.sender)
    if kinds is not None and opened_message.message.kind not in kinds:
        raise OtherKind(envelope_id, opened_message.message.kind)
    # Step 5.
    statement = make_statement("opened", envelope_id, me.signing_key, clock=opened.clock,
                               recipient=me.id,
                               inner=b64url_encode(opened_message.inner_digest))
    record = ReceivedRecord(routing, opened_message.inner, opened_message.message, sender,
                            statement, opened.clock.now(), False)
    opened.save_message_data(envelope_id, record.to_dict())
    await client.ack(envelope_id, statement)
    record = _mark_acked(opened, record)
    return Read(record, contact, True, tuple(notices))


def _mark_acked(opened: OpenProfile, record: ReceivedRecord) -> ReceivedRecord:
    acked = ReceivedRecord(record.routing, record.inner, record.message, record.sender,
                           record.opened, record.received, True)
    opened.save_message_data(record.routing.id, acked.to_dict())
    return acked


def local_messages(opened: OpenProfile) -> list[Record]:
    records = [opened.message_record(i) for i in opened.message_ids()]
    return sorted((r for r in records if r is not None), key=lambda r: r.routing.created)


# --- receipts ------------------------------------------------------------------------

@dataclass(frozen=True)
class Receipts:
    record: Record
    report: BundleReport
    bundle: bytes
    #: Statements left out: their signer's card is unknown here.
    unknown_signers: tuple[str, ...]
    #: For each *opened* statement: does its digest match the message we hold?
    content_matches: dict[str, bool]
    #: How to call the identities involved, for display ("you", "node X", aliases).
    names: dict[str, str]
    #: Contact aliases by identity id.
    aliases: dict[str, str]
    #: Later repeats of statements in the bundle (client.bundle.without_repeats): a
    #: node that accepted or delivered the envelope again after losing it.
    repeated: tuple[Statement, ...] = ()


def _cards_known(opened: OpenProfile, record: Record, pin: NodePin) -> dict[str, Card]:
    cards: dict[str, Card] = {pin.card.id: pin.card, opened.identity.id: opened.identity.card}
    if isinstance(record, SentRecord):
        cards.update({c.id: c for c in record.cards})
    else:
        cards[record.sender.id] = record.sender
    for contact in opened.contacts():
        cards.setdefault(contact.card.id, contact.card)
    return cards


async def receipts(opened: OpenProfile, client: RelayClient | None, envelope_id: str
                   ) -> Receipts:
    """Collect, verify and bundle the statements about one of our messages.

    With ``client`` None, the statements last fetched are used (offline)."""
    check_envelope_id(envelope_id)
    record = opened.message_record(envelope_id)
    if record is None:
        raise UnknownMessage(envelope_id)
    pin = opened.require_node()
    cards = _cards_known(opened, record, pin)
    if isinstance(record, SentRecord):
        cached = [record.accepted, *record.statements]
    else:
        cached = [record.opened]
    statements = list(cached)
    if client is not None:
        await client.check_pin()
        fetched, node_cards = await client.receipts_and_cards(envelope_id)
        statements.extend(fetched)
        # Nodes further along a route are known to our node, not to us.
        for card in node_cards:
            cards.setdefault(card.id, card)
    unknown = []
    for statement in statements:
        if statement.by not in cards and client is not None:
            try:
                cards[statement.by] = await client.lookup_card(statement.by)
            except (NotFound, NodeProtocolError):
                unknown.append(statement.id)
    usable = [s for s in statements if s.by in cards]
    # Verify each against its card first, so that a node's bad statement is dropped
    # (and named) instead of spoiling the bundle.
    valid: list[Statement] = []
    for statement in usable:
        try:
            verify_statement(statement, cards[statement.by].verify_key)
        except VerificationError:
            unknown.append(statement.id)
            continue
        valid.append(statement)
    valid, repeated = without_repeats(valid)
    bundle = encode_bundle(make_bundle(record.routing, valid, cards.values()))
    report = verify_bundle(bundle, now=opened.clock.now())
    digest = b64url_encode(record.inner_digest)
    matches = {e.statement.id: e.statement.fields.get("inner") == digest
               for e in report.events if e.statement.kind == "opened"}
    if isinstance(record, SentRecord) and client is not None:
        # Keep the signers' cards too, so that the bundle can be rebuilt offline.
        kept = {c.id: c for c in record.cards}
        for event in report.events:
            kept.setdefault(event.signer.id, event.signer)
        fresh = dataclasses.replace(
            record, cards=tuple(kept.values()),
            statements=(*(e.statement for e in report.events), *repeated))
        opened.save_message_data(envelope_id, fresh.to_dict())
    aliases = {c.card.id: c.alias for c in opened.contacts()}
    names = {pin.card.id: f"node {pin.card.name}", opened.identity.id: "you", **aliases}
    for card in report.cards.values():  # nodes further along the route, by their name
        names.setdefault(card.id, f"node {card.name}" if card.role == "node" else card.name)
    return Receipts(record, report, bundle, tuple(unknown), matches, names, aliases,
                    tuple(sorted(repeated, key=lambda st: (st.at, st.id))))


def routing_summary(routing: Routing) -> dict[str, object]:
    return {"from": routing.sender, "to": list(routing.to), "origin": routing.origin,
            "destination": routing.destination, "route": list(routing.route),
            "created": format_time(routing.created), "expires": format_time(routing.expires),
            "size": routing.size}


def when(value: datetime) -> str:
    return format_time(value)


def with_article(role: str) -> str:
    """"a delegation", "an intermediary"."""
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"
