"""Where the relay spends its time under the durable-submit load.

One relay process on a fresh database, under the submit workload, in three phases:

1. **CPU by thread** from /proc (no profiler attached): the event-loop thread's
   user and system time per request, and the other threads' (aiosqlite runs each
   SQLite connection in a thread of its own).
2. **py-spy --gil**: what the event-loop thread does while it holds the GIL, i.e.
   with its CPU. Each sample is charged to the innermost frame that belongs to a
   known component (PyNaCl, RFC 9421 parsing, JSON, SQLAlchemy, aiosqlite
   hand-off, logging, ...); plus the relay/keys functions with the largest
   inclusive share and the hottest source lines.
3. **py-spy --native --idle**: the state of the database threads over wall time:
   asleep in SQLite's busy handler waiting for the write lock, ``fsync``,
   executing SQL, or waiting for work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from . import loadgen
from .context import Context
from .corpus import sign_requests
from .nodes import enroll, relay_server
from .processes import ServerProcess, free_port

#: (category, substrings of a frame), tried from the innermost frame outwards.
LOOP_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle: waiting in epoll", ("epoll_wait", "EpollSelector.select")),
    ("garbage collector", ("gc_collect",)),
    ("Ed25519 sign/verify (PyNaCl)", ("nacl/", "crypto_sign")),
    ("RFC 9421 parsing (keys/httpsig, http_sf)", ("keys/httpsig.py", "http_sf/")),
    ("JSON encode/decode", ("json/", "keys/encoding.py:json")),
    ("logging (relay/logs, logging)", ("logging/", "relay/logs.py")),
    ("Prometheus metrics", ("prometheus_client/",)),
    ("aiosqlite thread hand-off (queue, futures, wake-ups)", ("aiosqlite/",)),
    ("SQLAlchemy Core (compile, execute, results, pool)", ("sqlalchemy/",)),
    ("keys: envelope/DSSE/statement parsing and hashing", ("keys/",)),
    ("relay: handlers, services, storage", ("relay/",)),
    ("aiohttp: HTTP parsing and writing", ("aiohttp/", "multidict/", "yarl/")),
    ("asyncio event loop and tasks", ("asyncio/", "_asynciomodule", "selectors.py")),
)

#: For the database threads the first category that matches *any* frame wins (a
#: busy-handler sleep runs inside SQLite frames, which must not count as "executing").
WORKER_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting for SQLite's write lock (busy handler sleeping)",
     ("sqlite3InvokeBusyHandler",)),
    ("fsync of the WAL (fdatasync)", ("fdatasync", "fsync (")),
    ("handing results back to the loop", ("call_soon_threadsafe", "_write_to_self")),
    ("idle: waiting for work", ("SimpleQueue_get", "aiosqlite/core.py:59")),
    ("executing SQL in SQLite", ("libsqlite3", "sqlite3_", "_pysqlite", "aiosqlite/core.py:63")),
)


def _classify_any(frames: list[str], table: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for name, needles in table:
        if any(n in frame for frame in frames for n in needles):
            return name
    return "other"


#: The process entry point (inclusive of everything): not a hot spot.
_ENTRY = ("relay/__main__.py", "relay/cli.py")


def _classify(frames: list[str], table: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """The category of the innermost frame that belongs to one."""
    for frame in reversed(frames):
        for name, needles in table:
            if any(n in frame for n in needles):
                return name
    return "other"


def _function(frame: str) -> str:
    """``name (path:line)`` → ``path:name``."""
    if " (" not in frame:
        return frame
    name, where = frame.rsplit(" (", 1)
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{path}:{name}"


def _line(frame: str) -> str:
    """``name (path:line)`` → ``path:line (name)``."""
    if " (" not in frame:
        return frame
    name, where = frame.rsplit(" (", 1)
    return f"{where.rstrip(')')} ({name})"


def analyse(raw: str) -> dict[str, Any]:
    loop_total = 0
    loop = Counter[str]()
    inclusive = Counter[str]()
    lines = Counter[str]()
    worker_total = 0
    worker = Counter[str]()
    worker_threads: set[str] = set()
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if "MainThread" in thread:
            loop_total += count
            loop[_classify(frames, LOOP_CATEGORIES)] += count
            python_frames = [f for f in frames if ".py:" in f]
            if python_frames:
                lines[_line(python_frames[-1])] += count
            for name in {_function(f) for f in frames
                         if f.split(" (")[-1].startswith(("relay/", "keys/"))
                         and not f.split(" (")[-1].startswith(_ENTRY)}:
                inclusive[name] += count
        else:
            worker_total += count
            worker_threads.add(thread.split(":", 1)[0])
            worker[_classify_any(frames, WORKER_CATEGORIES)] += count

    def shares(counter: Counter[str], total: int, limit: int = 20) -> list[dict[str, Any]]:
        return [{"what": k, "share": round(v / total, 4)}
                for k, v in counter.most_common(limit)] if total else []

    return {"loop_samples": loop_total, "loop": shares(loop, loop_total),
            "loop_functions": shares(inclusive, loop_total, 25),
            "loop_lines": shares(lines, loop_total, 12),
            "worker_samples": worker_total, "worker_threads": len(worker_threads),
            "workers": shares(worker, worker_total)}


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


async def _record(spy: str, pid: int, seconds: int, out: Path, mode: str
                  ) -> asyncio.subprocess.Process:
    argv = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100",
            "--format", "raw", "--output", str(out), "--threads"]
    argv += ["--gil"] if mode == "gil" else ["--native", "--idle"]
    return await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)


def _thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) / ticks, int(fields[12]) / ticks)
    return out


async def _cpu_phase(server: ServerProcess, queues: list[list[bytes]], seconds: float
                     ) -> dict[str, Any]:
    before, total0 = _thread_cpu(server.pid), server.cpu()
    result = await loadgen.closed_loop("127.0.0.1", server.port, queues, duration=seconds,
                                       warmup=1)
    after, total1 = _thread_cpu(server.pid), server.cpu()
    n = max(1, result.completed + result.warmup_acked)
    main0, main1 = before.get(server.pid, (0.0, 0.0)), after[server.pid]
    user, system = main1[0] - main0[0], main1[1] - main0[1]
    total = total1 - total0
    return {"requests": n, "rate": round(result.rate, 1),
            "elapsed_s": round(result.elapsed, 2),
            "loop_user_ms_per_request": round(1000 * user / n, 2),
            "loop_system_ms_per_request": round(1000 * system / n, 2),
            "loop_core_share": round((user + system) / max(result.elapsed, 1e-9), 3),
            "other_threads_ms_per_request": round(1000 * max(0.0, total - user - system) / n,
                                                  2),
            "threads_seen": len(set(before) | set(after))}


async def profile_relay(ctx: Context, seconds: int = 8) -> dict[str, Any]:
    spy = py_spy()
    if spy is None:
        return {"available": False,
                "reason": "py-spy is not installed (pip install -e '.[bench]')"}
    home, batches = ctx.home, ctx.batches
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    db = ctx.workdir / "profile.db"
    url = f"sqlite+aiosqlite:///{db}"
    server = relay_server(home, port=port, database=url, public_url=public,
                          log=ctx.logs / "profile.log")
    await server.start()
    try:
        await enroll(home, url, public_url=public, send_url=server.base_url,
                     members=ctx.cast.everyone)
        report: dict[str, Any] = {}
        # Each phase gets its own envelopes (the relay refuses a resubmission as a
        # duplicate, which would be a different, cheaper path).
        thirds = [[batch[i::3] for batch in batches] for i in range(3)]
        queues = sign_requests(ctx.cast, thirds[0], host=f"127.0.0.1:{port}",
                               signed_base=public)
        report["cpu"] = await _cpu_phase(server, queues, seconds / 2)
        for phase, mode in ((1, "gil"), (2, "native")):
            out = ctx.workdir / f"profile-{mode}.txt"
            queues = sign_requests(ctx.cast, thirds[phase], host=f"127.0.0.1:{port}",
                                   signed_base=public)
            recorder = await _record(spy, server.pid, seconds, out, mode)
            result = await loadgen.closed_loop("127.0.0.1", port, queues,
                                               duration=seconds + 1, warmup=1)
            _, err = await recorder.communicate()
            if recorder.returncode != 0 or not out.exists():
                return {"available": False,
                        "reason": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
            report[mode] = {**analyse(out.read_text()), "rate": round(result.rate, 1),
                            "requests": result.completed}
    finally:
        await server.kill()
    gil, native = report["gil"], report["native"]
    return {"available": True, "seconds": seconds, "cpu": report["cpu"],
            "tool": "py-spy record --gil (loop CPU); py-spy record --native --idle "
                    "(database threads)",
            "rate_while_profiled": gil["rate"], "requests": gil["requests"],
            "loop_samples": gil["loop_samples"], "loop": gil["loop"],
            "loop_functions": gil["loop_functions"], "loop_lines": gil["loop_lines"],
            "worker_samples": native["worker_samples"],
            "worker_threads": native["worker_threads"], "workers": native["workers"],
            "native_loop": native["loop"]}
