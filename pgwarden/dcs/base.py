"""The one small interface every DCS backend implements.

A backend is a thin adapter: it turns the store's primitives (leases, atomic create, compare-and-swap,
watches) into these calls and the store's answers into `pgwarden.model` values (through the shared,
pure `pgwarden.dcs.codec`). It makes no HA decision. Every call has an explicit timeout and turns
any failure to reach the store into `DcsError`; a lost race (key already exists, revision moved,
owner differs) is an ordinary `False`, never an exception.

Key layout, identical to Patroni's: `/<namespace>/<scope>/{initialize,config,leader,members/<name>,
status,failover,sync,history,failsafe}`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

from pgwarden.dcs import codec
from pgwarden.model import ClusterStatus, ClusterView, HistoryEntry, SyncState


class DcsError(Exception):
    """The store could not be reached, timed out, or answered with an error."""


class Dcs(abc.ABC):
    """One agent's (or one CLI's) connection to the store for one cluster scope."""

    def __init__(self, *, namespace: str, scope: str, name: str) -> None:
        self.namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.scope = scope
        self.name = name

    @property
    def prefix(self) -> str:
        """`/<namespace>/<scope>/`, with the trailing slash."""
        return f"{self.namespace}/{self.scope}/"

    # -- lifecycle -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def close(self) -> None:
        """Stop watches, revoke nothing (the lease simply expires), close connections."""

    @abc.abstractmethod
    async def set_ttl(self, ttl: int) -> None:
        """The lease TTL for keys this agent owns. A change takes effect with the next lease."""

    # -- reading -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_cluster(self) -> ClusterView:
        """One consistent (linearizable) read of the whole scope."""

    @abc.abstractmethod
    async def wait_for_change(self, timeout: float) -> bool:
        """Block until the leader key changes (or is deleted / expires), or `timeout` seconds pass.

        True if woken by a change. Backed by a watch, so replicas react at once when the leader goes.
        """

    # -- bootstrap ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def initialize(self, sysid: str = "", *, create_new: bool = True) -> bool:
        """create_new: atomically create `initialize` (the bootstrap race); False if it exists.
        Otherwise overwrite it with `sysid` (after bootstrap, by the lock holder)."""

    @abc.abstractmethod
    async def cancel_initialization(self) -> None:
        """Delete `initialize` after a failed bootstrap."""

    # -- the leader lock ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def acquire_leader(self) -> bool:
        """Create `leader` = own name on own lease, only if absent. False if somebody holds it."""

    @abc.abstractmethod
    async def update_leader(self, status: ClusterStatus | None = None) -> bool:
        """Refresh the lease behind `leader`, checking that the key still holds our name.

        False (not an exception) if the key is gone or names somebody else. On success, writes
        `status` too when given and changed.
        """

    @abc.abstractmethod
    async def delete_leader(self, status: ClusterStatus | None = None) -> bool:
        """Delete `leader` only if it holds our name (writing `status` first when given)."""

    @abc.abstractmethod
    async def keepalive(self) -> bool:
        """Refresh this agent's lease (member key, and leader key if held). False if the lease is gone."""

    def leads_on_lease(self) -> bool:
        """Is our leader key on the lease the keepalive refreshes (acquired or renewed on it, not released)?
        A keepalive on a lease granted after the leader key expired proves nothing about that key."""
        return False

    async def publish_transient(self, relative: str, text: str) -> None:
        """Write `relative`, a key under the scope that this connection alone writes (a `pgwarden route`
        sidecar's `routers/<name>`), so that it vanishes at most `ttl` seconds after the writer stops: on
        the store's lease, key TTL or session. Call it at least every ttl/3 seconds; an unchanged value is
        only kept alive. Raises DcsError when the store cannot be reached."""
        raise DcsError(f"{type(self).__name__}: this store offers no transient keys")

    # -- members -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def touch_member(self, data: Mapping[str, Any]) -> bool:
        """Write `members/<own name>` (on the lease). Skipped when unchanged since the last write."""

    @abc.abstractmethod
    async def delete_member(self, name: str) -> bool:
        """Remove a member key (operator action or cleanup)."""

    @abc.abstractmethod
    async def delete_cluster(self) -> int:
        """Delete every key of this scope (`pgwarden remove`, after the operator's confirmations).
        Returns how many keys were deleted."""

    # -- compare-and-swap values -----------------------------------------------------------------
    @abc.abstractmethod
    async def set_config(self, value: Mapping[str, Any], revision: int | None = None) -> bool:
        """Write `config`; with `revision`, only if it is still at that revision (0: only if absent)."""

    @abc.abstractmethod
    async def set_failover(self, value: Mapping[str, Any], revision: int | None = None) -> bool:
        """Write `failover` (JSON with leader/member/scheduled_at), CAS as set_config."""

    @abc.abstractmethod
    async def delete_failover(self, revision: int | None = None) -> bool:
        """Delete `failover`; with `revision`, only if still at that revision."""

    @abc.abstractmethod
    async def set_sync(self, value: SyncState, revision: int | None = None) -> bool:
        """Write `sync`, CAS as set_config."""

    @abc.abstractmethod
    async def delete_sync(self, revision: int | None = None) -> bool:
        """Delete `sync`; with `revision`, only if still at that revision."""

    @abc.abstractmethod
    async def set_history(self, history: Sequence[HistoryEntry]) -> bool:
        """Overwrite `history` (only the leader writes it, right after a promotion)."""

    @abc.abstractmethod
    async def set_failsafe(self, value: Mapping[str, str] | None) -> bool:
        """Overwrite `failsafe` with `{member name: api_url}`, or delete it when None (only the leader
        writes it, in failsafe mode: a plain write, no compare-and-swap)."""


class KeyValueDcs(Dcs):
    """A backend whose compare-and-swap values are plain keys (etcd's v2 and v3 APIs): each one a text write or
    delete, the revision compared by the store. Subclasses give the two primitives."""

    @abc.abstractmethod
    async def _cas_put(self, relative: str, text: str, revision: int | None) -> bool:
        """Write `text` at `relative`: with `revision`, only if the key is still at it (0: only if absent)."""

    @abc.abstractmethod
    async def _cas_delete(self, relative: str, revision: int | None) -> bool:
        """Delete `relative`: with `revision`, only if the key is still at it; without, True when absent too."""

    async def set_config(self, value: Mapping[str, Any], revision: int | None = None) -> bool:
        return await self._cas_put(codec.CONFIG, codec.config_to_json(value), revision)

    async def set_failover(self, value: Mapping[str, Any], revision: int | None = None) -> bool:
        return await self._cas_put(codec.FAILOVER, codec.failover_to_json(value), revision)

    async def delete_failover(self, revision: int | None = None) -> bool:
        return await self._cas_delete(codec.FAILOVER, revision)

    async def set_sync(self, value: SyncState, revision: int | None = None) -> bool:
        return await self._cas_put(codec.SYNC, codec.sync_to_json(value), revision)

    async def delete_sync(self, revision: int | None = None) -> bool:
        return await self._cas_delete(codec.SYNC, revision)

    async def set_history(self, history: Sequence[HistoryEntry]) -> bool:
        return await self._cas_put(codec.HISTORY, codec.history_to_json(history), None)

    async def set_failsafe(self, value: Mapping[str, str] | None) -> bool:
        if value is None:
            return await self._cas_delete(codec.FAILSAFE, None)
        return await self._cas_put(codec.FAILSAFE, codec.failsafe_to_json(value), None)
