"""Calling a member's REST API from the CLI: Basic credentials, TLS, and an explicit timeout per call.

The member's address comes from its `api_url` in the DCS (`http(s)://host:port/patroni`); the path is
replaced by the endpoint. A member that cannot be reached raises `RestError`; any HTTP answer, 4xx and
5xx included, is returned as a `RestReply` for the command to interpret (the texts are the contract's).
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pgwarden.cli.target import RestSettings

DEFAULT_TIMEOUT = 10.0  # seconds for a simple call (GET /patroni, POST /reload)
CONNECT_TIMEOUT = 3.0  # seconds to open the TCP (and TLS) connection


class RestError(Exception):
    """The member's REST API could not be reached (refused, timed out, TLS failure, bad URL)."""


@dataclass(frozen=True, slots=True)
class RestReply:
    """An HTTP answer: status code and body text."""

    status: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON; RestError if it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            raise RestError(f"expected a JSON answer, got: {self.text[:200]!r}") from None

    def describe(self) -> str:
        """'503 restart failed' style, for messages."""
        return f"{self.status} {self.text.strip()}".strip()


def endpoint_url(api_url: str, path: str) -> str:
    """`http://h:p/patroni` + `/switchover` -> `http://h:p/switchover`."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RestError(f"not a REST API URL: {api_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, "/" + path.lstrip("/"), "", ""))


def basic_auth_header(username: str, password: str) -> str:
    """The HTTP Basic `Authorization` value (built here: aiohttp's helpers differ between versions)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def ssl_context(settings: RestSettings) -> ssl.SSLContext | bool:
    """The TLS context for https members: the CA file, a client certificate, or no verification (-k)."""
    if settings.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=settings.cafile)
    if settings.certfile:
        try:
            context.load_cert_chain(settings.certfile, settings.keyfile, settings.keyfile_password)
        except (OSError, ssl.SSLError) as exc:
            raise RestError(f"cannot load the client certificate {settings.certfile}: {exc}") from None
    return context


class RestClient:
    """One aiohttp session for the whole command; use it as an async context manager."""

    def __init__(self, settings: RestSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None

    async def __aenter__(self) -> RestClient:
        headers = {}
        if self.settings.username is not None:
            headers["Authorization"] = basic_auth_header(self.settings.username, self.settings.password or "")
        self._session = aiohttp.ClientSession(headers=headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _tls(self) -> ssl.SSLContext | bool:
        if self._ssl is None:
            self._ssl = ssl_context(self.settings)
        return self._ssl

    async def request(
        self, api_url: str, method: str, path: str, body: Any = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> RestReply:
        """`method path` on the member whose `api_url` is given, with a JSON body when not None."""
        if self._session is None:
            raise RuntimeError("RestClient used outside 'async with'")
        url = endpoint_url(api_url, path)
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(CONNECT_TIMEOUT, timeout))
        tls = self._tls() if url.startswith("https:") else True
        try:
            async with self._session.request(method, url, json=body, timeout=limits, ssl=tls) as response:
                return RestReply(response.status, await response.text())
        except TimeoutError:
            raise RestError(f"{method} {url}: no answer within {timeout:g}s") from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            raise RestError(f"{method} {url}: {exc or type(exc).__name__}") from None
