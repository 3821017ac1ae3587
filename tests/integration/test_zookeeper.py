"""ZooKeeperDcs against a real ZooKeeper 3.8: what only ZooKeeper has (sessions, ephemeral znodes, the
negotiated session timeout, ACLs, an ensemble's quorum). The behaviour every backend shares is the
contract suite's (tests/dcs/test_contract.py)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from pgwarden.dcs import Dcs, open_dcs
from pgwarden.dcs.base import DcsError
from pgwarden.dcs.zookeeper import ZooKeeperDcs, acls_from_config, auth_from_config, hosts_from_config
from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.zookeeper import LocalZooKeeper, spawn_ensemble, zookeeper_available
from tests.dcs.servers import zookeeper as zk_server

pytestmark = pytest.mark.integration

NAMESPACE = "service"
MEMBER = {"conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni",
          "state": "running", "role": "replica"}
BOUND = 8.0
"""No call may take longer than this, whatever the ensemble does (each call's timeout is 2 s)."""


@pytest.fixture(scope="module")
def server() -> Iterator[zk_server.ZooKeeperStore]:
    if not zookeeper_available():
        pytest.skip("ZooKeeper (Debian package zookeeper) not installed")
    started = zk_server.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def scope(request: pytest.FixtureRequest) -> str:
    return str(request.node.name).replace("[", "-").replace("]", "").replace("_", "-")


class Opened:
    """Backends opened by one test, all closed at its end."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.items: list[Dcs] = []

    async def open(self, section: dict[str, Any], name: str, *, ttl: int = 7, timeout: float = 2.0) -> ZooKeeperDcs:
        dcs = await open_dcs("zookeeper", section, namespace=NAMESPACE, scope=self.scope, name=name, ttl=ttl,
                             timeout=timeout)
        assert isinstance(dcs, ZooKeeperDcs)
        self.items.append(dcs)
        return dcs

    async def close(self) -> None:
        for dcs in self.items:
            await asyncio.wait_for(dcs.close(), 10)


@pytest.fixture
async def opened(scope: str) -> AsyncIterator[Opened]:
    backends = Opened(scope)
    try:
        yield backends
    finally:
        await backends.close()


def _raw(host: str, auth: list[tuple[str, str]] | None = None) -> KazooClient:
    client = KazooClient(hosts=host, timeout=10.0, auth_data=auth)
    client.start(timeout=10)
    return client


async def _bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, BOUND)


# -- configuration (no server) --------------------------------------------------------------------------
def test_hosts_parsing() -> None:
    assert hosts_from_config({"hosts": "a:1, b"}) == "a:1,b:2181"
    assert hosts_from_config({"hosts": ["127.0.0.1:2182", "[::1]:2183", "[::1]"]}) == \
        "127.0.0.1:2182,[::1]:2183,[::1]:2181"
    with pytest.raises(ValueError):
        hosts_from_config({"hosts": []})
    with pytest.raises(ValueError):
        hosts_from_config({"hosts": "a:http"})


def test_auth_and_acls_parsing_keep_secrets_out_of_messages() -> None:
    assert auth_from_config(["digest:u:p"]) == [("digest", "u:p")]
    assert auth_from_config({"digest": "u:p"}) == [("digest", "u:p")]
    with pytest.raises(ValueError) as raised:
        auth_from_config(["no-scheme-S3cret"])
    assert "S3cret" not in str(raised.value)
    acls = acls_from_config({"digest:u:p": ["read", "WRITE"], "CN=node1": "ALL"})
    assert acls is not None and len(acls) == 2
    assert acls[0].id.scheme == "digest" and acls[0].id.id.startswith("u:") and acls[0].perms == 1 | 2
    assert acls[1].id.scheme == "x509" and acls[1].perms == 31
    with pytest.raises(ValueError):
        acls_from_config({"world:anyone": ["FLY"]})


async def test_use_ssl_with_missing_files_is_a_dcs_error() -> None:
    with pytest.raises(DcsError, match="cacert"):
        await open_dcs("zookeeper", {"hosts": "127.0.0.1:1", "use_ssl": True, "cacert": "/nonexistent/ca.pem"},
                       namespace=NAMESPACE, scope="x", name="a", ttl=7)


# -- sessions and ephemeral znodes ----------------------------------------------------------------------
async def test_leader_and_member_are_ephemeral_of_the_session(server: zk_server.ZooKeeperStore,
                                                              opened: Opened, scope: str) -> None:
    a = await opened.open(server.section(), "a")
    assert await a.initialize("7000000000000000001")
    assert await a.touch_member(MEMBER)
    assert await a.acquire_leader()
    assert a.leads_on_lease()
    client = await asyncio.to_thread(_raw, server.local.host)
    try:
        prefix = f"/{NAMESPACE}/{scope}/"
        leader = client.exists(prefix + "leader")
        member = client.exists(prefix + "members/a")
        assert leader.ephemeralOwner == member.ephemeralOwner == a._current_session() != 0
        assert client.exists(prefix + "initialize").ephemeralOwner == 0
        await a.close()  # closing the session removes its ephemerals at once
        assert client.exists(prefix + "leader") is None and client.exists(prefix + "members/a") is None
        assert client.get(prefix + "initialize")[0] == b"7000000000000000001"
    finally:
        client.stop()
        client.close()


async def test_session_expiry_loses_the_lease_and_the_lock(server: zk_server.ZooKeeperStore, opened: Opened) -> None:
    a = await opened.open(server.section(), "a")
    b = await opened.open(server.section(), "b")
    assert await a.keepalive()
    assert await a.touch_member(MEMBER)
    assert await a.acquire_leader() and await a.update_leader()
    old_session = a._current_session()
    # Expire a's session the classic way: another client joins it by id and password, then closes it.
    session = a._session
    assert session is not None
    client_id = session.client.client_id
    intruder = KazooClient(hosts=server.local.host, timeout=7.0, client_id=client_id)
    await asyncio.to_thread(intruder.start, 10)
    await asyncio.to_thread(intruder.stop)
    intruder.close()
    view = await b.get_cluster()
    assert view.leader is None and view.members == ()
    # kazoo opens a new session; the lease is gone (False once), and the lock is not on it.
    deadline = time.monotonic() + BOUND
    while a._current_session() in (None, old_session) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not await _bounded(a.keepalive())
    assert not a.leads_on_lease()
    assert not await a.update_leader()  # the vanished key is not recreated behind the core's back
    assert (await b.get_cluster()).leader is None
    assert await a.keepalive()
    assert await a.touch_member(MEMBER)  # written again on the new session
    assert [m.name for m in (await b.get_cluster()).members] == ["a"]
    assert await b.acquire_leader()
    assert not await a.acquire_leader()


async def test_a_session_shorter_than_the_ttl_is_refused(server: zk_server.ZooKeeperStore, opened: Opened) -> None:
    # The test server's tickTime is 1 s: it grants 2 s to 20 s. A ttl of 30 s would get 20 s.
    a = await opened.open(server.section(), "a", ttl=30)
    for call in (a.keepalive(), a.acquire_leader(), a.touch_member(MEMBER)):
        with pytest.raises(DcsError, match="maxSessionTimeout"):
            await _bounded(call)
    assert (await a.get_cluster()).leader is None  # reading needs no lease
    # A longer one than asked for (ttl 1 s, the server's minimum is 2 s) only slows failover: allowed.
    b = await opened.open(server.section(), "b", ttl=1)
    assert await b.keepalive() and await b.acquire_leader()


async def test_set_ttl_moves_our_keys_to_a_new_session(server: zk_server.ZooKeeperStore, opened: Opened,
                                                       scope: str) -> None:
    a = await opened.open(server.section(), "a", ttl=7)
    b = await opened.open(server.section(), "b")
    assert await a.touch_member(MEMBER) and await a.acquire_leader()
    first = a._current_session()
    await a.set_ttl(10)
    assert await a.keepalive()
    second = a._current_session()
    assert second is not None and second != first
    assert a._session is not None and a._session.negotiated_ms(second) == 10000
    assert a.leads_on_lease() and await a.update_leader()  # the lock moved with it, never dropped
    client = await asyncio.to_thread(_raw, server.local.host)
    try:
        for key in ("leader", "members/a"):
            assert client.exists(f"/{NAMESPACE}/{scope}/{key}").ephemeralOwner == second
    finally:
        client.stop()
        client.close()
    view = await b.get_cluster()
    assert view.led_by("a") and [m.name for m in view.members] == ["a"]
    assert not await a.wait_for_change(0.5)  # its own move is no news to it


async def test_member_writes_do_not_wake_the_watch(server: zk_server.ZooKeeperStore, opened: Opened) -> None:
    a = await opened.open(server.section(), "a")
    b = await opened.open(server.section(), "b")
    await b.get_cluster()
    assert not await b.wait_for_change(0.3)
    assert await a.touch_member(MEMBER)
    assert await a.touch_member({**MEMBER, "state": "starting"})
    assert not await b.wait_for_change(0.5)
    assert await a.acquire_leader()
    assert await b.wait_for_change(BOUND)
    assert not await a.wait_for_change(0.5)  # its own write is no news to it


# -- authentication and ACLs ----------------------------------------------------------------------------
async def test_acls_keep_other_clients_out(opened: Opened, scope: str) -> None:
    if not zookeeper_available():
        pytest.skip("ZooKeeper not installed")
    with _started(auth=True) as secured:
        a = await opened.open(secured.section(), "a")
        assert await a.initialize("1") and await a.acquire_leader()
        client = await asyncio.to_thread(_raw, secured.local.host, [("digest", "pgwarden:zk-Right-Passw0rd")])
        try:
            acl, _ = client.get_acls(f"/{NAMESPACE}/{scope}/leader")
            assert [(entry.id.scheme, entry.id.id.split(":")[0], entry.perms) for entry in acl] == \
                [("digest", "pgwarden", 31)]
        finally:
            client.stop()
            client.close()
        anonymous = await opened.open({"hosts": [secured.local.host]}, "b")
        with pytest.raises(DcsError, match="NoAuth") as raised:
            await _bounded(anonymous.get_cluster())
        assert "Passw0rd" not in str(raised.value)


class _started:
    """A throw-away ZooKeeper store as a context manager."""

    def __init__(self, **options: Any) -> None:
        self.store = zk_server.start(**options)

    def __enter__(self) -> zk_server.ZooKeeperStore:
        return self.store

    def __exit__(self, *_: object) -> None:
        self.store.stop()


# -- outages ----------------------------------------------------------------------------------------------
async def test_unreachable_at_start_then_reachable(opened: Opened, tmp_path: Path) -> None:
    if not zookeeper_available():
        pytest.skip("ZooKeeper not installed")
    port = free_port()
    started = time.monotonic()
    a = await _bounded(opened.open({"hosts": f"127.0.0.1:{port}"}, "a", timeout=1.0))
    assert time.monotonic() - started < BOUND
    with pytest.raises(DcsError, match="not connected"):
        await _bounded(a.get_cluster())
    server = LocalZooKeeper.spawn(data_dir=tmp_path / "data", log_path=tmp_path / "zk.log", client_port=port)
    try:
        server.wait_healthy(60)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert await _bounded(a.acquire_leader())
                break
            except DcsError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert (await a.get_cluster()).led_by("a")
    finally:
        await a.close()
        server.stop(10)


@pytest.fixture
def ensemble() -> Iterator[list[LocalZooKeeper]]:
    if not zookeeper_available():
        pytest.skip("ZooKeeper not installed")
    directory = Path(tempfile.mkdtemp(prefix="pgwarden-zk-ensemble-"))
    servers = spawn_ensemble(directory, 3)
    try:
        for member in servers:
            member.wait_healthy(60)
        yield servers
    finally:
        for member in servers:
            member.stop(10)
        shutil.rmtree(directory, ignore_errors=True)


async def test_ensemble_losing_quorum_fails_bounded_then_recovers(ensemble: list[LocalZooKeeper],
                                                                   opened: Opened) -> None:
    section = {"hosts": [member.host for member in ensemble]}
    a = await opened.open(section, "a")
    b = await opened.open(section, "b")
    assert await a.touch_member(MEMBER) and await a.acquire_leader()
    assert (await b.get_cluster()).led_by("a")
    survivor = ensemble[0]
    for member in ensemble[1:]:
        member.kill()  # two of three gone: no quorum, the survivor stops serving
    for call in (a.keepalive(), a.update_leader(), b.get_cluster(), b.acquire_leader()):
        started = time.monotonic()
        with pytest.raises(DcsError):
            await _bounded(call)
        assert time.monotonic() - started < BOUND
    await _bounded(b.wait_for_change(0.5))  # bounded, whatever it says
    for index, member in enumerate(ensemble[1:], start=1):
        ensemble[index] = member.restarted()
    for member in ensemble:
        member.wait_healthy(60)
    assert survivor.healthy()
    deadline = time.monotonic() + 30
    while True:
        try:
            view = await _bounded(b.get_cluster())
            break
        except DcsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    # Back within the session timeout: the session (and the lock) survived the outage.
    if view.led_by("a"):
        assert await a.update_leader() and await a.keepalive()
    else:  # the outage outlasted the session: the lock is gone, and a knows it
        assert not await a.update_leader()
