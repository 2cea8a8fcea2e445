"""Pausing Python's cyclic garbage collector around bulk decoding.

Decoding a 100,000-name list makes several hundred thousand dicts and entries. Every
700 new containers start a collection, and every so often a full one walks all the
process's objects: on the benchmark machine that was about a quarter of the time of
parsing the list's JSON and of building its entries (docs/performance.md, section 4).
The decoders build trees of fresh objects that hold no reference back to themselves,
so they leave the collector nothing to find; it runs again at its next trigger after
the pause.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside the block; the collector is left as found.

    Nested and concurrent pauses are harmless: a block entered while the collector is
    already off does not turn it back on (another thread's pause may end first and
    turn it on early, which costs time, never correctness)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
