"""The ZooKeeper backend, over kazoo (its threading handler, bridged to asyncio).

How the DCS primitives map onto ZooKeeper:
- one ZooKeeper session per agent, its timeout = `ttl`; `leader` and the own `members/<name>` are
  EPHEMERAL znodes of that session, so both vanish when the session expires (or is closed);
- the session is kept alive by kazoo's own pings (every third of the timeout) and by every request;
  `keepalive()` is one round trip, which the server counts as activity of the session;
- the bootstrap and leader races are `create` (NodeExists = lost); owner checks compare the value and,
  for the leader, the znode's `ephemeralOwner` with our current session id;
- compare-and-swap on `config`, `failover` and `sync` uses the znode version: revision = version + 1, so
  an existing key is >= 1 and 0 still means "absent";
- `get_cluster` is `sync` then a walk of the scope's znodes (ZooKeeper has no range read);
- a background task keeps an `exists` watch on `leader`, so `wait_for_change` wakes when it changes;
- a new ttl (`set_ttl`) takes a new session: our leader and member znodes move onto it atomically.

Unlike an etcd lease, the session does not lapse when the HA loop stalls and stops calling `keepalive()`:
kazoo's pings come from its own thread, so it lives as long as the process can answer them (Patroni's
ZooKeeper behaves the same). The server checks expiry once a tick, so a session ends between `ttl` and
`ttl` + tickTime after its last ping.

kazoo completes requests and calls watchers on its own threads: every result comes back to the event
loop through `loop.call_soon_threadsafe`, and every call is bounded by `timeout` on the asyncio side.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError, NotEmptyError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry
from kazoo.security import ACL, make_acl, make_digest_acl_credential

from pgwarden.aio import bounded, cancel_bounded
from pgwarden.dcs import codec
from pgwarden.dcs.base import Dcs, DcsError
from pgwarden.dcs.readback import ScopeNotes, still_written
from pgwarden.model import ClusterStatus, ClusterView, HistoryEntry, SyncState, status_with_timeline_floor

log = logging.getLogger(__name__)

DEFAULT_PORT = 2181
_WATCH_BACKOFF_MIN = 0.5
_WATCH_BACKOFF_MAX = 5.0
_RACES = (NoNodeError, NodeExistsError, BadVersionError, NotEmptyError)
"""Answers that are a lost race (or an absent key), for the caller to turn into False; not store failures."""
_DIRECTORIES = frozenset({codec.MEMBERS.rstrip("/"), codec.ROUTERS.rstrip("/"), "optime"})
_Op = tuple[str, dict[str, Any]]
"""One operation of a transaction: the name of kazoo's TransactionRequest method and its arguments."""
_PERMISSIONS = ("READ", "WRITE", "CREATE", "DELETE", "ADMIN")
_SCHEMES = ("world", "auth", "digest", "ip", "x509", "sasl")


# -- configuration -------------------------------------------------------------------------------------
def hosts_from_config(section: Mapping[str, Any]) -> str:
    """Patroni's `hosts` (a list or a comma string of host[:port]) as kazoo's 'h1:p1,h2:p2' string."""
    raw = section.get("hosts")
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    hosts = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        bracketed = text.startswith("[")
        has_port = text.rsplit("]", 1)[-1].count(":") == 1 if bracketed else text.count(":") == 1
        if has_port:
            port = text.rsplit(":", 1)[1]
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"invalid port in zookeeper host {text!r}")
            hosts.append(text)
        else:
            hosts.append(f"{text}:{DEFAULT_PORT}")
    if not hosts:
        raise ValueError("expected 'hosts': the ZooKeeper ensemble's 'host:port' addresses")
    return ",".join(hosts)


def auth_from_config(value: Any) -> list[tuple[str, str]]:
    """`auth_data` as kazoo's [(scheme, credential)]: a mapping {scheme: credential}, or a list of
    'scheme:credential' strings or [scheme, credential] pairs (digest credentials are 'user:password')."""
    if not value:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str):
        pairs = [_split_scheme(value)]
    else:
        pairs = [_split_scheme(item) if isinstance(item, str) else tuple(item) for item in value]
    result = []
    for pair in pairs:
        if len(pair) != 2 or not str(pair[0]).strip():
            raise ValueError("auth_data: expected 'scheme:credential' entries")  # no value: it may be a secret
        result.append((str(pair[0]).strip(), str(pair[1])))
    return result


def _split_scheme(text: str) -> tuple[str, str]:
    scheme, sep, credential = text.partition(":")
    if not sep:
        raise ValueError("auth_data: expected 'scheme:credential' entries")
    return scheme, credential


def acls_from_config(value: Any) -> list[ACL] | None:
    """`set_acls` ({principal: [permission, ...]}) as the ACL every znode pgwarden creates gets.

    A principal is 'scheme:id' ('digest:user:password' is hashed as ZooKeeper's digest scheme expects,
    'world:anyone', 'ip:10.0.0.0/8', 'sasl:name'); without a known scheme it is an x509 name (CN=...).
    Permissions: READ, WRITE, CREATE, DELETE, ADMIN, ALL (any case)."""
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("set_acls: expected a mapping {principal: [permissions]}")
    acls = []
    for principal, permissions in value.items():
        words = [permissions] if isinstance(permissions, str) else list(permissions or [])
        granted = {str(word).strip().upper() for word in words}
        unknown = granted - {*_PERMISSIONS, "ALL"}
        if unknown:
            raise ValueError(f"set_acls: unknown permission(s) {', '.join(sorted(unknown))} for {principal!r}")
        flags = {p.lower(): "ALL" in granted or p in granted for p in _PERMISSIONS}
        scheme, credential = _principal(str(principal))
        acls.append(make_acl(scheme, credential, **flags))
    return acls


def _principal(text: str) -> tuple[str, str]:
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in _SCHEMES:
        return "x509", text
    if scheme == "digest":
        user, sep, password = rest.partition(":")
        if not sep:
            raise ValueError("set_acls: a digest principal is 'digest:user:password'")
        return scheme, make_digest_acl_credential(user, password)
    return scheme, rest


@dataclass(frozen=True)
class ZooKeeperOptions:
    """How to reach the ensemble: everything of the `zookeeper` section but the hosts."""

    auth_data: tuple[tuple[str, str], ...] = ()
    acl: tuple[ACL, ...] | None = None
    use_ssl: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None
    verify: bool = True

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ZooKeeperOptions:
        acl = acls_from_config(section.get("set_acls"))
        password = section.get("key_password")
        return cls(
            auth_data=tuple(auth_from_config(section.get("auth_data"))),
            acl=tuple(acl) if acl else None,
            use_ssl=bool(section.get("use_ssl")),
            cacert=section.get("cacert") or None,
            cert=section.get("cert") or None,
            key=section.get("key") or None,
            key_password=str(password) if password else None,
            verify=bool(section.get("verify", True)),
        )


# -- one kazoo client, bridged to the event loop ------------------------------------------------------
class _OncePerMinute(logging.Filter):
    """kazoo logs a warning at every reconnection attempt (about one a second while the ensemble is down):
    let each distinct message through once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()  # kazoo logs from several threads

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = record.getMessage()
        with self._lock:
            last = self._last.get(key)
            if last is not None and record.created - last < 60:
                return False
            if len(self._last) > 100:
                self._last.clear()
            self._last[key] = record.created
        return True


_KAZOO_LOG = logging.getLogger(__name__ + ".kazoo")
_KAZOO_LOG.addFilter(_OncePerMinute())


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller gave up (timeout, cancellation)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Session:
    """One KazooClient (and so one ZooKeeper session at a time; kazoo opens a new one after expiry),
    requesting `ttl` as the session timeout. Its state changes reach the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, hosts: str, ttl: int, options: ZooKeeperOptions,
                 on_state: Callable[[], None]) -> None:
        self.loop = loop
        self.ttl = ttl
        self.negotiated: tuple[int, int] | None = None  # (session id, timeout in ms) the server granted
        self.connected = asyncio.Event()
        self.closing = False
        self._on_state = on_state
        self.client = KazooClient(
            hosts=hosts,
            timeout=float(ttl),
            # Reconnect for ever, quickly: calls fail (DcsError) while it is down, never hang.
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0),
            command_retry=None,
            auth_data=list(options.auth_data) or None,
            default_acl=list(options.acl) if options.acl else None,
            use_ssl=options.use_ssl,
            ca=options.cacert,
            certfile=options.cert,
            keyfile=options.key,
            keyfile_password=options.key_password,
            verify_certs=options.verify,
            logger=_KAZOO_LOG,
        )
        self._record_negotiated_timeout()
        self.client.add_listener(self._state_listener)

    def _record_negotiated_timeout(self) -> None:
        """kazoo does not keep the session timeout the server granted (it may differ from the one asked
        for): wrap its connection's handshake to note it, before kazoo reports the session connected."""
        from kazoo.protocol.serialization import Connect

        connection = self.client._connection
        handshake = connection._invoke

        def invoke(timeout: float, request: Any, xid: int | None = None) -> Any:
            result = handshake(timeout, request, xid)
            if isinstance(request, Connect) and isinstance(result, tuple):
                self.negotiated = (result[0].session_id, result[0].time_out)
            return result

        connection._invoke = invoke

    def _state_listener(self, state: str) -> None:
        """On a kazoo thread: hand the change to the loop. Returns None (True would unregister it)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self._state_changed, state)

    def _state_changed(self, state: str) -> None:
        if self.client.connected:
            self.connected.set()
        else:
            self.connected.clear()
        if state == KazooState.LOST and not self.closing:
            log.warning("ZooKeeper session lost (expired or closed); its ephemeral keys are gone")
        self._on_state()

    def start(self) -> None:
        self.client.start_async()  # starts kazoo's connection thread; no waiting

    @property
    def session_id(self) -> int | None:
        """The current session's id while connected, else None."""
        client_id = self.client.client_id
        return int(client_id[0]) if client_id else None

    def negotiated_ms(self, session_id: int) -> int | None:
        if self.negotiated is not None and self.negotiated[0] == session_id:
            return self.negotiated[1]
        return None

    def submit(self, start: Callable[[KazooClient], Any]) -> asyncio.Future[Any]:
        """Start one kazoo async call; its outcome as a future of this loop."""
        future: asyncio.Future[Any] = self.loop.create_future()

        def done(result: Any) -> None:  # on a kazoo thread
            ok = result.successful()
            value = result.value if ok else result.exception
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_settle, future, ok, value)

        start(self.client).rawlink(done)
        return future

    async def close(self, timeout: float) -> None:
        """Close the session (its ephemerals go at once) and kazoo's threads, waiting at most `timeout`:
        a frozen server can hold kazoo's stop() for many seconds, so it runs on a daemon thread."""
        self.closing = True
        finished = self.loop.create_future()

        def stop() -> None:
            with contextlib.suppress(Exception):
                self.client.stop()
                self.client.close()
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_settle, finished, True, None)

        threading.Thread(target=stop, name="kazoo-stop", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await bounded(asyncio.shield(finished), timeout)


def _stat_key(stat: ZnodeStat | None) -> tuple[int, int] | None:
    """What identifies one state of the leader znode: (created, last modified) transaction ids."""
    return None if stat is None else (int(stat.czxid), int(stat.mzxid))


class ZooKeeperDcs(Dcs):
    """One agent's (or CLI's) view of one scope in ZooKeeper. Create it, then `await connect()`."""

    def __init__(
        self,
        *,
        hosts: str,
        namespace: str,
        scope: str,
        name: str,
        ttl: int,
        timeout: float = 2.0,
        readonly: bool = False,
        options: ZooKeeperOptions | None = None,
    ) -> None:
        super().__init__(namespace=namespace, scope=scope, name=name)
        self._hosts = hosts
        self._options = options or ZooKeeperOptions()
        self._ttl = ttl
        self._timeout = timeout
        self._readonly = readonly
        self._session: _Session | None = None
        self._lease_session: int | None = None  # the session the last keepalive (or ephemeral write) proved
        self._leader_session: int | None = None  # the session our leader znode was created on / confirmed on
        self._member_written: tuple[str, int] | None = None  # (JSON, session id) of the last member write
        self._status_written: str | None = None
        self._transient_written: dict[str, tuple[str, int]] = {}  # relative -> (value, session id) written
        self._timeline_floor = 0
        self._warned_longer = False
        self._leader_known: tuple[int, int] | None = None  # the leader state the caller has seen
        self._leader_observed: tuple[int, int] | None = None  # the leader state the watch saw last
        self._observations = 0  # how many times the watch has read the leader znode
        self._verified = 0  # the observation wait_for_change last checked against a fresh read
        self._leader_changed = asyncio.Event()
        self._watch_event = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._notes = ScopeNotes(scope)
        self._closed = False

    # -- paths ---------------------------------------------------------------------------------------
    def _path(self, relative: str) -> str:
        return self.prefix + relative

    @property
    def _scope_path(self) -> str:
        return self.prefix.rstrip("/")

    @property
    def _member_path(self) -> str:
        return self._path(codec.MEMBERS + self.name)

    # -- connection ------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Start the session (waiting for it at most `timeout`: the ensemble may be down, calls then
        raise DcsError until kazoo reaches it) and, unless read-only, the leader watch."""
        session = self._new_session()
        with contextlib.suppress(TimeoutError):
            await bounded(session.connected.wait(), self._timeout)
        if not self._readonly:
            self._ensure_watch()

    def _new_session(self) -> _Session:
        self._session = _Session(asyncio.get_running_loop(), self._hosts, self._ttl, self._options,
                                 self._on_state_change)
        self._session.start()
        return self._session

    def _on_state_change(self) -> None:
        self._watch_event.set()  # the watch re-arms (kazoo drops watches when the connection drops)

    async def close(self) -> None:
        self._closed = True
        task, self._watch_task = self._watch_task, None
        await cancel_bounded(task, self._timeout)
        session, self._session = self._session, None
        if session is not None:
            await session.close(self._timeout)

    async def _connected(self, what: str) -> _Session:
        """The session, once connected (waiting at most `timeout`)."""
        if self._closed or self._session is None:
            raise DcsError("zookeeper: connection is closed")
        session = self._session
        if not session.client.connected:
            try:
                await bounded(session.connected.wait(), self._timeout)
            except TimeoutError:
                raise DcsError(f"zookeeper: not connected to {self._hosts} ({what})") from None
        return session

    async def _call(self, what: str, start: Callable[[KazooClient], Any]) -> Any:
        """One request, bounded by `timeout`. Lost races (NoNode, NodeExists, BadVersion, NotEmpty) are
        raised as they are; every other failure is DcsError."""
        sent = False
        try:
            async with asyncio.timeout(self._timeout):  # waiting for a connection and the answer, together
                session = await self._connected(what)
                sent = True
                return await session.submit(start)
        except _RACES:
            raise
        except TimeoutError:
            if not sent:
                raise DcsError(f"zookeeper: not connected to {self._hosts} ({what})") from None
            raise DcsError(f"zookeeper: {what} timed out after {self._timeout:g}s") from None
        except (KazooException, KazooTimeoutError) as exc:
            raise DcsError(f"zookeeper: {what} failed: {type(exc).__name__} {exc}".rstrip()) from exc

    async def _get(self, relative: str) -> tuple[str, ZnodeStat] | None:
        try:
            data, stat = await self._call(f"read {relative}", lambda c: c.get_async(self._path(relative)))
        except NoNodeError:
            return None
        return (data or b"").decode("utf-8", "replace"), stat

    # -- the session (the lease) ---------------------------------------------------------------------
    async def set_ttl(self, ttl: int) -> None:
        # The next lease operation opens a session with this timeout (`_lease`).
        self._ttl = ttl

    async def _lease(self, what: str) -> int:
        """The current session's id, with a timeout of `ttl` (a new session when set_ttl changed it)."""
        if self._session is not None and self._session.ttl != self._ttl and not self._closed:
            await self._switch_session()
        session = await self._connected(what)
        session_id = session.session_id
        if session_id is None:
            raise DcsError(f"zookeeper: not connected to {self._hosts} ({what})")
        self._check_session_timeout(session, session_id)
        return session_id

    async def _switch_session(self) -> None:
        """A session with the new ttl as its timeout. Our leader and member znodes move onto it, each in
        one transaction (delete the old session's znode at its version, create ours), so a ttl change
        does not drop the lock; then the old session is closed. If the new session cannot be opened
        within `timeout`, the old one stays (DcsError; the next lease operation tries again)."""
        old = self._session
        assert old is not None
        old_id = old.session_id
        log.info("ZooKeeper session timeout changes from %ss to %ss: opening a new session", old.ttl, self._ttl)
        new = self._new_session()
        try:
            await bounded(new.connected.wait(), self._timeout)
            new_id = new.session_id
            if new_id is None:
                raise TimeoutError
            self._check_session_timeout(new, new_id)
        except (TimeoutError, DcsError) as exc:
            self._session = old
            await new.close(self._timeout)
            if isinstance(exc, DcsError):
                raise
            raise DcsError(f"zookeeper: not connected to {self._hosts} (new session for ttl {self._ttl}s)") from None
        self._watch_event.set()  # the watch re-arms on the new client
        if old_id is not None:
            if self._leader_session == old_id:
                moved = await self._move_ephemeral(codec.LEADER, old_id, self.name)
                self._leader_session = new_id if moved else None
            if self._member_written is not None and self._member_written[1] == old_id:
                text = self._member_written[0]
                moved = await self._move_ephemeral(codec.MEMBERS + self.name, old_id, text)
                self._member_written = (text, new_id) if moved else None
        if self._lease_session == old_id:
            self._lease_session = new_id
        await old.close(self._timeout)  # whatever else was ephemeral on it goes now

    async def _move_ephemeral(self, relative: str, old_id: int, text: str) -> bool:
        """Re-create our znode `relative` (holding `text`, owned by session `old_id`) on the current session."""
        found = await self._get(relative)
        if found is None or found[0] != text or found[1].ephemeralOwner != old_id:
            return False
        path = self._path(relative)
        results = await self._commit(f"move {relative} to the new session", [
            ("delete", {"path": path, "version": found[1].version}),
            ("create", {"path": path, "value": text.encode(), "ephemeral": True}),
        ])
        if _first_failure(results) is not None:
            return False
        if relative == codec.LEADER:
            moved = await self._get(relative)
            self._leader_known = _stat_key(moved[1] if moved else None)  # our own change: no news to us
        return True

    def _check_session_timeout(self, session: _Session, session_id: int) -> None:
        """Refuse a session shorter than the ttl: the lock would vanish while its holder still counts on it."""
        granted = session.negotiated_ms(session_id)
        if granted is None:  # recorded before kazoo reports the session connected: kazoo changed inside
            raise DcsError("zookeeper: cannot tell the session timeout the server granted; refusing to hold "
                           "keys on a session whose lifetime is unknown")
        wanted = session.ttl * 1000
        if granted < wanted:
            raise DcsError(
                f"zookeeper: the server grants a session timeout of {granted / 1000:g}s, shorter than the ttl "
                f"of {session.ttl}s (its minSessionTimeout and maxSessionTimeout, 2 and 20 tickTimes by "
                f"default, bound what it grants); raise the server's maxSessionTimeout or lower the ttl"
            )
        if granted > wanted and not self._warned_longer:
            self._warned_longer = True
            log.warning("zookeeper: the server grants a session timeout of %gs, longer than the ttl of %ss "
                        "(its minSessionTimeout); a failed leader's key lives that long", granted / 1000, session.ttl)

    def _current_session(self) -> int | None:
        return self._session.session_id if self._session is not None else None

    async def keepalive(self) -> bool:
        session_id = await self._lease("keepalive")
        # A `sync`, not a read: a follower answers reads by itself, even while it is cut off from the ensemble's
        # leader (until it notices, up to syncLimit ticks later), and it only passes its clients' activity on
        # to the leader every half tick. A sync goes through the leader, so its success proves the link was up
        # when it was sent: the leader saw the session active at most half a tick before that, and does not
        # expire it before `ttl` after (rounded up to a tick). Half a tick (0.5 s at tickTime=1000) of the
        # leader's 1.5 s margin (docs/dcs.md). kazoo's own pings keep the session alive in between as well.
        await self._call("keepalive", lambda c: c.sync_async(self._scope_path))
        current = self._current_session()
        if current != session_id:  # the session changed while the request was out: it proves nothing
            return False
        replaced = self._lease_session is not None and self._lease_session != session_id
        if replaced:
            log.warning("ZooKeeper session %x expired; now on session %x", self._lease_session, session_id)
            self._member_written = None
        self._lease_session = session_id
        return not replaced

    def leads_on_lease(self) -> bool:
        current = self._current_session()
        return current is not None and current == self._leader_session == self._lease_session

    # -- reading -----------------------------------------------------------------------------------
    async def get_cluster(self) -> ClusterView:
        try:
            async with asyncio.timeout(self._timeout):  # the whole read, like etcd's one range request
                nodes = await self._read_scope()
        except TimeoutError:
            if self._session is None or not self._session.client.connected:
                raise DcsError(f"zookeeper: not connected to {self._hosts} (read cluster)") from None
            raise DcsError(f"zookeeper: read cluster timed out after {self._timeout:g}s") from None
        kvs = {key: (text, int(stat.version) + 1) for key, (text, stat) in nodes.items()}
        revision = max((int(stat.mzxid) for _, stat in nodes.values()), default=0)
        decoded = codec.decode_cluster(self.scope, kvs, revision=revision)
        self._timeline_floor = max(self._timeline_floor, decoded.view.status.timeline or 0)
        self._notes.report(decoded.notes)
        leader = nodes.get(codec.LEADER)
        self._leader_known = _stat_key(leader[1] if leader else None)
        self._check_member_cache(nodes.get(codec.MEMBERS + self.name))
        status = kvs.get(codec.STATUS)
        self._status_written = still_written(self._status_written, status[0] if status else None)
        return decoded.view

    async def _read_scope(self) -> dict[str, tuple[str, ZnodeStat]]:
        # `sync` makes the server we talk to catch up with the ensemble's leader: the reads are then current.
        await self._call("read cluster (sync)", lambda c: c.sync_async(self._scope_path))
        return await self._walk()

    async def _walk(self, *, leaves_only: bool = True) -> dict[str, tuple[str, ZnodeStat]]:
        """Every leaf znode under the scope (all znodes, parents first, unless `leaves_only`), by key
        relative to the prefix; nodes vanishing meanwhile are left out (a member going away mid-read is
        simply not there)."""
        found: dict[str, tuple[str, ZnodeStat]] = {}
        parents = [""]
        while parents:
            listings = await asyncio.gather(*(self._children(parent) for parent in parents))
            keys = [parent + child for parent, children in zip(parents, listings, strict=True) for child in children]
            values = await asyncio.gather(*(self._get(key) for key in keys))
            parents = []
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    continue
                text, stat = value
                if not leaves_only:
                    found[key] = value
                if stat.numChildren > 0:
                    parents.append(key + "/")
                elif leaves_only and not (key in _DIRECTORIES and not text):
                    found[key] = value
        return found

    async def _children(self, relative: str) -> list[str]:
        path = self._path(relative).rstrip("/")
        try:
            return list(await self._call("list keys", lambda c: c.get_children_async(path)))
        except NoNodeError:
            return []

    def _check_member_cache(self, stored: tuple[str, ZnodeStat] | None) -> None:
        """Someone deleted or rewrote our member key (or it is not on our session): write it again."""
        if self._member_written is None:
            return
        text, session_id = self._member_written
        if stored is None or stored[0] != text or stored[1].ephemeralOwner != session_id:
            self._member_written = None

    async def wait_for_change(self, timeout: float) -> bool:
        self._ensure_watch()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._observations != self._verified and self._leader_observed != self._leader_known:
                self._verified = self._observations
                if await self._leader_moved_on(deadline - loop.time()):
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._leader_changed.clear()
            try:
                await bounded(self._leader_changed.wait(), remaining)
            except TimeoutError:
                return False

    async def _leader_moved_on(self, budget: float) -> bool:
        """Is the leader znode really not what the caller has seen? The watch's reading may predate the
        caller's own write (kazoo completes requests and calls watchers on different threads), so a
        difference is checked with one fresh read before it wakes anybody; a failed check wakes (the
        caller reads the cluster again anyway)."""
        path = self._path(codec.LEADER)
        try:
            async with asyncio.timeout(max(budget, 0.05)):
                stat = await self._call("check leader", lambda c: c.exists_async(path))
        except (DcsError, TimeoutError):
            return True
        fresh = _stat_key(stat)
        if fresh == self._leader_known:
            return False
        self._leader_known = fresh
        return True

    # -- the watch -----------------------------------------------------------------------------------
    def _ensure_watch(self) -> None:
        if self._closed:
            return
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch_forever(), name=f"zookeeper-watch-{self.scope}")

    def _on_watch(self, _event: Any) -> None:
        """kazoo's watcher, on a kazoo thread: the leader znode changed (or the connection dropped)."""
        session = self._session
        if session is not None:
            with contextlib.suppress(RuntimeError):
                session.loop.call_soon_threadsafe(self._watch_event.set)

    async def _watch_forever(self) -> None:
        """Keep an `exists` watch on `leader` armed; never raises (ZooKeeper being down is normal)."""
        backoff = _WATCH_BACKOFF_MIN
        failing = False
        path = self._path(codec.LEADER)
        while not self._closed:
            try:
                self._watch_event.clear()
                stat = await self._call("watch leader", lambda c: c.exists_async(path, watch=self._on_watch))
                self._leader_observed = _stat_key(stat)
                self._observations += 1
                backoff, failing = _WATCH_BACKOFF_MIN, False
                self._leader_changed.set()  # wait_for_change compares it with what the caller has seen
                await self._watch_event.wait()
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not connected, a timeout: retry after a pause
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "zookeeper watch on %s failed (%s); retrying", path, exc)
                failing = True
            with contextlib.suppress(TimeoutError):
                await bounded(self._watch_event.wait(), backoff)  # a reconnection retries at once
            backoff = min(backoff * 2, _WATCH_BACKOFF_MAX)

    # -- bootstrap ---------------------------------------------------------------------------------
    async def initialize(self, sysid: str = "", *, create_new: bool = True) -> bool:
        if create_new:
            return await self._create("initialize", codec.INITIALIZE, sysid)
        await self._put(codec.INITIALIZE, sysid, None)
        return True

    async def cancel_initialization(self) -> None:
        await self._delete("cancel initialization", codec.INITIALIZE, None)

    # -- the leader lock ---------------------------------------------------------------------------
    async def acquire_leader(self) -> bool:
        await self._lease("acquire leader")  # connected, on a session that lives at least ttl
        path = self._path(codec.LEADER)
        try:
            _, stat = await self._call("acquire leader", lambda c: c.create_async(
                path, self.name.encode(), ephemeral=True, makepath=True, include_data=True))
        except NodeExistsError:
            return False
        except NoNodeError as exc:  # the scope was deleted while makepath created it: a lost race
            log.info("zookeeper: acquire leader raced with a delete (%s)", exc)
            return False
        self._leader_known = _stat_key(stat)
        # Ours, on the session that created it (normally `session_id`; a newer one if kazoo replaced it
        # while the request waited). Like etcd3's acquire on a fresh lease: keepalives refresh that one now.
        self._leader_session = self._lease_session = int(stat.ephemeralOwner)
        return True

    async def _owned_leader(self, what: str, session_id: int | None) -> ZnodeStat | None:
        """The leader znode's stat if it holds our name (and, with `session_id`, is owned by that session)."""
        found = await self._get(codec.LEADER)
        if found is None or found[0] != self.name:
            return None
        if session_id is not None and found[1].ephemeralOwner != session_id:
            log.info("zookeeper: %s: the leader key names us but belongs to another session", what)
            return None
        return found[1]

    async def update_leader(self, status: ClusterStatus | None = None) -> bool:
        """The leader znode must hold our name on our current session (then the session, alive as this
        very read shows, keeps it); a vanished one is not recreated: the core decides to re-acquire."""
        session_id = await self._lease("update leader")
        stat = await self._owned_leader("update leader", session_id)
        if stat is None or self._current_session() != session_id:
            self._leader_session = None
            return False
        self._leader_session = session_id
        if self._lease_session is None:
            self._lease_session = session_id
        status_text = self._status_text(status)
        if status_text is not None and not await self._leader_txn("update leader", stat, status_text, delete=False):
            self._leader_session = None
            return False
        return True

    async def delete_leader(self, status: ClusterStatus | None = None) -> bool:
        stat = await self._owned_leader("delete leader", None)
        if stat is None:
            return False
        if not await self._leader_txn("delete leader", stat, self._status_text(status), delete=True):
            return False
        self._leader_session = None
        self._leader_known = None
        return True

    async def _leader_txn(self, what: str, leader: ZnodeStat, status_text: str | None, *, delete: bool) -> bool:
        """Atomically: the leader znode still at `leader`'s version, `status` written (when given), and
        the leader deleted (with `delete`). `status` is set, or created when it does not exist yet."""
        leader_path, status_path = self._path(codec.LEADER), self._path(codec.STATUS)
        for create_status in (False, True, False):  # created or deleted by someone meanwhile: try again
            transaction_ops: list[_Op] = []
            if status_text is not None:
                transaction_ops.append(("create" if create_status else "set_data",
                                        {"path": status_path, "value": status_text.encode()}))
            leader_op = "delete" if delete else "check"
            transaction_ops.append((leader_op, {"path": leader_path, "version": leader.version}))
            results = await self._commit(what, transaction_ops)
            failure = _first_failure(results)
            if failure is None:
                if status_text is not None:
                    self._status_written = status_text
                return True
            status_failed = status_text is not None and failure == 0
            if not (status_failed and isinstance(results[0], NoNodeError | NodeExistsError)):
                return False
        return False

    async def _commit(self, what: str, transaction_ops: Sequence[_Op]) -> list[Any]:
        """One multi-operation transaction; the result of each operation (an exception when it failed)."""
        def start(client: KazooClient) -> Any:
            transaction = client.transaction()
            for method, arguments in transaction_ops:
                getattr(transaction, method)(**arguments)
            return transaction.commit_async()

        return list(await self._call(what, start))

    def _status_text(self, status: ClusterStatus | None) -> str | None:
        """`status` as JSON, unless there is none or it is what we wrote last."""
        if status is None:
            return None
        status = status_with_timeline_floor(status, self._timeline_floor)
        self._timeline_floor = max(self._timeline_floor, status.timeline or 0)
        text = codec.status_to_json(status)
        return None if text == self._status_written else text

    # -- members -----------------------------------------------------------------------------------
    async def touch_member(self, data: Mapping[str, Any]) -> bool:
        text = codec.member_to_json(data)
        session_id = await self._lease("write member")
        if self._member_written == (text, session_id):
            return True
        path, value = self._member_path, text.encode()
        if self._member_written is not None and self._member_written[1] == session_id:
            try:
                await self._call("write member", lambda c: c.set_async(path, value))
            except NoNodeError:
                await self._create_member(session_id, value)
        else:
            await self._create_member(session_id, value)
        if self._lease_session is None:
            self._lease_session = session_id
        self._member_written = (text, session_id)
        return True

    async def _create_member(self, session_id: int, value: bytes) -> None:
        await self._create_ephemeral(codec.MEMBERS + self.name, session_id, value, f"write member {self.name}")

    async def _create_ephemeral(self, relative: str, session_id: int, value: bytes, what: str) -> None:
        """Create our ephemeral znode at `relative`; one left by another session (a previous run of this
        member or sidecar, or a plain key) is replaced, atomically, by one of ours."""
        path = self._path(relative)
        for _ in range(3):
            try:
                await self._call(what, lambda c: c.create_async(path, value, ephemeral=True, makepath=True))
                return
            except NodeExistsError:
                pass
            found = await self._get(relative)
            if found is None:
                continue
            version = found[1].version
            if found[1].ephemeralOwner == session_id:
                with contextlib.suppress(NoNodeError, BadVersionError):
                    await self._call(what, functools.partial(_set_data, path=path, value=value, version=version))
                    return
                continue
            results = await self._commit(what, [
                ("delete", {"path": path, "version": version}),
                ("create", {"path": path, "value": value, "ephemeral": True}),
            ])
            if _first_failure(results) is None:
                return
        raise DcsError(f"zookeeper: {what}: the key keeps changing under us")

    async def publish_transient(self, relative: str, text: str) -> None:
        # An ephemeral znode of this session: kazoo's pings keep the session, hence the key, alive.
        session_id = await self._lease(f"write {relative}")
        if self._transient_written.get(relative) == (text, session_id):
            return
        await self._create_ephemeral(relative, session_id, text.encode(), f"write {relative}")
        self._transient_written[relative] = (text, session_id)

    async def delete_member(self, name: str) -> bool:
        if name == self.name:
            self._member_written = None
        return await self._delete(f"delete member {name}", codec.MEMBERS + name, None)

    async def delete_cluster(self) -> int:
        """One transaction deleting every znode of the scope (children first) and the scope's own znode."""
        for _ in range(3):  # a key created or deleted meanwhile fails the transaction: list again
            await self._call("read cluster (sync)", lambda c: c.sync_async(self._scope_path))
            if await self._call("read cluster", lambda c: c.exists_async(self._scope_path)) is None:
                return 0
            nodes = await self._walk(leaves_only=False)
            paths = [self._path(key).rstrip("/") for key in reversed(nodes)] + [self._scope_path]
            results = await self._commit("delete the cluster's keys",
                                         [("delete", {"path": path}) for path in paths])
            if _first_failure(results) is None:
                return sum(1 for _, stat in nodes.values() if stat.numChildren == 0)
        raise DcsError("zookeeper: delete the cluster's keys: they keep changing; try again")

    # -- compare-and-swap values -----------------------------------------------------------------
    async def _create(self, what: str, relative: str, text: str) -> bool:
        path = self._path(relative)
        try:
            await self._call(what, lambda c: c.create_async(path, text.encode(), makepath=True))
        except NodeExistsError:
            return False
        except NoNodeError:  # a parent vanished while it was being created: a lost race
            return False
        return True

    async def _put(self, relative: str, text: str, revision: int | None) -> bool:
        """Write a persistent key: revision None = unconditional upsert, 0 = only if absent, n = only at
        version n - 1."""
        if revision == 0:
            return await self._create(f"write {relative}", relative, text)
        path, value = self._path(relative), text.encode()
        version = -1 if revision is None else revision - 1
        try:
            await self._call(f"write {relative}", lambda c: c.set_async(path, value, version=version))
            return True
        except BadVersionError:
            return False
        except NoNodeError:
            if revision is not None:
                return False
        # Absent, unconditional: create it; somebody creating it meanwhile wins, then overwrite once more.
        if await self._create(f"write {relative}", relative, text):
            return True
        try:
            await self._call(f"write {relative}", lambda c: c.set_async(path, value))
        except NoNodeError:
            return False
        return True

    async def _delete(self, what: str, relative: str, revision: int | None) -> bool:
        if revision == 0:
            return False  # "only if absent": nothing to delete
        path = self._path(relative)
        version = -1 if revision is None else revision - 1
        try:
            await self._call(what, lambda c: c.delete_async(path, version=version))
        except (NoNodeError, BadVersionError):
            return False
        except NotEmptyError:
            return False
        return True

    async def set_config(self, value: Mapping[str, Any], revision: int | None = None) -> bool:
        return await self._put(codec.CONFIG, codec.config_to_json(value), revision)

    async def set_failover(self, value: Mapping[str, Any], revision: int | None = None) -> bool:
        return await self._put(codec.FAILOVER, codec.failover_to_json(value), revision)

    async def delete_failover(self, revision: int | None = None) -> bool:
        return await self._delete("delete failover", codec.FAILOVER, revision)

    async def set_sync(self, value: SyncState, revision: int | None = None) -> bool:
        return await self._put(codec.SYNC, codec.sync_to_json(value), revision)

    async def delete_sync(self, revision: int | None = None) -> bool:
        return await self._delete("delete sync", codec.SYNC, revision)

    async def set_history(self, history: Sequence[HistoryEntry]) -> bool:
        return await self._put(codec.HISTORY, codec.history_to_json(history), None)

    async def set_failsafe(self, value: Mapping[str, str] | None) -> bool:
        if value is None:
            await self._delete("delete failsafe", codec.FAILSAFE, None)
            return True
        return await self._put(codec.FAILSAFE, codec.failsafe_to_json(value), None)


def _set_data(client: KazooClient, *, path: str, value: bytes, version: int) -> Any:
    return client.set_async(path, value, version=version)


def _first_failure(results: Sequence[Any]) -> int | None:
    """The index of the operation that made a transaction fail (the others report RolledBackError)."""
    from kazoo.exceptions import RolledBackError

    for index, result in enumerate(results):
        if isinstance(result, Exception) and not isinstance(result, RolledBackError):
            return index
    return None


async def zookeeper_from_config(
    section: Mapping[str, Any],
    *,
    namespace: str,
    scope: str,
    name: str,
    ttl: int,
    timeout: float = 2.0,
    readonly: bool = False,
) -> Dcs:
    """A ZooKeeper DCS from Patroni's `zookeeper` section.

    Keys read: hosts, use_ssl, cacert, cert, key, key_password, verify, set_acls, auth_data. Waits at
    most `timeout` for the first connection; if the ensemble is unreachable the backend is returned all
    the same, its calls raising DcsError until kazoo (which keeps trying) reaches it.
    """
    try:
        hosts = hosts_from_config(section)
        options = ZooKeeperOptions.from_config(section)
    except (ValueError, TypeError) as exc:
        raise DcsError(f"zookeeper: {exc}") from exc
    if options.use_ssl:
        for key in ("cacert", "cert", "key"):
            path = getattr(options, key)
            if path is not None:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise DcsError(f"zookeeper: {key} {path!r} cannot be read: {exc.strerror}") from exc
    dcs = ZooKeeperDcs(hosts=hosts, namespace=namespace, scope=scope, name=name, ttl=ttl, timeout=timeout,
                       readonly=readonly, options=options)
    await dcs.connect()
    return dcs
