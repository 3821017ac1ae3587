"""Etcd3Dcs against a real etcd 3.4: races, lease expiry, owner checks, CAS, the watch, outages."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from pgwarden.dcs import dcs_from_config
from pgwarden.dcs.base import DcsError
from pgwarden.dcs.etcd3 import Etcd3Dcs
from pgwarden.dcs.etcd_http import EtcdClient, KeyValue
from pgwarden.localcluster.etcd import etcd_available
from pgwarden.localcluster.ports import free_port
from pgwarden.model import ClusterStatus, SyncState
from tests.support.etcd import EtcdServer

pytestmark = pytest.mark.integration

NAMESPACE = "/service"

DcsFactory = Callable[..., Etcd3Dcs]


@pytest.fixture(scope="module")
def shared_etcd() -> Iterator[EtcdServer]:
    """One etcd for the module (tests use distinct scopes); tests that stop etcd use `etcd`."""
    if not etcd_available():
        pytest.skip("etcd binary not available")
    with EtcdServer.start() as server:
        yield server


@pytest.fixture
def scope(request: pytest.FixtureRequest) -> str:
    return str(request.node.name).replace("[", "-").replace("]", "")


@pytest.fixture
def prefix(scope: str) -> str:
    return f"{NAMESPACE}/{scope}/"


def _factory(server: EtcdServer, scope: str, created: list[Etcd3Dcs]) -> DcsFactory:
    def make(name: str, *, ttl: int = 10, hosts: list[tuple[str, int]] | None = None, **kw: Any) -> Etcd3Dcs:
        dcs = Etcd3Dcs(hosts=hosts or [server.host], namespace=NAMESPACE, scope=scope, name=name, ttl=ttl, **kw)
        created.append(dcs)
        return dcs

    return make


@pytest.fixture
async def make_dcs(shared_etcd: EtcdServer, scope: str) -> AsyncIterator[DcsFactory]:
    """Build Etcd3Dcs clients for this test's scope on the shared etcd; all closed at the end."""
    created: list[Etcd3Dcs] = []
    yield _factory(shared_etcd, scope, created)
    for dcs in created:
        await dcs.close()


@pytest.fixture
async def make_private_dcs(etcd: EtcdServer, scope: str) -> AsyncIterator[DcsFactory]:
    """Like make_dcs, on a private etcd the test may stop."""
    created: list[Etcd3Dcs] = []
    yield _factory(etcd, scope, created)
    for dcs in created:
        await dcs.close()


class Raw:
    """A plain etcd client, to look at and tamper with keys behind the backend's back."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    async def get(self, relative: str) -> KeyValue:
        kv = await self.client.get((self.prefix + relative).encode())
        assert kv is not None, f"{relative} is missing"
        return kv

    async def put(self, relative: str, value: bytes) -> None:
        await self.client.put((self.prefix + relative).encode(), value)

    async def delete(self, relative: str) -> None:
        await self.client.delete((self.prefix + relative).encode())


@pytest.fixture
async def raw(shared_etcd: EtcdServer, prefix: str) -> AsyncIterator[Raw]:
    client = EtcdClient([shared_etcd.host], timeout=2)
    yield Raw(client, prefix)
    await client.close()


# -- bootstrap and leader races ----------------------------------------------------------------------


async def test_bootstrap_race_has_one_winner(make_dcs: DcsFactory) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    results = await asyncio.gather(a.initialize(), b.initialize())
    assert sorted(results) == [False, True]
    assert (await a.get_cluster()).initialize == ""
    winner = a if results[0] else b
    assert await winner.initialize("7301234567890123456", create_new=False)
    assert (await b.get_cluster()).initialize == "7301234567890123456"
    await winner.cancel_initialization()
    assert (await a.get_cluster()).initialize is None


async def test_leader_race_has_exactly_one_winner(make_dcs: DcsFactory) -> None:
    clients = [make_dcs(f"n{i}") for i in range(4)]
    results = await asyncio.gather(*(c.acquire_leader() for c in clients))
    assert results.count(True) == 1
    winner = clients[results.index(True)]
    cluster = await clients[0].get_cluster()
    assert cluster.leader is not None and cluster.leader.name == winner.name


async def test_renewal_refreshes_and_writes_status(make_dcs: DcsFactory, raw: Raw) -> None:
    a = make_dcs("a")
    assert await a.acquire_leader()
    status = ClusterStatus(optime=100, slots={"b": 90}, retain_slots=("b",))
    assert await a.update_leader(status)
    assert (await a.get_cluster()).status == status
    revision = (await raw.get("status")).mod_revision
    assert await a.update_leader(status)  # unchanged status: not rewritten
    assert (await raw.get("status")).mod_revision == revision
    leader = await raw.get("leader")
    assert leader.value == b"a" and leader.lease != 0


async def test_renewal_fails_once_the_key_was_taken(make_dcs: DcsFactory, raw: Raw) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    assert await a.acquire_leader()
    assert not await b.acquire_leader()
    await raw.delete("leader")  # e.g. an operator removed it
    assert await b.acquire_leader()
    assert not await a.update_leader(ClusterStatus(optime=1))
    cluster = await a.get_cluster()
    assert cluster.leader is not None and cluster.leader.name == "b"
    assert cluster.status == ClusterStatus()  # the loser did not write status


async def test_renewal_fails_once_the_key_is_gone(make_dcs: DcsFactory, raw: Raw) -> None:
    a = make_dcs("a")
    assert await a.acquire_leader()
    await raw.delete("leader")
    assert not await a.update_leader()


async def test_leader_key_expires_with_the_lease(make_dcs: DcsFactory) -> None:
    a, b = make_dcs("a", ttl=2), make_dcs("b")
    await b.connect()
    assert await a.acquire_leader()
    assert await a.touch_member({"role": "primary"})
    assert (await b.get_cluster()).leader is not None
    started = time.monotonic()
    assert await b.wait_for_change(10.0)  # a stops renewing; etcd expires the lease
    assert time.monotonic() - started < 5.0
    cluster = await b.get_cluster()
    assert cluster.leader is None and cluster.member("a") is None
    # The old holder learns it lost the lock, gets a new lease and can rewrite its member key.
    assert not await a.update_leader()
    assert await a.keepalive()
    assert await a.touch_member({"role": "primary"})
    assert (await b.get_cluster()).member("a") is not None


async def test_keepalive_reports_a_lost_lease(make_dcs: DcsFactory, raw: Raw) -> None:
    a = make_dcs("a")
    assert await a.keepalive()
    assert await a.touch_member({"state": "running"})
    lease = (await raw.get("members/a")).lease
    await raw.client.lease_revoke(lease)
    assert not await a.keepalive()  # gone: a new lease is granted...
    assert await a.touch_member({"state": "running"})  # ...and the member key rewritten on it
    assert (await raw.get("members/a")).lease not in (0, lease)


async def test_new_ttl_moves_the_leader_key_to_a_new_lease(make_dcs: DcsFactory, raw: Raw) -> None:
    a = make_dcs("a", ttl=10)
    assert await a.acquire_leader()
    old_lease = (await raw.get("leader")).lease
    await a.set_ttl(20)
    assert await a.update_leader()
    leader = await raw.get("leader")
    assert leader.value == b"a" and leader.lease not in (0, old_lease)
    _, granted = await raw.client.lease_ttl(leader.lease)
    assert granted == 20


async def test_delete_leader_is_owner_checked(make_dcs: DcsFactory) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    assert await a.acquire_leader()
    assert not await b.delete_leader()
    assert (await b.get_cluster()).leader is not None
    assert await a.delete_leader(ClusterStatus(optime=42))
    cluster = await b.get_cluster()
    assert cluster.leader is None and cluster.status.optime == 42
    assert not await a.delete_leader()


# -- members ---------------------------------------------------------------------------------------


async def test_touch_member_skips_unchanged_writes(make_dcs: DcsFactory, raw: Raw) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    data = {"conn_url": "postgres://h:5432/postgres", "api_url": "http://h:8008/patroni", "state": "running"}
    assert await a.touch_member(data)
    revision = (await raw.get("members/a")).mod_revision
    assert await a.touch_member(data)
    assert (await raw.get("members/a")).mod_revision == revision
    assert await a.touch_member({**data, "state": "stopped"})
    assert (await a.get_cluster()).member("a") is not None
    # Deleted behind our back: the next read notices, the next touch writes again.
    assert await b.delete_member("a")
    assert (await a.get_cluster()).member("a") is None
    assert await a.touch_member({**data, "state": "stopped"})
    member = (await b.get_cluster()).member("a")
    assert member is not None and member.state == "stopped"
    assert not await b.delete_member("nobody")


async def test_malformed_values_in_etcd_do_not_break_reads(make_dcs: DcsFactory, raw: Raw) -> None:
    await raw.put("members/x", b"\xff garbage")
    await raw.put("failover", b"{broken")
    cluster = await make_dcs("a").get_cluster()
    member = cluster.member("x")
    assert member is not None and member.state == "unknown"
    assert cluster.failover is None


# -- compare-and-swap values -----------------------------------------------------------------------


async def test_config_cas(make_dcs: DcsFactory) -> None:
    a = make_dcs("a")
    assert await a.set_config({"ttl": 30}, revision=0)
    assert not await a.set_config({"ttl": 40}, revision=0)  # already exists
    config = (await a.get_cluster()).config
    assert config is not None and config.value == {"ttl": 30}
    assert await a.set_config({"ttl": 40}, revision=config.revision)
    assert not await a.set_config({"ttl": 50}, revision=config.revision)  # stale revision
    assert await a.set_config({"ttl": 60})  # unconditional
    config = (await a.get_cluster()).config
    assert config is not None and config.value == {"ttl": 60}


async def test_failover_cas(make_dcs: DcsFactory) -> None:
    a = make_dcs("a")
    assert await a.set_failover({"leader": "a", "member": "b"}, revision=0)
    failover = (await a.get_cluster()).failover
    assert failover is not None and (failover.leader, failover.member) == ("a", "b")
    assert not await a.set_failover({"member": "c"}, revision=failover.revision + 100)
    assert not await a.delete_failover(revision=failover.revision + 100)
    assert await a.delete_failover(revision=failover.revision)
    assert (await a.get_cluster()).failover is None
    assert await a.set_failover({"member": "c"})
    assert await a.delete_failover()


async def test_sync_cas(make_dcs: DcsFactory) -> None:
    a = make_dcs("a")
    assert await a.set_sync(SyncState(leader="a", sync_standby=("b",)), revision=0)
    sync = (await a.get_cluster()).sync
    assert sync is not None and sync.sync_standby == ("b",)
    assert await a.set_sync(SyncState(leader="a", sync_standby=("b", "c"), quorum=1), revision=sync.revision)
    assert not await a.set_sync(SyncState(leader="a"), revision=sync.revision)
    assert not await a.delete_sync(revision=sync.revision)
    sync = (await a.get_cluster()).sync
    assert sync is not None and sync.quorum == 1
    assert await a.delete_sync(revision=sync.revision)
    assert (await a.get_cluster()).sync is None


# -- the watch -------------------------------------------------------------------------------------


async def test_watch_wakes_on_leader_delete(make_dcs: DcsFactory) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    await b.connect()
    assert await a.acquire_leader()
    await b.get_cluster()
    assert not await b.wait_for_change(0.3)  # nothing changed since the read
    waiter = asyncio.create_task(b.wait_for_change(10.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert await a.delete_leader()
    assert await waiter
    assert time.monotonic() - started < 1.0


async def test_member_writes_do_not_wake_the_watch(make_dcs: DcsFactory) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    await b.connect()
    await b.get_cluster()
    await asyncio.sleep(0.2)  # let the watch establish
    assert await a.touch_member({"state": "running"})
    assert not await b.wait_for_change(0.5)


# -- outages, hosts, configuration -----------------------------------------------------------------


async def test_dead_etcd_gives_dcs_error_quickly(etcd: EtcdServer, make_private_dcs: DcsFactory) -> None:
    a = make_private_dcs("a", timeout=1.0)
    await a.connect()
    assert await a.acquire_leader()
    etcd.stop()
    for call in (a.get_cluster(), a.update_leader(), a.touch_member({"x": 1}), a.set_config({})):
        started = time.monotonic()
        with pytest.raises(DcsError, match=r"etcd 127\.0\.0\.1"):
            await call
        assert time.monotonic() - started < 3.0
    assert not await a.wait_for_change(0.5)  # the watch retries in the background, no crash
    assert a._watch_task is not None and not a._watch_task.done()


async def test_unresponsive_host_times_out_instead_of_hanging(make_dcs: DcsFactory) -> None:
    # A socket that accepts TCP connections (kernel backlog) but never speaks HTTP/2.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        a = make_dcs("a", hosts=[silent.getsockname()], timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DcsError):
            await a.get_cluster()
        assert time.monotonic() - started < 2.0


async def test_next_host_is_tried_when_one_is_down(shared_etcd: EtcdServer, make_dcs: DcsFactory) -> None:
    a = make_dcs("a", hosts=[("127.0.0.1", free_port()), shared_etcd.host])
    assert await a.acquire_leader()
    assert (await a.get_cluster()).leader is not None


async def test_factory_reads_patroni_etcd3_section(shared_etcd: EtcdServer, scope: str, prefix: str) -> None:
    dcs = await dcs_from_config(
        {"hosts": f"127.0.0.1:{free_port()},127.0.0.1:{shared_etcd.client_port}"},
        namespace="service",
        scope=scope,
        name="a",
        ttl=30,
        readonly=True,
    )
    try:
        assert dcs.prefix == prefix
        assert (await dcs.get_cluster()).scope == scope
    finally:
        await dcs.close()
    with pytest.raises(DcsError, match="srv"):
        await dcs_from_config({"srv": "example.org"}, namespace="/s", scope="x", name="a", ttl=30)


async def test_username_and_password(etcd: EtcdServer, make_private_dcs: DcsFactory) -> None:
    etcdctl = ["/usr/bin/etcdctl", f"--endpoints={etcd.client_url}", "--command-timeout=5s"]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for args in (["user", "add", "root:secret"], ["auth", "enable"]):
        subprocess.run([*etcdctl, *args], env=env, check=True, capture_output=True, timeout=10)
    a = make_private_dcs("a", username="root", password="secret")
    assert await a.acquire_leader()
    assert (await a.get_cluster()).leader is not None
    anonymous = make_private_dcs("b")
    with pytest.raises(DcsError):
        await anonymous.get_cluster()
    wrong = make_private_dcs("c", username="root", password="wrong")
    with pytest.raises(DcsError, match="authentication failed"):
        await wrong.get_cluster()


async def test_tls_with_client_certificates() -> None:
    """Patroni's TLS keys (`protocol: https`, `cacert`, `cert`, `key`) against an etcd demanding client certs."""
    with EtcdServer.start(tls=True) as server:
        assert server.tls is not None
        section = {"hosts": [f"127.0.0.1:{server.client_port}"], "protocol": "https",
                   "cacert": str(server.tls.ca_cert), "cert": str(server.tls.client_cert),
                   "key": str(server.tls.client_key)}
        dcs = await dcs_from_config(section, namespace=NAMESPACE, scope="tls", name="a", ttl=10)
        try:
            assert await dcs.acquire_leader()
            assert (await dcs.get_cluster()).leader is not None
        finally:
            await dcs.close()
        no_cert = await dcs_from_config({**section, "cert": None, "key": None}, namespace=NAMESPACE,
                                        scope="tls", name="b", ttl=10, readonly=True)
        try:
            with pytest.raises(DcsError):
                await no_cert.get_cluster()
        finally:
            await no_cert.close()
        with pytest.raises(DcsError, match="etcd3"):
            await dcs_from_config({**section, "cacert": "/nonexistent/ca.crt"}, namespace=NAMESPACE,
                                  scope="tls", name="c", ttl=10)
