"""Settings of one benchmark invocation and what its benchmarks share: a work
directory, the cast of members, a relay node directory and the pre-sealed corpus."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import Cast, Submission, make_cast, make_submissions
from .nodes import NodeHome, init_node


@dataclass(frozen=True)
class Settings:
    quick: bool
    runs: int
    #: Seconds of measured load per throughput run.
    duration: float
    #: Requests per connection sent before the clock starts.
    warmup: int
    #: Envelopes pre-sealed per sender (the relay never sees one twice in a run).
    per_sender: int
    clients: int = 64
    receivers: int = 8
    #: Seconds of open-loop load for the end-to-end latency run.
    e2e_seconds: float = 8.0
    idle_counts: tuple[int, ...] = (1_000, 10_000)
    list_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    #: Multi-hop: open-loop rate and seconds for latency, seconds of closed-loop load
    #: for throughput, envelopes sealed per sender and path (all runs).
    #: (A light load: the added latency of a hop, not queueing, is what is measured.)
    hop_rate: float = 5.0
    hop_seconds: float = 8.0
    hop_load_seconds: float = 4.0
    hop_per_sender: int = 36

    @classmethod
    def full(cls, runs: int = 3) -> Settings:
        return cls(quick=False, runs=runs, duration=6.0, warmup=5, per_sender=300)

    @classmethod
    def smoke(cls, runs: int = 1) -> Settings:
        return cls(quick=True, runs=runs, duration=1.0, warmup=1, per_sender=6, clients=16,
                   receivers=4, e2e_seconds=1.0, idle_counts=(50, 200),
                   list_sizes=(1_000, 10_000), hop_rate=5.0, hop_seconds=1.0,
                   hop_load_seconds=1.0, hop_per_sender=4)


@dataclass
class Context:
    settings: Settings
    workdir: Path
    log: list[str] = field(default_factory=list)
    _cast: Cast | None = None
    _home: NodeHome | None = None
    _batches: list[list[Submission]] | None = None

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log.append(line)
        print(line, flush=True)

    @property
    def logs(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def cast(self) -> Cast:
        if self._cast is None:
            self._cast = make_cast(self.settings.clients, self.settings.receivers)
        return self._cast

    @property
    def home(self) -> NodeHome:
        if self._home is None:
            self.say("creating the relay node directory (backchannel relay init)")
            self._home = init_node(self.workdir / "node")
        return self._home

    @property
    def batches(self) -> list[list[Submission]]:
        if self._batches is None:
            s = self.settings
            started = time.perf_counter()
            self._batches = make_submissions(self.cast, self.home.id, s.per_sender)
            self.say(f"sealed {s.per_sender * s.clients} envelopes in "
                     f"{time.perf_counter() - started:.1f} s (outside any timed region)")
        return self._batches
