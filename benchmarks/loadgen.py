"""The load generator: a minimal HTTP/1.1 client over raw asyncio protocols.

Requests are complete pre-built byte strings (see benchmarks.corpus); the client
writes one, waits for the whole response (Content-Length framing, as every server
here answers), records the latency and sends the next. It does no parsing beyond
the status line and Content-Length, so that as much of the machine as possible is
left to the server under test. It runs in the harness process, never in the
server's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_CL = b"\r\ncontent-length:"


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need: int | None = None
        self.status = 0
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.status = int(head[9:12])
                at = head.find(_CL)
                if at < 0:
                    raise RuntimeError("response without Content-Length")
                stop = head.find(b"\r\n", at + 2)
                self.need = int(head[at + len(_CL):stop if stop > 0 else None])
                del self.buf[:end + 4]
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[:self.need])
            del self.buf[:self.need]
            self.need = None
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((self.status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _transport, proto = await loop.create_connection(_Conn, host, port)
    return proto


@dataclass
class LoadResult:
    completed: int = 0
    #: Requests answered as expected before the clock started.
    warmup_acked: int = 0
    elapsed: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    #: The first unexpected answer (status and up to 300 bytes), for the error message.
    first_failure: str | None = None
    #: Envelope bodies answered, per connection index and request index (when kept).
    answers: list[tuple[int, int, bytes]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0


async def closed_loop(host: str, port: int | Sequence[int], queues: Sequence[Sequence[bytes]],
                      *, duration: float, warmup: int = 0, cycle: bool = False,
                      expect: frozenset[int] = frozenset({200, 201}),
                      keep_answers: bool = False) -> LoadResult:
    """One connection per queue, each sending its queue's requests back to back.

    The first ``warmup`` requests of each queue are sent before the clock starts;
    then every connection runs until ``duration`` has passed or (unless ``cycle``)
    any queue is exhausted, so that the measured period always has every client
    active. ``port`` may list several ports: connections are spread over them.
    """
    ports = [port] if isinstance(port, int) else list(port)
    conns = [await connect(host, ports[i % len(ports)]) for i in range(len(queues))]
    result = LoadResult()
    warmed = 0
    all_warm = asyncio.Event()
    stop = asyncio.Event()
    start = 0.0
    deadline = 0.0

    async def worker(index: int, conn: _Conn, queue: Sequence[bytes]) -> None:
        nonlocal warmed, start, deadline
        position = 0
        for position in range(min(warmup, len(queue))):
            status, body = await conn.request(queue[position])
            if status in expect:
                result.warmup_acked += 1
            else:
                _fail(result, status, body)
        position = min(warmup, len(queue))
        warmed += 1
        if warmed == len(queues):
            start = time.perf_counter()
            deadline = start + duration
            all_warm.set()
        await all_warm.wait()
        clock = time.perf_counter_ns
        latencies = result.latencies_ns
        while not stop.is_set():
            if position >= len(queue):
                if not cycle or len(queue) == 0:
                    stop.set()
                    break
                position = warmup if len(queue) > warmup else 0
            t0 = clock()
            status, body = await conn.request(queue[position])
            latencies.append(clock() - t0)
            result.statuses[status] += 1
            if status not in expect:
                _fail(result, status, body)
            elif keep_answers:
                result.answers.append((index, position, body))
            position += 1
            if time.perf_counter() >= deadline:
                stop.set()

    try:
        await asyncio.gather(*(worker(i, c, q) for i, (c, q) in
                               enumerate(zip(conns, queues, strict=True))))
        result.elapsed = time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()
    result.completed = len(result.latencies_ns)
    return result


def _fail(result: LoadResult, status: int, body: bytes) -> None:
    if result.first_failure is None:
        result.first_failure = f"HTTP {status}: {body[:300]!r}"


@dataclass
class Sent:
    scheduled_ns: int
    acked_ns: int = 0
    status: int = 0


async def open_loop(host: str, port: int, queues: Sequence[Sequence[bytes]],
                    keys: Sequence[Sequence[str]], *, rate: float, count: int,
                    on_schedule: Callable[[str, int], None] | None = None
                    ) -> dict[str, Sent]:
    """Send ``count`` requests at ``rate`` per second (open loop: the schedule does not
    wait for answers), round-robin over the queues, one connection per queue.

    Latency is measured from the *scheduled* time, so a server that falls behind is
    charged for the wait (no coordinated omission). ``keys`` names each request
    (the envelope id), and the result maps each name to its timings.
    """
    conns = [await connect(host, port) for _ in queues]
    pending: list[asyncio.Queue[tuple[bytes, str, int]]] = [asyncio.Queue() for _ in queues]
    sent: dict[str, Sent] = {}
    clock = time.perf_counter_ns

    async def sender(conn: _Conn, inbox: asyncio.Queue[tuple[bytes, str, int]]) -> None:
        while True:
            data, key, _scheduled = await inbox.get()
            if not data:
                return
            status, _body = await conn.request(data)
            record = sent[key]
            record.acked_ns = clock()
            record.status = status

    tasks = [asyncio.create_task(sender(c, q)) for c, q in zip(conns, pending, strict=True)]
    try:
        interval_ns = int(1e9 / rate)
        t0 = clock() + 20_000_000
        positions = [0] * len(queues)
        for k in range(count):
            lane = k % len(queues)
            data = queues[lane][positions[lane]]
            key = keys[lane][positions[lane]]
            positions[lane] += 1
            scheduled = t0 + k * interval_ns
            delay = (scheduled - clock()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            sent[key] = Sent(scheduled)
            if on_schedule is not None:
                on_schedule(key, scheduled)
            pending[lane].put_nowait((data, key, scheduled))
        for inbox in pending:
            inbox.put_nowait((b"", "", 0))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for conn in conns:
            conn.close()
    return sent
