"""The etcd v3 backend, over etcd's JSON gateway (`pgwarden.dcs.etcd_http`; etcd 3.4 and later).

How the DCS primitives map onto etcd v3:
- one lease per agent (TTL = `ttl`); the own member key and the `leader` key are attached to it, so
  both vanish when the agent stops refreshing it;
- the bootstrap and leader races are transactions guarded by `create_revision == 0` (key absent);
- owner checks compare the key's value (and, for renewals, its lease) with ours;
- compare-and-swap on `config`, `failover` and `sync` compares `mod_revision`;
- `get_cluster` is one linearizable range read of the whole scope;
- a background task watches the scope prefix, so `wait_for_change` wakes as soon as `leader` changes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pgwarden.aio import cancel_bounded
from pgwarden.dcs import codec
from pgwarden.dcs.base import DcsError, KeyValueDcs
from pgwarden.dcs.etcd_http import (
    EtcdClient,
    EtcdError,
    Json,
    WatchBatch,
    compare_absent,
    compare_lease,
    compare_mod_revision,
    compare_value,
    op_delete,
    op_put,
    prefix_end,
)
from pgwarden.dcs.readback import LeaderMarks, RetryPause, ScopeNotes, still_written
from pgwarden.model import ClusterStatus, ClusterView, status_with_timeline_floor

log = logging.getLogger(__name__)

_T = TypeVar("_T")



class _LeaseNotFound(DcsError):
    """etcd no longer knows our lease (it expired): grant a new one and try again."""


@dataclass(frozen=True, slots=True)
class _Lease:
    id: int
    ttl: int


def _revision_guard(key: bytes, revision: int | None) -> list[Json]:
    """CAS condition: None = unconditional, 0 = must not exist, n = still at mod_revision n."""
    if revision is None:
        return []
    if revision == 0:
        return [compare_absent(key)]
    return [compare_mod_revision(key, revision)]


class Etcd3Dcs(KeyValueDcs):
    """One agent's (or CLI's) view of one scope in etcd v3. Create it, then `await connect()`."""

    def __init__(
        self,
        *,
        hosts: Sequence[tuple[str, int]],
        namespace: str,
        scope: str,
        name: str,
        ttl: int,
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        readonly: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(namespace=namespace, scope=scope, name=name)
        self._client = EtcdClient(hosts, timeout=timeout, username=username, password=password,
                                  ssl_context=ssl_context)
        self._ttl = ttl
        self._timeout = timeout
        self._readonly = readonly
        self._lease: _Lease | None = None
        self._leader_lease: int | None = None  # the lease our leader key was last written or confirmed on
        self._member_written: tuple[str, int] | None = None  # (JSON, lease id) of the last member write
        self._status_written: str | None = None
        self._transient_written: dict[str, tuple[str, int]] = {}  # relative key -> (value, lease id) written
        self._transient_refreshed = 0.0  # monotonic time of publish_transient's last keepalive
        self._timeline_floor = 0  # the highest reserved timeline read or written (model.status_with_timeline_floor)
        self._marks = LeaderMarks()  # leader changes the watch reported against what the caller has seen
        self._watch_from = 0
        self._watch_task: asyncio.Task[None] | None = None
        self._notes = ScopeNotes(scope)
        self._closed = False

    # -- keys ----------------------------------------------------------------------------------------
    def _key(self, relative: str) -> bytes:
        return (self.prefix + relative).encode()

    @property
    def _member_key(self) -> bytes:
        return self._key(codec.MEMBERS + self.name)

    # -- connection ------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Start the leader watch (not in read-only mode). No network call: etcd may still be down."""
        if not self._readonly:
            self._ensure_watch()

    async def close(self) -> None:
        self._closed = True
        task, self._watch_task = self._watch_task, None
        await cancel_bounded(task, self._timeout)
        await self._client.close()

    async def _call(self, what: str, request: Callable[[EtcdClient], Awaitable[_T]]) -> _T:
        """Run one request (the client bounds it by the timeout and tries the other hosts); errors -> DcsError."""
        if self._closed:
            raise DcsError("etcd3: connection is closed")
        try:
            return await request(self._client)
        except EtcdError as exc:
            if exc.kind == "lease":
                raise _LeaseNotFound(f"{what} failed: {exc}") from exc
            if exc.kind == "timeout":
                raise DcsError(f"{exc} ({what})") from exc
            raise DcsError(f"{what} failed: {exc}") from exc

    # -- raw operations ------------------------------------------------------------------------------
    async def _txn(self, what: str, compare: list[Json], success: list[Json]) -> tuple[bool, int]:
        """One transaction; (succeeded, revision after it)."""
        return await self._call(what, lambda client: client.txn(compare, success))

    async def _delete_key(self, what: str, key: bytes, compare: list[Json]) -> bool:
        return (await self._txn(what, compare, [op_delete(key)]))[0]

    # -- the lease -------------------------------------------------------------------------------------
    async def set_ttl(self, ttl: int) -> None:
        # The next lease use grants a new lease with this TTL and moves our keys onto it.
        self._ttl = ttl

    async def _lease_id(self) -> int:
        """The current lease; a new one when there is none yet or the TTL changed."""
        if self._lease is None or self._lease.ttl != self._ttl:
            ttl = self._ttl
            self._lease = _Lease(await self._call("lease grant", lambda client: client.lease_grant(ttl)), ttl)
            self._member_written = None
        return self._lease.id

    def _forget_lease(self) -> None:
        self._lease = None
        self._member_written = None

    async def _refresh(self, lease_id: int) -> bool:
        """One keepalive; False when etcd says the lease is gone (expired or revoked)."""
        return await self._call("lease keepalive", lambda client: client.lease_keepalive(lease_id)) > 0

    async def _fresh_lease(self) -> tuple[int, bool]:
        """A lease refreshed just now: (id, whether it had expired and was replaced)."""
        had_lease = self._lease is not None and self._lease.ttl == self._ttl
        lease_id = await self._lease_id()
        if not had_lease or await self._refresh(lease_id):
            return lease_id, False
        log.warning("etcd lease %x expired; granting a new one", lease_id)
        self._forget_lease()
        return await self._lease_id(), True

    async def _with_lease(self, operation: Callable[[int], Awaitable[_T]]) -> _T:
        """Run `operation(lease_id)`; if etcd lost the lease meanwhile, once more with a new lease."""
        try:
            return await operation(await self._lease_id())
        except _LeaseNotFound:
            self._forget_lease()
            return await operation(await self._lease_id())

    async def keepalive(self) -> bool:
        _, replaced = await self._fresh_lease()
        return not replaced

    def leads_on_lease(self) -> bool:
        return self._lease is not None and self._lease.id == self._leader_lease

    # -- reading -----------------------------------------------------------------------------------
    async def get_cluster(self) -> ClusterView:
        prefix = self.prefix.encode()
        response = await self._call("read cluster", lambda client: client.range(prefix, prefix_end(prefix)))
        kvs = {
            kv.key[len(prefix):].decode("utf-8", "replace"): (kv.value.decode("utf-8", "replace"), kv.mod_revision)
            for kv in response.kvs
        }
        revision = response.revision
        decoded = codec.decode_cluster(self.scope, kvs, revision=revision)
        self._timeline_floor = max(self._timeline_floor, decoded.view.status.timeline or 0)
        self._notes.report(decoded.notes)
        self._marks.saw(revision)
        self._check_member_cache(kvs.get(codec.MEMBERS + self.name))
        status = kvs.get(codec.STATUS)
        self._status_written = still_written(self._status_written, status[0] if status else None)
        return decoded.view

    def _check_member_cache(self, stored: tuple[str, int] | None) -> None:
        """Someone deleted or rewrote our member key: the next touch must write it again."""
        if self._member_written and (stored is None or stored[0] != self._member_written[0]):
            self._member_written = None

    async def wait_for_change(self, timeout: float) -> bool:
        self._ensure_watch()
        return await self._marks.wait(timeout)

    # -- the watch -----------------------------------------------------------------------------------
    def _ensure_watch(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch_forever(), name=f"etcd3-watch-{self.scope}"
            )

    async def _watch_forever(self) -> None:
        """Keep a watch on the scope prefix alive; never raises (etcd being down is normal)."""
        pause = RetryPause()
        while not self._closed:
            try:
                async for _ in self._watch_stream():
                    pause.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd down, a broken stream, a closed client: retry after a pause
                if isinstance(exc, EtcdError) and exc.kind == "compacted":
                    self._watch_from = 0  # history is gone: restart from now and make the caller re-read
                    self._marks.force()
                pause.failed(f"etcd watch on {self.prefix}", exc)
            await pause.sleep()

    async def _watch_stream(self) -> AsyncIterator[None]:
        """Yield once when the watch is established, then once per batch of events (after handling it)."""
        prefix = self.prefix.encode()
        start = self._watch_from + 1 if self._watch_from else 0
        stream = self._client.watch(prefix, prefix_end(prefix), start_revision=start)
        try:
            async for batch in stream:
                self._on_batch(batch)
                yield None
        finally:
            await stream.aclose()

    def _on_batch(self, batch: WatchBatch) -> None:
        leader_key = self._key(codec.LEADER)
        for event in batch.events:
            revision = event.kv.mod_revision
            self._watch_from = max(self._watch_from, revision)
            if event.kv.key == leader_key:
                self._marks.report(revision)
            elif event.kv.key == self._member_key and event.kind == "DELETE":
                self._member_written = None

    # -- bootstrap ---------------------------------------------------------------------------------
    async def initialize(self, sysid: str = "", *, create_new: bool = True) -> bool:
        key = self._key(codec.INITIALIZE)
        compare = [compare_absent(key)] if create_new else []
        return (await self._txn("initialize", compare, [op_put(key, sysid.encode())]))[0]

    async def cancel_initialization(self) -> None:
        await self._delete_key("cancel initialization", self._key(codec.INITIALIZE), [])

    # -- the leader lock ---------------------------------------------------------------------------
    async def acquire_leader(self) -> bool:
        await self._fresh_lease()  # do not take the lock on a lease that is about to run out
        key = self._key(codec.LEADER)

        async def attempt(lease_id: int) -> bool:
            succeeded, revision = await self._txn("acquire leader", [compare_absent(key)],
                                                [op_put(key, self.name.encode(), lease_id)])
            if succeeded:
                self._note_own_write(revision)
                self._leader_lease = lease_id
            return succeeded

        return await self._with_lease(attempt)

    async def update_leader(self, status: ClusterStatus | None = None) -> bool:
        """Refresh the lease first, then check ownership in the same transaction that writes status.

        True therefore means: the lease was refreshed just now and `leader` holds our name on it.
        """
        lease_id, _ = await self._fresh_lease()
        key = self._key(codec.LEADER)
        status_text, status_ops = self._status_ops(status)
        owned = [compare_value(key, self.name.encode())]
        succeeded, _ = await self._txn("update leader", [*owned, compare_lease(key, lease_id)], status_ops)
        if not succeeded:
            # Still ours by name but on an older lease (expired and re-granted, or a TTL change):
            # move it onto the current lease, still only if it names us.
            succeeded, revision = await self._txn(
                "re-attach leader", owned, [op_put(key, self.name.encode(), lease_id), *status_ops]
            )
            if succeeded:
                self._note_own_write(revision)
        if succeeded:
            self._leader_lease = lease_id
        if succeeded and status_text is not None:
            self._status_written = status_text
        return succeeded

    async def delete_leader(self, status: ClusterStatus | None = None) -> bool:
        key = self._key(codec.LEADER)
        status_text, status_ops = self._status_ops(status)
        succeeded, revision = await self._txn("delete leader", [compare_value(key, self.name.encode())],
                                                [*status_ops, op_delete(key)])
        if succeeded:
            self._leader_lease = None
            self._note_own_write(revision)
            if status_text is not None:
                self._status_written = status_text
        return succeeded

    def _status_ops(self, status: ClusterStatus | None) -> tuple[str | None, list[Any]]:
        """The put for `status`, unless there is none or it is what we wrote last."""
        if status is None:
            return None, []
        status = status_with_timeline_floor(status, self._timeline_floor)
        self._timeline_floor = max(self._timeline_floor, status.timeline or 0)
        text = codec.status_to_json(status)
        if text == self._status_written:
            return None, []
        return text, [op_put(self._key(codec.STATUS), text.encode())]

    def _note_own_write(self, revision: int) -> None:
        # Our own change of `leader` is no news to us: do not let the watch wake the caller for it.
        self._marks.saw(revision)

    # -- members -----------------------------------------------------------------------------------
    async def touch_member(self, data: Mapping[str, Any]) -> bool:
        text = codec.member_to_json(data)

        async def attempt(lease_id: int) -> bool:
            if self._member_written == (text, lease_id):
                return True
            await self._txn("write member", [], [op_put(self._member_key, text.encode(), lease_id)])
            self._member_written = (text, lease_id)
            return True

        return await self._with_lease(attempt)

    async def publish_transient(self, relative: str, text: str) -> None:
        # On this connection's lease, kept alive here (a sidecar runs no keepalive of its own).
        now = time.monotonic()
        if self._lease is None or now - self._transient_refreshed > self._ttl / 3:
            lease_id, _ = await self._fresh_lease()
            self._transient_refreshed = now
        else:
            lease_id = self._lease.id
        if self._transient_written.get(relative) == (text, lease_id):
            return

        async def attempt(lease: int) -> None:
            await self._txn(f"write {relative}", [], [op_put(self._key(relative), text.encode(), lease)])
            self._transient_written[relative] = (text, lease)

        await self._with_lease(attempt)

    async def delete_member(self, name: str) -> bool:
        if name == self.name:
            self._member_written = None
        key = self._key(codec.MEMBERS + name)
        return await self._call(f"delete member {name}", lambda client: client.delete(key)) > 0

    async def delete_cluster(self) -> int:
        prefix = self.prefix.encode()
        return await self._call("delete the cluster's keys", lambda client: client.delete(prefix, prefix_end(prefix)))

    # -- compare-and-swap values -----------------------------------------------------------------
    async def _cas_put(self, relative: str, text: str, revision: int | None) -> bool:
        key = self._key(relative)
        return (await self._txn(f"write {relative}", _revision_guard(key, revision), [op_put(key, text.encode())]))[0]

    async def _cas_delete(self, relative: str, revision: int | None) -> bool:
        key = self._key(relative)
        return await self._delete_key(f"delete {relative}", key, _revision_guard(key, revision))

