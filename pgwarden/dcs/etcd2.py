"""The etcd v2 backend (Patroni's `etcd` section), over etcd's v2 keys API (`/v2/keys/...`).

etcd 3.4 serves that API when started with `--enable-v2`; its v2 keys live apart from the v3 ones.
How the DCS primitives map onto it:
- there is no lease object: `leader` and `members/<name>` are keys with a `ttl`, and a keepalive
  refreshes each key's TTL (`refresh=true`: the value is not rewritten and watchers are not woken), the
  leader key only while it still names us (`prevValue`); a refresh sent at t keeps the key until t + ttl;
- the bootstrap and leader races are writes with `prevExist=false`; owner checks use `prevValue`;
- compare-and-swap on `config`, `failover` and `sync` uses `prevIndex` = the key's `modifiedIndex`;
- `get_cluster` is one recursive quorum read of the scope directory (its `X-Etcd-Index` is the revision);
- a background task long-polls `leader` (`wait=true&waitIndex=n`), so `wait_for_change` wakes as soon
  as the leader key is created, changed, deleted or expires.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

import aiohttp
import yarl

from pgwarden.aio import bounded, cancel_bounded
from pgwarden.dcs import codec, etcd_endpoints
from pgwarden.dcs.base import Dcs, DcsError, KeyValueDcs
from pgwarden.dcs.etcd_http import EtcdHosts
from pgwarden.dcs.readback import LeaderMarks, RetryPause, ScopeNotes, still_written
from pgwarden.model import ClusterStatus, ClusterView, status_with_timeline_floor

log = logging.getLogger(__name__)

Json = dict[str, Any]
ErrorKind = Literal["unavailable", "timeout", "auth", "cleared", "other"]

# etcd v2 error codes (etcd's `v2error` package).
KEY_NOT_FOUND = 100
COMPARE_FAILED = 101
NODE_EXISTS = 105
UNAUTHORIZED = 110
RAFT_INTERNAL = 300
LEADER_ELECTION = 301
EVENT_INDEX_CLEARED = 401

_ANSWERS = frozenset({KEY_NOT_FOUND, COMPARE_FAILED, NODE_EXISTS})
"""Error codes that answer the question asked (absent, compare failed, exists): a lost race, not a failure."""

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""The most of an answer we read: a scope is kilobytes; garbage planted in it must not exhaust memory."""

WATCH_POLL_SECONDS = 30.0
"""One long poll lasts at most this long, then starts again (a silently dead connection is noticed)."""




class Etcd2Error(Exception):
    """etcd could not be reached or answered with an error. `kind` says what the caller may do:
    "unavailable" (nothing reached etcd; another host may help), "timeout" (may have been applied),
    "auth", "cleared" (a watch asked for history etcd no longer keeps) and "other". `index` is etcd's
    current index when the answer carried one."""

    def __init__(self, kind: ErrorKind, message: str, *, code: int = 0, index: int = 0) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.code = code
        self.index = index


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of the keys API: success (`code` 0) or an error that answers the question (`_ANSWERS`)."""

    index: int
    """`X-Etcd-Index`: etcd's index when it answered (a watch: when it started waiting)."""
    body: Json
    code: int = 0

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def node(self) -> Json:
        node = self.body.get("node")
        return node if isinstance(node, dict) else {}


def _int(value: Any) -> int:
    """A non-negative integer field of etcd's answer; 0 when missing or not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _kind(code: int) -> ErrorKind:
    if code == UNAUTHORIZED:
        return "auth"
    if code == EVENT_INDEX_CLEARED:
        return "cleared"
    if code == LEADER_ELECTION:
        return "unavailable"  # refused before anything was proposed
    if code == RAFT_INTERNAL:
        return "timeout"  # e.g. "request timed out": the proposal may still be applied
    return "other"


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise Etcd2Error("other", f"answer of {response.content_length} bytes, more than {limit}")
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise Etcd2Error("other", f"answer larger than {limit} bytes")
    return bytes(data)


def leaves(node: Any) -> list[Json]:
    """Every key (not directory) of a recursive answer's node tree, without recursion (hostile depth)."""
    found: list[Json] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        if item.get("dir"):
            children = item.get("nodes")
            if isinstance(children, list):
                stack.extend(children)
        else:
            found.append(item)
    return found


class Etcd2Client(EtcdHosts):
    """The v2 keys API on one of `hosts` at a time; moves to the next one when a host cannot be reached.

    Every request is bounded by `timeout` seconds in all, connecting included; with several hosts each
    gets an equal share of it to connect, so one that swallows connections does not use it all.
    """

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]],
        *,
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(hosts, timeout=timeout, username=username, password=password, ssl_context=ssl_context)
        # etcd v2 authenticates every request with HTTP basic auth (there are no tokens).
        self._headers = {"Authorization": basic_auth(username, password or "")} if username is not None else {}

    def _url(self, key: str, params: Mapping[str, str] | None) -> yarl.URL:
        query = f"?{urlencode(params)}" if params else ""
        return yarl.URL(f"{self._scheme}://{self.host_label}/v2/keys{quote(key, safe='/')}{query}", encoded=True)

    def _closed_error(self) -> Exception:
        return Etcd2Error("other", "etcd: the client is closed")

    # -- requests ------------------------------------------------------------------------------------
    async def request(self, method: str, key: str, *, params: Mapping[str, str] | None = None,
                      form: Mapping[str, str] | None = None) -> Reply:
        """One request on `key` (an absolute key path); tries the other hosts while none could be reached
        (one host twice: a kept connection the server closed meanwhile, after a restart, fails once)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        connect_limit = self.timeout / len(self._hosts)
        attempts = max(2, len(self._hosts))
        for attempt in range(1, attempts + 1):
            remaining = deadline - loop.time()
            label = self.host_label
            try:
                if remaining <= 0:
                    raise TimeoutError
                return await bounded(self._once(method, key, params, form, min(connect_limit, remaining)), remaining)
            except Etcd2Error as exc:
                if exc.kind != "unavailable" or attempt == attempts:
                    if exc.kind in ("unavailable", "timeout"):
                        self.rotate()
                    raise
                log.debug("%s; trying the next host", exc)
                self.rotate()
            except TimeoutError as exc:
                self.rotate()  # the next request goes elsewhere; this one may have been applied
                raise Etcd2Error("timeout", f"etcd {label}: {method} timed out after {self.timeout}s") from exc
        raise AssertionError("unreachable")

    async def _once(self, method: str, key: str, params: Mapping[str, str] | None, form: Mapping[str, str] | None,
                    connect_limit: float) -> Reply:
        label = self.host_label
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_limit)
        try:
            async with self._http().request(method, self._url(key, params), data=dict(form) if form else None,
                                            headers=self._headers, timeout=timeout, allow_redirects=False) as response:
                payload = await _read_bounded(response, MAX_RESPONSE_BYTES)
                index = _header_index(response)
                status = response.status
        except aiohttp.ConnectionTimeoutError as exc:  # nothing was sent: another host may answer
            raise Etcd2Error("unavailable", f"etcd {label}: could not connect within {connect_limit:.1f}s") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            # Refused, reset or closed before an answer: another host may help.
            raise Etcd2Error("unavailable", f"etcd {label}: {method}: {exc or type(exc).__name__}") from exc
        except Etcd2Error as exc:
            raise Etcd2Error(exc.kind, f"etcd {label}: {exc}") from exc
        return self._decode(label, status, payload, index)

    def _decode(self, label: str, status: int, payload: bytes, index: int) -> Reply:
        try:
            message = json.loads(payload) if payload else {}
        except (ValueError, RecursionError) as exc:
            if status == 404:  # an etcd without the v2 API (or another server on the port)
                raise Etcd2Error("other", f"etcd {label}: no v2 keys API (HTTP 404); etcd 3.4 serves it only "
                                          "with --enable-v2") from exc
            if status == 401:
                raise Etcd2Error("auth", f"etcd {label}: authentication failed (HTTP 401)") from exc
            raise Etcd2Error("other", f"etcd {label}: HTTP {status}, not JSON") from exc
        if not isinstance(message, dict):
            raise Etcd2Error("other", f"etcd {label}: HTTP {status}, unexpected answer")
        code = _int(message.get("errorCode"))
        index = index or _int(message.get("index"))
        if code in _ANSWERS:
            return Reply(index, message, code)
        if status == 401 and not code:
            raise Etcd2Error("auth", f"etcd {label}: authentication failed: {_text(message.get('message'))}")
        if code or status >= 300:
            kind = _kind(code)
            text = _text(message.get("message")) or f"HTTP {status}"
            if kind == "auth":
                text = f"authentication failed: {text}"
            raise Etcd2Error(kind, f"etcd {label}: {text}", code=code, index=index)
        return Reply(index, message)

    # -- the watch -----------------------------------------------------------------------------------
    async def watch(self, key: str, wait_index: int | None, poll: float) -> Reply:
        """Long-poll `key` for its next change (from `wait_index`; None: from now).

        The reply to a change carries its event in `body`; the body is empty when `poll` seconds passed
        without one (`index`: etcd's index when the poll started). Raises Etcd2Error ("cleared" when
        `wait_index` is older than the history etcd keeps).
        """
        params = {"wait": "true"}
        if wait_index:
            params["waitIndex"] = str(wait_index)
        label = self.host_label
        # etcd sends the headers at once and the body when the key changes: bound both, separately.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        try:
            response = await bounded(self._http().get(self._url(key, params), headers=self._headers, timeout=timeout,
                                                      allow_redirects=False), self.timeout)
        except TimeoutError as exc:
            self.rotate()
            raise Etcd2Error("timeout", f"etcd {label}: watch timed out after {self.timeout}s") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            self.rotate()
            raise Etcd2Error("unavailable", f"etcd {label}: watch: {exc or type(exc).__name__}") from exc
        try:
            started = _header_index(response)
            try:
                payload = await bounded(_read_bounded(response, MAX_RESPONSE_BYTES), poll)
            except TimeoutError:
                return Reply(started, {})
            except (aiohttp.ClientError, OSError) as exc:
                raise Etcd2Error("unavailable", f"etcd {label}: watch broke: {exc or type(exc).__name__}") from exc
            if not payload:
                raise Etcd2Error("unavailable", f"etcd {label}: watch ended without an event")
            return self._decode(label, response.status, payload, started)
        finally:
            response.close()


def basic_auth(username: str, password: str) -> str:
    """The `Authorization` header value of HTTP basic auth (UTF-8, as etcd reads it)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _header_index(response: aiohttp.ClientResponse) -> int:
    text = response.headers.get("X-Etcd-Index", "")
    return int(text) if text.isdigit() and len(text) <= 20 else 0


def _text(value: Any) -> str:
    """Text of etcd's answer for a message: short, so a hostile server cannot flood our logs."""
    text = value if isinstance(value, str) else ""
    return text if len(text) <= 200 else text[:197] + "..."


def _revision_guard(revision: int | None) -> dict[str, str]:
    """CAS condition: None = unconditional, 0 = must not exist, n = still at modifiedIndex n."""
    if revision is None:
        return {}
    if revision == 0:
        return {"prevExist": "false"}
    return {"prevIndex": str(revision)}


class Etcd2Dcs(KeyValueDcs):
    """One agent's (or CLI's) view of one scope in etcd's v2 keys API. Create it, then `await connect()`."""

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
        watch_poll: float = WATCH_POLL_SECONDS,
    ) -> None:
        super().__init__(namespace=namespace, scope=scope, name=name)
        self._client = Etcd2Client(hosts, timeout=timeout, username=username, password=password,
                                   ssl_context=ssl_context)
        self._ttl = ttl
        self._timeout = timeout
        self._readonly = readonly
        self._watch_poll = watch_poll
        self._holding = False  # we acquired or renewed `leader` and have not seen it lost or released it since
        self._leader_proven = False  # the last acquire/renew/keepalive refreshed `leader` with our name
        self._leader_epoch = 0  # moves with every acquire and delete, so a refresh answered late cannot undo them
        self._member_touched = False  # we wrote our member key: keepalives refresh it
        self._member_written: str | None = None  # JSON of the last member write still in etcd
        self._status_written: str | None = None
        self._transient_written: dict[str, str] = {}  # relative key -> the value publish_transient last wrote
        self._transient_refreshed: dict[str, float] = {}  # relative key -> monotonic time of its last refresh
        self._timeline_floor = 0  # the highest reserved timeline read or written (model.status_with_timeline_floor)
        self._marks = LeaderMarks()  # leader changes the watch reported against what the caller has seen
        self._watch_from = 0  # every leader change up to this index has been reported
        self._watch_task: asyncio.Task[None] | None = None
        self._notes = ScopeNotes(scope)
        self._closed = False

    # -- keys ----------------------------------------------------------------------------------------
    def _key(self, relative: str) -> str:
        return self.prefix + relative

    @property
    def _member_key(self) -> str:
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

    async def _request(self, what: str, method: str, key: str, *, params: Mapping[str, str] | None = None,
                       form: Mapping[str, str] | None = None) -> Reply:
        """One request (bounded by the timeout, other hosts tried); failures -> DcsError, lost races -> a Reply."""
        if self._closed:
            raise DcsError("etcd: connection is closed")
        try:
            return await self._client.request(method, key, params=params, form=form)
        except Etcd2Error as exc:
            if exc.kind == "timeout":
                raise DcsError(f"{exc} ({what})") from exc
            raise DcsError(f"{what} failed: {exc}") from exc

    async def _put(self, what: str, relative: str, value: str | None, *, ttl: int | None = None,
                   guard: Mapping[str, str] | None = None) -> Reply:
        """Write one key (value None: only refresh its TTL), under the `guard` conditions (prevExist,
        prevValue, prevIndex); with `ttl`, check that etcd kept the key for that long."""
        form = dict(guard or {})
        if value is not None:
            form["value"] = value
        if ttl is not None:
            form["ttl"] = str(ttl)
        reply = await self._request(what, "PUT", self._key(relative), form=form)
        if reply.ok and ttl is not None:
            granted = _int(reply.node.get("ttl"))
            if granted < ttl:
                # The loop counts on a refresh sent at t keeping the key until t + ttl.
                raise DcsError(f"{what}: etcd set a TTL of {granted}s, less than the {ttl}s asked for")
        return reply

    async def _delete(self, what: str, relative: str, guard: Mapping[str, str] | None = None) -> Reply:
        return await self._request(what, "DELETE", self._key(relative), params=guard)

    async def _refresh(self, what: str, relative: str, owner: str | None = None) -> bool:
        """Refresh the TTL of one of our keys without rewriting it; False when it is gone (or, with `owner`,
        names somebody else). A refresh wakes no watcher."""
        condition = {"prevValue": owner} if owner is not None else {"prevExist": "true"}
        reply = await self._put(what, relative, None, ttl=self._ttl, guard={"refresh": "true", **condition})
        return reply.ok

    # -- the TTL ---------------------------------------------------------------------------------------
    async def set_ttl(self, ttl: int) -> None:
        # No lease to replace: every following write and refresh of our keys uses the new TTL.
        self._ttl = ttl

    async def keepalive(self) -> bool:
        """Refresh `leader` (while we hold it) and our member key. False when the member key expired;
        a leader key found lost shows in `leads_on_lease`."""
        if self._holding:
            await self._refresh_leader("refresh leader")
        if not self._member_touched:
            # Nothing of ours to keep alive yet (a predecessor's key is not refreshed): only check that
            # etcd answers, so that a keepalive never succeeds while the store is down.
            await self._request("check etcd", "GET", self._member_key)
            return True
        if await self._refresh("refresh member", codec.MEMBERS + self.name):
            return True
        log.warning("etcd: member key %s expired; it is written again with the next update", self._member_key)
        self._member_touched = False
        self._member_written = None
        return False

    def leads_on_lease(self) -> bool:
        return self._holding and self._leader_proven

    async def _refresh_leader(self, what: str) -> bool:
        """Refresh `leader` only while it names us; records whether it did (`leads_on_lease`)."""
        epoch = self._leader_epoch
        self._leader_proven = False
        owned = await self._refresh(what, codec.LEADER, owner=self.name)
        if epoch == self._leader_epoch:  # no acquire or delete ran meanwhile (the keepalive runs beside the loop)
            self._holding = self._leader_proven = owned
        return owned

    # -- reading -----------------------------------------------------------------------------------
    async def get_cluster(self) -> ClusterView:
        reply = await self._request("read cluster", "GET", self.prefix.rstrip("/"),
                                    params={"recursive": "true", "quorum": "true"})
        kvs = self._flatten(reply) if reply.ok else {}
        revision = reply.index
        decoded = codec.decode_cluster(self.scope, kvs, revision=revision)
        self._timeline_floor = max(self._timeline_floor, decoded.view.status.timeline or 0)
        self._notes.report(decoded.notes)
        self._marks.saw(revision)
        member, status = kvs.get(codec.MEMBERS + self.name), kvs.get(codec.STATUS)
        self._member_written = still_written(self._member_written, member[0] if member else None)
        self._status_written = still_written(self._status_written, status[0] if status else None)
        return decoded.view

    def _flatten(self, reply: Reply) -> dict[str, tuple[str, int]]:
        """The keys of a recursive read, relative to the scope, with their modifiedIndex."""
        kvs: dict[str, tuple[str, int]] = {}
        for node in leaves(reply.node):
            key, value = node.get("key"), node.get("value")
            if isinstance(key, str) and key.startswith(self.prefix):
                kvs[key[len(self.prefix):]] = (value if isinstance(value, str) else "",
                                               max(1, _int(node.get("modifiedIndex"))))
        return kvs

    async def wait_for_change(self, timeout: float) -> bool:
        self._ensure_watch()
        return await self._marks.wait(timeout)

    # -- the watch -----------------------------------------------------------------------------------
    def _ensure_watch(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch_forever(), name=f"etcd2-watch-{self.scope}"
            )

    async def _watch_forever(self) -> None:
        """Keep long-polling `leader`; never raises (etcd being down is normal)."""
        pause = RetryPause()
        while not self._closed:
            try:
                await self._poll()
                pause.succeeded()
                continue
            except asyncio.CancelledError:
                raise
            except Etcd2Error as exc:
                if exc.kind == "cleared":
                    # The history since our index is gone: go on from now and make the caller re-read.
                    self._watch_from = max(self._watch_from, exc.index)
                    self._marks.force()
                    continue
                pause.failed(f"etcd watch on {self._key(codec.LEADER)}", exc)
            except Exception as exc:  # a closed client, an unexpected answer: retry after a pause
                pause.failed(f"etcd watch on {self._key(codec.LEADER)}", exc)
            await pause.sleep()

    async def _poll(self) -> None:
        """One long poll of `leader`, from the first index not yet covered (or the caller's last read)."""
        covered = self._watch_from or self._marks.seen
        reply = await self._client.watch(self._key(codec.LEADER), covered + 1 if covered else None, self._watch_poll)
        if not reply.body:
            # No change until etcd's index when the poll started: an event from etcd's history is queued
            # before the headers are sent and follows them at once, so a silent poll had none.
            self._watch_from = max(self._watch_from, reply.index)
            return
        node = reply.node
        revision = _int(node.get("modifiedIndex")) or reply.index
        self._watch_from = max(self._watch_from, revision)
        self._marks.report(revision)

    def _note_own_write(self, reply: Reply) -> None:
        # Our own change of `leader` is no news to us: do not let the watch wake the caller for it.
        self._marks.saw(_int(reply.node.get("modifiedIndex")) or reply.index)

    # -- bootstrap ---------------------------------------------------------------------------------
    async def initialize(self, sysid: str = "", *, create_new: bool = True) -> bool:
        guard = {"prevExist": "false"} if create_new else {}
        return (await self._put("initialize", codec.INITIALIZE, sysid, guard=guard)).ok

    async def cancel_initialization(self) -> None:
        await self._delete("cancel initialization", codec.INITIALIZE)

    # -- the leader lock ---------------------------------------------------------------------------
    async def acquire_leader(self) -> bool:
        self._leader_epoch += 1
        self._leader_proven = False
        reply = await self._put("acquire leader", codec.LEADER, self.name, ttl=self._ttl, guard={"prevExist": "false"})
        if reply.ok:
            self._note_own_write(reply)
            self._holding = self._leader_proven = True
        return reply.ok

    async def update_leader(self, status: ClusterStatus | None = None) -> bool:
        """Refresh `leader` only if it names us (never re-created here: the core decides to race again),
        then write `status` when given and changed. True: the key was refreshed just now with our name."""
        if not await self._refresh_leader("update leader"):
            return False
        await self._write_status(status)
        return True

    async def delete_leader(self, status: ClusterStatus | None = None) -> bool:
        await self._write_status(status)
        self._leader_epoch += 1
        self._leader_proven = False
        reply = await self._delete("delete leader", codec.LEADER, {"prevValue": self.name})
        self._holding = False
        if reply.ok:
            self._note_own_write(reply)
        return reply.ok

    async def _write_status(self, status: ClusterStatus | None) -> None:
        """Write `status`, unless there is none or it is what we wrote last."""
        if status is None:
            return
        status = status_with_timeline_floor(status, self._timeline_floor)
        self._timeline_floor = max(self._timeline_floor, status.timeline or 0)
        text = codec.status_to_json(status)
        if text == self._status_written:
            return
        await self._put("write status", codec.STATUS, text)
        self._status_written = text

    # -- members -----------------------------------------------------------------------------------
    async def touch_member(self, data: Mapping[str, Any]) -> bool:
        text = codec.member_to_json(data)
        relative = codec.MEMBERS + self.name
        if text == self._member_written and await self._refresh("refresh member", relative):
            return True
        await self._put("write member", relative, text, ttl=self._ttl)
        self._member_written = text
        self._member_touched = True
        return True

    async def publish_transient(self, relative: str, text: str) -> None:
        # A TTL key: refreshed in place (no watcher woken) while unchanged, rewritten when changed or gone.
        now = time.monotonic()
        if self._transient_written.get(relative) == text:
            if now - self._transient_refreshed.get(relative, 0.0) <= self._ttl / 3:
                return
            if await self._refresh(f"refresh {relative}", relative):
                self._transient_refreshed[relative] = now
                return
        await self._put(f"write {relative}", relative, text, ttl=self._ttl)
        self._transient_written[relative], self._transient_refreshed[relative] = text, now

    async def delete_member(self, name: str) -> bool:
        if name == self.name:
            self._member_written = None
            self._member_touched = False
        return (await self._delete(f"delete member {name}", codec.MEMBERS + name)).ok

    async def delete_cluster(self) -> int:
        scope_dir = self.prefix.rstrip("/")
        listing = await self._request("list the cluster's keys", "GET", scope_dir,
                                      params={"recursive": "true", "quorum": "true"})
        if not listing.ok:
            return 0
        reply = await self._request("delete the cluster's keys", "DELETE", scope_dir,
                                    params={"recursive": "true", "dir": "true"})
        return len(leaves(listing.node)) if reply.ok else 0

    # -- compare-and-swap values -----------------------------------------------------------------
    async def _cas_put(self, relative: str, text: str, revision: int | None) -> bool:
        return (await self._put(f"write {relative}", relative, text, guard=_revision_guard(revision))).ok

    async def _cas_delete(self, relative: str, revision: int | None) -> bool:
        if revision == 0:  # "only if absent": nothing to delete, true while it is absent
            reply = await self._request(f"read {relative}", "GET", self._key(relative), params={"quorum": "true"})
            return not reply.ok
        guard = {"prevIndex": str(revision)} if revision is not None else {}
        reply = await self._delete(f"delete {relative}", relative, guard)
        return reply.ok or (revision is None and reply.code == KEY_NOT_FOUND)



async def etcd2_from_config(
    section: Mapping[str, Any],
    *,
    namespace: str,
    scope: str,
    name: str,
    ttl: int,
    timeout: float = 2.0,
    readonly: bool = False,
) -> Dcs:
    """An etcd v2 DCS from Patroni's `etcd` section, its watch started (no network call yet).

    Keys read: host | hosts | url, protocol (http | https), cacert, cert, key, key_password, username | user,
    password. `srv`, `srv_suffix`, `proxy` and `discovery_srv` are refused.
    """
    endpoints = etcd_endpoints(section, "etcd")
    if bool(endpoints.username) != bool(endpoints.password):
        raise DcsError("etcd: 'username' and 'password' must be given together")
    dcs = Etcd2Dcs(
        hosts=endpoints.hosts,
        namespace=namespace,
        scope=scope,
        name=name,
        ttl=ttl,
        timeout=timeout,
        username=endpoints.username,
        password=endpoints.password or None,
        readonly=readonly,
        ssl_context=endpoints.ssl_context,
    )
    await dcs.connect()
    return dcs
