"""One agent's connection to the simulated etcd, mirroring `pgwarden.dcs.etcd3.Etcd3Dcs` call for call.

Each RPC takes a network round trip and applies at one instant on the store. An RPC to an
unreachable store fails after the client's timeout; an RPC whose answer is lost (the link broke, or
the store is slower than the timeout) may have been applied: the caller sees an error either way,
exactly the ambiguity a real client lives with.

Lease handling follows the real adapter: one lease per agent, the member key and the leader key are
attached to it, only `acquire_leader`/`update_leader` refresh it, and a lease etcd no longer knows is
replaced by a new one on the next write.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

from pgwarden.model import ClusterStatus, ClusterView, HistoryEntry, Member, SyncState, status_with_timeline_floor
from pgwarden.sim.etcd import (
    CONFIG,
    FAILOVER,
    FAILSAFE,
    HISTORY,
    INITIALIZE,
    LEADER,
    STATUS,
    SYNC,
    EtcdStore,
    member_key,
)
from pgwarden.sim.kernel import Step
from pgwarden.sim.world import DCS_TIMEOUT, World

_T = TypeVar("_T")
Op = Generator[Step, None, _T]


FAST_LATENCY = 0.01
"""At or below this one-way latency an RPC is simulated in one event (applied when sent)."""


class SimDcsError(Exception):
    """The store could not be reached or did not answer in time (the real adapter's DcsError)."""


class _LeaseNotFound(Exception):
    pass


class SimDcsClient:
    def __init__(self, world: World, name: str, ttl: int) -> None:
        self.world = world
        self.name = name
        self.ttl = ttl
        self.lease: tuple[int, int] | None = None  # (id, ttl)
        self.member_written: tuple[Member, int] | None = None
        self.status_written: ClusterStatus | None = None
        self.timeline_floor = 0  # etcd3.Etcd3Dcs._timeline_floor
        self.seen_revision = 0

    # -- transport ---------------------------------------------------------------------------------------

    def _rpc(self, apply: Callable[[], _T]) -> Op[_T]:
        world = self.world
        if not world.dcs_reachable(self.name):
            yield DCS_TIMEOUT
            raise SimDcsError("etcd unreachable (timed out)")
        latency = world.dcs_latency
        if latency <= FAST_LATENCY:
            # The usual case: the request applies as it is sent and the answer comes one round trip
            # later, in a single event (the few milliseconds of the request's flight are far below
            # every margin the core keeps; slow links take the exact path below).
            result = apply()
            yield 2 * latency
            if not world.dcs_reachable(self.name):
                yield DCS_TIMEOUT - 2 * latency
                raise SimDcsError("etcd answer lost (timed out)")
            return result
        if 2 * latency >= DCS_TIMEOUT:
            yield min(latency, DCS_TIMEOUT)
            if latency < DCS_TIMEOUT and world.dcs_reachable(self.name):
                apply()  # applied, but the answer comes too late
            yield max(DCS_TIMEOUT - latency, 0.0)
            raise SimDcsError("etcd timed out")
        yield latency
        if not world.dcs_reachable(self.name):
            yield DCS_TIMEOUT - latency
            raise SimDcsError("etcd unreachable (timed out)")
        result = apply()
        yield latency
        if not world.dcs_reachable(self.name):
            yield DCS_TIMEOUT - 2 * latency
            raise SimDcsError("etcd answer lost (timed out)")
        return result

    # -- lease ----------------------------------------------------------------------------------------------

    def set_ttl(self, ttl: int) -> None:
        self.ttl = ttl

    def _lease_id(self) -> Op[int]:
        if self.lease is None or self.lease[1] != self.ttl:
            ttl = self.ttl
            lease_id = yield from self._rpc(lambda: self.world.etcd.grant(self.world.now, ttl, self.name))
            self.lease = (lease_id, ttl)
        return self.lease[0]

    def _fresh_lease(self) -> Op[int]:
        had_lease = self.lease is not None and self.lease[1] == self.ttl
        lease_id = yield from self._lease_id()
        if not had_lease:
            return lease_id
        alive = yield from self._rpc(lambda: self.world.etcd.refresh(self.world.now, lease_id))
        if alive:
            return lease_id
        self.lease = None
        return (yield from self._lease_id())

    def keepalive(self) -> Op[bool]:
        """Etcd3Dcs.keepalive: refresh the lease; False when it was gone and had to be replaced."""
        had_lease = self.lease is not None and self.lease[1] == self.ttl
        lease_id = yield from self._lease_id()
        if not had_lease:
            return True
        alive = yield from self._rpc(lambda: self.world.etcd.refresh(self.world.now, lease_id))
        if alive:
            return True
        self.lease = None
        self.member_written = None
        yield from self._lease_id()
        return False

    def holds_leader_on_lease(self) -> bool:
        """Is the leader key ours and attached to our current lease (so a keepalive extends it)?"""
        lease = self.lease
        if lease is None:
            return False
        key = self.world.etcd.keys.get(LEADER)
        return key is not None and key.lease == lease[0] and key.value == self.name

    def _with_lease(self, operation: Callable[[int], Op[_T]]) -> Op[_T]:
        try:
            lease_id = yield from self._lease_id()
            return (yield from operation(lease_id))
        except _LeaseNotFound:
            self.lease = None
            lease_id = yield from self._lease_id()
            return (yield from operation(lease_id))

    def _put_on_lease(self, key: str, value: object, lease_id: int) -> bool:
        store = self.world.etcd
        if not store.lease_alive(lease_id):
            raise _LeaseNotFound(key)
        return store.put(key, value, lease=lease_id, writer=self.name)

    # -- reads ------------------------------------------------------------------------------------------------

    def get_cluster(self) -> Op[ClusterView]:
        view = yield from self._rpc(self.world.etcd.view)
        self.seen_revision = max(self.seen_revision, view.revision)
        self.timeline_floor = max(self.timeline_floor, view.status.timeline or 0)
        mine = view.member(self.name)
        if self.member_written is not None and mine != self.member_written[0]:
            self.member_written = None
        return view

    # -- bootstrap --------------------------------------------------------------------------------------------

    def initialize(self, sysid: str = "", *, create_new: bool = True) -> Op[bool]:
        store = self.world.etcd
        if create_new:
            return (yield from self._rpc(lambda: store.create_if_absent(INITIALIZE, sysid, writer=self.name)))
        return (yield from self._rpc(lambda: store.put(INITIALIZE, sysid, writer=self.name)))

    def cancel_initialization(self) -> Op[None]:
        yield from self._rpc(lambda: self.world.etcd.delete(INITIALIZE, writer=self.name))

    # -- the leader lock ------------------------------------------------------------------------------------

    def acquire_leader(self) -> Op[bool]:
        yield from self._fresh_lease()
        store = self.world.etcd

        def attempt(lease_id: int) -> Op[bool]:
            def apply() -> bool:
                if not store.lease_alive(lease_id):
                    raise _LeaseNotFound(LEADER)
                won = store.create_if_absent(LEADER, self.name, lease=lease_id, writer=self.name)
                if won:
                    self.seen_revision = store.revision
                return won
            return (yield from self._rpc(apply))

        return (yield from self._with_lease(attempt))

    def update_leader(self, status: ClusterStatus | None = None) -> Op[bool]:
        lease_id = yield from self._fresh_lease()
        store = self.world.etcd
        status = self._floored(status)
        status = None if status == self.status_written else status

        def apply() -> bool:
            key = store.get(LEADER)
            if key is None or key.value != self.name:
                return False
            if key.lease != lease_id:
                if not store.lease_alive(lease_id):
                    return False
                store.put(LEADER, self.name, lease=lease_id, writer=self.name)
                self.seen_revision = store.revision
            if status is not None:
                store.put(STATUS, status, writer=self.name)
            return True

        ok = yield from self._rpc(apply)
        if ok and status is not None:
            self.status_written = status
        return ok

    def _floored(self, status: ClusterStatus | None) -> ClusterStatus | None:
        if status is None:
            return None
        status = status_with_timeline_floor(status, self.timeline_floor)
        self.timeline_floor = max(self.timeline_floor, status.timeline or 0)
        return status

    def delete_leader(self, status: ClusterStatus | None = None) -> Op[bool]:
        store = self.world.etcd
        status = self._floored(status)
        status = None if status == self.status_written else status

        def apply() -> bool:
            if store.leader_name != self.name:
                return False
            if status is not None:
                store.put(STATUS, status, writer=self.name)
            store.delete(LEADER, writer=self.name)
            self.seen_revision = store.revision
            return True

        ok = yield from self._rpc(apply)
        if ok and status is not None:
            self.status_written = status
        return ok

    # -- members and other keys ------------------------------------------------------------------------------

    def touch_member(self, member: Member) -> Op[bool]:
        def attempt(lease_id: int) -> Op[bool]:
            if self.member_written == (member, lease_id):
                return True
            yield from self._rpc(lambda: self._put_on_lease(member_key(self.name), member, lease_id))
            self.member_written = (member, lease_id)
            return True

        return (yield from self._with_lease(attempt))

    def set_config(self, value: dict[str, object], revision: int | None = None) -> Op[bool]:
        store = self.world.etcd

        def apply() -> bool:
            key = store.get(CONFIG)
            if revision == 0 and key is not None:
                return False
            if revision and (key is None or key.mod_revision != revision):
                return False
            return store.put(CONFIG, value, writer=self.name)

        return (yield from self._rpc(apply))

    def set_history(self, history: list[HistoryEntry]) -> Op[bool]:
        rows = tuple(history)
        return (yield from self._rpc(lambda: self.world.etcd.put(HISTORY, rows, writer=self.name)))

    def set_failsafe(self, members: tuple[tuple[str, str], ...] | None) -> Op[bool]:
        """Etcd3Dcs.set_failsafe: put `/failsafe` (None: delete it)."""
        store = self.world.etcd
        if members is None:
            return (yield from self._rpc(lambda: store.delete(FAILSAFE, writer=self.name)))
        return (yield from self._rpc(lambda: store.put(FAILSAFE, members, writer=self.name)))

    def delete_failover(self, revision: int | None = None) -> Op[bool]:
        store = self.world.etcd

        def apply() -> bool:
            key = store.get(FAILOVER)
            if key is None or (revision is not None and key.mod_revision != revision):
                return False
            return store.delete(FAILOVER, writer=self.name)

        return (yield from self._rpc(apply))

    def set_sync(self, value: SyncState, revision: int | None = None) -> Op[bool]:
        """Etcd3Dcs.set_sync: put `sync` under the revision guard (None: always, 0: only if absent,
        n: only if still at mod_revision n)."""
        store = self.world.etcd

        def apply() -> bool:
            if not _revision_matches(store, SYNC, revision):
                return False
            return store.put(SYNC, value, writer=self.name)

        return (yield from self._rpc(apply))

    def delete_sync(self, revision: int | None = None) -> Op[bool]:
        """Etcd3Dcs.delete_sync: delete `sync` under the same revision guard."""
        store = self.world.etcd

        def apply() -> bool:
            if not _revision_matches(store, SYNC, revision):
                return False
            return store.delete(SYNC, writer=self.name)

        return (yield from self._rpc(apply))


def _revision_matches(store: EtcdStore, name: str, revision: int | None) -> bool:
    """etcd3._revision_guard: None = unconditional, 0 = must not exist, n = still at mod_revision n."""
    if revision is None:
        return True
    key = store.get(name)
    if revision == 0:
        return key is None
    return key is not None and key.mod_revision == revision
