"""Driving the ``backchannel`` command and relay nodes as subprocesses, for the
end-to-end tests (what a new user types, nothing in-process)."""

from __future__ import annotations

from cli_process import NODE_PASSPHRASE, Node, Result, free_port
from cli_process import Env as BaseEnv

__all__ = ["NODE_PASSPHRASE", "RU_PASSPHRASE", "UA_PASSPHRASE", "Env", "Node", "Result", "free_port"]

UA_PASSPHRASE = "Kyiv passphrase ї"
RU_PASSPHRASE = "Moscow passphrase ё"


class Env(BaseEnv):
    def ua(self, *args: str) -> Result:
        return self.ok(*args, home="ua", passphrase=UA_PASSPHRASE)

    def ru(self, *args: str) -> Result:
        return self.ok(*args, home="ru", passphrase=RU_PASSPHRASE)
