"""Lint gate: ruff over the whole tree and mypy over the packages (strict on keys/,
as configured in pyproject.toml). Part of CI like any other test; deselect locally
with ``-m "not lint"`` while iterating."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.lint


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_clean() -> None:
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, f"ruff findings:\n{result.stdout}{result.stderr}"


def test_mypy_clean() -> None:
    result = _run("mypy", "keys", "client", "relay")
    assert result.returncode == 0, f"mypy findings:\n{result.stdout}{result.stderr}"
    assert "Success" in result.stdout
