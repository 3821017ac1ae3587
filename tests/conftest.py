"""Shared pytest fixtures. Each helper keeps its fixture small; real servers live in tests/support."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from pgwarden.localcluster.etcd import etcd_available
from tests.support.etcd import EtcdServer


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
