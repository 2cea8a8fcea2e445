"""Routing envelopes: what the sender signs about a sealed message for the nodes.

A DSSE envelope (payload type :data:`ENVELOPE_TYPE`, signed by the sender) over::

    {"v": 1, "content": "<content id: b64url SHA-256 of the sealed bytes>",
     "from": "<sender id>", "to": ["<recipient id>", ...],
     "origin": "<sender's home node id>", "route": ["<intermediary node id>", ...],
     "destination": "<recipients' home node id>",
     "created": "<time>", "expires": "<time>", "size": <sealed bytes length>}

The **envelope id** is the unpadded base64url SHA-256 of the envelope's PAE
(:meth:`keys.dsse.Envelope.digest`): it names the envelope in every receipt, in
inbox listings and on the command line. Nodes see only this metadata, never names.
All recipients of one envelope share one destination node; a client sends one
envelope per destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from . import dsse
from .clock import SYSTEM_CLOCK, Clock
from .ed25519 import SigningKey, VerifyKey
from .encoding import (
    b64url_decode,
    b64url_encode,
    expect_int,
    expect_object,
    expect_str,
    expect_version,
    format_time,
    json_dumps,
    json_loads,
    parse_time,
)
from .errors import DecodeError, VerificationError
from .policy import Signer
from .seal import MAX_RECIPIENTS, MAX_SEALED_BYTES, content_id

ENVELOPE_TYPE: Final = "application/vnd.backchannel.envelope+json"
#: A chain of intermediaries (nuncio, Holy See, church, government) rarely exceeds 4.
MAX_ROUTE: Final = 8
MAX_ENVELOPE_BYTES: Final = 16 * 1024
MAX_ID: Final = 64
#: A message that cannot be delivered within 30 days is stale in any negotiation.
MAX_LIFETIME: Final = timedelta(days=30)
DEFAULT_LIFETIME: Final = timedelta(days=7)


def envelope_id(envelope: dsse.Envelope) -> str:
    return b64url_encode(envelope.digest())


@dataclass(frozen=True)
class Routing:
    """The parsed routing metadata. ``id`` is the envelope id."""

    id: str
    content: str
    sender: str
    to: tuple[str, ...]
    origin: str
    route: tuple[str, ...]
    destination: str
    created: datetime
    expires: datetime
    size: int
    envelope: dsse.Envelope

    @property
    def hops(self) -> tuple[str, ...]:
        """Every node on the path, in order: origin, intermediaries, destination."""
        path = (self.origin, *self.route, self.destination)
        # A single node serving both parties appears once.
        return tuple(dict.fromkeys(path))

    def next_hop(self, node_id: str) -> str | None:
        """The node after ``node_id`` on the path, ``None`` at the destination.
        Raises :class:`DecodeError` if ``node_id`` is not on the path."""
        hops = self.hops
        if node_id not in hops:
            raise DecodeError("this node is not on the envelope's route")
        index = hops.index(node_id)
        return hops[index + 1] if index + 1 < len(hops) else None

    def previous_hop(self, node_id: str) -> str | None:
        hops = self.hops
        if node_id not in hops:
            raise DecodeError("this node is not on the envelope's route")
        index = hops.index(node_id)
        return hops[index - 1] if index > 0 else None


def make_envelope(sender: SigningKey, sealed: bytes, *, to: Sequence[str], origin: str,
                  destination: str, route: Sequence[str] = (),
                  lifetime: timedelta = DEFAULT_LIFETIME,
                  clock: Clock = SYSTEM_CLOCK) -> Routing:
    """Sign the routing envelope for ``sealed``. Raises ``ValueError`` on misuse."""
    if not timedelta(0) < lifetime <= MAX_LIFETIME:
        raise ValueError("lifetime must be positive and at most 30 days")
    now = clock.now()
    payload = json_dumps({
        "v": 1, "content": content_id(sealed), "from": sender.id, "to": list(to),
        "origin": origin, "route": list(route), "destination": destination,
        "created": format_time(now), "expires": format_time(now + lifetime),
        "size": len(sealed),
    })
    return parse_routing(dsse.sign(ENVELOPE_TYPE, payload, sender))


def _ids(value: object, *, what: str, low: int, high: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise DecodeError(f"envelope: {what} must be a list of {low} to {high} ids")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_ID and v.isascii() for v in value):
        raise DecodeError(f"envelope: malformed id in {what}")
    if len(set(value)) != len(value):
        raise DecodeError(f"envelope: an id appears twice in {what}")
    return tuple(value)


def _id(obj: dict[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isascii():
        raise DecodeError(f"envelope: malformed id in {key}")
    return value


def load_routing(data: bytes | str | dict[str, Any]) -> Routing:
    """Parse a routing envelope from JSON (or its parsed dict) with this format's own
    size limit. Structure only; see :func:`verify_routing`."""
    if isinstance(data, dict):
        signed = dsse.Envelope.from_dict(data, max_payload=MAX_ENVELOPE_BYTES)
    else:
        signed = dsse.Envelope.from_json(data, max_payload=MAX_ENVELOPE_BYTES)
    return parse_routing(signed)


def parse_routing(envelope: dsse.Envelope) -> Routing:
    """Parse the payload of a routing envelope (structure only: the signature is
    checked by :func:`verify_routing`). Raises :class:`DecodeError`."""
    if envelope.payload_type != ENVELOPE_TYPE:
        raise DecodeError("this is not a routing envelope")
    obj = expect_object(json_loads(envelope.payload, max_bytes=MAX_ENVELOPE_BYTES,
                                   what="envelope"),
                        required=("v", "content", "from", "to", "origin", "route",
                                  "destination", "created", "expires", "size"),
                        what="envelope")
    expect_version(obj, what="envelope")
    content = expect_str(obj, "content", what="envelope", max_len=43, min_len=43)
    b64url_decode(content, max_bytes=32, exact=32, field="envelope.content")
    sender = _id(obj, "from")
    to = _ids(obj["to"], what="to", low=1, high=MAX_RECIPIENTS)
    route = _ids(obj["route"], what="route", low=0, high=MAX_ROUTE)
    origin = _id(obj, "origin")
    destination = _id(obj, "destination")
    if origin in route or destination in route:
        raise DecodeError("envelope: the route repeats the origin or destination node")
    created = parse_time(obj["created"], field="envelope.created")
    expires = parse_time(obj["expires"], field="envelope.expires")
    if not created < expires <= created + MAX_LIFETIME:
        raise DecodeError("envelope: expiry must be after creation and within 30 days")
    size = expect_int(obj, "size", what="envelope", low=1, high=MAX_SEALED_BYTES)
    return Routing(envelope_id(envelope), content, sender, to, origin, route, destination,
                   created, expires, size, envelope)


def verify_routing(routing: Routing, sender: VerifyKey) -> None:
    """Check that ``sender`` is the envelope's ``from`` and signed it.
    Raises :class:`~keys.errors.VerificationError`."""
    if sender.id != routing.sender:
        raise VerificationError("the envelope was not signed by its claimed sender")
    dsse.verify(routing.envelope, Signer(sender), payload_type=ENVELOPE_TYPE)


def check_content(routing: Routing, sealed: bytes) -> None:
    """Raise :class:`DecodeError` unless ``sealed`` is the content the envelope names."""
    if len(sealed) != routing.size or content_id(sealed) != routing.content:
        raise DecodeError("the sealed message does not match the envelope's content id")
