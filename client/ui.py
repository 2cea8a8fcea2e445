"""Terminal output: rich tables and progress bars for people, stable JSON for scripts.

Human output goes through rich (colour only on a terminal); JSON output is written
with the standard library so that nothing (wrapping, markup) can alter it. Warnings
and progress go to stderr, so ``--json`` output on stdout stays parseable.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

#: Below this, a progress bar would only flicker.
PROGRESS_MIN_BYTES = 256 * 1024


#: Width of tables when stdout is a file or a pipe (rich would assume 80 columns,
#: which squeezes a 43-character envelope id and a fingerprint into one row).
PIPE_WIDTH = 140


def out() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=True, width=PIPE_WIDTH)
    return console


def err() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"backchannel: warning: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """Progress chatter for people (stderr, so it never mixes with data on stdout)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Meter:
    """A progress bar on stderr, shown only on a terminal and only for large jobs.

    Used as a context manager; :meth:`start` gives the total once it is known (the
    size of a body is known only when it is encoded), :meth:`advance` the progress.
    """

    def __init__(self, description: str, *, unit: str = "bytes") -> None:
        self.description = description
        self.unit = unit
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def start(self, total: int) -> None:
        console = err()
        big = total >= (PROGRESS_MIN_BYTES if self.unit == "bytes" else 5000)
        if self._bar is not None or not console.is_terminal or not big:
            return
        amount = DownloadColumn() if self.unit == "bytes" else MofNCompleteColumn()
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), amount,
                             TimeRemainingColumn(), console=console, transient=True)
        self._task = self._bar.add_task(self.description, total=total)
        self._bar.start()

    def advance(self, amount: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)
