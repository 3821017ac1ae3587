"""Etcd3Dcs against a real etcd 3.4: what is particular to etcd v3 (lease ids, hosts lists, the `etcd3`
section's forms, etcd's users and client certificates). What every backend must do (races, expiry, owner
checks, CAS, the watch, outages, authentication, TLS) is the DCS contract suite, tests/dcs/test_contract.py."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from pgwarden.dcs import dcs_from_config
from pgwarden.dcs.base import DcsError
from pgwarden.dcs.etcd3 import Etcd3Dcs
from pgwarden.dcs.etcd_http import EtcdClient, KeyValue
from pgwarden.localcluster.etcd import etcd_available
from pgwarden.localcluster.ports import free_port
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


# -- leases ------------------------------------------------------------------------------------------


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


async def test_deleting_an_absent_member_is_false(make_dcs: DcsFactory) -> None:
    a = make_dcs("a")
    assert await a.touch_member({"state": "running"})
    assert not await a.delete_member("nobody")
    assert await a.delete_member("a")


# -- hosts, configuration ----------------------------------------------------------------------------


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


async def test_anonymous_requests_are_refused_once_auth_is_on(etcd: EtcdServer, make_private_dcs: DcsFactory) -> None:
    """The contract suite checks the right and a wrong password; here: no credentials, and etcd's message."""
    etcdctl = ["/usr/bin/etcdctl", f"--endpoints={etcd.client_url}", "--command-timeout=5s"]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for args in (["user", "add", "root:secret"], ["auth", "enable"]):
        subprocess.run([*etcdctl, *args], env=env, check=True, capture_output=True, timeout=10)
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
