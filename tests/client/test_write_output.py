"""client.commands.common.write_output: whole or nothing, and decrypted names never
readable by others, whatever was at the path before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.commands.common import write_output
from client.errors import ClientError


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_private_file_replaces_a_readable_one_with_owner_only_permissions(tmp_path: Path):
    out = tmp_path / "names.csv"
    out.write_bytes(b"an older, longer file than the new one")
    out.chmod(0o644)
    write_output(str(out), b"Shevchenko", private=True)
    assert out.read_bytes() == b"Shevchenko"
    assert _mode(out) == 0o600


def test_a_symbolic_link_at_the_path_is_replaced_not_followed(tmp_path: Path):
    elsewhere = tmp_path / "shared" / "public.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"untouched")
    elsewhere.chmod(0o644)
    link = tmp_path / "names.csv"
    link.symlink_to(elsewhere)
    write_output(str(link), b"Shevchenko", private=True)
    assert not link.is_symlink() and link.read_bytes() == b"Shevchenko"
    assert _mode(link) == 0o600
    assert elsewhere.read_bytes() == b"untouched"


def test_a_public_file_gets_0644_less_the_umask(tmp_path: Path):
    old = os.umask(0o027)
    try:
        write_output(str(tmp_path / "card.txt"), b"card")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "card.txt") == 0o640


@pytest.mark.parametrize("where", ["a directory", "a missing directory"])
def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path: Path, where: str):
    target = tmp_path / "out"
    if where == "a directory":
        target.mkdir()
    else:
        target = tmp_path / "missing" / "out"
    with pytest.raises(ClientError) as failure:
        write_output(str(target), b"Shevchenko", what="output file", private=True)
    message = str(failure.value)
    assert message.startswith(f"cannot write output file {target}: ") and "\n" not in message
    assert "Shevchenko" not in message
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_pipe_or_device_is_written_in_place(tmp_path: Path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_output(str(fifo), b"to whoever reads", private=True)
    reader.join(10)
    assert got == [b"to whoever reads"]
    assert fifo.is_fifo()
    write_output(os.devnull, b"discarded")
    assert Path(os.devnull).is_char_device()
