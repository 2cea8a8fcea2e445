"""Structured logs: one JSON object per line on stderr.

What may appear: event names, routes, statuses, durations, identity ids, envelope
ids, counts. What never appears: names, labels, card contents, tokens, invitation
secrets, passphrases, request bodies or headers (code passes only whitelisted
``extra`` fields, see :data:`FIELDS`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Final

FIELDS: Final = ("event", "method", "route", "status", "ms", "member", "envelope", "type",
                 "error", "count", "host", "port", "backend", "nonces", "sealed", "envelopes",
                  "peer", "kind", "attempts", "outcome")


class JsonFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        # One line per request: the time text is made once per second, not per line.
        second = int(record.created)
        if second != self._second:
            self._stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            self._second = second
        out: dict[str, object] = {"time": self._stamp,
                                  "level": record.levelname.lower(), "logger": record.name,
                                  "msg": record.getMessage()}
        for name in FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and tracebacks can quote data.
            out["exception"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{name}={record.__dict__[name]}" for name in FIELDS
                         if name in record.__dict__)
        return f"{record.levelname.lower()} {record.name}: {record.getMessage()} {extra}".rstrip()


def configure(level: str, fmt: str) -> None:
    # Our lines carry none of the caller's file and line, thread or process (the
    # logging HOWTO's "optimization" switches): each would cost every request's
    # log line a frame walk or a system call. Process-wide: other libraries' records
    # lose their file and line too, which our formatters never print.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("relay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiohttp's access log would print full URLs and client addresses; ours is enough.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Its server log (malformed HTTP, a client gone mid-answer) goes through our
    # formatter: one line with the exception type, not a traceback quoting the request.
    server = logging.getLogger("aiohttp.server")
    server.handlers[:] = [handler]
    server.propagate = False
    logging.getLogger("alembic").setLevel(logging.WARNING)


_request_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "relay_request_fields", default=None)


def begin_request() -> dict[str, str]:
    """Called by the middleware: a fresh set of fields for this request's log line."""
    fields: dict[str, str] = {}
    _request_fields.set(fields)
    return fields


def note(**fields: str) -> None:
    """Add whitelisted fields (``member``, ``envelope``) to the current request's log line."""
    current = _request_fields.get()
    if current is not None:
        current.update(fields)
