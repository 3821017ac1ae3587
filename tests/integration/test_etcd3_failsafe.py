"""Etcd3Dcs.set_failsafe against a real etcd 3.4: the `failsafe` key as Patroni writes it (a plain put of
JSON {member: api_url}, deleted with None), read back by get_cluster, and DcsError when etcd is down."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from pgwarden.dcs.base import DcsError
from pgwarden.dcs.etcd3 import Etcd3Dcs
from pgwarden.dcs.etcd_http import EtcdClient
from pgwarden.localcluster.etcd import etcd_available
from tests.support.etcd import EtcdServer

pytestmark = pytest.mark.integration

NAMESPACE = "/service"
URLS = {"n1": "http://127.0.0.1:8008/patroni", "n2": "http://127.0.0.2:8008/patroni"}

DcsFactory = Callable[..., Etcd3Dcs]


@pytest.fixture(scope="module")
def shared_etcd() -> Iterator[EtcdServer]:
    if not etcd_available():
        pytest.skip("etcd binary not available")
    with EtcdServer.start() as server:
        yield server


@pytest.fixture
def scope(request: pytest.FixtureRequest) -> str:
    return str(request.node.name).replace("[", "-").replace("]", "")


def _factory(server: EtcdServer, scope: str, created: list[Etcd3Dcs]) -> DcsFactory:
    def make(name: str, **kw: Any) -> Etcd3Dcs:
        dcs = Etcd3Dcs(hosts=[server.host], namespace=NAMESPACE, scope=scope, name=name, ttl=10, **kw)
        created.append(dcs)
        return dcs

    return make


@pytest.fixture
async def make_dcs(shared_etcd: EtcdServer, scope: str) -> AsyncIterator[DcsFactory]:
    created: list[Etcd3Dcs] = []
    yield _factory(shared_etcd, scope, created)
    for dcs in created:
        await dcs.close()


@pytest.fixture
async def raw(shared_etcd: EtcdServer, scope: str) -> AsyncIterator[Callable[..., Any]]:
    """raw() -> the stored failsafe text or None; raw(b"...") stores that text behind the backend's back."""
    client = EtcdClient([shared_etcd.host], timeout=2)
    key = f"{NAMESPACE}/{scope}/failsafe".encode()

    async def access(value: bytes | None = None) -> str | None:
        if value is not None:
            await client.put(key, value)
        kv = await client.get(key)
        return None if kv is None else kv.value.decode("utf-8", "replace")

    yield access
    await client.close()


async def test_set_failsafe_writes_patronis_json_and_get_cluster_reads_it(make_dcs: DcsFactory, raw: Any) -> None:
    leader, replica = make_dcs("n1"), make_dcs("n2")
    assert (await replica.get_cluster()).failsafe is None
    assert await leader.set_failsafe(URLS)
    assert json.loads(await raw()) == URLS
    assert (await replica.get_cluster()).failsafe == URLS
    assert await leader.set_failsafe({"n1": URLS["n1"]})  # a plain overwrite
    assert (await replica.get_cluster()).failsafe == {"n1": URLS["n1"]}
    assert await leader.set_failsafe({})
    assert (await replica.get_cluster()).failsafe == {}


async def test_none_deletes_the_key_and_deleting_nothing_is_fine(make_dcs: DcsFactory, raw: Any) -> None:
    leader = make_dcs("n1")
    assert await leader.set_failsafe(URLS)
    assert await leader.set_failsafe(None)
    assert await raw() is None
    assert (await leader.get_cluster()).failsafe is None
    assert await leader.set_failsafe(None)


async def test_garbage_in_the_key_reads_as_unreadable_and_is_overwritten(make_dcs: DcsFactory, raw: Any) -> None:
    leader = make_dcs("n1")
    await raw(b"\xff{not json")
    cluster = await leader.get_cluster()
    assert cluster.failsafe is None and "failsafe" in cluster.unreadable
    assert await leader.set_failsafe(URLS)
    cluster = await leader.get_cluster()
    assert cluster.failsafe == URLS and cluster.unreadable == {}


async def test_unreachable_etcd_is_a_dcs_error(etcd: EtcdServer, scope: str) -> None:
    created: list[Etcd3Dcs] = []
    leader = _factory(etcd, scope, created)("n1", timeout=1.0)
    try:
        assert await leader.set_failsafe(URLS)
        etcd.stop()
        for value in (URLS, None):
            started = time.monotonic()
            with pytest.raises(DcsError, match=r"etcd 127\.0\.0\.1"):
                await leader.set_failsafe(value)
            assert time.monotonic() - started < 3.0
    finally:
        await leader.close()


async def test_a_keepalive_of_a_lease_granted_after_the_leader_key_expired_proves_no_lead(
        make_dcs: DcsFactory, shared_etcd: EtcdServer) -> None:
    """After a DCS outage longer than the lease (ridden out in failsafe mode), the leader key is gone with
    its lease; the next keepalive grants a new lease, and the one after it succeeds. Neither may count as a
    renewal of the lock: `leads_on_lease` says whether the leader key is on the lease refreshed."""
    dcs = make_dcs("n1")
    assert not dcs.leads_on_lease()
    assert await dcs.acquire_leader()
    assert dcs.leads_on_lease() and await dcs.keepalive()
    lease = dcs._lease
    assert lease is not None
    client = EtcdClient([shared_etcd.host], timeout=2)
    try:
        await client.lease_revoke(lease.id)  # what expiry during the outage does: the key goes with it
    finally:
        await client.close()
    assert not await dcs.keepalive()  # replaced
    assert await dcs.keepalive() and not dcs.leads_on_lease()  # the new lease holds no leader key
    assert (await dcs.get_cluster()).leader is None
    assert await dcs.acquire_leader() and dcs.leads_on_lease()
    assert await dcs.delete_leader() and not dcs.leads_on_lease()
