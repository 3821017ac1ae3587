"""Shared pytest fixtures. Each helper keeps its fixture small; real servers live in tests/support."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from pgwarden.localcluster import ports
from pgwarden.localcluster.etcd import etcd_available
from tests.support.etcd import EtcdServer


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (scripts/test.sh runs the integration tests on two workers), each worker draws
    its servers' ports from a range of its own: the free-port check and a test's bind are seconds apart,
    and two workers drawing from one range could hand the same port to two servers in that window."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count and worker.startswith("gw"):
        index, total = int(worker[2:]), max(1, int(count))
        width = len(ports.LISTEN_PORTS) // total
        start = ports.LISTEN_PORTS.start + index * width
        ports.LISTEN_PORTS = range(start, start + width)


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh single-node etcd on free loopback ports, stopped (by PID) and removed afterwards."""
    if not etcd_available():
        pytest.skip("etcd binary not available")
    with EtcdServer.start() as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Keep each phase's report on the item, so fixtures can tell whether their test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
