"""Benchmark 4: sealing and opening large name lists.

* seal = the client's work to send a list: sign the inner message (Ed25519, DSSE)
  and encrypt it (XChaCha20-Poly1305, Padmé padding) with the key wrapped for three
  recipients (hybrid ML-KEM-768 + X25519) — keys.seal.seal;
* open = a recipient's work: unwrap, decrypt, parse, verify the signature
  (keys.seal.open_sealed), then check the list's structure (client.bodies.decode);
* baseline = the raw primitives over the list's JSON bytes with PyNaCl: one
  Ed25519 signature plus one XChaCha20-Poly1305 encryption (open: decryption plus
  one verification).

Times are medians of the runs; peak memory is measured separately (tracemalloc
slows Python down) and given as a multiple of the list's JSON size.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import nacl.bindings
import nacl.signing
from anyascii import anyascii

from client.bodies import decode
from client.namelist import Entry, NameList
from keys.card import Card
from keys.encoding import json_dumps
from keys.identity import Identity
from keys.seal import open_sealed, seal


def _name_tables() -> tuple[list[tuple[str, str, str]], ...]:
    """(family, given, patronymic) triples, male and female, Ukrainian and Russian
    (Faker's name tables when installed, else a small built-in set)."""
    try:
        from faker.providers.person.ru_RU import Provider as Russian
        from faker.providers.person.uk_UA import Provider as Ukrainian
    except ImportError:
        family = ("Шевченко", "Коваленко", "Бондаренко", "Ткаченко", "Кравченко", "Іваненко",
                  "Мельник", "Петренко", "Иванов", "Смирнов", "Кузнецов", "Попов")
        given = ("Олександр", "Андрій", "Дмитро", "Сергій", "Іван", "Михайло", "Алексей",
                 "Николай", "Владимир")
        middle = ("Олександрович", "Іванович", "Петрович", "Сергеевич", "Николаевич")
        return ([(f, g, m) for f in family for g in given for m in middle],)
    tables = []
    for provider in (Ukrainian, Russian):
        tables.append([(f, g, m) for f, g, m in zip(
            random.Random(1).choices(provider.last_names_male, k=5000),
            random.Random(2).choices(provider.first_names_male, k=5000),
            random.Random(3).choices(provider.middle_names_male, k=5000), strict=True)])
        tables.append([(f, g, m) for f, g, m in zip(
            random.Random(4).choices(provider.last_names_female, k=2000),
            random.Random(5).choices(provider.first_names_female, k=2000),
            random.Random(6).choices(provider.middle_names_female, k=2000), strict=True)])
    return tuple(tables)


def make_namelist(size: int, seed: int = 7) -> NameList:
    """``size`` entries: about 60 % in Cyrillic (family name, given name, patronymic,
    date of birth) and 40 % in Latin letters, as the other side would type the same
    kind of names from passports (no patronymic; some family names in capitals)."""
    rng = random.Random(seed)
    tables = _name_tables()
    weights = [len(t) for t in tables]
    born = date(1965, 1, 1)
    entries = []
    for i in range(size):
        family, given, patronymic = rng.choice(rng.choices(tables, weights)[0])
        dob = (born + timedelta(days=rng.randrange(365 * 40))).isoformat()
        if rng.random() < 0.6:
            entries.append(Entry(family, given, patronymic, dob))
        else:
            latin = anyascii(family)
            entries.append(Entry(latin.upper() if i % 5 == 0 else latin, anyascii(given),
                                 "", dob))
    return NameList(tuple(entries))


def _timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _peak(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def list_case(size: int, runs: int, sender: Identity, recipients: list[Identity]
              ) -> dict[str, Any]:
    namelist = make_namelist(size)
    body = namelist.to_body()
    raw = json_dumps(body)
    cards = [r.card for r in recipients]
    me = recipients[0]
    senders: dict[str, Card] = {sender.id: sender.card}

    def do_seal() -> bytes:
        return seal(sender, cards, "namelist", body).data

    seal_s, sealed = _timed(do_seal, runs)

    def do_open() -> NameList:
        opened = open_sealed(sealed, me, senders.__getitem__)
        parsed = decode(opened.message.kind, opened.message.body)
        if not isinstance(parsed, NameList):
            raise RuntimeError("lists: the opened message is not a name list")
        return parsed

    open_s, parsed = _timed(do_open, runs)
    if parsed != namelist:
        raise RuntimeError(f"lists: the opened {size}-name list differs from the sealed one")

    signer = nacl.signing.SigningKey(sender.signing_key.seed())
    key, nonce = bytes(32), bytes(24)

    def raw_seal() -> tuple[bytes, bytes]:
        return (signer.sign(raw).signature,
                nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(raw, None, nonce, key))

    raw_seal_s, (signature, ciphertext) = _timed(raw_seal, runs)

    def raw_open() -> bytes:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, None,
                                                                          nonce, key)
        signer.verify_key.verify(plain, signature)
        return plain

    raw_open_s, _ = _timed(raw_open, runs)
    seal_peak = _peak(do_seal)
    open_peak = _peak(do_open)
    return {"names": size, "json_bytes": len(raw), "sealed_bytes": len(sealed),
            "seal_ms": round(seal_s * 1000, 2), "open_ms": round(open_s * 1000, 2),
            "raw_seal_ms": round(raw_seal_s * 1000, 2), "raw_open_ms": round(raw_open_s * 1000, 2),
            "seal_over_raw": round(seal_s / raw_seal_s, 2),
            "open_over_raw": round(open_s / raw_open_s, 2),
            "seal_peak_mib": round(seal_peak / 2**20, 1),
            "open_peak_mib": round(open_peak / 2**20, 1),
            "seal_peak_x": round(seal_peak / len(raw), 2),
            "open_peak_x": round(open_peak / len(raw), 2),
            "_sealed": sealed}


def open_stages(data: bytes, me: Identity, sender: Card) -> list[dict[str, Any]]:
    """Time and peak memory of each step of keys.seal.open_sealed (mirrored here step
    by step, for diagnosis only), then the list check; ``data`` must open.

    Each step's peak counts what it allocates beyond what is alive before it; the
    copies open_sealed drops as it goes (``del``) are dropped here at the same
    points, so the live column is what the next step starts with."""
    from keys import dsse
    from keys.padding import unpadded_length
    from keys.policy import Signer
    from keys.seal import (
        MAX_INNER_BYTES,
        MESSAGE_TYPE,
        _wrap_info,
        parse_message_payload,
        parse_sealed_unverified,
    )

    state: dict[str, Any] = {}

    def unwrap() -> None:
        sealed = state["sealed"]
        wrap = next(w for w in sealed.recipients if w.id == me.id)
        state["key"] = me.encryption_key.unwrap(wrap.wrap, _wrap_info(sealed.nonce, me.id))

    def decrypt() -> None:
        sealed = state.pop("sealed")
        state["padded"] = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed.ciphertext, sealed.raw_header, sealed.nonce, state["key"])

    def inner() -> None:
        padded = state.pop("padded")
        with memoryview(padded) as view:
            state["inner"] = dsse.Envelope.from_json(view[:state.pop("length")],
                                                     max_payload=MAX_INNER_BYTES)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("parse sealed JSON + base64url (keys.seal.parse_sealed_unverified)",
         lambda: state.update(sealed=parse_sealed_unverified(data))),
        ("unwrap content key (HPKE ML-KEM-768+X25519)", unwrap),
        ("XChaCha20-Poly1305 decrypt", decrypt),
        ("unpad (Padmé: the length, read in place)",
         lambda: state.update(length=unpadded_length(state["padded"]))),
        ("parse inner DSSE JSON + base64 from a view (keys.dsse.Envelope.from_json)",
         inner),
        ("parse message payload JSON (keys.seal.parse_message_payload)",
         lambda: state.update(message=parse_message_payload(state["inner"].payload))),
        ("verify Ed25519 over PAE (keys.dsse.verify)",
         lambda: dsse.verify(state["inner"], Signer(sender.verify_key),
                             payload_type=MESSAGE_TYPE)),
        ("check list structure (client.bodies.decode)",
         lambda: state.update(namelist=decode("namelist", state["message"].body))),
    ]
    out = []
    gc.collect()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for name, fn in steps:
            gc.collect()
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            fn()
            live, peak = tracemalloc.get_traced_memory()
            out.append({"step": name, "peak_mib": round((peak - before) / 2**20, 1),
                        "live_mib": round((live - start) / 2**20, 1)})
    finally:
        tracemalloc.stop()
    # Times without tracemalloc (it slows Python code down several-fold).
    state.clear()
    for (_name, fn), row in zip(steps, out, strict=True):
        gc.collect()
        started = time.perf_counter()
        fn()
        row["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out


def bench_lists(sizes: tuple[int, ...], runs: int,
                say: Callable[[str], None] = print) -> dict[str, Any]:
    sender = Identity.create("Kyiv delegation", "delegation")
    recipients = [Identity.create(f"Recipient {i}", "delegation") for i in range(3)]
    cases = []
    for size in sizes:
        case = list_case(size, runs, sender, recipients)
        sealed = case.pop("_sealed")
        cases.append(case)
        say(f"lists {size:,} names ({case['json_bytes'] / 2**20:.1f} MiB): seal "
            f"{case['seal_ms']} ms, open {case['open_ms']} ms, memory "
            f"{case['seal_peak_x']}x / {case['open_peak_x']}x")
    stages = open_stages(sealed, recipients[0], sender.card)
    return {"cases": cases, "runs": runs, "recipients": 3,
            "open_stages": {"names": sizes[-1], "steps": stages}}
