"""A small asyncio client for etcd v3 through its JSON gateway (`/v3/...`, served by etcd 3.4 and later).

Why not a gRPC client: we used `aetcd` first. gRPC's asyncio layer binds its poller to the first event
loop it sees, cancels every call in flight when a channel is reset, and costs about 16 MB of resident
memory per agent. The gateway speaks plain HTTP/1.1 + JSON on the client port, which aiohttp (already the
REST server's library) handles with explicit per-request timeouts; etcd documents it as a stable API,
and everything the DCS needs is there: ranges, transactions with compare on value/lease/revisions,
leases (grant, keepalive, revoke, time-to-live), watches (a streamed response) and authentication.

Encoding rules of the gateway: keys and values are base64; int64 fields are JSON strings; fields equal
to their default (0, false, empty) are omitted from responses, so every read here has a default.

Errors are `EtcdError` with a `kind` the caller can act on: "unavailable" (nothing reached etcd; safe
to retry elsewhere), "timeout" (may or may not have been applied), "auth", "lease" (lease not found),
"compacted" (a watch asked for history that is gone) and "other".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from pgwarden.aio import bounded
from pgwarden.config.addresses import url_host

log = logging.getLogger(__name__)

ErrorKind = Literal["unavailable", "timeout", "auth", "lease", "compacted", "other"]
Json = dict[str, Any]

_GRPC_UNAUTHENTICATED = 16
_GRPC_NOT_FOUND = 5


class EtcdError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


# -- encoding (pure) -----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The `range_end` that makes a range cover every key starting with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # the prefix is all 0xff (or empty): every key from it on


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=unb64(kv.get("key")),
            value=unb64(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int
    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["PUT", "DELETE"]
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One message of a watch stream: the confirmation that it started (no events), or events."""

    revision: int
    events: tuple[WatchEvent, ...]


def _revision(message: Mapping[str, Any]) -> int:
    return int(message.get("header", {}).get("revision", 0))


# Transaction building blocks (the gateway's JSON form of etcdserverpb.Compare and RequestOp).


def compare_value(key: bytes, value: bytes) -> Json:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def compare_lease(key: bytes, lease: int) -> Json:
    return {"key": b64(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}


def compare_absent(key: bytes) -> Json:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def compare_mod_revision(key: bytes, revision: int) -> Json:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def op_put(key: bytes, value: bytes, lease: int = 0) -> Json:
    put: Json = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_delete(key: bytes, range_end: bytes | None = None) -> Json:
    request: Json = {"key": b64(key)}
    if range_end is not None:
        request["range_end"] = b64(range_end)
    return {"request_delete_range": request}


def _error_kind(code: int, message: str) -> ErrorKind:
    if "lease not found" in message:
        return "lease"
    if code == _GRPC_UNAUTHENTICATED or "auth" in message or "permission denied" in message:
        return "auth"
    if "timed out" in message or "timeout" in message:
        return "timeout"
    if "no leader" in message or "not capable" in message or "stopped" in message:
        return "unavailable"
    return "other"


# -- the client ----------------------------------------------------------------------------------------


class EtcdHosts:
    """The etcd endpoints a client talks to, one at a time (the next after a failure), over one aiohttp session.
    Shared by the v3 client here and the v2 client (`dcs.etcd2`); create and use it inside one event loop."""

    def __init__(self, hosts: Sequence[tuple[str, int]], *, timeout: float, username: str | None,
                 password: str | None, ssl_context: ssl.SSLContext | None) -> None:
        if not hosts:
            raise ValueError("etcd: at least one host is required")
        if (username is None) != (password is None):
            raise ValueError("etcd: username and password must be given together")
        self._hosts = list(hosts)
        self._host_index = 0
        self.timeout = timeout
        self._ssl = ssl_context
        self._scheme = "https" if ssl_context is not None else "http"
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def host_label(self) -> str:
        """`host:port` of the endpoint in use (an IPv6 host in brackets, as in a URL)."""
        host, port = self._hosts[self._host_index]
        return f"{url_host(host)}:{port}"

    def rotate(self) -> None:
        """Use the next host for the following requests."""
        self._host_index = (self._host_index + 1) % len(self._hosts)

    def _closed_error(self) -> Exception:
        return EtcdError("other", "etcd: the client is closed")

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise self._closed_error()
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=8, ssl=self._ssl if self._ssl is not None else False)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps)
        return self._session

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await bounded(session.close(), self.timeout)


class EtcdClient(EtcdHosts):
    """etcd's v3 JSON gateway on one of `hosts` at a time; moves to the next one when a host cannot be reached.

    Every request is bounded by `timeout` seconds, connection included. Safe to share between tasks of
    one event loop; create and use it inside that loop.
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
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_lock = asyncio.Lock()

    def _url(self, path: str) -> str:
        return f"{self._scheme}://{self.host_label}/v3/{path}"

    def rotate(self) -> None:
        super().rotate()
        self._token = None  # tokens are per server in etcd's simple-token mode

    # -- requests ------------------------------------------------------------------------------------
    async def _post_once(self, path: str, body: Mapping[str, Any], *, authenticated: bool = True) -> Json:
        headers = {}
        if authenticated and self._username is not None:
            headers["Authorization"] = await self._auth_token()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._http().post(self._url(path), json=body, headers=headers, timeout=timeout) as response:
                payload = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise EtcdError("timeout", f"etcd {self.host_label}: {path} timed out after {self.timeout}s") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            # Refused, reset or closed before an answer: nothing was applied, another host may help.
            raise EtcdError("unavailable", f"etcd {self.host_label}: {path}: {exc or type(exc).__name__}") from exc
        return self._decode(path, status, payload)

    def _decode(self, path: str, status: int, payload: bytes) -> Json:
        try:
            message = json.loads(payload) if payload else {}
        except ValueError as exc:
            if status == 404:  # not etcd's gateway answering (an old etcd, or another server on the port)
                raise EtcdError("other", f"etcd {self.host_label}: {path}: no v3 gateway (HTTP 404)") from exc
            raise EtcdError("other", f"etcd {self.host_label}: {path}: HTTP {status}, not JSON") from exc
        if not isinstance(message, dict):
            raise EtcdError("other", f"etcd {self.host_label}: {path}: HTTP {status}, unexpected answer")
        if status != 200 or "error" in message:
            text = str(message.get("message") or message.get("error") or f"HTTP {status}")
            code = int(message.get("code", 0) or 0)
            raise EtcdError(_error_kind(code, text), f"etcd {self.host_label}: {path}: {text}")
        return message

    async def post(self, path: str, body: Mapping[str, Any]) -> Json:
        """One request; tries the other hosts while nothing could reach one; re-authenticates once."""
        attempts = max(2, len(self._hosts))
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._post_once(path, body)
            except EtcdError as exc:
                if exc.kind == "auth" and self._username is not None and not reauthenticated:
                    self._token, reauthenticated = None, True  # the token expired or the server restarted
                    continue
                if exc.kind == "timeout":
                    self.rotate()  # the next request goes elsewhere; this one may have been applied
                    raise
                if exc.kind != "unavailable" or attempt >= attempts:
                    if exc.kind == "unavailable":
                        self.rotate()
                    raise
                log.debug("%s; trying the next host", exc)
                self.rotate()

    async def _auth_token(self) -> str:
        async with self._token_lock:
            if self._token is None:
                body = {"name": self._username, "password": self._password}
                try:
                    reply = await self._post_once("auth/authenticate", body, authenticated=False)
                except EtcdError as exc:
                    kind: ErrorKind = "auth" if "authentication failed" in str(exc) else exc.kind
                    raise EtcdError(kind, str(exc)) from exc
                token = reply.get("token")
                if not isinstance(token, str) or not token:
                    raise EtcdError("auth", f"etcd {self.host_label}: authentication failed: no token")
                self._token = token
            return self._token

    # -- key-value -------------------------------------------------------------------------------------
    async def range(self, key: bytes, range_end: bytes | None = None) -> RangeResult:
        body: Json = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        reply = await self.post("kv/range", body)
        return RangeResult(_revision(reply), tuple(KeyValue.from_json(kv) for kv in reply.get("kvs", ())))

    async def get(self, key: bytes) -> KeyValue | None:
        kvs = (await self.range(key)).kvs
        return kvs[0] if kvs else None

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        return _revision(await self.post("kv/put", op_put(key, value, lease)["request_put"]))

    async def delete(self, key: bytes, range_end: bytes | None = None) -> int:
        """Deletes `key` (or the range up to `range_end`); the number of keys deleted."""
        reply = await self.post("kv/deleterange", op_delete(key, range_end)["request_delete_range"])
        return int(reply.get("deleted", 0))

    async def txn(self, compare: Sequence[Json], success: Sequence[Json], failure: Sequence[Json] = ()) -> tuple[
            bool, int]:
        """One transaction: (whether the comparisons held, the store's revision after it)."""
        reply = await self.post("kv/txn", {"compare": list(compare), "success": list(success),
                                           "failure": list(failure)})
        return bool(reply.get("succeeded", False)), _revision(reply)

    # -- leases ------------------------------------------------------------------------------------------
    async def lease_grant(self, ttl: int) -> int:
        reply = await self.post("lease/grant", {"TTL": str(ttl)})
        lease = int(reply.get("ID", 0))
        if not lease:
            raise EtcdError("other", f"etcd {self.host_label}: lease grant: {reply.get('error') or 'no lease id'}")
        return lease

    async def lease_keepalive(self, lease: int) -> int:
        """Refreshes the lease; its new TTL in seconds, 0 when etcd no longer knows it."""
        reply = await self.post("lease/keepalive", {"ID": str(lease)})
        result = reply.get("result", reply)
        return int(result.get("TTL", 0)) if isinstance(result, dict) else 0

    async def lease_revoke(self, lease: int) -> None:
        await self.post("lease/revoke", {"ID": str(lease)})

    async def lease_ttl(self, lease: int) -> tuple[int, int]:
        """(remaining TTL, granted TTL); remaining is -1 when the lease does not exist."""
        reply = await self.post("lease/timetolive", {"ID": str(lease)})
        return int(reply.get("TTL", 0)), int(reply.get("grantedTTL", 0))

    # -- watches -----------------------------------------------------------------------------------------
    async def watch(self, key: bytes, range_end: bytes | None = None, *, start_revision: int = 0,
                    connect_timeout: float | None = None) -> AsyncGenerator[WatchBatch, None]:
        """Stream the changes under [key, range_end) from `start_revision` (0: from now).

        The first batch confirms the watch (no events). Ends with EtcdError when the stream breaks;
        kind "compacted" when the revisions asked for are gone (re-read, then watch from now).
        """
        create: Json = {"key": b64(key)}
        if range_end is not None:
            create["range_end"] = b64(range_end)
        if start_revision:
            create["start_revision"] = str(start_revision)
        headers = {}
        if self._username is not None:
            headers["Authorization"] = await self._auth_token()
        limit = connect_timeout or self.timeout
        # No total limit (a watch lasts for ever); connecting and the confirmation are bounded below.
        timeout = aiohttp.ClientTimeout(total=None, connect=limit, sock_connect=limit)
        label = self.host_label
        try:
            response = await bounded(
                self._http().post(self._url("watch"), json={"create_request": create}, headers=headers,
                                  timeout=timeout), limit)
        except TimeoutError as exc:
            self.rotate()
            raise EtcdError("timeout", f"etcd {label}: watch timed out after {limit}s") from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            self.rotate()
            raise EtcdError("unavailable", f"etcd {label}: watch: {exc or type(exc).__name__}") from exc
        try:
            if response.status != 200:
                self._decode("watch", response.status, await response.read())
            first = True
            while True:
                try:
                    if first:
                        line = await bounded(response.content.readline(), limit)
                    else:
                        line = await response.content.readline()
                except TimeoutError as exc:
                    raise EtcdError("timeout", f"etcd {label}: watch not confirmed after {limit}s") from exc
                except (aiohttp.ClientError, OSError) as exc:
                    raise EtcdError("unavailable", f"etcd {label}: watch broke: {exc or type(exc).__name__}") from exc
                if not line:
                    raise EtcdError("unavailable", f"etcd {label}: watch stream ended")
                if not line.strip():
                    continue
                first = False
                yield self._watch_batch(label, line)
        finally:
            response.close()

    def _watch_batch(self, label: str, line: bytes) -> WatchBatch:
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise EtcdError("other", f"etcd {label}: watch: not JSON") from exc
        if "error" in message:
            error = message["error"]
            text = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            code = int(error.get("http_code", 0) or 0) if isinstance(error, dict) else 0
            raise EtcdError(_error_kind(code, text), f"etcd {label}: watch: {text}")
        result = message.get("result", {})
        if result.get("canceled"):
            if int(result.get("compact_revision", 0)):
                raise EtcdError("compacted", f"etcd {label}: watch: revision compacted")
            raise EtcdError("other", f"etcd {label}: watch canceled: {result.get('cancel_reason', '')}")
        events = tuple(
            WatchEvent("DELETE" if event.get("type") == "DELETE" else "PUT", KeyValue.from_json(event.get("kv", {})))
            for event in result.get("events", ())
        )
        return WatchBatch(_revision(result), events)


def ssl_context_from_config(section: Mapping[str, Any]) -> ssl.SSLContext | None:
    """Patroni's `etcd3` TLS keys: `protocol: https` or https URLs, `cacert`, `cert`, `key`, `key_password`."""
    urls = " ".join(str(section.get(k, "")) for k in ("url", "hosts", "host"))
    uses_tls = str(section.get("protocol", "http")).lower() == "https" or "https://" in urls
    if not uses_tls and not section.get("cacert") and not section.get("cert"):
        return None
    cacert = section.get("cacert")
    context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
    if section.get("cert"):
        key = section.get("key")
        context.load_cert_chain(str(section["cert"]), str(key) if key else None,
                                password=section.get("key_password"))
    return context
