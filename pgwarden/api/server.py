"""The REST server (aiohttp): health checks, status, cluster and history, and a place for management.

Every read endpoint answers from the latest published `NodeState` only: no request waits on the HA
loop or does DCS IO, so a health check costs microseconds even while the loop is busy or the DCS is
down (at most once a second one of them first waits, bounded, for a new probe of PostgreSQL: see
`StateHolder.fresh`). Routing is one table keyed by (METHOD, first path segment):
- GET/HEAD/OPTIONS on any path: `/patroni`, `/cluster`, `/history`, or a health check (unknown paths
  are 503 with the status JSON, as in Patroni). HEAD and OPTIONS return the status code only.
- Management endpoints (switchover, restart, config, ...) are plugged in by the caller through
  `routes` (see `pgwarden.api.management.management_routes`); any non-read method is checked against
  the access policy first (pgwarden.api.security). An unknown management request is 501.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from pgwarden.api.health import BadQuery, evaluate, status_json
from pgwarden.api.security import AccessGuard, AccessPolicy, BasicAuthCredentials
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.api.views import cluster_json, history_json

__all__ = [
    "READ_ENDPOINTS",
    "BasicAuthCredentials",
    "Handler",
    "Reply",
    "build_app",
    "read_reply",
    "start_api",
    "stop_api",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request, StateHolder], Awaitable[web.StreamResponse]]
"""A management endpoint. It gets the holder to read the state and to wake the HA loop."""

READ_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
MAX_REQUEST_BODY = 64 * 1024  # management bodies are small JSON documents
KEEPALIVE_TIMEOUT = 15.0  # seconds an idle keep-alive connection (HAProxy's) stays open
SHUTDOWN_TIMEOUT = 3.0  # seconds in-flight requests get when the server stops


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


def _render(reply: Reply, *, status_only: bool) -> web.Response:
    if status_only:
        return web.Response(status=reply.status)
    if reply.json is not None:
        return web.json_response(reply.json, status=reply.status)
    return web.Response(status=reply.status, text=reply.text)


def _last_values(request: web.Request) -> dict[str, str]:
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

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        method, segment = request.method, _first_segment(request.path)
        handler = self.routes.get((method, segment))
        if handler is None and method == hdrs.METH_HEAD:
            handler = self.routes.get((hdrs.METH_GET, segment))
        if handler is not None:
            if method not in READ_METHODS:
                refusal = await self.access.refusal(request, self.holder.get())
                if refusal is not None:
                    return refusal
            return await handler(request, self.holder)
        if method in READ_METHODS:
            return await self._read(request, segment)
        return web.Response(status=501, text=f"{method} {request.path} is not implemented")

    async def _read(self, request: web.Request, segment: str) -> web.Response:
        # /cluster and /history come from the DCS view alone; everything else reports PostgreSQL too.
        state = self.holder.get() if segment in DCS_ONLY_ENDPOINTS else await self.holder.fresh()
        try:
            reply = read_reply(state, self.clock(), request.path, _last_values(request))
        except BadQuery as exc:
            return web.Response(status=400, text=str(exc))
        return _render(reply, status_only=request.method != hdrs.METH_GET)


@web.middleware
async def _no_tracebacks(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A bug in a handler is logged here and answered with a bare 500 (no internals leak out)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("REST API: unhandled error for %s %s", request.method, request.path)
        return web.Response(status=500, text="internal error")


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = "pgwarden"  # no library or Python versions on the wire


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
) -> web.Application:
    """The aiohttp application. `routes` maps (METHOD, first path segment) to management handlers;
    every non-read request to one of them passes `access` (allowlist, client certificate, `auth`)
    first. `clock` must be the same monotonic clock the agent uses for `lock_deadline`."""
    router = _Router(holder, routes or {}, AccessGuard(_policy(auth, access)), clock)
    app = web.Application(middlewares=[_no_tracebacks], client_max_size=MAX_REQUEST_BODY)
    app.router.add_route("*", "/{tail:.*}", router.dispatch)
    app.on_response_prepare.append(_server_header)
    return app


async def start_api(
    holder: StateHolder,
    listen_host: str,
    listen_port: int,
    *,
    auth: BasicAuthCredentials | None = None,
    access: AccessPolicy | None = None,
    routes: Mapping[tuple[str, str], Handler] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Start serving on `listen_host:listen_port` ("" or "*": every interface, IPv4 and IPv6), over
    TLS when `ssl_context` is given (see `ssl_context_from`).

    Returns the runner; `runner.addresses` gives the bound (host, port) pairs (useful with port 0).
    """
    app = build_app(holder, auth=auth, access=access, routes=routes)
    runner = web.AppRunner(app, keepalive_timeout=KEEPALIVE_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    host = None if listen_host in ("", "*") else listen_host
    try:
        await web.TCPSite(runner, host, listen_port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def stop_api(runner: web.AppRunner, timeout: float = SHUTDOWN_TIMEOUT + 2.0) -> None:
    """Stop accepting connections and close the server, waiting at most `timeout` seconds."""
    async with asyncio.timeout(timeout):
        await runner.cleanup()
