"""The REST server (aiohttp's low-level server): health checks, status, cluster and history, and a place for management.

Every read endpoint answers from the latest published `NodeState` only: no request waits on the HA
loop or does DCS IO, so a health check costs microseconds even while the loop is busy or the DCS is
down (at most once a second one of them first waits, bounded, for a new probe of PostgreSQL: see
`StateHolder.fresh`). Routing is one table keyed by (METHOD, first path segment):
- GET/HEAD/OPTIONS on any path: `/patroni`, `/cluster`, `/history`, or a health check (unknown paths
  are 503 with the status JSON, as in Patroni). HEAD and OPTIONS return the status code only.
- Management endpoints (switchover, restart, config, ...) are plugged in by the caller through
  `routes` (see `pgwarden.api.management.management_routes`); any non-read method is checked against
  the access policy first (pgwarden.api.security). An unknown management request is 501.
Connections (headers of every answer, limits, timeouts, aiohttp's own errors) are `api.listener`'s;
`ApiServer.reconfigure`/`rebind` apply a reloaded `restapi` section to the running server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs

from pgwarden.api.health import BadQuery, evaluate, status_json
from pgwarden.api.http import HTTPException, Request, Response, StreamResponse, json_response
from pgwarden.api.listener import AnswerHeaders, LimitedServer, ServerOptions, quiet_accept_errors
from pgwarden.api.security import AccessGuard, AccessPolicy, BasicAuthCredentials
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.api.views import cluster_json, history_json

__all__ = [
    "READ_ENDPOINTS",
    "BasicAuthCredentials",
    "Handler",
    "Reply",
    "ServerOptions",
    "build_app",
    "read_reply",
    "start_api",
    "stop_api",
]

log = logging.getLogger(__name__)

Handler = Callable[[Request, StateHolder], Awaitable[StreamResponse]]
"""A management endpoint. It gets the holder to read the state and to wake the HA loop."""
App = Callable[[Request], Awaitable[StreamResponse]]
"""The whole API as one request handler (what aiohttp's low-level server runs)."""

READ_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
MEMBERS_ALLOWLIST_EXEMPT = frozenset({"failsafe"})
"""First path segments whose unsafe requests are checked without `allowlist_include_members` (only
`restapi.allowlist`, the client certificate and the credentials): contract 4.1 for POST /failsafe, which
a leader sends exactly when it cannot read the DCS."""
MAX_REQUEST_BODY = 64 * 1024  # management bodies are small JSON documents
SHUTDOWN_TIMEOUT = 3.0  # seconds in-flight requests get when the server stops
TLS_HANDSHAKE_TIMEOUT = 10.0  # a connection counts against the limit only once its handshake is done


@dataclass(frozen=True, slots=True)
class Reply:
    """A read endpoint's answer: JSON, plain text, or only a status code."""

    status: int
    json: Any = None
    text: str | None = None


# --------------------------------------------------------------------------------------------------
# Read endpoints: pure functions of (state, now, path, query)


READ_ENDPOINTS = ("patroni", "cluster", "history")
"""First path segments answered by `read_reply` itself; every other GET path is a health check."""
DCS_ONLY_ENDPOINTS = frozenset({"cluster", "history"})


def _first_segment(path: str) -> str:
    return path.strip("/").split("/", 1)[0]


def _cluster_reply(state: NodeState) -> Reply:
    if state.cluster is None:
        return Reply(503, text="cluster state unknown: no successful DCS read yet")
    return Reply(200, json=cluster_json(state.cluster))


def _history_reply(state: NodeState) -> Reply:
    if state.cluster is None:
        return Reply(503, text="history unknown: no successful DCS read yet")
    return Reply(200, json=history_json(state.cluster))


def read_reply(state: NodeState, now: float, path: str, query: Mapping[str, str]) -> Reply:
    """The answer to GET `path`. Raises BadQuery for a malformed health query."""
    segment = _first_segment(path)
    if segment == "patroni":
        return Reply(200, json=status_json(state, now))
    if segment == "cluster":
        return _cluster_reply(state)
    if segment == "history":
        return _history_reply(state)
    health = evaluate(path, state, now, query)
    return Reply(health.status, json=health.body)


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


def _render(reply: Reply, *, status_only: bool) -> Response:
    if status_only:
        return Response(status=reply.status)
    if reply.json is not None:
        return json_response(reply.json, status=reply.status)
    return Response(status=reply.status, text=reply.text)


def _last_values(request: Request) -> dict[str, str]:
    """Query parameters, the last value winning when a name repeats."""
    return dict(request.query.items())


class _Router:
    """Dispatches every request; holds the management table and the injected clock."""

    def __init__(
        self,
        holder: StateHolder,
        routes: Mapping[tuple[str, str], Handler],
        access: AccessGuard,
        clock: Callable[[], float],
    ) -> None:
        self.holder = holder
        self.routes = {(method.upper(), segment.strip("/")): h for (method, segment), h in routes.items()}
        self.access = access
        self.clock = clock

    async def dispatch(self, request: Request) -> StreamResponse:
        method, segment = request.method, _first_segment(request.path)
        handler = self.routes.get((method, segment))
        if handler is None and method == hdrs.METH_HEAD:
            handler = self.routes.get((hdrs.METH_GET, segment))
        if handler is not None:
            if method not in READ_METHODS:
                refusal = await self.access.refusal(request, self.holder.get(),
                                                    members=segment not in MEMBERS_ALLOWLIST_EXEMPT)
                if refusal is not None:
                    return refusal
            return await handler(request, self.holder)
        if method in READ_METHODS:
            return await self._read(request, segment)
        return Response(status=501, text=f"{method} {request.path} is not implemented")

    async def _read(self, request: Request, segment: str) -> Response:
        # /cluster and /history come from the DCS view alone; everything else reports PostgreSQL too.
        state = self.holder.get() if segment in DCS_ONLY_ENDPOINTS else await self.holder.fresh()
        try:
            reply = read_reply(state, self.clock(), request.path, _last_values(request))
        except BadQuery as exc:
            return Response(status=400, text=str(exc))
        except OverflowError:  # e.g. ?lag= with hundreds of digits: a bad query, not a server error
            return Response(status=400, text="invalid query: a number is out of range")
        return _render(reply, status_only=request.method != hdrs.METH_GET)


async def _answer(dispatch: App, headers: AnswerHeaders, request: Request) -> StreamResponse:
    """Every request: a bug in a handler is logged and answered with a bare 500 (no internals leak
    out); every answer gets the `server_tokens` Server header and the extra headers (api.listener)."""
    try:
        response = await dispatch(request)
    except HTTPException as exc:  # aiohttp's own (e.g. a body over the size limit) carry their status
        response = Response(status=exc.status, text=exc.text, headers=exc.headers)
    except Exception:
        log.exception("REST API: unhandled error for %s %s", request.method, request.path)
        response = Response(status=500, text="internal error")
    headers.stamp(response, tls=request.secure)
    return response


def _policy(auth: BasicAuthCredentials | None, access: AccessPolicy | None) -> AccessPolicy:
    """`access` with `auth` filled in (an explicit `auth` wins over access.auth)."""
    policy = access if access is not None else AccessPolicy()
    return dataclasses.replace(policy, auth=auth) if auth is not None else policy


def build_app(
    holder: StateHolder,
    *,
    auth: BasicAuthCredentials | None = None,
    access: AccessPolicy | None = None,
    routes: Mapping[tuple[str, str], Handler] | None = None,
    clock: Callable[[], float] = time.monotonic,
    options: ServerOptions | None = None,
) -> App:
    """The API as one request handler for aiohttp's low-level server (`api.http`). `routes` maps
    (METHOD, first path segment) to management handlers; every non-read request to one of them
    passes `access` (allowlist, client certificate, `auth`) first. `clock` must be the same monotonic
    clock the agent uses for `lock_deadline`. `options`: the answer headers (server_tokens, extra headers)."""
    return _app_parts(holder, auth, access, routes, clock, options)[0]


def _app_parts(
    holder: StateHolder,
    auth: BasicAuthCredentials | None,
    access: AccessPolicy | None,
    routes: Mapping[tuple[str, str], Handler] | None,
    clock: Callable[[], float],
    options: ServerOptions | None,
) -> tuple[App, _Router, AnswerHeaders]:
    router = _Router(holder, routes or {}, AccessGuard(_policy(auth, access)), clock)
    headers = AnswerHeaders(options or ServerOptions())
    return functools.partial(_answer, router.dispatch, headers), router, headers


def _small_requests(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Request:
    """aiohttp's request factory with the body limit of the management endpoints."""
    return Request(message, payload, protocol, writer, task, protocol._loop, client_max_size=MAX_REQUEST_BODY)


@dataclass(frozen=True, slots=True)
class Binding:
    """Where and how the server listens: host ("" or "*": every interface), port, TLS, backlog."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    backlog: int = 5


@dataclass
class ApiServer:
    """A running REST server (see `start_api`). `reconfigure` and `rebind` apply a reloaded
    configuration without dropping established connections."""

    handler: LimitedServer
    server: asyncio.Server
    binding: Binding
    router: _Router
    headers: AnswerHeaders

    @property
    def addresses(self) -> list[Any]:
        """The bound socket addresses, (host, port, ...) tuples (useful with port 0)."""
        return [sock.getsockname() for sock in self.server.sockets]

    def reconfigure(self, access: AccessPolicy, options: ServerOptions) -> None:
        """New access rules and answer headers, for every request from now on (open connections too)."""
        self.router.access = AccessGuard(access)
        self.headers.update(options)
        self.handler.options = options

    async def rebind(self, binding: Binding) -> None:
        """Listen with `binding` instead (another address, TLS certificate or backlog): the old
        listening socket closes, connections already accepted stay. When the new address cannot be
        bound, the old binding is restored and the OSError raised."""
        if binding == self.binding:
            return
        self.server.close()
        try:
            self.server = await _listen(self.handler, binding)
        except OSError:
            self.server = await _listen(self.handler, self.binding)
            raise
        self.binding = binding


async def _listen(handler: LimitedServer, binding: Binding) -> asyncio.Server:
    host = None if binding.host in ("", "*") else binding.host
    loop = asyncio.get_running_loop()
    handshake = TLS_HANDSHAKE_TIMEOUT if binding.ssl_context is not None else None
    return await loop.create_server(handler, host, binding.port, ssl=binding.ssl_context, reuse_address=True,
                                    backlog=max(1, binding.backlog), ssl_handshake_timeout=handshake)  # fmt: skip


async def start_api(
    holder: StateHolder,
    listen_host: str,
    listen_port: int,
    *,
    auth: BasicAuthCredentials | None = None,
    access: AccessPolicy | None = None,
    routes: Mapping[tuple[str, str], Handler] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    options: ServerOptions | None = None,
) -> ApiServer:
    """Start serving on `listen_host:listen_port` ("" or "*": every interface, IPv4 and IPv6), over
    TLS when `ssl_context` is given (see `ssl_context_from`); `options`: server_tokens, extra
    headers, backlog and connection limits (api.listener)."""
    options = options or ServerOptions()
    app, router, headers = _app_parts(holder, auth, access, routes, time.monotonic, options)
    handler = LimitedServer(app, options=options, answer_headers=headers, request_factory=_small_requests)
    quiet_accept_errors(asyncio.get_running_loop())
    binding = Binding(listen_host, listen_port, ssl_context, options.request_queue_size)
    return ApiServer(handler, await _listen(handler, binding), binding, router, headers)


async def stop_api(api: ApiServer, timeout: float = SHUTDOWN_TIMEOUT + 2.0) -> None:
    """Stop accepting connections, give requests in flight SHUTDOWN_TIMEOUT, close the rest; at most
    `timeout` seconds in all."""
    api.server.close()
    async with asyncio.timeout(timeout):
        await api.handler.shutdown(SHUTDOWN_TIMEOUT)
        await api.server.wait_closed()
