"""The test nodes' ports stay out of the kernel's ephemeral range (cli_process)."""

from __future__ import annotations

import os
import socket

import pytest
from cli_process import PORT_BASE, PORT_BLOCK, _ephemeral_low, free_port


def test_free_ports_come_from_this_workers_block_below_the_ephemeral_range() -> None:
    if _ephemeral_low() < PORT_BASE + 8 * PORT_BLOCK:
        pytest.skip("this machine's ephemeral range starts below the test port blocks")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = PORT_BASE + (int(worker) % 8 if worker.isdigit() else 0) * PORT_BLOCK
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(start <= port < start + PORT_BLOCK for port in ports), ports
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))  # free indeed


def test_a_port_in_use_is_skipped() -> None:
    taken = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", taken))
        sock.listen()
        assert taken not in {free_port() for _ in range(PORT_BLOCK - 1)}
