"""``python -m benchmarks [NAME ...] [--quick] [--runs N]``: run the benchmarks,
write one JSON file per benchmark and regenerate docs/performance.md from them.

Names: submit, profile, e2e, idle, lists, multihop, postgres, synapse (default: all, in
that order). Full mode writes benchmarks/results/*.json and docs/performance.md;
``--quick`` (a smoke test: a few hundred requests, seconds) writes to a temporary
directory unless ``--results``/``--doc`` say otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from .context import Context, Settings
from .machine import machine_info
from .processes import raise_fd_limit
from .report import NAMES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DOC = ROOT / "docs" / "performance.md"


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    # The load generator is leaner on uvloop; the servers choose their own loop.
    return uvloop.run(coro)


def _peak_rate(results: Path, fresh: dict[str, Any]) -> float | None:
    submit = fresh.get("submit")
    if submit is None:
        path = results / "submit.json"
        if path.exists():
            submit = json.loads(path.read_text())["result"]
    if submit is None:
        return None
    return float(submit["relay"]["median"]["rate"])


async def _bench(name: str, ctx: Context, results: Path, fresh: dict[str, Any]) -> Any:
    s = ctx.settings
    if name == "submit":
        from .submit import bench_submit

        return await bench_submit(ctx)
    if name == "profile":
        from .profiling import profile_relay

        return await profile_relay(ctx, seconds=2 if s.quick else 8)
    if name == "e2e":
        from .e2e import bench_e2e
        from .submit import relay_run

        peak = _peak_rate(results, fresh)
        if peak is None:
            peak = (await relay_run(ctx, 99))["rate"]
        return await bench_e2e(ctx, peak)
    if name == "idle":
        from .idle_ws import bench_idle

        return await bench_idle(ctx)
    if name == "lists":
        from .lists import bench_lists

        return bench_lists(s.list_sizes, s.runs, ctx.say)
    if name == "multihop":
        from .multihop import bench_multihop

        return await bench_multihop(ctx)
    if name == "postgres":
        from .postgres import bench_postgres

        return await bench_postgres(ctx)
    if name == "synapse":
        from .synapse import bench_synapse

        return await bench_synapse(ctx)
    raise ValueError(name)


def _keeps_measured(path: Path, result: Any) -> bool:
    """An optional benchmark that could not run here (Synapse not installed) does not
    replace results that were measured before."""
    if not isinstance(result, dict) or result.get("measured", True) or not path.exists():
        return False
    return bool(json.loads(path.read_text(encoding="utf-8"))["result"].get("measured"))


def _terminate(_signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so that every server process started is killed.
    raise KeyboardInterrupt


def _cpu_sample() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its
    reaped children) — their difference over an interval is other people's load."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in fields]
    busy = (sum(values) - values[3] - values[4]) / ticks  # minus idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _wait_quiet(ctx: Context, limit: float, *, share: float = 0.15) -> float:
    """Wait (at most ``limit`` seconds) until other processes use less than ``share``
    of the machine over two seconds; return the last share seen."""
    deadline = time.monotonic() + limit
    while True:
        busy0, own0 = _cpu_sample()
        time.sleep(2.0)
        busy1, own1 = _cpu_sample()
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / 2.0 / (os.cpu_count() or 1)
        if other < share or time.monotonic() > deadline:
            if other >= share:
                ctx.say(f"the machine is still busy ({100 * other:.0f} % used by other "
                        "processes); measuring anyway")
            return other
        ctx.say(f"waiting for a quiet machine ({100 * other:.0f} % used by other processes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run: {', '.join(NAMES)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: tiny loads, one run, seconds in all")
    parser.add_argument("--runs", type=int, help="runs per figure (median; default 3, quick 1)")
    parser.add_argument("--results", type=Path, help="directory for the JSON results")
    parser.add_argument("--doc", type=Path, help="Markdown file to regenerate")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--wait-quiet", type=float, default=None, metavar="SECONDS",
                        help="before each benchmark, wait up to this long for other "
                             "processes to go quiet (default 120 s, quick 0)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from "
                     f"{', '.join(NAMES)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    names = [n for n in NAMES if n in args.names] if args.names else list(NAMES)
    settings = Settings.smoke(args.runs or 1) if args.quick else Settings.full(args.runs or 3)
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    results = args.results or (workdir / "results" if args.quick else RESULTS)
    # The committed document only ever shows the committed results.
    doc = args.doc or (DOC if results == RESULTS else None)
    results.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    signal.signal(signal.SIGTERM, _terminate)
    ctx = Context(settings, workdir)
    machine = machine_info(ROOT)
    fresh: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for name in names:
            begun = time.perf_counter()
            ctx.say(f"--- {name}")
            wait = args.wait_quiet if args.wait_quiet is not None else (
                0.0 if settings.quick else 120.0)
            if wait > 0:
                _wait_quiet(ctx, wait)
            busy0, own0 = _cpu_sample()
            load0 = os.getloadavg()[0]
            result = _run(_bench(name, ctx, results, fresh))
            busy1, own1 = _cpu_sample()
            elapsed = time.perf_counter() - begun
            fresh[name] = result
            # Other processes on the machine (other users' tests, a PostgreSQL server)
            # disturb the figures: say how much.
            foreign = max(0.0, (busy1 - busy0) - (own1 - own0))
            record = {"benchmark": name, "mode": "quick" if settings.quick else "full",
                      "runs": settings.runs, "seconds": round(elapsed, 1),
                      "other_cpu_share": round(foreign / elapsed / (os.cpu_count() or 1), 3),
                      "load_before": round(load0, 2), "machine": machine, "result": result}
            ctx.say(f"{name}: other processes used {100 * record['other_cpu_share']:.0f} % "
                    "of the machine meanwhile")
            path = results / f"{name}.json"
            if _keeps_measured(path, result):
                ctx.say(f"{name}: {result['reason']}; kept the measured results in {path}")
                continue
            path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            ctx.say(f"wrote {path}")
    finally:
        if not args.keep:
            for child in workdir.iterdir():
                if child != results:
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                workdir.rmdir()  # only if the results live elsewhere
    ctx.say(f"all done in {time.perf_counter() - started:.0f} s; results in {results}")
    if doc is not None:
        from .report import render

        doc.write_text(render(results), encoding="utf-8")
        ctx.say(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
