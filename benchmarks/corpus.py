"""The cast (member identities) and the pre-generated submissions.

Sealing and signing the routing envelopes is the clients' work, not the node's, so
it happens before any timed region: in a process pool, once per benchmark
invocation. The envelopes stay valid for days, so every run reuses them against a
fresh database. What must be fresh per run is the RFC 9421 request signature
(``created`` within ±300 s, a nonce never seen by that node): :func:`sign_requests`
makes those just before each run, also outside the timed region.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from keys.card import load_card
from keys.ed25519 import SigningKey
from keys.encoding import b64url_encode, json_dumps
from keys.envelope import make_envelope
from keys.httpsig import sign_request
from keys.identity import Identity
from keys.kem import EncryptionPrivateKey
from keys.seal import seal

#: Plaintext of one benchmark message (the issue's "1 KiB envelope").
PLAINTEXT_BYTES = 1024
SUBMIT_PATH = "/v1/envelopes"
_WORDS = ("ceasefire", "corridor", "exchange", "list", "convoy", "observer", "guarantee",
          "channel", "delegation", "confirmation", "schedule", "handover", "meeting",
          "agreement", "witness", "draft")

Exported = tuple[bytes, str, bytes, bytes | None, bytes]


def export_identity(identity: Identity) -> Exported:
    """The secrets and card of ``identity``, picklable (for pool workers only)."""
    x25519, mlkem = identity.encryption_key.secrets()
    return (identity.signing_key.seed(), identity.encryption_key.suite, x25519, mlkem,
            identity.card.to_json())


def import_identity(data: Exported) -> Identity:
    seed, suite, x25519, mlkem, card = data
    return Identity(SigningKey(seed), EncryptionPrivateKey(suite, x25519, mlkem),
                    load_card(card, now=datetime.now(UTC)))


@dataclass(frozen=True)
class Cast:
    senders: tuple[Identity, ...]
    receivers: tuple[Identity, ...]

    @property
    def everyone(self) -> tuple[Identity, ...]:
        return self.senders + self.receivers

    def receiver_of(self, sender_index: int) -> Identity:
        return self.receivers[sender_index % len(self.receivers)]


def make_cast(senders: int, receivers: int) -> Cast:
    return Cast(tuple(Identity.create(f"Sender {i}", "delegation") for i in range(senders)),
                tuple(Identity.create(f"Receiver {i}", "delegation") for i in range(receivers)))


@dataclass(frozen=True)
class Submission:
    """One envelope ready to submit: the request body and who sends it."""

    sender: int
    envelope_id: str
    body: bytes
    #: Ed25519 signature over ``body`` by the sender, base64 (the verify baseline's check).
    bench_sig: str


def _plaintext(index: int) -> str:
    words = []
    size = 0
    n = index
    while size < PLAINTEXT_BYTES:
        word = _WORDS[n % len(_WORDS)]
        n = n * 7 + 3
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:PLAINTEXT_BYTES]


def _make_batch(sender: Exported, receiver_card: bytes, path: tuple[str, ...],
                sender_index: int, count: int) -> list[tuple[str, bytes, str]]:
    me = import_identity(sender)
    card = load_card(receiver_card, now=datetime.now(UTC))
    out = []
    for k in range(count):
        sealed = seal(me, [card], "note",
                      {"v": 1, "text": _plaintext(sender_index * 100_003 + k)})
        routing = make_envelope(me.signing_key, sealed.data, to=[card.id], origin=path[0],
                                route=path[1:-1], destination=path[-1])
        body = json_dumps({"envelope": json.loads(routing.envelope.to_json()),
                           "sealed": b64url_encode(sealed.data)})
        sig = base64.b64encode(me.signing_key.sign(body)).decode("ascii")
        out.append((routing.id, body, sig))
    return out


def make_submissions(cast: Cast, node_id: str, per_sender: int, *,
                     path: tuple[str, ...] | None = None,
                     workers: int | None = None) -> list[list[Submission]]:
    """``per_sender`` sealed envelopes from each sender to its receiver, for node
    ``node_id`` (or along ``path``: origin, intermediaries, destination); returns one
    list per sender."""
    workers = workers or min(len(cast.senders), os.cpu_count() or 1)
    route = path or (node_id,)
    jobs = [(export_identity(s), cast.receiver_of(i).card.to_json(), route, i, per_sender)
            for i, s in enumerate(cast.senders)]
    if workers <= 1 or per_sender * len(jobs) < 200:
        results = [_make_batch(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_make_batch, *zip(*jobs, strict=True)))
    return [[Submission(i, eid, body, sig) for eid, body, sig in batch]
            for i, batch in enumerate(results)]


def request_bytes(submission: Submission, signer: Identity, *, host: str, signed_base: str,
                  created: int | None = None) -> bytes:
    """A complete HTTP/1.1 request for ``POST /v1/envelopes``, signed now."""
    headers = sign_request(signer.signing_key, method="POST", url=signed_base + SUBMIT_PATH,
                           body=submission.body,
                           created=created if created is not None else int(time.time()),
                           nonce=secrets.token_urlsafe(16))
    head = (f"POST {SUBMIT_PATH} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(submission.body)}\r\n"
            f"Content-Digest: {headers['Content-Digest']}\r\n"
            f"Signature-Input: {headers['Signature-Input']}\r\n"
            f"Signature: {headers['Signature']}\r\n"
            f"X-Bench-Key: {submission.sender}\r\nX-Bench-Sig: {submission.bench_sig}\r\n\r\n")
    return head.encode("ascii") + submission.body


def sign_requests(cast: Cast, batches: Sequence[Sequence[Submission]], *, host: str,
                  signed_base: str) -> list[list[bytes]]:
    """Fresh request signatures for every submission (one list per connection)."""
    created = int(time.time())
    return [[request_bytes(s, cast.senders[s.sender], host=host, signed_base=signed_base,
                           created=created) for s in batch] for batch in batches]


def plain_request(host: str, size: int = 1024) -> bytes:
    """A POST of ``size`` bytes to ``/bare`` (the issue's bare-aiohttp reference)."""
    body = (b"x" * size)
    head = (f"POST /bare HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream"
            f"\r\nContent-Length: {size}\r\n\r\n")
    return head.encode("ascii") + body
