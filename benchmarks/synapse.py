"""Benchmark 7: Matrix Synapse on issue 7's comparable workload, measured here.

Issue 7 asks for at least 50× Synapse and quotes Synapse 1.163 at 55–100 messages/s
(16 concurrent senders, one room) on its own machine. Quoting that figure against this
machine's relay compares two machines; this benchmark runs Synapse here instead:

* Synapse 1.163.2 from its own virtual environment (``make bench-synapse`` installs it
  from the package registry into ``.venv-synapse``; ``BACKCHANNEL_BENCH_SYNAPSE`` may
  name another Python that can import ``synapse``). Without one the benchmark says
  "not measured" and the report keeps quoting the issue's figure.
* A fresh homeserver per run on the embedded SQLite database (the relay's default
  too), its generated configuration with rate limits lifted (they would measure the
  limiter), presence off, client API only.
* ``senders`` users each send 1 KiB ``m.room.message`` events into one room, back to
  back, for the run's duration; one more user follows the room with ``/sync`` long
  polls. Throughput = messages answered 200 in the window / the time to the last
  answer; latency = send → arrival in the follower's sync, for every such message.

Runs Synapse on SQLite with 16 senders (the issue's workload, on which the target is
judged) and 64 (the relay's submit benchmark), and on PostgreSQL, Synapse's
recommended database, with 16 (when the server binaries and psycopg2 are there); each
run in turn with the relay's durable submit (SQLite) from as many senders. Only the
rates compare like for like: Synapse's latency is send → arrival at a syncing client,
the relay's is submit → acknowledgement (section 2 has the relay's submit → delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from .context import Context
from .postgres import Cluster, throwaway_cluster
from .processes import cpu_seconds, free_port
from .stats import latency_summary, medians

ROOT = Path(__file__).resolve().parent.parent
VERSION = "1.163.2"
SERVER = "bench.local"
BODY = "x" * 1024
_SYNC_FILTER = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 5000}},
                                              "presence": {"types": []}}))

#: Lifted so that the benchmark measures the homeserver, not its rate limiter.
_OVERRIDES = """\
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: false
rc_message: {{per_second: 1000000, burst_count: 1000000}}
rc_registration: {{per_second: 1000000, burst_count: 1000000}}
rc_login:
  address: {{per_second: 1000000, burst_count: 1000000}}
  account: {{per_second: 1000000, burst_count: 1000000}}
  failed_attempts: {{per_second: 1000000, burst_count: 1000000}}
rc_joins:
  local: {{per_second: 1000000, burst_count: 1000000}}
  remote: {{per_second: 1000000, burst_count: 1000000}}
rc_joins_per_room: {{per_second: 1000000, burst_count: 1000000}}
rc_room_creation: {{per_second: 1000000, burst_count: 1000000}}
"""


def synapse_python() -> tuple[str | None, str]:
    """(a Python that imports synapse, its version) or (None, why not)."""
    candidates = [os.environ.get("BACKCHANNEL_BENCH_SYNAPSE", ""),
                  str(ROOT / ".venv-synapse" / "bin" / "python")]
    for python in filter(None, candidates):
        if not Path(python).exists():
            continue
        done = subprocess.run([python, "-c", "import synapse; print(synapse.__version__)"],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return python, done.stdout.strip()
    return None, ("no Synapse installation: run `make bench-synapse` (installs "
                  f"matrix-synapse=={VERSION} into .venv-synapse) or set "
                  "BACKCHANNEL_BENCH_SYNAPSE to a Python that imports synapse")


#: Synapse's PostgreSQL settings (psycopg2); the database needs the C collation.
_POSTGRES = """\
database:
  name: psycopg2
  args:
    user: postgres
    host: 127.0.0.1
    port: {port}
    database: {database}
    cp_min: 5
    cp_max: 10
"""


class Homeserver:
    """One Synapse process on a fresh database: SQLite, or ``postgres`` = (port,
    database) on a throwaway cluster."""

    def __init__(self, python: str, home: Path, log: Path,
                 postgres: tuple[int, str] | None = None) -> None:
        self.python = python
        self.home = home
        self.log = log
        self.postgres = postgres
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True)
        config = self.home / "homeserver.yaml"
        subprocess.run([self.python, "-m", "synapse.app.homeserver", "--server-name", SERVER,
                        "--config-path", str(config), "--data-directory", str(self.home),
                        "--generate-config", "--report-stats=no"],
                       check=True, capture_output=True, cwd=self.home)
        overrides = self.home / "bench.yaml"
        text = _OVERRIDES.format(port=self.port)
        if self.postgres is not None:
            text += _POSTGRES.format(port=self.postgres[0], database=self.postgres[1])
        overrides.write_text(text, encoding="utf-8")
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "synapse.app.homeserver", "-c", str(config),
                "-c", str(overrides), cwd=self.home, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"synapse exited at start; see {self.log}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/_matrix/client/versions") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"synapse did not answer within {timeout:.0f} s")
                await asyncio.sleep(0.2)

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def _call(session: aiohttp.ClientSession, method: str, url: str, *,
                token: str | None = None, json: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=json, headers=headers) as resp:
        body = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"synapse: {method} {url.split('/_matrix')[1]} answered "
                               f"{resp.status}: {str(body)[:200]}")
        return body


async def _register(session: aiohttp.ClientSession, url: str, name: str) -> str:
    body = await _call(session, "POST", url + "/_matrix/client/v3/register",
                       json={"username": name, "password": "benchmark-" + name,
                             "auth": {"type": "m.login.dummy"}})
    return str(body["access_token"])


async def _follow(session: aiohttp.ClientSession, url: str, token: str, room: str,
                  arrivals: dict[str, int], since: str) -> None:
    """Long-poll /sync, noting when each benchmark message first shows up.

    The filter raises the timeline limit (default 10 events per sync): a sync with more
    new events than that is "limited" and skips the older ones."""
    while True:
        body = await _call(session, "GET", f"{url}/_matrix/client/v3/sync?since={since}"
                           f"&timeout=30000&filter={_SYNC_FILTER}", token=token)
        now = time.perf_counter_ns()
        since = body["next_batch"]
        timeline = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
        if timeline.get("limited"):
            raise RuntimeError("synapse: a sync skipped events (timeline limited)")
        for event in timeline.get("events", []):
            mark = event.get("content", {}).get("bench")
            if isinstance(mark, str):
                arrivals.setdefault(mark, now)


async def synapse_run(ctx: Context, python: str, run: int, senders: int,
                      postgres: tuple[int, str] | None = None) -> dict[str, Any]:
    duration = ctx.settings.duration
    tag = f"{senders}-{'pg' if postgres else 'sqlite'}-{run}"
    server = Homeserver(python, ctx.workdir / f"synapse-{tag}", ctx.logs / f"synapse-{tag}.log",
                        postgres)
    arrivals: dict[str, int] = {}
    sent: dict[str, int] = {}
    answered: dict[str, int] = {}
    try:
        await server.start()
        url = server.url
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tokens = await asyncio.gather(*(_register(session, url, f"s{i}")
                                            for i in range(senders)))
            follower = await _register(session, url, "follower")
            room = (await _call(session, "POST", url + "/_matrix/client/v3/createRoom",
                                token=follower, json={"preset": "public_chat"}))["room_id"]
            for token in tokens:
                await _call(session, "POST", f"{url}/_matrix/client/v3/join/{room}",
                            token=token, json={})
            first = await _call(session, "GET", url + "/_matrix/client/v3/sync?timeout=0",
                                token=follower)
            follow = asyncio.create_task(_follow(session, url, follower, room, arrivals,
                                                 first["next_batch"]))
            try:
                window, elapsed, cpu = await _load(session, url, room, tokens, server,
                                                   duration, sent, answered)
                deadline = time.monotonic() + 60
                while not set(window) <= arrivals.keys() and time.monotonic() < deadline:
                    if follow.done():
                        follow.result()  # raises what stopped the follower
                    await asyncio.sleep(0.05)
            finally:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await follow
    finally:
        await server.stop()
    missing = [m for m in window if m not in arrivals]
    if missing or not window:
        raise RuntimeError(f"synapse: {len(missing)} of {len(window)} sent messages never "
                           "reached the follower")
    return {"senders": senders, "messages": len(window),
            "rate": round(len(window) / elapsed, 1),
            "server_cpu_ms_per_message": round(1000 * cpu / len(window), 2),
            **latency_summary([arrivals[m] - sent[m] for m in window]),
            "send": latency_summary([answered[m] - sent[m] for m in window])}


async def _load(session: aiohttp.ClientSession, url: str, room: str, tokens: list[str],
                server: Homeserver, duration: float, sent: dict[str, int],
                answered: dict[str, int]) -> tuple[list[str], float, float]:
    """Each sender sends back to back until ``duration`` has passed; every message of
    the window counts, the last ones finishing after it too, over the time until the
    last answer (as the relay's load generator counts). Returns (messages, seconds,
    Synapse CPU seconds)."""
    counter = itertools.count()
    window: list[str] = []
    for token in tokens:  # warm up: each sender's first messages, not counted
        await send_warm(session, url, room, token, counter)

    async def send(token: str, stop_at: int) -> None:
        while time.perf_counter_ns() < stop_at:
            mark = f"m{next(counter)}"
            started = time.perf_counter_ns()
            await _message(session, url, room, token, mark, counted=True)
            sent[mark], answered[mark] = started, time.perf_counter_ns()
            window.append(mark)

    cpu0 = server.cpu()
    begun = time.perf_counter_ns()
    stop_at = begun + int(duration * 1e9)
    async with asyncio.TaskGroup() as group:  # one failure cancels the other senders
        for token in tokens:
            group.create_task(send(token, stop_at))
    return window, (time.perf_counter_ns() - begun) / 1e9, server.cpu() - cpu0


async def send_warm(session: aiohttp.ClientSession, url: str, room: str, token: str,
                    counter: itertools.count[int], count: int = 2) -> None:
    for _ in range(count):
        await _message(session, url, room, token, f"w{next(counter)}", counted=False)


async def _message(session: aiohttp.ClientSession, url: str, room: str, token: str,
                   mark: str, *, counted: bool) -> None:
    """One 1 KiB text event (``mark`` is its transaction id; a counted one carries it in
    its content too, where the follower finds it)."""
    content: dict[str, str] = {"msgtype": "m.text", "body": BODY}
    if counted:
        content["bench"] = mark
    await _call(session, "PUT",
                f"{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{mark}",
                token=token, json=content)


def _series(runs: list[dict[str, Any]], relay_runs: list[dict[str, Any]], senders: int,
            database: str) -> dict[str, Any]:
    synapse = medians(runs, ("rate", "p50_ms", "p99_ms", "server_cpu_ms_per_message"))
    relay = medians(relay_runs, ("rate", "p50_ms", "p99_ms"))
    return {"senders": senders, "database": database, "synapse": synapse, "relay": relay,
            "relay_over_synapse": round(relay["rate"] / synapse["rate"], 1),
            "runs": runs, "relay_runs": relay_runs}


async def bench_synapse(ctx: Context) -> dict[str, Any]:
    """Synapse and the relay (durable submit on SQLite, its default; the same number of
    concurrent senders), run after run in turn so that both see the same machine.
    Synapse on SQLite with 16 and 64 senders, and on PostgreSQL (its recommended
    database) with 16 when the server binaries and psycopg2 are there."""
    python, version = synapse_python()
    if python is None:
        return {"measured": False, "reason": version}
    quick = ctx.settings.quick
    series: dict[str, Any] = {}
    for senders, database in [(4, "sqlite")] if quick else [(16, "sqlite"), (64, "sqlite")]:
        series[f"{senders}/{database}"] = await _measure(ctx, python, senders, database, None)
    postgresql = "skipped in quick mode" if quick else _postgres_missing(python)
    if postgresql is None:
        # Started only now, so that an idle cluster does not sit beside the SQLite runs;
        # a PostgreSQL failure leaves the SQLite series standing.
        try:
            with throwaway_cluster() as cluster:
                series["16/postgresql"] = await _measure(ctx, python, 16, "postgresql",
                                                         cluster)
            postgresql = "measured"
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            postgresql = f"not measured: {type(exc).__name__}: {str(exc)[:200]}"
            ctx.say(f"synapse on PostgreSQL {postgresql}")
    return {"measured": True, "version": version, "message_bytes": len(BODY),
            "series": series, "postgresql": postgresql}


def _postgres_missing(python: str) -> str | None:
    """Why Synapse cannot be measured on PostgreSQL here, or None."""
    from .postgres import pg_binary

    if pg_binary("initdb") is None or pg_binary("pg_ctl") is None:
        return "not measured: PostgreSQL server binaries (initdb, pg_ctl) not found"
    done = subprocess.run([python, "-c", "import psycopg2"], capture_output=True, check=False)
    if done.returncode != 0:
        return ("not measured: psycopg2 is not installed in Synapse's environment "
                "(make bench-synapse)")
    return None


async def _measure(ctx: Context, python: str, senders: int, database: str,
                   cluster: Cluster | None) -> dict[str, Any]:
    from .submit import relay_run

    runs, relay_runs = [], []
    for run in range(ctx.settings.runs):
        pg = None
        if cluster is not None:
            url = await cluster.create_database(collate_c=True)
            pg = (cluster.port, url.rsplit("/", 1)[1])
        summary = await synapse_run(ctx, python, run, senders, pg)
        runs.append(summary)
        relay = await relay_run(ctx, 100 + run, clients=senders,
                                label=f"relay-{senders}-{database}")
        relay_runs.append(relay)
        ctx.say(f"synapse ({database}) {senders} senders run {run + 1}/{ctx.settings.runs}: "
                f"{summary['rate']:.0f} messages/s, send → receive p50 {summary['p50_ms']} "
                f"ms; relay {relay['rate']:.0f}/s")
    return _series(runs, relay_runs, senders, database)
