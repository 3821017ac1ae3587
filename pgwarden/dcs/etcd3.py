"""The etcd v3 backend, over gRPC with `aetcd` (works with etcd 3.4 and later).

How the DCS primitives map onto etcd v3:
- one lease per agent (TTL = `ttl`); the own member key and the `leader` key are attached to it, so
  both vanish when the agent stops refreshing it;
- the bootstrap and leader races are transactions guarded by `create_revision == 0` (key absent);
- owner checks compare the key's value (and, for renewals, its lease) with ours;
- compare-and-swap on `config`, `failover` and `sync` compares `mod_revision`;
- `get_cluster` is one linearizable range read of the whole scope;
- a background task watches the scope prefix, so `wait_for_change` wakes as soon as `leader` changes.

aetcd gives us the channel, authentication, the generated protobuf stubs, lease keepalive and the
watch stream. Transactions and ranges are built from its protobuf messages directly, because its
helper API has no lease comparison and hides the response header (the revision) we need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
from aetcd import exceptions as aetcd_errors
from aetcd import rpc
from aetcd.utils import prefix_range_end

from pgwarden.dcs import codec
from pgwarden.dcs.base import Dcs, DcsError
from pgwarden.model import ClusterStatus, ClusterView, HistoryEntry, SyncState

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# gRPC's default reconnect backoff grows to two minutes: far too slow to notice that etcd is back.
# Keepalive pings detect a silently dead connection (etcd refuses pings more often than every 5 s).
_GRPC_OPTIONS: Mapping[str, int] = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}
_TRANSPORT_ERRORS = (aetcd_errors.ClientError, rpc.RpcError, rpc.BaseError, TimeoutError, OSError)
"""What talking to etcd can raise; anything else is a bug and propagates as such."""
_WATCH_BACKOFF_MIN = 0.5
_WATCH_BACKOFF_MAX = 5.0


class _LeaseNotFound(DcsError):
    """etcd no longer knows our lease (it expired): grant a new one and try again."""


@dataclass(frozen=True, slots=True)
class _Lease:
    id: int
    ttl: int


# -- protobuf builders (pure) ------------------------------------------------------------------------


def _compare(key: bytes, target: str, result: str = "EQUAL", **value: Any) -> Any:
    return rpc.Compare(key=key, target=getattr(rpc.Compare, target), result=getattr(rpc.Compare, result), **value)


def _value_is(key: bytes, value: str) -> Any:
    return _compare(key, "VALUE", value=value.encode())


def _lease_is(key: bytes, lease_id: int) -> Any:
    return _compare(key, "LEASE", lease=lease_id)


def _absent(key: bytes) -> Any:
    return _compare(key, "CREATE", create_revision=0)


def _revision_guard(key: bytes, revision: int | None) -> list[Any]:
    """CAS condition: None = unconditional, 0 = must not exist, n = still at mod_revision n."""
    if revision is None:
        return []
    if revision == 0:
        return [_absent(key)]
    return [_compare(key, "MOD", mod_revision=revision)]


def _put(key: bytes, value: str, lease_id: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value.encode(), lease=lease_id))


def _delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _error_kind(exc: Exception) -> str:
    """'timeout' | 'unavailable' | 'auth' | 'lease' | 'other', for both raw gRPC and aetcd errors."""
    if isinstance(exc, TimeoutError | aetcd_errors.ConnectionTimeoutError | aetcd_errors.WatchTimeoutError):
        return "timeout"
    code = exc.code() if isinstance(exc, rpc.AioRpcError) else None
    details = _details(exc)
    if "lease not found" in details:
        return "lease"
    if code == rpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code == rpc.StatusCode.UNAVAILABLE or isinstance(exc, aetcd_errors.ConnectionFailedError):
        return "unavailable"
    if code == rpc.StatusCode.UNAUTHENTICATED or isinstance(exc, aetcd_errors.UnauthenticatedError):
        return "auth"
    return "other"


def _being_cancelled() -> bool:
    """Whether the current task itself is being cancelled (not merely one of its gRPC calls)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _details(exc: Exception) -> str:
    if isinstance(exc, rpc.AioRpcError):
        return str(exc.details() or exc.code())
    return str(exc) or type(exc).__name__


class Etcd3Dcs(Dcs):
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
    ) -> None:
        super().__init__(namespace=namespace, scope=scope, name=name)
        if not hosts:
            raise ValueError("etcd3: at least one host is required")
        if (username is None) != (password is None):
            raise ValueError("etcd3: username and password must be given together")
        self._hosts = list(hosts)
        self._host_index = 0
        self._ttl = ttl
        self._timeout = timeout
        self._username = username
        self._password = password
        self._readonly = readonly
        self._client: aetcd.Client | None = None
        self._client_lock = asyncio.Lock()
        self._lease: _Lease | None = None
        self._member_written: tuple[str, int] | None = None  # (JSON, lease id) of the last member write
        self._status_written: str | None = None
        self._seen_revision = 0  # revision of the last read (or own write) the caller has seen
        self._leader_revision = 0  # revision of the last leader change the watch reported
        self._forced_wake = False
        self._leader_changed = asyncio.Event()
        self._watch_from = 0
        self._watch_task: asyncio.Task[None] | None = None
        self._last_notes: tuple[str, ...] = ()
        self._closed = False

    # -- keys ----------------------------------------------------------------------------------------
    def _key(self, relative: str) -> bytes:
        return (self.prefix + relative).encode()

    @property
    def _member_key(self) -> bytes:
        return self._key(codec.MEMBERS + self.name)

    @property
    def _host_label(self) -> str:
        host, port = self._hosts[self._host_index]
        return f"{host}:{port}"

    # -- connection ------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Start the leader watch (not in read-only mode). No network call: etcd may still be down."""
        if not self._readonly:
            self._ensure_watch()

    async def close(self) -> None:
        self._closed = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        await self._drop_client(rotate=False)

    async def _connected_client(self) -> Any:
        async with self._client_lock:
            if self._closed:
                raise DcsError("etcd3: connection is closed")
            if self._client is None:
                host, port = self._hosts[self._host_index]
                client = aetcd.Client(
                    host=host,
                    port=port,
                    username=self._username,
                    password=self._password,
                    timeout=self._timeout,
                    options=dict(_GRPC_OPTIONS),
                )
                self._client = client  # set first, so a failed connect is closed by _drop_client
                await client.connect()  # authenticates when credentials are set
            return self._client

    async def _drop_client(self, *, rotate: bool) -> None:
        """Close the channel (a fresh one reconnects at once); optionally move on to the next host."""
        async with self._client_lock:
            client, self._client = self._client, None
            if rotate:
                self._host_index = (self._host_index + 1) % len(self._hosts)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self._timeout)

    async def _call(self, what: str, rpc_call: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run one RPC under the timeout. Unreachable host: try the next ones. Anything else: DcsError.

        Only errors that mean "the request did not get through" are retried; a timeout may have
        been applied, so it is reported (the next call goes to the next host).
        """
        attempts = max(2, len(self._hosts))
        for attempt in range(1, attempts + 1):
            label = self._host_label
            try:
                client = await asyncio.wait_for(self._connected_client(), self._timeout)
                return await asyncio.wait_for(rpc_call(client), self._timeout)
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    raise
                # Not our cancellation: another task's call failed and closed the shared channel,
                # and gRPC cancels every call still in flight on it. Like a timeout, the request may
                # or may not have been applied. Letting CancelledError escape would kill the caller
                # (the HA loop or the lease keepalive) as if the agent were stopping.
                raise DcsError(f"etcd {label}: {what} interrupted: the connection was reset") from exc
            except _TRANSPORT_ERRORS as exc:
                kind = _error_kind(exc)
                message = f"etcd {label}: {what} failed: {_details(exc)}"
                if kind == "lease":
                    raise _LeaseNotFound(message) from exc
                if kind == "other":
                    raise DcsError(message) from exc
                await self._drop_client(rotate=kind != "auth")
                if kind == "timeout":
                    raise DcsError(f"etcd {label}: {what} timed out after {self._timeout}s") from exc
                if attempt == attempts:
                    raise DcsError(message) from exc
                log.debug("%s; retrying on %s", message, self._host_label)
        raise AssertionError("unreachable")

    # -- raw operations ------------------------------------------------------------------------------
    async def _txn(self, what: str, compare: list[Any], success: list[Any]) -> tuple[bool, int]:
        """One transaction; (succeeded, revision after it)."""
        request = rpc.TxnRequest(compare=compare, success=success, failure=[])

        async def call(client: Any) -> Any:
            return await client.kvstub.Txn(request, timeout=self._timeout, metadata=client.metadata)

        response = await self._call(what, call)
        return bool(response.succeeded), int(response.header.revision)

    async def _range_prefix(self) -> Any:
        prefix = self.prefix.encode()
        request = rpc.RangeRequest(key=prefix, range_end=prefix_range_end(prefix))

        async def call(client: Any) -> Any:
            return await client.kvstub.Range(request, timeout=self._timeout, metadata=client.metadata)

        return await self._call("read cluster", call)

    async def _delete_key(self, what: str, key: bytes, compare: list[Any]) -> bool:
        return (await self._txn(what, compare, [_delete(key)]))[0]

    # -- the lease -------------------------------------------------------------------------------------
    async def set_ttl(self, ttl: int) -> None:
        # The next lease use grants a new lease with this TTL and moves our keys onto it.
        self._ttl = ttl

    async def _lease_id(self) -> int:
        """The current lease; a new one when there is none yet or the TTL changed."""
        if self._lease is None or self._lease.ttl != self._ttl:
            ttl = self._ttl

            async def call(client: Any) -> Any:
                request = rpc.LeaseGrantRequest(TTL=ttl)
                return await client.leasestub.LeaseGrant(request, timeout=self._timeout, metadata=client.metadata)

            response = await self._call("lease grant", call)
            self._lease = _Lease(int(response.ID), ttl)
            self._member_written = None
        return self._lease.id

    def _forget_lease(self) -> None:
        self._lease = None
        self._member_written = None

    async def _refresh(self, lease_id: int) -> bool:
        """One keepalive; False when etcd says the lease is gone (expired or revoked)."""

        async def call(client: Any) -> Any:
            return await client.refresh_lease(lease_id)

        reply = await self._call("lease keepalive", call)
        return reply is not None and int(reply.TTL) > 0

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

    # -- reading -----------------------------------------------------------------------------------
    async def get_cluster(self) -> ClusterView:
        response = await self._range_prefix()
        prefix_length = len(self.prefix.encode())
        kvs = {
            kv.key[prefix_length:].decode("utf-8", "replace"): (
                kv.value.decode("utf-8", "replace"),
                int(kv.mod_revision),
            )
            for kv in response.kvs
        }
        revision = int(response.header.revision)
        decoded = codec.decode_cluster(self.scope, kvs, revision=revision)
        self._report_notes(decoded.notes)
        self._seen_revision = max(self._seen_revision, revision)
        self._check_member_cache(kvs.get(codec.MEMBERS + self.name))
        return decoded.view

    def _report_notes(self, notes: tuple[str, ...]) -> None:
        if notes != self._last_notes:  # once per change, not once per loop
            for note in notes:
                log.warning("DCS scope %s: %s", self.scope, note)
        self._last_notes = notes

    def _check_member_cache(self, stored: tuple[str, int] | None) -> None:
        """Someone deleted or rewrote our member key: the next touch must write it again."""
        if self._member_written and (stored is None or stored[0] != self._member_written[0]):
            self._member_written = None

    async def wait_for_change(self, timeout: float) -> bool:
        self._ensure_watch()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._forced_wake or self._leader_revision > self._seen_revision:
                self._forced_wake = False
                self._seen_revision = max(self._seen_revision, self._leader_revision)
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._leader_changed.clear()
            try:
                await asyncio.wait_for(self._leader_changed.wait(), remaining)
            except TimeoutError:
                return False

    # -- the watch -----------------------------------------------------------------------------------
    def _ensure_watch(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch_forever(), name=f"etcd3-watch-{self.scope}"
            )

    async def _watch_forever(self) -> None:
        """Keep a watch on the scope prefix alive; never raises (etcd being down is normal)."""
        backoff = _WATCH_BACKOFF_MIN
        failing = False
        while not self._closed:
            try:
                async for _ in self._watch_stream():
                    backoff, failing = _WATCH_BACKOFF_MIN, False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, aetcd_errors.RevisionCompactedError):
                    self._watch_from = 0  # history is gone: restart from now and make the caller re-read
                    self._wake(forced=True)
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "etcd watch on %s failed (%s); retrying", self.prefix, _details(exc))
                failing = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _WATCH_BACKOFF_MAX)

    async def _watch_stream(self) -> Any:
        """Yield once when the watch is established, then once per event (after handling it)."""
        client = await asyncio.wait_for(self._connected_client(), self._timeout)
        start = self._watch_from + 1 if self._watch_from else None
        prefix = self.prefix.encode()
        watch = await asyncio.wait_for(client.watch_prefix(prefix, start_revision=start), self._timeout)
        try:
            yield None
            async for event in watch:
                self._on_event(event)
                yield None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), self._timeout)

    def _on_event(self, event: Any) -> None:
        key, revision = bytes(event.kv.key), int(event.kv.mod_revision)
        self._watch_from = max(self._watch_from, revision)
        if key == self._key(codec.LEADER):
            self._leader_revision = max(self._leader_revision, revision)
            self._wake()
        elif key == self._member_key and event.kind == "DELETE":
            self._member_written = None

    def _wake(self, *, forced: bool = False) -> None:
        self._forced_wake = self._forced_wake or forced
        self._leader_changed.set()

    # -- bootstrap ---------------------------------------------------------------------------------
    async def initialize(self, sysid: str = "", *, create_new: bool = True) -> bool:
        key = self._key(codec.INITIALIZE)
        compare = [_absent(key)] if create_new else []
        return (await self._txn("initialize", compare, [_put(key, sysid)]))[0]

    async def cancel_initialization(self) -> None:
        await self._delete_key("cancel initialization", self._key(codec.INITIALIZE), [])

    # -- the leader lock ---------------------------------------------------------------------------
    async def acquire_leader(self) -> bool:
        await self._fresh_lease()  # do not take the lock on a lease that is about to run out
        key = self._key(codec.LEADER)

        async def attempt(lease_id: int) -> bool:
            succeeded, revision = await self._txn("acquire leader", [_absent(key)], [_put(key, self.name, lease_id)])
            if succeeded:
                self._note_own_write(revision)
            return succeeded

        return await self._with_lease(attempt)

    async def update_leader(self, status: ClusterStatus | None = None) -> bool:
        """Refresh the lease first, then check ownership in the same transaction that writes status.

        True therefore means: the lease was refreshed just now and `leader` holds our name on it.
        """
        lease_id, _ = await self._fresh_lease()
        key = self._key(codec.LEADER)
        status_text, status_ops = self._status_ops(status)
        owned = [_value_is(key, self.name)]
        succeeded, _ = await self._txn("update leader", [*owned, _lease_is(key, lease_id)], status_ops)
        if not succeeded:
            # Still ours by name but on an older lease (expired and re-granted, or a TTL change):
            # move it onto the current lease, still only if it names us.
            succeeded, revision = await self._txn(
                "re-attach leader", owned, [_put(key, self.name, lease_id), *status_ops]
            )
            if succeeded:
                self._note_own_write(revision)
        if succeeded and status_text is not None:
            self._status_written = status_text
        return succeeded

    async def delete_leader(self, status: ClusterStatus | None = None) -> bool:
        key = self._key(codec.LEADER)
        status_text, status_ops = self._status_ops(status)
        succeeded, revision = await self._txn("delete leader", [_value_is(key, self.name)], [*status_ops, _delete(key)])
        if succeeded:
            self._note_own_write(revision)
            if status_text is not None:
                self._status_written = status_text
        return succeeded

    def _status_ops(self, status: ClusterStatus | None) -> tuple[str | None, list[Any]]:
        """The put for `status`, unless there is none or it is what we wrote last."""
        if status is None:
            return None, []
        text = codec.status_to_json(status)
        if text == self._status_written:
            return None, []
        return text, [_put(self._key(codec.STATUS), text)]

    def _note_own_write(self, revision: int) -> None:
        # Our own change of `leader` is no news to us: do not let the watch wake the caller for it.
        self._seen_revision = max(self._seen_revision, revision)

    # -- members -----------------------------------------------------------------------------------
    async def touch_member(self, data: Mapping[str, Any]) -> bool:
        text = codec.member_to_json(data)

        async def attempt(lease_id: int) -> bool:
            if self._member_written == (text, lease_id):
                return True
            await self._txn("write member", [], [_put(self._member_key, text, lease_id)])
            self._member_written = (text, lease_id)
            return True

        return await self._with_lease(attempt)

    async def delete_member(self, name: str) -> bool:
        if name == self.name:
            self._member_written = None
        key = self._key(codec.MEMBERS + name)
        request = rpc.DeleteRangeRequest(key=key)

        async def call(client: Any) -> Any:
            return await client.kvstub.DeleteRange(request, timeout=self._timeout, metadata=client.metadata)

        response = await self._call(f"delete member {name}", call)
        return int(response.deleted) > 0

    async def delete_cluster(self) -> int:
        prefix = self.prefix.encode()
        request = rpc.DeleteRangeRequest(key=prefix, range_end=prefix_range_end(prefix))

        async def call(client: Any) -> Any:
            return await client.kvstub.DeleteRange(request, timeout=self._timeout, metadata=client.metadata)

        response = await self._call("delete the cluster's keys", call)
        return int(response.deleted)

    # -- compare-and-swap values -----------------------------------------------------------------
    async def _cas_put(self, relative: str, text: str, revision: int | None) -> bool:
        key = self._key(relative)
        return (await self._txn(f"write {relative}", _revision_guard(key, revision), [_put(key, text)]))[0]

    async def _cas_delete(self, relative: str, revision: int | None) -> bool:
        key = self._key(relative)
        return await self._delete_key(f"delete {relative}", key, _revision_guard(key, revision))

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
