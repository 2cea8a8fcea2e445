"""RFC 9421 HTTP Message Signatures (Ed25519) with RFC 9530 Content-Digest.

Pure functions: the caller passes the method, the target URI as the server sees it,
the headers and the body. Structured fields (RFC 8941) are parsed and serialised
with ``http_sf``, not by hand.

Our profile:

* one signature, label ``bc`` when we sign (any single label is accepted);
* covered components must include ``"@method"``, ``"@target-uri"`` and
  ``"content-digest"`` (a digest is sent for empty bodies too); further header
  fields and the derived components ``@authority``, ``@scheme``, ``@path`` and
  ``@query`` may be covered as well;
* parameters ``created`` (integer, required), ``nonce`` (string, required),
  ``keyid`` (the signer's identity id, required), ``alg`` (optional, must be
  ``ed25519``), ``expires`` (optional), ``tag`` (optional); no others;
* ``created`` within ``window`` seconds of the verifier's clock.

Replay protection needs state (the set of nonces seen within the window), so it is
the caller's job: :class:`SignedRequest` returns the nonce to remember.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import http_sf as _http_sf

from .ed25519 import SigningKey, VerifyKey
from .errors import VerificationError

# http_sf's precise types do not describe the nested tuples it accepts; we check
# every parsed value ourselves below.
http_sf: Any = _http_sf

LABEL: Final = "bc"
REQUIRED_COMPONENTS: Final = ("@method", "@target-uri", "content-digest")
DERIVED: Final = frozenset({"@method", "@target-uri", "@authority", "@scheme", "@path", "@query"})
ALLOWED_PARAMS: Final = frozenset({"created", "nonce", "keyid", "alg", "expires", "tag"})
#: Five minutes either way: generous for laptops with drifting clocks, short enough
#: that the node's nonce memory stays small.
DEFAULT_WINDOW: Final = 300
MAX_NONCE: Final = 64
MAX_KEYID: Final = 64
MAX_FIELD: Final = 4096
MAX_COMPONENTS: Final = 16


class HttpSignatureError(VerificationError):
    """Base class; ``slug`` names the RFC 9457 problem type a server should use."""

    slug = "signature-invalid"


class SignatureMissing(HttpSignatureError):
    """The request carries no (or an incomplete) signature."""

    slug = "signature-missing"


class SignatureInvalid(HttpSignatureError):
    """The signature is malformed, covers too little, or does not verify."""

    slug = "signature-invalid"


class SignatureExpired(HttpSignatureError):
    """The signature was made outside the accepted time window (check the clock)."""

    slug = "signature-expired"


@dataclass(frozen=True)
class SignedRequest:
    keyid: str
    created: int
    nonce: str


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` value for ``body`` (SHA-256)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _derived(name: str, method: str, url: str) -> str:
    parts = urlsplit(url)
    if name == "@method":
        return method.upper()
    if name == "@target-uri":
        return url
    if name == "@authority":
        return parts.netloc.lower()
    if name == "@scheme":
        return parts.scheme.lower()
    if name == "@path":
        return parts.path or "/"
    if name == "@query":
        return "?" + parts.query
    raise SignatureInvalid(f"unsupported derived component {name!r}")


def _component_value(name: str, method: str, url: str,
                     headers: Mapping[str, str]) -> str:
    if name in DERIVED:
        return _derived(name, method, url)
    if name.startswith("@") or name != name.lower():
        raise SignatureInvalid(f"unsupported component {name[:40]!r}")
    value = _header(headers, name)
    if value is None:
        raise SignatureInvalid(f"covered header {name!r} is absent")
    return value.strip()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Header mappings from aiohttp are case-insensitive; plain dicts may not be.
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    if value is not None and len(value) > MAX_FIELD:
        raise SignatureInvalid(f"header {name!r} is too long")
    return value


def _signature_base(components: list[str], params: dict[str, Any], method: str, url: str,
                    headers: Mapping[str, str]) -> bytes:
    lines = []
    for name in components:
        value = _component_value(name, method, url, headers)
        if "\n" in value or "\r" in value:
            raise SignatureInvalid("component value contains a line break")
        lines.append(f'"{name}": {value}')
    inner: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in components]
    signature_params = _serialise_member(inner, params)
    lines.append(f'"@signature-params": {signature_params}')
    base = "\n".join(lines)
    if not base.isascii():
        raise SignatureInvalid("signature base is not ASCII")
    return base.encode("ascii")


def _serialise_member(inner: list[tuple[str, dict[str, Any]]], params: dict[str, Any]) -> str:
    # Serialise a one-member dictionary and strip the label: that is exactly the
    # inner-list serialisation RFC 9421 uses for @signature-params.
    fast = _serialise_simple(inner, params)
    if fast is not None:
        return fast
    text: str = http_sf.ser({"x": (inner, params)})
    return text[2:]


# --- Fast paths for the exact header shapes our clients send -----------------------
#
# http_sf is pure Python and a good share of a submission's CPU. The expressions
# below match only a strict subset of RFC 8941 (one dictionary member, no spaces
# around it, strings without escapes, non-negative integers without leading zeros,
# canonical padded base64, no duplicate parameters) on which they yield exactly what
# http_sf yields; anything else goes to http_sf, so both accept and refuse the same
# inputs (tests/keys/test_httpsig_fastpath.py checks it).

_KEY = r"[a-z][a-z0-9_\-.*]*"
_STR = r'[ !#-\[\]-~]*'
_INT = r"0|[1-9][0-9]{0,14}"
_INPUT_RE = re.compile(rf'({_KEY})=\(("{_STR}"(?: "{_STR}")*)\)((?:;{_KEY}=(?:{_INT}|"{_STR}"))*)')
_ITEM_RE = re.compile(rf'"({_STR})"')
_PARAM_RE = re.compile(rf';({_KEY})=(?:({_INT})|"({_STR})")')
_BYTES_RE = re.compile(rf"({_KEY})=:([A-Za-z0-9+/]+={{0,2}}):")
_KEY_RE = re.compile(_KEY)
_STR_RE = re.compile(_STR)


def _parse_simple(value: str) -> dict[str, Any] | None:
    """``http_sf.parse(value, tltype="dictionary")`` for the shapes above, else None."""
    match = _BYTES_RE.fullmatch(value)
    if match is not None:
        content = match[2]
        if len(content) % 4:
            return None
        # A multiple of 4 with at most two "=" after data: http_sf's re-padding gives
        # back the same text, which it decodes exactly so.
        return {match[1]: (base64.b64decode(content, validate=True), {})}
    match = _INPUT_RE.fullmatch(value)
    if match is None:
        return None
    params: dict[str, Any] = {}
    for key, number, text in _PARAM_RE.findall(match[3]):
        if key in params:
            return None  # the last one wins in RFC 8941: left to http_sf
        params[key] = int(number) if number else text
    items: list[tuple[str, dict[str, Any]]] = [(item, {}) for item in _ITEM_RE.findall(match[2])]
    return {match[1]: (items, params)}


def _serialise_simple(inner: list[tuple[str, dict[str, Any]]], params: dict[str, Any]
                      ) -> str | None:
    """``_serialise_member`` for plain strings and small non-negative integers."""
    parts = ["("]
    for index, (item, item_params) in enumerate(inner):
        if item_params or type(item) is not str or not _STR_RE.fullmatch(item):
            return None
        parts.append(f' "{item}"' if index else f'"{item}"')
    parts.append(")")
    for key, value in params.items():
        if type(key) is not str or not _KEY_RE.fullmatch(key):
            return None
        if type(value) is int and 0 <= value < 10**15:
            parts.append(f";{key}={value}")
        elif type(value) is str and _STR_RE.fullmatch(value):
            parts.append(f';{key}="{value}"')
        else:
            return None
    return "".join(parts)


def sign_request(key: SigningKey, *, method: str, url: str, body: bytes, created: int,
                 nonce: str, extra_headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the headers to add to a request: ``Content-Digest``, ``Signature-Input``,
    ``Signature``. ``extra_headers`` (lower-case names) are covered as well."""
    if not nonce or len(nonce) > MAX_NONCE:
        raise ValueError("nonce must be 1 to 64 characters")
    digest = content_digest(body)
    headers = {"content-digest": digest, **(extra_headers or {})}
    components = [*REQUIRED_COMPONENTS, *sorted((extra_headers or {}).keys())]
    params: dict[str, Any] = {"created": created, "nonce": nonce, "keyid": key.id,
                              "alg": "ed25519"}
    base = _signature_base(components, params, method, url, headers)
    signature = key.sign(base)
    inner: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in components]
    return {
        "Content-Digest": digest,
        "Signature-Input": http_sf.ser({LABEL: (inner, params)}),
        "Signature": http_sf.ser({LABEL: (signature, {})}),
    }


def _parse_dict(value: str | None, what: str) -> dict[str, Any]:
    if value is None:
        raise SignatureMissing(f"the request has no {what} header")
    simple = _parse_simple(value)
    if simple is not None:
        return simple
    try:
        parsed: dict[str, Any] = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (UnicodeEncodeError, ValueError) as exc:
        raise SignatureInvalid(f"malformed {what} header") from exc
    return parsed


def _check_digest(headers: Mapping[str, str], body: bytes) -> None:
    members = _parse_dict(_header(headers, "content-digest"), "Content-Digest")
    member = members.get("sha-256")
    if member is None or not isinstance(member[0], bytes):
        raise SignatureInvalid("Content-Digest must carry a sha-256 digest")
    if not hmac.compare_digest(member[0], hashlib.sha256(body).digest()):
        raise SignatureInvalid("the body does not match its Content-Digest")


def verify_request(*, method: str, url: str, headers: Mapping[str, str], body: bytes,
                   resolve_key: Callable[[str], VerifyKey | None], now: int,
                   window: int = DEFAULT_WINDOW) -> SignedRequest:
    """Verify the request's single RFC 9421 signature; return who signed it.

    1. Parse ``Signature-Input`` and ``Signature`` (exactly one label, present in both).
    2. Check the covered components and parameters against our profile.
    3. Check ``created`` (and ``expires``) against ``now`` and ``window``.
    4. Resolve ``keyid`` to a key (``None`` → invalid) and verify the Ed25519 signature
       over the signature base.
    5. Check the body against ``Content-Digest``.

    The caller must still reject a nonce it has already seen within the window.
    Raises :class:`SignatureMissing`, :class:`SignatureInvalid` or :class:`SignatureExpired`.
    """
    # Step 1.
    inputs = _parse_dict(_header(headers, "signature-input"), "Signature-Input")
    signatures = _parse_dict(_header(headers, "signature"), "Signature")
    if len(inputs) != 1:
        raise SignatureInvalid("exactly one signature is expected")
    label, (inner, params) = next(iter(inputs.items()))
    if label not in signatures or not isinstance(signatures[label][0], bytes):
        raise SignatureMissing("Signature header lacks the signature named in Signature-Input")
    signature: bytes = signatures[label][0]
    # Step 2.
    if not isinstance(inner, list) or not 0 < len(inner) <= MAX_COMPONENTS:
        raise SignatureInvalid("Signature-Input must list the covered components")
    components: list[str] = []
    for item, item_params in inner:
        if not isinstance(item, str) or item_params:
            raise SignatureInvalid("covered components must be plain strings")
        if item in components:
            raise SignatureInvalid("a component is covered twice")
        components.append(item)
    missing = [c for c in REQUIRED_COMPONENTS if c not in components]
    if missing:
        raise SignatureInvalid(f"the signature must cover {', '.join(missing)}")
    unknown = set(params) - ALLOWED_PARAMS
    if unknown:
        raise SignatureInvalid("unsupported signature parameter")
    created, nonce, keyid = params.get("created"), params.get("nonce"), params.get("keyid")
    if isinstance(created, bool) or not isinstance(created, int):
        raise SignatureInvalid("signature parameter 'created' is required")
    if not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE:
        raise SignatureInvalid("signature parameter 'nonce' is required")
    if not isinstance(keyid, str) or not 0 < len(keyid) <= MAX_KEYID:
        raise SignatureInvalid("signature parameter 'keyid' is required")
    if "alg" in params and params["alg"] != "ed25519":
        raise SignatureInvalid("only alg=\"ed25519\" is accepted")
    # Step 3.
    if abs(now - created) > window:
        raise SignatureExpired("the request was signed too long ago or in the future; "
                               "check this computer's clock")
    expires = params.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)
                                or expires < now):
        raise SignatureExpired("the signature has expired")
    # Step 4.
    key = resolve_key(keyid)
    if key is None:
        raise SignatureInvalid("the signing key is not known here")
    base = _signature_base(components, dict(params), method, url, headers)
    try:
        key.verify(base, signature)
    except VerificationError:
        raise SignatureInvalid("the request signature does not verify") from None
    # Step 5.
    _check_digest(headers, body)
    return SignedRequest(keyid, created, nonce)
