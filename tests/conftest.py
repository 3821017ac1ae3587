"""Shared pytest fixtures. Each helper keeps its fixture small; real servers live in tests/support."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.etcd import EtcdServer, etcd_available


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh single-node etcd on free loopback ports, stopped (by PID) and removed afterwards."""
    if not etcd_available():
        pytest.skip("etcd binary not available")
    with EtcdServer.start() as server:
        yield server
