"""A simulated etcd (the server side) with the semantics pgwarden relies on.

- Leases with a TTL counted on the store's clock (global time); a key attached to a lease vanishes
  when the lease expires. Keepalives move the expiry; an expired lease is gone for good.
- Atomic create (`create_if_absent`), compare-and-swap on value, owner and lease, linearizable reads:
  every operation applies at one instant, in event order.
- Watches: `on_leader_change` is called on every change of the `leader` key (put, delete, expiry),
  with the writer's name (None for an expiry), so agents' watch processes can wake their loops.

Values are kept as model objects (Member, ClusterStatus, ...) rather than JSON: the codec has its
own tests, and the simulator's time is better spent on interleavings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pgwarden.model import ClusterStatus, ClusterView, LeaderKey, Versioned

LEADER, INITIALIZE, CONFIG = "leader", "initialize", "config"
STATUS, HISTORY, FAILOVER, SYNC, FAILSAFE = "status", "history", "failover", "sync", "failsafe"
MEMBER_PREFIX = "members/"


@dataclass(slots=True)
class Key:
    value: Any
    mod_revision: int
    lease: int = 0


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int
    expires_at: float
    owner: str


@dataclass(slots=True)
class EtcdStore:
    """The keyspace of one cluster scope, its leases and its revision counter."""

    scope: str
    schedule_expiry: Callable[[float, int], None]
    on_leader_change: Callable[[int, str | None], None]
    keys: dict[str, Key] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    revision: int = 1
    next_lease: int = 1000
    _view: ClusterView | None = None
    _members: tuple[Any, ...] | None = None  # the member values, sorted by name (cached)
    _member_names: list[str] | None = None  # the member keys, sorted (cached until one appears or goes)
    _config_view: Versioned | None = None
    _leader_view: LeaderKey | None = None

    # -- leases --------------------------------------------------------------------------------------

    def grant(self, now: float, ttl: int, owner: str) -> int:
        self.next_lease += 1
        lease = Lease(self.next_lease, ttl, now + ttl, owner)
        self.leases[lease.id] = lease
        self.schedule_expiry(lease.expires_at, lease.id)
        return lease.id

    def refresh(self, now: float, lease_id: int) -> bool:
        """A keepalive: the lease lives `ttl` from now. Its pending expiry check is not moved: when
        it fires early it re-arms itself for the new instant (one pending event per lease)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return False
        lease.expires_at = now + lease.ttl
        return True

    def expire(self, now: float, lease_id: int) -> None:
        """Called at a lease's (possibly outdated) expiry instant: drop it and its keys if really due."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return
        if lease.expires_at > now:
            self.schedule_expiry(lease.expires_at, lease.id)
            return
        del self.leases[lease_id]
        for name in [k for k, v in self.keys.items() if v.lease == lease_id]:
            self._delete(name, writer=None)

    def lease_alive(self, lease_id: int) -> bool:
        return lease_id in self.leases

    # -- keys ------------------------------------------------------------------------------------------

    def get(self, name: str) -> Key | None:
        return self.keys.get(name)

    def put(self, name: str, value: Any, *, lease: int = 0, writer: str | None = None) -> bool:
        """Put; False (nothing written) when `lease` is not a live lease (etcd: lease not found)."""
        if lease and lease not in self.leases:
            return False
        self.revision += 1
        keys = self.keys
        if name not in keys and name.startswith(MEMBER_PREFIX):
            self._member_names = None
        keys[name] = Key(value, self.revision, lease)
        self._changed(name, writer)
        return True

    def create_if_absent(self, name: str, value: Any, *, lease: int = 0, writer: str | None = None) -> bool:
        if name in self.keys:
            return False
        return self.put(name, value, lease=lease, writer=writer)

    def delete(self, name: str, *, writer: str | None = None) -> bool:
        if name not in self.keys:
            return False
        self._delete(name, writer)
        return True

    def _delete(self, name: str, writer: str | None) -> None:
        self.revision += 1
        del self.keys[name]
        if name.startswith(MEMBER_PREFIX):
            self._member_names = None
        self._changed(name, writer)

    def _changed(self, name: str, writer: str | None) -> None:
        self._view = None
        if name.startswith(MEMBER_PREFIX):
            self._members = None
        if name == LEADER:
            self.on_leader_change(self.revision, writer)

    # -- reads -------------------------------------------------------------------------------------------

    def view(self) -> ClusterView:
        """One linearizable read of the whole scope (cached until the next write)."""
        if self._view is None:
            self._view = self._build_view()
        return self._view

    def _build_view(self) -> ClusterView:
        keys = self.keys
        leader = keys.get(LEADER)
        init = keys.get(INITIALIZE)
        config = keys.get(CONFIG)
        status = keys.get(STATUS)
        history = keys.get(HISTORY)
        sync = keys.get(SYNC)
        failover = keys.get(FAILOVER)
        failsafe = keys.get(FAILSAFE)
        members = self._members
        if members is None:
            names = self._member_names
            if names is None:
                names = self._member_names = sorted(k for k in keys if k.startswith(MEMBER_PREFIX))
            members = self._members = tuple(keys[k].value for k in names)
        return ClusterView(
            scope=self.scope,
            initialize=init.value if init else None,
            config=self._versioned(config) if config else None,
            leader=self._leader_key(leader) if leader else None,
            members=members,
            status=status.value if status else _NO_STATUS,
            history=history.value if history else (),
            sync=replace(sync.value, revision=sync.mod_revision) if sync else None,
            failover=replace(failover.value, revision=failover.mod_revision) if failover else None,
            revision=self.revision,
            failsafe=dict(failsafe.value) if failsafe else None,
        )

    def _versioned(self, key: Key) -> Versioned:
        cached = self._config_view
        if cached is None or cached.revision != key.mod_revision:
            cached = self._config_view = Versioned(key.value, key.mod_revision)
        return cached

    def _leader_key(self, key: Key) -> LeaderKey:
        cached = self._leader_view
        if cached is None or cached.revision != key.mod_revision:
            cached = self._leader_view = LeaderKey(key.value, key.mod_revision)
        return cached

    @property
    def leader_name(self) -> str | None:
        key = self.keys.get(LEADER)
        return str(key.value) if key else None

    @property
    def config_value(self) -> Mapping[str, Any]:
        key = self.keys.get(CONFIG)
        return key.value if key else {}


_NO_STATUS = ClusterStatus()


def member_key(name: str) -> str:
    return MEMBER_PREFIX + name

