"""Etcd2Dcs against a real etcd 3.4 serving the v2 API: what only the v2 backend does (TTL keys and their
refreshes, the watch's history, Patroni's `etcd` section forms, several hosts, TLS, authentication).
What every backend must do (races, CAS, the watch, outages) is the contract suite's (tests/dcs)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from pgwarden.dcs import DcsError, codec, etcd2, open_dcs
from pgwarden.dcs.etcd2 import Etcd2Dcs
from pgwarden.localcluster.etcd import etcd_available
from pgwarden.localcluster.ports import free_port
from pgwarden.model import ClusterStatus
from tests.dcs.servers import etcd2 as servers
from tests.dcs.store import eventually
from tests.support.etcd import EtcdServer

pytestmark = pytest.mark.integration

NAMESPACE = "service"
MEMBER = {"conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni",
          "state": "running", "role": "replica"}

Opener = Callable[..., Awaitable[Etcd2Dcs]]
_scopes = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Etcd2Store]:
    """One etcd (v2 API on) for the module; tests stay apart by scope."""
    if not etcd_available():
        pytest.skip("etcd binary not available")
    store = servers.start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def scope(request: pytest.FixtureRequest) -> str:
    return f"{request.node.originalname.removeprefix('test_')[:40]}-{next(_scopes)}"


@pytest.fixture
async def open_(server: servers.Etcd2Store, scope: str) -> AsyncIterator[Opener]:
    """`open_dcs("etcd", ...)` for this test's scope (the server's section unless given); closed at the end."""
    opened: list[Etcd2Dcs] = []

    async def make(name: str, *, ttl: int = 10, section: dict[str, Any] | None = None, **kw: Any) -> Etcd2Dcs:
        dcs = await open_dcs("etcd", server.section() if section is None else section, namespace=NAMESPACE,
                             scope=scope, name=name, ttl=ttl, **kw)
        assert isinstance(dcs, Etcd2Dcs)
        opened.append(dcs)
        return dcs

    yield make
    for dcs in opened:
        await asyncio.wait_for(dcs.close(), 10)


def _key(scope: str, relative: str) -> str:
    return f"/{NAMESPACE}/{scope}/{relative}"


# -- TTL keys and their refreshes --------------------------------------------------------------------


async def test_leader_and_member_keys_carry_the_ttl(open_: Opener, server: servers.Etcd2Store, scope: str) -> None:
    a = await open_("a", ttl=30)
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    for relative in (codec.LEADER, codec.MEMBERS + "a"):
        ttl = await server.raw_ttl(_key(scope, relative))
        assert ttl is not None and 25 <= ttl <= 30, (relative, ttl)
    await a.set_ttl(60)  # the next refresh uses the new TTL: no lease to replace
    assert await a.keepalive() and a.leads_on_lease()
    for relative in (codec.LEADER, codec.MEMBERS + "a"):
        ttl = await server.raw_ttl(_key(scope, relative))
        assert ttl is not None and ttl > 30, (relative, ttl)
    assert await server.raw_get(_key(scope, codec.LEADER)) == "a"  # a refresh keeps the value
    assert await server.raw_ttl(_key(scope, codec.CONFIG)) is None  # plain keys have no TTL
    assert await a.set_config({"ttl": 30})
    assert await server.raw_ttl(_key(scope, codec.CONFIG)) is None


async def test_refreshes_rewrite_nothing_and_wake_no_watcher(open_: Opener, server: servers.Etcd2Store,
                                                             scope: str) -> None:
    a, b = await open_("a"), await open_("b")
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    before = (await b.get_cluster()).revision
    assert not await b.wait_for_change(0.5)  # the watch is established and nothing changed since the read
    status = ClusterStatus(optime=100)
    assert await a.update_leader(status)  # the leader's TTL refreshed, status written: status wakes nobody
    for _ in range(3):
        assert await a.keepalive()
        assert await a.update_leader(status)
        assert await a.touch_member(MEMBER)
    assert not await b.wait_for_change(1.0)
    # A watch started later, from an index before all those refreshes, skips them too.
    late = await open_("late", readonly=True)
    late._seen_revision = before
    assert not await late.wait_for_change(1.0)


async def test_the_leader_key_expires_and_wakes_the_watch(open_: Opener, scope: str) -> None:
    a, b = await open_("a", ttl=2), await open_("b")
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    await b.get_cluster()
    assert await b.wait_for_change(15.0)  # a stops refreshing: the key expires, etcd says so
    assert (await b.get_cluster()).leader is None
    assert not await a.update_leader()  # gone: False, and not created again
    assert not a.leads_on_lease()
    assert (await b.get_cluster()).leader is None
    await eventually(b.get_cluster, lambda c: c.member("a") is None, within=15.0, what="a's member key to expire")
    assert not await a.keepalive()  # the member key expired too: the keepalive says so
    assert await a.touch_member(MEMBER)  # written again
    assert (await b.get_cluster()).member("a") is not None
    assert await a.keepalive()


async def test_leads_on_lease_follows_the_leader_key(open_: Opener, server: servers.Etcd2Store, scope: str) -> None:
    a, b = await open_("a"), await open_("b")
    assert not a.leads_on_lease()
    assert await a.acquire_leader() and a.leads_on_lease()
    assert await a.touch_member(MEMBER)
    assert await a.keepalive() and a.leads_on_lease()
    await server.raw_delete(_key(scope, codec.LEADER))
    assert await a.keepalive()  # the member key is alive ...
    assert not a.leads_on_lease()  # ... but the leader key is not ours any more
    assert await b.acquire_leader()
    assert await a.keepalive() and not a.leads_on_lease()
    assert not await a.update_leader()
    assert await b.delete_leader(ClusterStatus(optime=7))
    assert not b.leads_on_lease()
    assert await a.acquire_leader() and a.leads_on_lease()


async def test_watch_history_cleared_forces_a_reread(open_: Opener, server: servers.Etcd2Store, scope: str) -> None:
    """A watch asking for an index older than etcd's event history (1000 events) wakes the caller once, to
    read again, and goes on from etcd's current index."""
    b = await open_("b", readonly=True)  # read-only: no watch until wait_for_change asks for one
    await b.get_cluster()
    url = f"{server.etcd.client_url}/v2/keys/{NAMESPACE}/{scope}-noise/k"
    async with aiohttp.ClientSession() as session:
        async def put(i: int) -> None:
            async with session.put(url, data={"value": str(i)}) as response:
                assert response.status in (200, 201)

        for start in range(0, 1050, 50):
            await asyncio.gather(*(put(i) for i in range(start, start + 50)))
    assert await b.wait_for_change(10.0)  # event index cleared: re-read
    await b.get_cluster()
    assert not await b.wait_for_change(1.0)
    a = await open_("a")
    assert await a.acquire_leader()
    assert await b.wait_for_change(10.0)


async def test_silent_polls_start_again_without_missing_a_change(open_: Opener, server: servers.Etcd2Store,
                                                                 scope: str) -> None:
    """Each long poll ends after `watch_poll` seconds and the next one goes on from where it stopped."""
    a = await open_("a")
    b = Etcd2Dcs(hosts=[server.etcd.host], namespace=NAMESPACE, scope=scope, name="b", ttl=10, watch_poll=0.3)
    try:
        await b.connect()
        await b.get_cluster()
        assert not await b.wait_for_change(1.5)  # several silent polls: no wake-up
        assert await a.acquire_leader()
        assert await b.wait_for_change(10.0)
        await b.get_cluster()
        assert await a.keepalive() and await a.update_leader()
        assert not await b.wait_for_change(1.0)
        assert await a.delete_leader()
        assert await b.wait_for_change(10.0)
    finally:
        await b.close()


# -- Patroni's `etcd` section --------------------------------------------------------------------------


async def test_section_forms(open_: Opener, server: servers.Etcd2Store, scope: str) -> None:
    port = server.etcd.client_port
    dead = free_port()
    forms: list[dict[str, Any]] = [
        {"host": f"127.0.0.1:{port}"},
        {"host": f"127.0.0.1:{dead},127.0.0.1:{port}"},  # the first host is down: the next one is tried
        {"hosts": [f"127.0.0.1:{dead}", f"127.0.0.1:{port}"]},
        {"hosts": f"127.0.0.1:{dead}, 127.0.0.1:{port}"},
        {"url": f"http://127.0.0.1:{port}"},
        {"host": f"127.0.0.1:{port}", "protocol": "http"},
    ]
    for i, section in enumerate(forms):
        dcs = await open_(f"n{i}", section=section)
        assert dcs.prefix == f"/{NAMESPACE}/{scope}/"
        assert await dcs.touch_member(MEMBER), section
        assert (await dcs.get_cluster()).member(f"n{i}") is not None, section


@pytest.mark.parametrize("key", ["srv", "proxy", "discovery_srv"])
async def test_unsupported_forms_are_refused(key: str) -> None:
    with pytest.raises(DcsError, match=f"'{key}' is not supported yet; list the endpoints in 'hosts'"):
        await open_dcs("etcd", {key: "example.org"}, namespace=NAMESPACE, scope="x", name="a", ttl=10)


async def test_bad_sections_are_dcs_errors() -> None:
    common: dict[str, Any] = {"namespace": NAMESPACE, "scope": "x", "name": "a", "ttl": 10}
    with pytest.raises(DcsError, match="together"):
        await open_dcs("etcd", {"host": "127.0.0.1:2379", "username": "root"}, **common)
    with pytest.raises(DcsError, match="port"):
        await open_dcs("etcd", {"host": "127.0.0.1:notaport"}, **common)
    with pytest.raises(DcsError, match="etcd: "):
        await open_dcs("etcd", {"host": "127.0.0.1:2379", "protocol": "https", "cacert": "/nonexistent/ca.crt"},
                       **common)


async def test_every_host_down_is_a_dcs_error(open_: Opener) -> None:
    a = await open_("a", section={"hosts": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}, timeout=1.0)
    for call in (a.get_cluster, a.acquire_leader, a.keepalive):
        with pytest.raises(DcsError):
            await call()


async def test_an_etcd_without_the_v2_api_is_named(etcd: EtcdServer) -> None:
    dcs = await open_dcs("etcd", {"host": f"127.0.0.1:{etcd.client_port}"}, namespace=NAMESPACE, scope="x",
                         name="a", ttl=10, readonly=True)
    try:
        with pytest.raises(DcsError, match="--enable-v2"):
            await dcs.get_cluster()
    finally:
        await dcs.close()


async def test_username_and_password() -> None:
    """v2 authentication (HTTP basic auth): the right user works, anonymous and a wrong password do not,
    and no message carries a password."""
    if not etcd_available():
        pytest.skip("etcd binary not available")
    store = servers.start(auth=True)
    common: dict[str, Any] = {"namespace": NAMESPACE, "scope": "auth", "ttl": 10}
    try:
        good = await open_dcs("etcd", {**store.section(), "username": None, "user": servers.USERNAME}, name="a",
                              **common)  # Patroni's `user` spelling
        try:
            assert await good.acquire_leader()
            assert (await good.get_cluster()).led_by("a")
        finally:
            await good.close()
        for section in ({"host": store.section()["host"]}, store.section_with_password("Wr0ng-xyzzy")):
            dcs = await open_dcs("etcd", section, name="b", readonly=True, **common)
            try:
                with pytest.raises(DcsError, match="authentication failed") as raised:
                    await dcs.get_cluster()
                assert "Wr0ng-xyzzy" not in str(raised.value) and servers.PASSWORD not in str(raised.value)
            finally:
                await dcs.close()
    finally:
        store.stop()


async def test_tls_with_client_certificates() -> None:
    """Patroni's TLS keys (an https `url`, `cacert`, `cert`, `key`) against an etcd demanding client certs."""
    if not etcd_available():
        pytest.skip("etcd binary not available")
    store = servers.start(tls=True)
    try:
        tls = store.etcd.tls
        assert tls is not None
        section = {"url": f"https://127.0.0.1:{store.etcd.client_port}", "cacert": str(tls.ca_cert),
                   "cert": str(tls.client_cert), "key": str(tls.client_key)}
        common: dict[str, Any] = {"namespace": NAMESPACE, "scope": "tls", "ttl": 10}
        dcs = await open_dcs("etcd", section, name="a", **common)
        try:
            assert await dcs.acquire_leader()
            assert (await dcs.get_cluster()).led_by("a")
        finally:
            await dcs.close()
        no_cert = await open_dcs("etcd", {**section, "cert": None, "key": None}, name="b", readonly=True, **common)
        try:
            with pytest.raises(DcsError):
                await no_cert.get_cluster()
        finally:
            await no_cert.close()
    finally:
        store.stop()


# -- values and answers --------------------------------------------------------------------------------


async def test_cas_revisions_are_modified_indexes(open_: Opener, server: servers.Etcd2Store, scope: str) -> None:
    a = await open_("a")
    assert await a.set_config({"ttl": 30}, 0)
    config = (await a.get_cluster()).config
    assert config is not None and config.revision == await server.raw_index(_key(scope, codec.CONFIG))
    assert config.revision >= 1
    assert await a.set_failover({"leader": "a", "member": "b"}, 0)
    failover = (await a.get_cluster()).failover
    assert failover is not None
    assert not await a.delete_failover(failover.revision + 1000)
    assert await a.delete_failover(failover.revision)
    assert await a.delete_failover()  # unconditional, and absent: nothing to do
    assert await a.set_failsafe({"a": "http://127.0.0.1:8008/patroni"})
    assert await a.set_failsafe(None) and await a.set_failsafe(None)


async def test_odd_member_names_round_trip(open_: Opener) -> None:
    names = ["with space", "per%cent", "q?uery#frag", "ünï"]
    for name in names:
        dcs = await open_(name)
        assert await dcs.touch_member(MEMBER)
    cluster = await (await open_("reader", readonly=True)).get_cluster()
    assert sorted(m.name for m in cluster.members) == sorted(names)
    assert await dcs.delete_member(names[-1])
    assert len((await dcs.get_cluster()).members) == len(names) - 1


async def test_oversized_answers_are_refused(open_: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    a = await open_("a")
    assert await a.set_config({"blob": "x" * 5000})
    monkeypatch.setattr(etcd2, "MAX_RESPONSE_BYTES", 4096)
    with pytest.raises(DcsError, match="larger than"):
        await a.get_cluster()


async def test_delete_cluster_counts_keys(open_: Opener, server: servers.Etcd2Store, scope: str) -> None:
    a = await open_("a")
    assert await a.delete_cluster() == 0
    assert await a.initialize("1")
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    await server.raw_put(_key(scope, "routers/r1"), "{}")
    assert await a.delete_cluster() == 4
    assert await eventually(a.get_cluster, lambda c: c.leader is None and not c.members, within=5.0,
                            what="an empty scope")
