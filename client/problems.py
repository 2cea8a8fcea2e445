"""RFC 9457 problem documents from a node, turned into typed client errors.

Pure: the status, the content type and the body in, an exception out. The node's
``detail`` is shown (cleaned of control characters and cut short), prefixed by
advice that depends only on the stable ``type`` slug.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Final

from keys.encoding import json_loads
from keys.errors import DecodeError

from .errors import (
    Conflict,
    Forbidden,
    InvitationRejected,
    NodeProtocolError,
    NotFound,
    RateLimited,
    RelayRejected,
    TooLargeForNode,
    Unauthorized,
)

TYPE_PREFIX: Final = "https://backchannel.example/problems/"
MAX_PROBLEM_BYTES: Final = 16 * 1024
MAX_DETAIL: Final = 300

_ADVICE: Final[Mapping[str, tuple[type[RelayRejected], str]]] = {
    "unauthorized": (Unauthorized, "the node does not accept this identity (not a member, "
                                   "or the membership was revoked)"),
    "signature-missing": (Unauthorized, "the node did not see this client's signature"),
    "signature-invalid": (Unauthorized, "the node rejected this client's signature"),
    "signature-expired": (Unauthorized, "the node rejected the request's time: check this "
                                        "computer's clock and time zone (5 minutes of "
                                        "difference are allowed)"),
    "replay": (Unauthorized, "the node had already seen this request; try again"),
    "forbidden": (Forbidden, "the node refused the request"),
    "invitation-invalid": (InvitationRejected, "the node refused the invitation"),
    "not-found": (NotFound, "the node has no such item for this identity"),
    "gone": (NotFound, "the message has expired or was removed from the node"),
    "conflict": (Conflict, "the node already holds something else under this id"),
    "rate-limited": (RateLimited, "the node is limiting requests from this identity"),
    "too-large": (TooLargeForNode, "the message is larger than the node accepts"),
    "unroutable": (RelayRejected, "the node cannot route this envelope"),
}


#: What to do, after the node's own explanation (which says why).
_THEN: Final = {
    "invitation-invalid": "ask the operator for a new one (an invitation works once, "
                          "before it expires, on the node that issued it)",
    "unroutable": "check the route: your node must peer with the next node on it (the "
                  "first --via node, or without --via the recipient's node), and each node "
                  "with the one after it; operators pin peers with backchannel relay peers add",
}


def clean_detail(text: object) -> str:
    if not isinstance(text, str):
        return ""
    out = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    out = " ".join(out.split())
    return out[:MAX_DETAIL] + ("…" if len(out) > MAX_DETAIL else "")


def error_from_response(status: int, content_type: str, body: bytes, *,
                        retry_after: str | None = None) -> Exception:
    """The exception for a non-2xx answer (returned, for the caller to raise)."""
    if "json" not in content_type:
        return NodeProtocolError(f"the node answered HTTP {status} without a problem "
                                 "document (is a proxy in the way?)")
    try:
        problem = json_loads(body, max_bytes=MAX_PROBLEM_BYTES, what="problem")
    except DecodeError:
        return NodeProtocolError(f"the node answered HTTP {status} with a malformed "
                                 "problem document")
    if not isinstance(problem, dict):
        return NodeProtocolError(f"the node answered HTTP {status} with a malformed "
                                 "problem document")
    ptype = problem.get("type")
    slug = ptype[len(TYPE_PREFIX):] if isinstance(ptype, str) and ptype.startswith(
        TYPE_PREFIX) else "about:blank"
    slug = clean_detail(slug)[:40]
    detail = clean_detail(problem.get("detail")) or clean_detail(problem.get("title"))
    cls, advice = _ADVICE.get(slug, (RelayRejected, f"the node refused the request ({slug})"))
    message = f"{advice}: {detail}" if detail else advice
    if slug in _THEN:
        message += f"; {_THEN[slug]}"
    if cls is RateLimited and retry_after and retry_after.isdigit():
        message += f"; try again in {int(retry_after)} s"
    return cls(message, status=status, slug=slug)
