"""Where the relay spends its time under the durable-submit load: py-spy samples
the serving process (every thread, native frames included, idle included) while
the load generator runs, and the samples are grouped into named hot spots.

Two views:

* the **event-loop thread**: each sample is charged to the innermost frame that
  belongs to a known component (PyNaCl, RFC 9421 parsing, JSON, SQLAlchemy,
  aiosqlite hand-off, logging, ...), so the shares add up to 100 % of the loop's
  wall time, idle (``epoll_wait``) included;
* the **database threads** (aiosqlite runs each SQLite connection in a thread):
  waiting for SQLite's write lock (the busy handler sleeping), ``fsync``,
  executing SQL, or waiting for work.

Plus the relay/keys functions with the largest inclusive share of the loop thread.
"""

from __future__ import annotations

import asyncio
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
from .processes import free_port

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


def analyse(raw: str) -> dict[str, Any]:
    loop_total = 0
    loop = Counter[str]()
    inclusive = Counter[str]()
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
            "worker_samples": worker_total, "worker_threads": len(worker_threads),
            "workers": shares(worker, worker_total)}


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


async def _record(spy: str, pid: int, seconds: int, out: Path, native: bool
                  ) -> asyncio.subprocess.Process:
    argv = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100",
            "--format", "raw", "--output", str(out), "--idle", "--threads"]
    if native:
        argv.append("--native")
    return await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)


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
    out = ctx.workdir / "profile.txt"
    await server.start()
    try:
        await enroll(home, url, public_url=public, send_url=server.base_url,
                     members=ctx.cast.everyone)
        queues = sign_requests(ctx.cast, batches, host=f"127.0.0.1:{port}",
                               signed_base=public)
        native = True
        recorder = await _record(spy, server.pid, seconds, out, native)
        result = await loadgen.closed_loop("127.0.0.1", port, queues, duration=seconds + 1,
                                           warmup=1)
        _, err = await recorder.communicate()
        if recorder.returncode != 0 or not out.exists():
            return {"available": False,
                    "reason": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    finally:
        await server.kill()
    report = analyse(out.read_text())
    report.update({"available": True, "tool": "py-spy record --native --idle --threads",
                   "seconds": seconds, "rate_while_profiled": round(result.rate, 1),
                   "requests": result.completed})
    return report
