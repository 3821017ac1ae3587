"""The REST server's connections: the headers of every answer, how many connections it keeps, how
long they may idle, and what aiohttp's own error answers look like.

* `restapi.server_tokens` names the server in the `Server` header of every answer, aiohttp's own
  error answers included (Patroni's values, matched case-insensitively):
  `Original` (the default) `pgwarden/<version> Python/<version>`, `Minimal` `pgwarden/<version>`,
  `ProductOnly` `pgwarden`; an unknown value counts as `ProductOnly`. No answer names aiohttp.
* `restapi.http_extra_headers` go on every answer; over TLS `https_extra_headers` go on top of them
  (as in Patroni, where the HTTPS headers "also pass" the HTTP ones); a name in both takes the HTTPS
  value. Headers that frame the message (Content-Length, Transfer-Encoding, Connection) and values
  with line breaks are ignored, with a warning.
* `restapi.request_queue_size` is the listen backlog.
* At most `max_connections` connections are kept (MAX_CONNECTIONS, and never more than half the
  process's soft RLIMIT_NOFILE): one more evicts the longest-held idle connection, or, when every
  connection is busy with a request, is itself closed at once. So a flood of idle connections can
  neither exhaust the agent's file descriptors nor lock out a load balancer's health check.
* A connection that has sent no complete request head for KEEPALIVE_TIMEOUT seconds is closed
  (idle keep-alive connections, and slowloris-style slow request heads alike); request bodies have
  their own deadline (`api.requests.BODY_TIMEOUT`).
* A malformed request is answered 400 by aiohttp and logged in one line, at most one line per
  ERROR_LOG_INTERVAL seconds (with the count of those left out), never with a traceback; the same
  holds for the event loop's "socket.accept() out of system resource" (EMFILE, ENFILE).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import resource
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs
from aiohttp.web_protocol import RequestHandler

from pgwarden import __version__
from pgwarden.api.http import Request, Response, Server, StreamResponse
from pgwarden.config.schema import RestApiConfig
from pgwarden.logutil import RateLimitedLog

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 500
KEEPALIVE_TIMEOUT = 15.0  # seconds an idle connection (HAProxy's keep-alive, or a slow request head) stays open
LINGER_TIME = 1.0  # seconds an unread request body is still drained after the answer (aiohttp's default: 10)
ERROR_LOG_INTERVAL = 10.0  # seconds between two log lines about bad requests or failing accepts
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})

_TOKENS = {
    "original": f"pgwarden/{__version__} Python/{platform.python_version()}",
    "minimal": f"pgwarden/{__version__}",
    "productonly": "pgwarden",
}


def server_header(server_tokens: str) -> str:
    """The `Server` header for a `restapi.server_tokens` value (see the module docstring)."""
    return _TOKENS.get(server_tokens.strip().lower(), _TOKENS["productonly"])


def max_connections(limit: int = MAX_CONNECTIONS) -> int:
    """`limit`, but at most half the soft RLIMIT_NOFILE (the rest is for PostgreSQL, etcd, scripts)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(8, min(limit, soft // 2))


def _clean_headers(headers: Mapping[str, Any], setting: str) -> tuple[tuple[str, str], ...]:
    clean: list[tuple[str, str]] = []
    for name, value in headers.items():
        text = "" if value is None else str(value)
        if name.lower() in _FRAMING_HEADERS or any(c in f"{name}{text}" for c in "\r\n\0") or not name.strip():
            log.warning("restapi.%s: header %r ignored (it frames the message or contains a line break)",
                        setting, name)  # fmt: skip
            continue
        clean.append((name.strip(), text))
    return tuple(clean)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The connection-level settings of the REST server (from `restapi`, see `server_options_from`)."""

    server_tokens: str = "Original"
    http_extra_headers: tuple[tuple[str, str], ...] = ()
    https_extra_headers: tuple[tuple[str, str], ...] = ()
    request_queue_size: int = 5
    max_connections: int = field(default_factory=max_connections)
    keepalive_timeout: float = KEEPALIVE_TIMEOUT

    @classmethod
    def of(cls, *, server_tokens: str = "Original", http_extra_headers: Mapping[str, Any] | None = None,
           https_extra_headers: Mapping[str, Any] | None = None, request_queue_size: int = 5,
           **limits: Any) -> ServerOptions:
        """Options from `restapi`-shaped values (header mappings are checked and turned into text)."""
        return cls(server_tokens=server_tokens,
                   http_extra_headers=_clean_headers(http_extra_headers or {}, "http_extra_headers"),
                   https_extra_headers=_clean_headers(https_extra_headers or {}, "https_extra_headers"),
                   request_queue_size=request_queue_size, **limits)  # fmt: skip


def server_options_from(restapi: RestApiConfig) -> ServerOptions:
    """The ServerOptions of a `restapi` section."""
    return ServerOptions.of(server_tokens=restapi.server_tokens, http_extra_headers=restapi.http_extra_headers,
                            https_extra_headers=restapi.https_extra_headers,
                            request_queue_size=restapi.request_queue_size)  # fmt: skip


class AnswerHeaders:
    """Stamps the Server header and the extra headers on an answer; `update` takes effect at once."""

    def __init__(self, options: ServerOptions) -> None:
        self.update(options)

    def update(self, options: ServerOptions) -> None:
        server = ((hdrs.SERVER, server_header(options.server_tokens)),)
        self._plain = server + options.http_extra_headers
        self._tls = self._plain + options.https_extra_headers

    def stamp(self, response: StreamResponse, *, tls: bool) -> None:
        if response.prepared:  # already on the wire (cannot happen with the API's own handlers)
            return
        for name, value in self._tls if tls else self._plain:
            response.headers[name] = value


_bad_request_log = RateLimitedLog(log, ERROR_LOG_INTERVAL)
_busy_log = RateLimitedLog(log, ERROR_LOG_INTERVAL)


class _Connection(RequestHandler):
    """aiohttp's HTTP/1.1 protocol with the answer headers on every answer (its own error answers
    too) and malformed requests logged in one rate-limited line."""

    def __init__(self, manager: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.answer_headers = manager.answer_headers

    @property
    def idle(self) -> bool:
        """Waiting for a request (none in progress, none queued)."""
        return not self._request_in_progress and not self._messages

    async def finish_response(
        self, request: Request, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        if isinstance(resp, StreamResponse):
            self.answer_headers.stamp(resp, tls=request.secure)
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self, request: Request, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> StreamResponse:
        reason = message or (str(exc) if exc is not None else "") or HTTPStatus(status).phrase
        _bad_request_log("REST API: %d answered to %s: %s", status, request.remote or "unknown client",
                         reason.splitlines()[0][:200] if reason else "")  # fmt: skip
        if request.writer.output_size > 0:  # part of an answer went out already: only closing is left
            raise ConnectionError("the answer was already started")
        text = f"{status} {HTTPStatus(status).phrase}"
        response = Response(status=status, text=text if status >= 500 else f"{text}: {reason[:200]}")
        response.force_close()
        return response


class LimitedServer(Server):
    """aiohttp's low-level server keeping at most `options.max_connections` connections."""

    def __init__(self, handler: Any, *, options: ServerOptions, answer_headers: AnswerHeaders, **kwargs: Any) -> None:
        # No access log: a line per health check is noise, and a flood of requests must not flood the log.
        # The rest of a body left unread (refused, or too slow) is drained for LINGER_TIME at most.
        super().__init__(handler, keepalive_timeout=options.keepalive_timeout, access_log=None,
                         lingering_time=LINGER_TIME, **kwargs)  # fmt: skip
        self.options = options
        self.answer_headers = answer_headers
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) <= self.options.max_connections:
            return
        victim = next((c for c in self._connections if c is not handler and isinstance(c, _Connection) and c.idle),
                      None)  # fmt: skip
        if victim is not None:
            self.evicted += 1
            self._connections.pop(victim, None)
            victim.force_close()
            return
        self.refused += 1
        self._connections.pop(handler, None)
        handler.force_close()
        _busy_log("REST API: all %d connections are busy with requests: closed a new one", self.options.max_connections)


_quiet_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_accept_log = RateLimitedLog(log, ERROR_LOG_INTERVAL)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's "socket.accept() out of system resource" (EMFILE, ENFILE: asyncio retries the
    accept a second later) in one rate-limited line instead of a traceback each time."""
    if loop in _quiet_loops:
        return
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept()"):
            _accept_log("REST API: cannot accept a connection: %s", context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    _quiet_loops.add(loop)
