"""The benchmark harness in its smallest mode, so that it cannot rot.

Runs ``python -m benchmarks --quick`` (real relay and baseline processes on
127.0.0.1, a few hundred requests) and checks structure and correctness only: every
request acknowledged, every acknowledged envelope stored and pushed, the JSON and the
generated Markdown well-formed. Never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.profiling import analyse
from benchmarks.report import render
from benchmarks.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
RUN = ("submit", "e2e", "idle", "lists", "multihop")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *RUN, "--quick", "--results", str(out / "results"),
         "--doc", str(out / "performance.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _load(results: Path, name: str) -> dict:
    record = json.loads((results / "results" / f"{name}.json").read_text(encoding="utf-8"))
    assert record["benchmark"] == name and record["mode"] == "quick"
    assert 0 <= record["other_cpu_share"] <= 1
    assert record["machine"]["cores"] >= 1 and record["machine"]["python"]
    return record["result"]


@pytest.mark.slow
def test_submit_every_request_acknowledged_and_stored(results: Path) -> None:
    submit = _load(results, "submit")
    for series in ("bare_1k", "bare", "verify", "relay"):
        runs = submit[series]["runs"]
        assert runs, series
        for run in runs:
            assert run["completed"] > 0
            assert set(run["statuses"]) == {"201"}, (series, run["statuses"])
            assert sum(run["statuses"].values()) == run["completed"]
            assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    relay = submit["relay"]["runs"][0]
    # Killed with SIGKILL after the load: every acknowledged envelope is on disk.
    assert relay["stored_rows"] == relay["acknowledged"] >= relay["completed"]
    assert submit["verify"]["runs"][0]["stored_rows"] >= submit["verify"]["runs"][0]["completed"]
    assert set(submit["ratios"]) == {"relay_over_bare", "relay_over_verify", "verify_over_bare"}
    assert submit["config"]["plaintext_bytes"] == 1024


@pytest.mark.slow
def test_e2e_every_envelope_pushed(results: Path) -> None:
    e2e = _load(results, "e2e")
    run = e2e["runs"][0]
    assert run["sent"] > 0
    assert 0 < run["p50_ms"] <= run["p99_ms"]
    assert e2e["rate"] == pytest.approx(e2e["peak_rate"] / 2, rel=0.01)


@pytest.mark.slow
def test_idle_sessions_measured(results: Path) -> None:
    idle = _load(results, "idle")
    counts = [p["sessions"] for p in idle["median"]]
    assert counts == sorted(counts) and counts
    assert all(p["rss_mib"] > 0 for p in idle["median"])


@pytest.mark.slow
def test_lists_round_trip_and_baseline(results: Path) -> None:
    lists = _load(results, "lists")
    assert [c["names"] for c in lists["cases"]] == [1_000, 10_000]
    for case in lists["cases"]:
        assert case["sealed_bytes"] > case["json_bytes"] > 0
        assert case["seal_ms"] > 0 and case["raw_seal_ms"] > 0 and case["open_peak_x"] > 0
    assert len(lists["open_stages"]["steps"]) == 8


@pytest.mark.slow
def test_multihop_delivered_through_the_chain(results: Path) -> None:
    multihop = _load(results, "multihop")
    if not multihop["measured"]:  # relay/ without federation: the report says why
        assert multihop["reason"].startswith("not measured")
        return
    assert set(multihop["paths"]) == {"direct", "one intermediary", "two intermediaries"}
    for path in multihop["paths"].values():
        for run in path["runs"]:
            # Every acknowledged envelope arrived (the harness fails the run otherwise).
            assert run["latency_envelopes"] > 0 and run["submitted"] > 0
            assert 0 < run["p50_ms"] <= run["p99_ms"] and run["delivered_rate"] > 0
    assert set(multihop["added_p50_ms"]) == {"first intermediary", "second intermediary"}


@pytest.mark.slow
def test_doc_is_generated(results: Path) -> None:
    doc = (results / "performance.md").read_text(encoding="utf-8")
    assert doc == render(results / "results")
    for heading in ("## Targets of issue 7", "## 1. Durable submit", "## 2. End-to-end",
                    "## 3. Idle", "## 4. Large name lists", "## 5. Multi-hop"):
        assert heading in doc
    assert "not measured here" in doc  # the Synapse row is labelled as external
    table_rows = [line for line in doc.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in table_rows)


def test_profile_analysis_groups_samples() -> None:
    raw = "\n".join([
        "thread (1): MainThread;run (asyncio/base_events.py:1);select (selectors.py:468);"
        "epoll_wait (libc.so.6) 50",
        "thread (1): MainThread;submit (relay/handlers.py:105);member (relay/services/auth.py:"
        "97);verify (nacl/signing.py:137) 30",
        "thread (1): MainThread;submit (relay/handlers.py:105);loads (json/__init__.py:346) 20",
        "thread (7): Thread-1;_connection_worker_thread (aiosqlite/core.py:63);sqlite3_step "
        "(libsqlite3.so.0);sqlite3InvokeBusyHandler (libsqlite3.so.0);usleep (libc.so.6) 3",
        "thread (7): Thread-1;_connection_worker_thread (aiosqlite/core.py:59) 1",
    ])
    report = analyse(raw)
    loop = {r["what"]: r["share"] for r in report["loop"]}
    assert loop["idle: waiting in epoll"] == 0.5
    assert loop["Ed25519 sign/verify (PyNaCl)"] == 0.3
    assert loop["JSON encode/decode"] == 0.2
    workers = {r["what"]: r["share"] for r in report["workers"]}
    assert workers["waiting for SQLite's write lock (busy handler sleeping)"] == 0.75
    assert workers["idle: waiting for work"] == 0.25
    functions = {r["what"]: r["share"] for r in report["loop_functions"]}
    assert functions["relay/handlers.py:submit"] == 0.5
    assert report["worker_threads"] == 1


def test_percentile_is_an_observed_value() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 99) == 5.0
    assert percentile(values, 1) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)
