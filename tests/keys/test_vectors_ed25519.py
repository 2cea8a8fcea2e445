"""Pin the Ed25519 verifier (keys.ed25519.VerifyKey, i.e. libsodium) against the C2SP
CCTV edge-case vectors and Wycheproof's Ed25519 file.

Ed25519 implementations disagree on edge cases (small-order keys, non-canonical
encodings, cofactored vs cofactorless equations). Every party to a negotiation must
accept exactly the same signatures, so the behaviour is recorded here and any change
(e.g. a libsodium upgrade) fails loudly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keys.ed25519 import VerifyKey
from keys.errors import VerificationError

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

#: CCTV vector numbers libsodium accepts; every other vector is rejected. Recorded
#: from libsodium's actual behaviour. Why: libsodium's crypto_sign_verify_detached
#:  - rejects a small-order public key A (flag low_order_A) and a small-order R
#:    (low_order_R): no honest key or nonce has small order;
#:  - rejects non-canonical encodings of A and R (non_canonical_A/_R, including the
#:    "reencoded_k" variants that hash the non-canonical bytes): one signature, one
#:    spelling;
#:  - checks the cofactorless equation [S]B = R + [k]A, so a signature that only holds
#:    up to a small-order residue (low_order_residue) fails;
#:  - but accepts keys and R with a low-order *component* when the equation holds
#:    exactly (low_order_component_A/_R without residue): they are not small-order.
CCTV_ACCEPTED = frozenset({
    7, 29, 50, 117, 139, 161, 182, 249, 305, 411, 425, 438, 465, 473, 481, 489, 497, 511,
    525, 538, 565, 573, 581, 589, 597, 611, 625, 638, 665, 673, 681, 689, 697, 711, 725,
    738, 765, 773, 781, 789, 797, 832, 899,
})
REJECTING_FLAGS = frozenset({"low_order_A", "low_order_R", "non_canonical_A",
                             "non_canonical_R", "low_order_residue"})


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def _accepts(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(key).verify(message, signature)
    except VerificationError:
        return False
    return True


def test_cctv_outcomes_match_recorded_table() -> None:
    vectors = _load("cctv-ed25519vectors.json")
    assert len(vectors) == 914
    assert [v["number"] for v in vectors] == list(range(914))
    wrong = [v["number"] for v in vectors
             if _accepts(bytes.fromhex(v["key"]), v["msg"].encode(), bytes.fromhex(v["sig"]))
             != (v["number"] in CCTV_ACCEPTED)]
    assert wrong == [], f"libsodium's Ed25519 behaviour changed on CCTV vectors {wrong}"


def test_cctv_table_follows_the_stated_rule() -> None:
    # The table is not arbitrary: it is exactly the rule explained above.
    for v in _load("cctv-ed25519vectors.json"):
        flags = set(v["flags"] or ())
        assert (v["number"] in CCTV_ACCEPTED) == (not flags & REJECTING_FLAGS), v["number"]


def test_cctv_has_both_outcomes_for_mixed_order() -> None:
    # Guard against a table that is trivially "reject everything odd".
    vectors = {v["number"]: set(v["flags"] or ()) for v in _load("cctv-ed25519vectors.json")}
    accepted_flags = set().union(*(vectors[n] for n in CCTV_ACCEPTED))
    assert {"low_order_component_A", "low_order_component_R"} <= accepted_flags
    assert vectors[0] and 0 not in CCTV_ACCEPTED


def _wycheproof_cases() -> list[tuple[int, bytes, bytes, bytes, str]]:
    data = _load("wycheproof-ed25519_test.json")
    assert data["algorithm"] == "EDDSA"
    cases = [(t["tcId"], bytes.fromhex(g["publicKey"]["pk"]), bytes.fromhex(t["msg"]),
              bytes.fromhex(t["sig"]), t["result"])
             for g in data["testGroups"] for t in g["tests"]]
    assert len(cases) == data["numberOfTests"] == 151
    return cases


@pytest.mark.parametrize("result", ["valid", "invalid"])
def test_wycheproof_ed25519(result: str) -> None:
    cases = [c for c in _wycheproof_cases() if c[4] == result]
    assert cases
    wrong = [tc for tc, pk, msg, sig, _ in cases if _accepts(pk, msg, sig) != (result == "valid")]
    assert wrong == [], f"Wycheproof Ed25519 {result} cases mis-handled: {wrong}"


def test_no_acceptable_results_in_ed25519_file() -> None:
    # If a future copy adds "acceptable" cases, decide and record them explicitly.
    assert {c[4] for c in _wycheproof_cases()} == {"valid", "invalid"}
