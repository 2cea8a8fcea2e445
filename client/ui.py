"""Terminal output: rich tables and progress bars for people, stable JSON for scripts.

Human output goes through rich (colour only on a terminal); JSON output is written
with the standard library so that nothing (wrapping, markup) can alter it. Warnings
and progress go to stderr, so ``--json`` output on stdout stays parseable.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

#: Below this, a progress bar would only flicker.
PROGRESS_MIN_BYTES = 256 * 1024


def out() -> Console:
    return Console(highlight=False, soft_wrap=True)


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


Advance = Callable[[int], None]


@contextlib.contextmanager
def progress(description: str, total: int, *, unit: str = "bytes") -> Iterator[Advance]:
    """A progress bar on stderr when it is a terminal and the job is large enough;
    yields a function to call with each increment."""
    console = err()
    big = total >= (PROGRESS_MIN_BYTES if unit == "bytes" else 5000)
    if not console.is_terminal or not big:
        yield lambda _n: None
        return
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn("{task.description}"), BarColumn(), amount,
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
