"""Running the ``backchannel`` command as a subprocess, as a new user would: the
result type, a clean environment, and free loopback ports. Shared by the client and
multi-node end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

NODE_PASSPHRASE = "node passphrase"
#: A node starts in about a second; 60 s bounds a hung start on a loaded machine.
START_TIMEOUT = 60


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The one-line error (and that there is exactly one line)."""
        lines = self.err.strip().splitlines()
        assert self.code == 1, (self.code, self.out, self.err)
        assert len(lines) == 1, self.err
        assert lines[0].startswith("backchannel: error: "), self.err
        return lines[0].removeprefix("backchannel: error: ")


@dataclass
class Env:
    root: Path
    base: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        # A HOME of our own: nothing may fall back to the developer's ~/.backchannel.
        env.update({"HOME": str(self.root / "home"), "BACKCHANNEL_KDF": "floor",
                    "PYTHONUNBUFFERED": "1"})
        self.base = env

    def run(self, *args: str, home: str | None = None, passphrase: str | None = None,
            stdin: str | None = None, timeout: float = 120) -> Result:
        env = dict(self.base)
        if home is not None:
            env["BACKCHANNEL_HOME"] = str(self.root / home)
        if passphrase is not None:
            env["BACKCHANNEL_PASSPHRASE"] = passphrase
        proc = subprocess.run([sys.executable, "-m", "client", *args], env=env,
                              input=stdin if stdin is not None else "", capture_output=True,
                              text=True, timeout=timeout, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: str | None) -> Result:
        result = self.run(*args, **kw)  # type: ignore[arg-type]
        assert result.code == 0, (args, result.out, result.err)
        return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


