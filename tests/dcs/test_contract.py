"""The DCS contract suite: what every backend (etcd v3, etcd v2, ZooKeeper) must do, against a real server.

Each test runs once per backend (`kind`, see conftest.py). What is asserted is the interface's docstrings
(pgwarden/dcs/base.py), Patroni's key layout and the backend semantics every store shares (the Patroni
contract, 3.1 and 3.2), and the lease rules the HA loop relies on; never what only one store happens to do.

Optional server capabilities (a server module without them skips those tests, saying why):
- `supports_auth` + `start(auth=True)`: credentials required; `section()` carries the right ones and
  `section_with_password(p)` the same user with another password;
- `supports_tls` + `start(tls=True)`: `section()` reaches it over TLS, its CA in `cacert`;
- `raw_revision(key)`: a number that moves with every write of the key (how "not rewritten" is seen;
  without it, a value planted behind the backend's back that is still there shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pgwarden.dcs import Dcs, DcsError, codec, open_dcs
from pgwarden.model import ClusterStatus, HistoryEntry, SyncState
from tests.dcs.holder import Holder, HolderError
from tests.dcs.servers import StoreServer, running
from tests.dcs.store import NAMESPACE, Store, bounded_call, cluster_where, eventually

pytestmark = pytest.mark.integration

EXPIRY_TTL = 4
"""The smallest lease every store grants as asked (etcd's minimum is about 2 s, ZooKeeper's 2*tickTime)."""
OUTAGE_TIMEOUT = 1.0
"""The backends' `timeout` in the outage tests."""
OUTAGE_BOUND = 3 * OUTAGE_TIMEOUT + 2.0
"""How long one call may take while the store is down: a few round trips of `timeout`, never a hang."""
WAKE_TIMEOUT = 10.0
"""wait_for_change's timeout where a wake-up is expected: far more than the change needs to arrive."""
SYSID = "7301234567890123456"

MEMBER = {"conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni",
          "state": "running", "role": "replica", "version": "4.0.4"}


async def _assert_not_rewritten(store: Store, relative: str, rewrite: Callable[[], Awaitable[bool]]) -> None:
    """`await rewrite()` (a call that must skip its write, nothing having changed) leaves `relative` alone."""
    revision_of = store.raw_revision()
    if revision_of is not None:
        before = await revision_of(relative)
        assert before is not None, f"{relative} is missing"
        assert await rewrite()
        assert await revision_of(relative) == before, f"{relative} was rewritten although unchanged"
        return
    planted = '{"planted":"by the test"}'
    await store.raw_put(relative, planted)
    assert await rewrite()
    assert await store.raw_get(relative) == planted, f"{relative} was rewritten although unchanged"


# -- bootstrap and the leader lock -------------------------------------------------------------------


async def test_initialize_race_has_one_winner(store: Store) -> None:
    clients = [await store.open(f"n{i}") for i in range(4)]
    results = await asyncio.gather(*(c.initialize() for c in clients))
    assert results.count(True) == 1, results
    assert (await clients[0].get_cluster()).initialize == ""
    winner = clients[results.index(True)]
    assert await winner.initialize(SYSID, create_new=False)
    assert (await clients[1].get_cluster()).initialize == SYSID
    assert not await clients[2].initialize()  # it exists: the race is over
    await winner.cancel_initialization()
    assert (await clients[3].get_cluster()).initialize is None


async def test_leader_race_has_exactly_one_winner(store: Store) -> None:
    clients = [await store.open(f"n{i}") for i in range(4)]
    results = await asyncio.gather(*(c.acquire_leader() for c in clients))
    assert results.count(True) == 1, results
    winner = clients[results.index(True)]
    cluster = await clients[0].get_cluster()
    assert cluster.leader is not None and cluster.leader.name == winner.name


async def test_renewal_writes_status_and_skips_it_when_unchanged(store: Store) -> None:
    a = await store.open("a")
    assert await a.acquire_leader()
    status = ClusterStatus(optime=100, slots={"b": 90}, retain_slots=("b",))
    assert await a.update_leader(status)
    assert (await a.get_cluster()).status == status
    assert await store.raw_get(codec.STATUS) == codec.status_to_json(status)
    await _assert_not_rewritten(store, codec.STATUS, lambda: a.update_leader(status))
    newer = ClusterStatus(optime=200, slots={"b": 190}, retain_slots=("b",))
    assert await a.update_leader(newer)
    assert (await a.get_cluster()).status == newer
    assert await a.update_leader()  # no status: a plain renewal
    assert (await a.get_cluster()).leader is not None


async def test_renewal_fails_once_the_key_was_taken(store: Store) -> None:
    a, b = await store.open("a"), await store.open("b")
    assert await a.acquire_leader()
    assert not await b.acquire_leader()
    await store.raw_delete(codec.LEADER)  # e.g. an operator removed it
    assert await b.acquire_leader()
    assert not await a.update_leader(ClusterStatus(optime=1))
    cluster = await a.get_cluster()
    assert cluster.leader is not None and cluster.leader.name == "b"
    assert cluster.status == ClusterStatus()  # the loser did not write status


async def test_renewal_fails_once_the_key_is_gone(store: Store) -> None:
    a = await store.open("a")
    assert await a.acquire_leader()
    await store.raw_delete(codec.LEADER)
    assert not await a.update_leader()
    assert (await a.get_cluster()).leader is None  # a failed renewal does not bring the key back


async def test_delete_leader_is_owner_checked(store: Store) -> None:
    a, b = await store.open("a"), await store.open("b")
    assert await a.acquire_leader()
    assert not await b.delete_leader()
    assert (await b.get_cluster()).leader is not None
    assert await a.delete_leader(ClusterStatus(optime=42))
    cluster = await b.get_cluster()
    assert cluster.leader is None and cluster.status.optime == 42
    assert not await a.delete_leader()  # not ours any more (not anybody's)
    assert await b.acquire_leader()
    assert not await a.delete_leader()
    assert (await a.get_cluster()).led_by("b")


async def test_the_lock_expires_with_a_stalled_holder(store: Store) -> None:
    """The holder's process stops (so do its keepalives, whatever thread sends them): its leader and
    member keys vanish with its lease or session, but not sooner than ttl after its last keepalive was
    sent; a watcher wakes up; once the holder runs again it learns that its lease was lost, no longer
    leads on it, cannot renew the lock, and can take it again."""
    holder = await Holder.start(store.kind, store.server.section(), namespace=NAMESPACE, scope=store.scope,
                                name="a", ttl=EXPIRY_TTL, timeout=2.0)
    try:
        assert await holder.call("acquire_leader") is True
        assert await holder.call("touch_member", MEMBER) is True
        watcher = await store.open("b")
        sent = time.monotonic()  # the holder sends its last keepalive after this instant
        assert await holder.call("keepalive") is True
        assert await holder.call("leads_on_lease") is True
        holder.freeze()
        await _assert_leads_until_expiry(watcher, sent)
        waiter = asyncio.create_task(watcher.wait_for_change(EXPIRY_TTL * 4 + WAKE_TIMEOUT))
        assert await waiter, "the leader key's expiry did not wake wait_for_change"
        await _assert_leads_until_expiry(watcher, sent)
        await cluster_where(watcher, lambda c: c.leader is None and c.member("a") is None,
                            within=EXPIRY_TTL * 3 + 10, what="the stalled holder's keys to expire")
        holder.thaw()
        assert await _first_answer(holder, "keepalive") is False, "keepalive did not report the lost lease"
        assert await holder.call("leads_on_lease") is False
        assert await holder.call("update_leader") is False
        assert (await watcher.get_cluster()).leader is None
        assert await holder.call("touch_member", MEMBER) is True  # the lost key is written again...
        assert (await watcher.get_cluster()).member("a") is not None  # ...not skipped as unchanged
        assert await holder.call("acquire_leader") is True  # re-acquire after the expiry
        assert await holder.call("keepalive") is True
        assert await holder.call("leads_on_lease") is True
        assert (await watcher.get_cluster()).led_by("a")
    finally:
        await holder.stop()


async def _assert_leads_until_expiry(watcher: Dcs, sent: float) -> None:
    """The lease rule the HA loop relies on: after a keepalive sent at `sent` succeeded, the leader and
    member keys live until `sent + ttl` at least. So a read that finds them gone must end after that.
    (Only a lower bound: a slow machine makes the read later, never earlier, so it cannot flake.)"""
    cluster = await watcher.get_cluster()
    ended = time.monotonic()
    if cluster.leader is None or cluster.member("a") is None:
        assert ended >= sent + EXPIRY_TTL, f"keys gone {ended - sent:.1f}s after a keepalive, ttl {EXPIRY_TTL}"
    else:
        assert cluster.led_by("a")


async def _first_answer(holder: Holder, method: str) -> Any:
    """The first answer of `method` that is not a DcsError (the client may still be reconnecting)."""

    async def attempt() -> tuple[bool, Any]:
        try:
            return True, await holder.call(method)
        except HolderError as exc:
            if exc.name != "DcsError":
                raise
            return False, exc

    _, result = await eventually(attempt, lambda outcome: outcome[0], within=20.0,
                                 what=f"{method} to answer after the holder ran again")
    return result


async def test_leadership_follows_the_lease(store: Store) -> None:
    a = await store.open("a")
    assert not a.leads_on_lease()
    assert await a.keepalive()
    assert not a.leads_on_lease()  # a live lease without the leader key on it
    assert await a.acquire_leader()
    assert await a.keepalive()
    assert a.leads_on_lease()
    assert await a.update_leader()
    assert a.leads_on_lease()
    assert await a.delete_leader()
    assert not a.leads_on_lease()


# -- members -----------------------------------------------------------------------------------------


async def test_touch_member_skips_unchanged_writes(store: Store) -> None:
    a, b = await store.open("a"), await store.open("b")
    assert await a.touch_member(MEMBER)
    assert await store.raw_get(codec.MEMBERS + "a") == codec.member_to_json(MEMBER)
    await _assert_not_rewritten(store, codec.MEMBERS + "a", lambda: a.touch_member(MEMBER))
    changed = {**MEMBER, "state": "stopped"}
    assert await a.touch_member(changed)
    assert await store.raw_get(codec.MEMBERS + "a") == codec.member_to_json(changed)
    # Deleted behind its back: the next read notices, the next touch writes again.
    assert await b.delete_member("a")
    assert (await a.get_cluster()).member("a") is None
    assert await a.touch_member(changed)
    member = (await b.get_cluster()).member("a")
    assert member is not None and member.state == "stopped"


async def test_delete_member(store: Store) -> None:
    a, b = await store.open("a"), await store.open("b")
    assert await a.touch_member(MEMBER)
    assert await b.touch_member({**MEMBER, "api_url": "http://127.0.0.2:8008/patroni"})
    assert await a.delete_member("b")
    cluster = await a.get_cluster()
    assert [m.name for m in cluster.members] == ["a"]


async def test_transient_key_is_published_kept_alive_and_vanishes_with_its_writer(store: Store) -> None:
    """`publish_transient` (a `pgwarden route` sidecar's `routers/<name>`): readable by everyone as the
    router's state, unchanged values not rewritten, kept alive past the TTL by further calls, and gone
    within the TTL once its (read-only) writer has closed."""
    sidecar, agent = await store.open("router", ttl=EXPIRY_TTL, readonly=True), await store.open("a")
    relative = codec.ROUTERS + "r1"
    held = json.dumps({"kinds": ["pgbouncer"], "primary": "a", "held_for": 7}, separators=(",", ":"))
    await sidecar.publish_transient(relative, held)
    routers = (await agent.get_cluster()).routers
    assert [(r.name, r.held_for) for r in routers] == [("r1", 7)]
    await _assert_not_rewritten(store, relative, lambda: _published(sidecar, relative, held))
    released = held.replace("7", "null")
    await sidecar.publish_transient(relative, released)
    assert await store.raw_get(relative) == released
    for _ in range(2 * EXPIRY_TTL):  # twice the TTL, refreshed as a sidecar does: still there
        await asyncio.sleep(0.5)
        await sidecar.publish_transient(relative, released)
    assert await store.raw_get(relative) == released
    await sidecar.close()
    await eventually(lambda: store.raw_get(relative), lambda value: value is None, within=EXPIRY_TTL + 3.0,
                     what=f"{relative} to vanish with its writer")


async def _published(dcs: Dcs, relative: str, text: str) -> bool:
    await dcs.publish_transient(relative, text)
    return True


# -- compare-and-swap values -----------------------------------------------------------------------


async def test_config_cas(store: Store) -> None:
    a = await store.open("a")
    assert await a.set_config({"ttl": 30}, revision=0)
    assert not await a.set_config({"ttl": 40}, revision=0)  # already exists
    first = (await a.get_cluster()).config
    assert first is not None and first.value == {"ttl": 30} and first.revision >= 1
    assert await a.set_config({"ttl": 40}, revision=first.revision)
    assert not await a.set_config({"ttl": 50}, revision=first.revision)  # stale revision
    second = (await a.get_cluster()).config
    assert second is not None and second.value == {"ttl": 40} and second.revision != first.revision
    assert await a.set_config({"ttl": 60})  # unconditional
    config = (await a.get_cluster()).config
    assert config is not None and config.value == {"ttl": 60}
    assert not await a.set_config({"ttl": 70}, revision=second.revision)


async def test_failover_cas(store: Store) -> None:
    a = await store.open("a")
    assert await a.set_failover({"leader": "a", "member": "b"}, revision=0)
    assert not await a.set_failover({"member": "x"}, revision=0)
    first = (await a.get_cluster()).failover
    assert first is not None and (first.leader, first.member) == ("a", "b") and first.revision >= 1
    assert await a.set_failover({"member": "c", "scheduled_at": "2030-01-01T00:00:00+00:00"},
                                revision=first.revision)
    assert not await a.set_failover({"member": "d"}, revision=first.revision)  # stale
    assert not await a.delete_failover(revision=first.revision)  # stale
    second = (await a.get_cluster()).failover
    assert second is not None and second.member == "c" and second.scheduled_at == "2030-01-01T00:00:00+00:00"
    assert await a.delete_failover(revision=second.revision)
    assert (await a.get_cluster()).failover is None
    assert await a.set_failover({"member": "c"})  # unconditional
    assert await a.delete_failover()  # unconditional
    assert (await a.get_cluster()).failover is None


async def test_sync_cas(store: Store) -> None:
    a = await store.open("a")
    assert await a.set_sync(SyncState(leader="a", sync_standby=("b",)), revision=0)
    assert not await a.set_sync(SyncState(leader="a"), revision=0)
    first = (await a.get_cluster()).sync
    assert first is not None and first.sync_standby == ("b",) and first.revision >= 1
    assert await a.set_sync(SyncState(leader="a", sync_standby=("b", "c"), quorum=1), revision=first.revision)
    assert not await a.set_sync(SyncState(leader="a"), revision=first.revision)  # stale
    assert not await a.delete_sync(revision=first.revision)  # stale
    second = (await a.get_cluster()).sync
    assert second is not None and second.sync_standby == ("b", "c") and second.quorum == 1
    assert await a.delete_sync(revision=second.revision)
    assert (await a.get_cluster()).sync is None
    assert await a.set_sync(SyncState(leader="a"))  # unconditional
    assert await a.delete_sync()  # unconditional
    assert (await a.get_cluster()).sync is None


# -- history, failsafe, the whole scope ---------------------------------------------------------------


async def test_history_and_failsafe(store: Store) -> None:
    a = await store.open("a")
    history = (HistoryEntry(1, 0x3000060, "no recovery target specified", "2026-01-01T00:00:00+00:00", "a"),
               HistoryEntry(2, 0x4000098, "no recovery target specified"))
    assert await a.set_history(history)
    assert (await a.get_cluster()).history == history
    assert await a.set_history(history[:1])  # overwritten, not appended
    assert (await a.get_cluster()).history == history[:1]
    failsafe = {"a": "http://127.0.0.1:8008/patroni", "b": "http://127.0.0.2:8008/patroni"}
    assert await a.set_failsafe(failsafe)
    assert (await a.get_cluster()).failsafe == failsafe
    assert await a.set_failsafe({"a": "http://127.0.0.1:8008/patroni"})
    assert (await a.get_cluster()).failsafe == {"a": "http://127.0.0.1:8008/patroni"}
    assert await a.set_failsafe(None)
    assert (await a.get_cluster()).failsafe is None


async def test_delete_cluster(store: Store) -> None:
    a = await store.open("a")
    other = await store.open("a", scope=store.scope + "x")  # its name starts with ours: a prefix bug reaches it
    assert await a.initialize(SYSID)
    assert await a.set_config({"ttl": 30})
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    assert await a.update_leader(ClusterStatus(optime=5))
    assert await other.set_config({"ttl": 31})
    assert await a.delete_cluster() > 0
    cluster = await a.get_cluster()
    assert (cluster.initialize, cluster.config, cluster.leader, cluster.members) == (None, None, None, ())
    kept = (await other.get_cluster()).config  # another scope is untouched
    assert kept is not None and kept.value == {"ttl": 31}


async def test_key_layout_is_patronis(store: Store) -> None:
    """Byte for byte what Patroni writes under `/service/<scope>/`, so Patroni's tools and agents read it."""
    a = await store.open("a")
    assert await a.initialize()
    assert await store.raw_get("initialize") == ""
    assert await a.initialize(SYSID, create_new=False)
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    config = {"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}}}
    assert await a.set_config(config)
    status = ClusterStatus(optime=67108864, slots={"b": 67108000}, retain_slots=("a", "b"))
    assert await a.update_leader(status)
    failover = {"leader": "a", "member": "b"}
    assert await a.set_failover(failover)
    sync = SyncState(leader="a", sync_standby=("b",))
    assert await a.set_sync(sync)
    history = (HistoryEntry(1, 50331744, "no recovery target specified", "2026-01-01T00:00:00+00:00", "a"),)
    assert await a.set_history(history)
    failsafe = {"a": "http://127.0.0.1:8008/patroni"}
    assert await a.set_failsafe(failsafe)
    server = store.server
    prefix = f"/service/{store.scope}/"
    expected = {
        "initialize": SYSID,
        "leader": "a",
        "members/a": codec.member_to_json(MEMBER),
        "config": codec.config_to_json(config),
        "status": codec.status_to_json(status),
        "failover": codec.failover_to_json(failover),
        "sync": codec.sync_to_json(sync),
        "history": codec.history_to_json(history),
        "failsafe": codec.failsafe_to_json(failsafe),
    }
    for relative, text in expected.items():
        assert await server.raw_get(prefix + relative) == text, relative
    assert json.loads(expected["members/a"]) == MEMBER
    assert json.loads(expected["sync"]) == {"leader": "a", "sync_standby": "b", "quorum": 0}
    assert json.loads(expected["history"]) == [[1, 50331744, "no recovery target specified",
                                                "2026-01-01T00:00:00+00:00", "a"]]


async def test_hostile_values_do_not_break_reads(store: Store) -> None:
    planted = {
        "config": "{not json",
        "failover": "[1,2",
        "sync": '{"leader": 5, "sync_standby": {"x": 1}}',
        "status": '{"optime": "lots"}',
        "history": '[["x"]]',
        "failsafe": '"a string"',
        "members/x": "\u2603 garbage",
        "members/y": "[]",
        "members/z": '{"state": 12, "role": ["primary"], "timeline": -1}',
    }
    for relative, value in planted.items():
        await store.raw_put(relative, value)
    a = await store.open("a")
    cluster = await a.get_cluster()
    assert {m.name for m in cluster.members} == {"x", "y", "z"}
    assert all(m.state == "unknown" for m in cluster.members)
    assert (cluster.failover, cluster.sync, cluster.history, cluster.failsafe) == (None, None, (), None)
    assert cluster.status == ClusterStatus()
    # Unreadable values keep their revisions, so they can still be replaced or removed with CAS.
    assert cluster.config is not None and cluster.config.value == {}
    assert await a.set_config({"ttl": 30}, revision=cluster.config.revision)
    assert await a.delete_failover(revision=cluster.unreadable["failover"])
    assert await a.set_sync(SyncState(leader="a"), revision=cluster.unreadable["sync"])
    cluster = await a.get_cluster()
    assert cluster.config is not None and cluster.config.value == {"ttl": 30}
    assert cluster.failover is None and cluster.sync is not None and cluster.sync.leader == "a"


# -- the watch -------------------------------------------------------------------------------------


async def _wakes_on(watcher: Dcs, change: Callable[[], Awaitable[None]]) -> bool:
    """Read, start waiting, make `change()` from elsewhere, and tell whether the wait was woken."""
    await _settle(watcher)
    await watcher.get_cluster()
    waiter = asyncio.create_task(watcher.wait_for_change(WAKE_TIMEOUT))
    await asyncio.sleep(0.2)  # the waiter is waiting when the change comes
    assert not waiter.done(), "wait_for_change returned although nothing changed"
    await change()
    return await waiter


async def _settle(watcher: Dcs) -> None:
    """Let late notices of earlier changes (or a wake-up after an outage) pass: they are not what a test
    of the next change is about."""
    for _ in range(20):
        if not await watcher.wait_for_change(0.3):
            return
        await watcher.get_cluster()


async def test_watch_wakes_when_the_leader_key_changes(store: Store) -> None:
    a, b = await store.open("a"), await store.open("b")

    async def acquire() -> None:
        assert await a.acquire_leader()

    async def release() -> None:
        assert await a.delete_leader()

    async def remove() -> None:
        await store.raw_delete(codec.LEADER)

    assert await _wakes_on(b, acquire), "not woken when the leader key was created"
    assert await _wakes_on(b, release), "not woken when the leader key was deleted"
    assert await a.acquire_leader()
    assert await _wakes_on(b, remove), "not woken when the leader key was removed by someone else"


async def test_member_writes_do_not_wake_the_watch(store: Store) -> None:
    a, b = await store.open("a"), await store.open("b")
    assert await a.acquire_leader()
    await _settle(b)
    await b.get_cluster()
    assert not await b.wait_for_change(0.5)  # nothing changed since the read
    assert await a.touch_member(MEMBER)
    assert await a.touch_member({**MEMBER, "state": "stopped"})
    assert await b.touch_member(MEMBER)
    assert not await b.wait_for_change(1.0)


# -- outages -----------------------------------------------------------------------------------------


async def _assert_calls_fail_bounded(dcs: Dcs) -> None:
    """Every kind of call raises DcsError, each within OUTAGE_BOUND (wait_for_change returns within it)."""
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get_cluster": dcs.get_cluster, "update_leader": dcs.update_leader, "keepalive": dcs.keepalive,
        "touch_member": lambda: dcs.touch_member({**MEMBER, "state": "stopped"}),
        "set_config": lambda: dcs.set_config({"ttl": 99}),
        "acquire_leader": dcs.acquire_leader,
    }
    for what, call in calls.items():
        with pytest.raises(DcsError):
            await bounded_call(call(), OUTAGE_BOUND)
            pytest.fail(f"{what} did not raise DcsError while the store was down")
    with contextlib.suppress(DcsError):  # a bool or DcsError: the contract only asks that it returns
        await bounded_call(dcs.wait_for_change(0.5), OUTAGE_BOUND + 0.5)


async def test_reads_survive_a_server_restart(private_store: Store) -> None:
    """Killed: calls fail fast with DcsError, and so does a backend opened meanwhile (opening does not
    hang). Restarted: the very same objects work again, with no reconnect by the caller, watch included."""
    server = private_store.server
    a = await private_store.open("a", timeout=OUTAGE_TIMEOUT)
    b = await private_store.open("b", timeout=OUTAGE_TIMEOUT)
    assert await a.set_config({"ttl": 30})
    assert await a.acquire_leader()
    await b.get_cluster()
    server.kill()
    await _assert_calls_fail_bounded(a)
    late = await bounded_call(private_store.open("late", timeout=OUTAGE_TIMEOUT), OUTAGE_BOUND)
    with pytest.raises(DcsError):
        await bounded_call(late.get_cluster(), OUTAGE_BOUND)
    server.restart()
    for dcs in (a, b, late):
        cluster = await cluster_where(dcs, lambda c: c.config is not None, within=30.0,
                                      what=f"{dcs.name} to read the cluster after the restart")
        assert cluster.config is not None and cluster.config.value == {"ttl": 30}

    async def change_leader() -> None:
        await private_store.raw_delete(codec.LEADER)
        assert await late.acquire_leader()

    assert await _wakes_on(b, change_leader), "the watch did not come back after the restart"  # no caller help


async def test_a_frozen_server_gives_dcs_errors_not_hangs(private_store: Store) -> None:
    server = private_store.server
    a = await private_store.open("a", timeout=OUTAGE_TIMEOUT)
    assert await a.acquire_leader()
    assert await a.touch_member(MEMBER)
    b = await private_store.open("b", timeout=OUTAGE_TIMEOUT)
    await b.get_cluster()
    server.freeze()
    try:
        await _assert_calls_fail_bounded(a)
        await private_store.close_one(b, bound=OUTAGE_BOUND)  # closing never hangs either
    finally:
        server.thaw()
    cluster = await cluster_where(a, lambda c: c.leader is not None, within=30.0,
                                  what="reads to work again after the thaw")
    assert cluster.member("a") is not None


async def test_unreachable_server_at_open(private_store: Store) -> None:
    """Nothing listens on the server's port: opening does not hang and calls raise DcsError."""
    private_store.server.kill()
    a = await bounded_call(private_store.open("a", timeout=OUTAGE_TIMEOUT), OUTAGE_BOUND)
    await _assert_calls_fail_bounded(a)
    await private_store.close_one(a, bound=OUTAGE_BOUND)


# -- authentication and TLS --------------------------------------------------------------------------


async def test_wrong_password_is_a_dcs_error_without_the_password(kind: str, server: StoreServer) -> None:
    if not getattr(server, "supports_auth", False):
        pytest.skip(f"the {kind} test server does not offer authentication (no supports_auth)")
    wrong = "Wr0ng-Passw0rd-xyzzy"
    with running(kind, auth=True) as secured:
        good = secured.section()
        dcs = await open_dcs(kind, good, namespace=NAMESPACE, scope="auth", name="a", ttl=10)
        try:
            assert await dcs.acquire_leader()
            assert (await dcs.get_cluster()).led_by("a")
        finally:
            await dcs.close()
        section = secured.section_with_password(wrong)  # type: ignore[attr-defined]  # an optional capability
        with pytest.raises(DcsError) as raised:
            dcs = await bounded_call(open_dcs(kind, section, namespace=NAMESPACE, scope="auth", name="b",
                                              ttl=10), OUTAGE_BOUND)
            try:
                await bounded_call(dcs.get_cluster(), OUTAGE_BOUND * 2)
            finally:
                await dcs.close()
        message = str(raised.value)
        right = getattr(importlib.import_module(type(secured).__module__), "PASSWORD", None)
        assert wrong not in message and (right is None or right not in message), message


async def test_tls(kind: str, server: StoreServer) -> None:
    if not getattr(server, "supports_tls", False):
        pytest.skip(f"the {kind} test server does not offer TLS (no supports_tls)")
    with running(kind, tls=True) as secured:
        section = secured.section()
        assert section.get("cacert"), "a TLS server's section names its CA in 'cacert'"
        dcs = await open_dcs(kind, section, namespace=NAMESPACE, scope="tls", name="a", ttl=10)
        try:
            assert await dcs.acquire_leader()
            assert (await dcs.get_cluster()).led_by("a")
        finally:
            await dcs.close()
        untrusted = {key: value for key, value in section.items() if key != "cacert"}
        with pytest.raises(DcsError):  # the server's certificate cannot be verified without the CA
            dcs = await bounded_call(open_dcs(kind, untrusted, namespace=NAMESPACE, scope="tls", name="b",
                                              ttl=10), OUTAGE_BOUND)
            try:
                await bounded_call(dcs.get_cluster(), OUTAGE_BOUND * 2)
            finally:
                await dcs.close()
