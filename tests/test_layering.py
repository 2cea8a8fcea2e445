"""Layering: keys/ is pure (no network, no database, no client or relay code), and
client and relay never import each other: both stand only on keys."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Never loaded by importing every keys module: third-party network/database stacks,
#: the two applications, and the standard library's network and database modules.
FORBIDDEN_FOR_KEYS = ("aiohttp", "sqlalchemy", "asyncpg", "aiosqlite", "alembic", "client",
                      "relay", "requests", "httpx", "socket", "ssl", "sqlite3", "asyncio",
                      "http", "urllib.request")

_IMPORT_ALL_KEYS = f"""
import importlib, pkgutil, sys
import keys
names = sorted(m.name for m in pkgutil.iter_modules(keys.__path__))
assert {{"seal", "keystore", "card", "dsse", "envelope", "statements"}} <= set(names), names
for name in names:
    importlib.import_module("keys." + name)
forbidden = {FORBIDDEN_FOR_KEYS!r}
loaded = sorted(m for m in sys.modules
                if any(m == f or m.startswith(f + ".") for f in forbidden))
print(",".join(loaded))
"""


def test_keys_loads_no_network_database_or_application_code() -> None:
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL_KEYS], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"keys/ pulls in: {result.stdout.strip()}"


def test_forbidden_module_detection_works() -> None:
    # The probe above must be able to fail: importing aiohttp alongside is noticed.
    probe = _IMPORT_ALL_KEYS.replace("import keys\n", "import keys, aiohttp\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "aiohttp" in result.stdout.split(",")


def imported_modules(path: Path, root: Path) -> Iterator[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved,
    ``importlib.import_module("...")`` / ``__import__("...")`` literals included)."""
    # The package a relative import starts from: the directory, for a module and for
    # an __init__.py alike.
    package = list(path.relative_to(root).parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                prefix = ".".join(base)
                names = [f"{prefix}.{node.module}" if node.module else prefix]
                if not node.module:
                    names = [f"{prefix}.{alias.name}" for alias in node.names]
                yield from names
            elif node.module:
                yield node.module
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("__import__", "import_module")))):
            yield node.args[0].value


def _violations(package: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for name in imported_modules(path, root):
            top = name.split(".")[0]
            if top in forbidden or any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(root)}: imports {name}")
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("client", ("relay",)),
    ("relay", ("client",)),
    ("keys", FORBIDDEN_FOR_KEYS),
])
def test_no_forbidden_imports_in_source(package: str, forbidden: tuple[str, ...]) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert _violations(package, forbidden) == []


def test_relative_imports_resolve(tmp_path: Path) -> None:
    pkg = tmp_path / "client" / "commands"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("from . import a\nfrom .b import c\nfrom .. import d\n"
                              "from ..e.f import g\n")
    assert list(imported_modules(pkg / "m.py", tmp_path)) == [
        "client.commands.a", "client.commands.b", "client.d", "client.e.f"]


def test_source_scanner_catches_every_form(tmp_path: Path) -> None:
    pkg = tmp_path / "client" / "commands"
    pkg.mkdir(parents=True)
    (tmp_path / "client" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("import relay as r\n")
    (pkg / "a.py").write_text("import relay.server\n")
    (pkg / "b.py").write_text("from relay import app\n")
    (pkg / "c.py").write_text("x = __import__('relay.storage')\n")
    (pkg / "d.py").write_text("import importlib\nimportlib.import_module('relay.cli')\n")
    # Relative imports cannot leave the top-level package; they are resolved, not flagged.
    (pkg / "e.py").write_text("from . import sibling\nfrom ..other import x\nimport keys\n")
    found = _violations("client", ("relay",), root=tmp_path)
    assert sorted(f.split(":")[0] for f in found) == [
        "client/commands/__init__.py", "client/commands/a.py", "client/commands/b.py",
        "client/commands/c.py", "client/commands/d.py"]


_HELP_THEN_LIST_DATABASE_MODULES = """
import contextlib, io, sys
from client.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    main(["--help"])
assert "relay.cli" in sys.modules and "administer a relay node" in out.getvalue()
print(",".join(sorted(m for m in sys.modules
                      if m.split(".")[0] in ("sqlalchemy", "alembic", "aiosqlite"))))
"""


def test_help_loads_the_relay_commands_without_the_database_layer() -> None:
    """`backchannel --help` loads every command group, the relay's included; the
    relay's storage (SQLAlchemy, Alembic: most of a second) is imported only by the
    commands that open a database."""
    done = subprocess.run([sys.executable, "-c", _HELP_THEN_LIST_DATABASE_MODULES],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == ""
