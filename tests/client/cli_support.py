"""Driving the ``backchannel`` command and relay nodes as subprocesses, for the
end-to-end tests (what a new user types, nothing in-process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from cli_process import NODE_PASSPHRASE, START_TIMEOUT, Result, free_port
from cli_process import Env as BaseEnv

__all__ = ["NODE_PASSPHRASE", "RU_PASSPHRASE", "UA_PASSPHRASE", "Env", "Node", "Result", "free_port"]

UA_PASSPHRASE = "Kyiv passphrase ї"
RU_PASSPHRASE = "Moscow passphrase ё"


class Env(BaseEnv):
    def ua(self, *args: str) -> Result:
        return self.ok(*args, home="ua", passphrase=UA_PASSPHRASE)

    def ru(self, *args: str) -> Result:
        return self.ok(*args, home="ru", passphrase=RU_PASSPHRASE)


@dataclass
class Node:
    env: Env
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def init(self, name: str) -> None:
        self.env.ok("relay", "init", "--dir", str(self.directory), "--name", name,
                    "--url", self.url, "--port", str(self.port), passphrase=NODE_PASSPHRASE)

    def start(self) -> None:
        env = {**self.env.base, "BACKCHANNEL_PASSPHRASE": NODE_PASSPHRASE}
        log = (self.directory.parent / f"{self.directory.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client", "relay", "serve", "--dir", str(self.directory)],
            env=env, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        timer = threading.Timer(START_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        assert line.startswith(b"relay: listening on"), line

    def invite(self, label: str) -> str:
        result = self.env.ok("relay", "invite", "--dir", str(self.directory), "--name", label)
        return result.out.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
