"""Fixtures of the DCS contract suite: every test runs once per backend kind ("etcd3", "etcd", "zookeeper").

- `kind`: the backend, module-scoped and parametrized (ids etcd3, etcd2, zookeeper). A kind whose server
  module (tests/dcs/servers/<module>.py) does not exist yet is skipped, saying so; once the module
  exists, whatever goes wrong (even a server that does not start) is a failure.
- `server`: one server per kind for the whole test module; tests stay apart by scope.
- `store`: a fresh random scope on `server`, and the backend objects the test opened, closed afterwards.
- `private_store`: the same on a server of the test's own, which it may freeze, kill and restart.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.dcs.servers import _MODULES, KINDS, StoreServer, running
from tests.dcs.store import Store

IDS = {"etcd3": "etcd3", "etcd": "etcd2", "zookeeper": "zookeeper"}


def _missing_module(kind: str) -> str | None:
    """Why `kind` cannot run yet (its server module is not written), or None."""
    module = f"tests.dcs.servers.{_MODULES[kind]}"
    if importlib.util.find_spec(module) is None:
        return f"tests/dcs/servers/{_MODULES[kind]}.py does not exist yet: the {IDS[kind]} backend's server is missing"
    return None


@pytest.fixture(scope="module", params=KINDS, ids=[IDS[kind] for kind in KINDS])
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    reason = _missing_module(name)
    if reason is not None:
        pytest.skip(reason)
    return name


@pytest.fixture(scope="module")
def server(kind: str) -> Iterator[StoreServer]:
    """One server of `kind` for the module, stopped (by PID) and removed afterwards."""
    with running(kind) as started:
        yield started


def _scope(request: pytest.FixtureRequest) -> str:
    """A scope no other test (or earlier run) uses: a short form of the test's name plus random hex."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.originalname.lower().removeprefix("test_")).strip("-")
    return f"{base[:40]}-{secrets.token_hex(4)}"


@pytest.fixture
async def store(kind: str, server: StoreServer, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    opened = Store(kind, server, _scope(request))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def private_store(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A Store on a server of this test's own (it may freeze, kill and restart it)."""
    with running(kind) as own:
        opened = Store(kind, own, _scope(request))
        try:
            yield opened
        finally:
            with contextlib.suppress(OSError):  # a killed server has nothing to thaw
                own.thaw()  # a test that failed while the server was frozen must not leave it stopped
            await opened.close()
