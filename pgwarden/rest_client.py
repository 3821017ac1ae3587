"""The client of the members' REST APIs (the Patroni-compatible endpoints every agent serves).

Its users: the agent (its peers' statuses in a leader race, the start's check for a duplicate name,
a failsafe leader's pings), the CLI (switchover, restart, reload, ...) and the drill. A member's
address is its `api_url` as published in the DCS (`http(s)://host:port/patroni`): a `GET` of that
very URL is its status document; any other endpoint replaces the path. Every call has an explicit
timeout. A member that cannot be reached (refused, timed out, TLS failure, bad URL) is an
`Unreachable` value; any HTTP answer, 4xx and 5xx included, is a `RestReply` for the caller to
interpret (the texts are the contract's).

Credentials and TLS material are `RestSettings`: `ctl`'s, else `restapi`'s, as patronictl reads them.
The agent imports this module, so it imports nothing of the CLI's (click, rich, pydantic).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pgwarden.config.schema import CtlConfig, RestApiConfig
from pgwarden.model import LSN, MAX_LSN

DEFAULT_TIMEOUT = 10.0  # seconds for a simple call (GET /patroni, POST /reload)
CONNECT_TIMEOUT = 3.0  # seconds to open the TCP (and TLS) connection


@dataclass(frozen=True, slots=True)
class RestSettings:
    """How to call a member's REST API: Basic credentials and TLS material (`ctl`, else `restapi`)."""

    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    insecure: bool = False


def settings_from_config(ctl: CtlConfig, restapi: RestApiConfig) -> RestSettings:
    """The settings of a member's validated configuration: each from `ctl`, else from `restapi` (the
    CLI reads the same keys, leniently, from its raw file: `cli/target.py`)."""
    credentials = ctl.authentication or restapi.authentication
    return RestSettings(
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        cafile=ctl.cacert or restapi.cafile,
        certfile=ctl.certfile or restapi.certfile,
        keyfile=ctl.keyfile or restapi.keyfile,
        keyfile_password=ctl.keyfile_password or restapi.keyfile_password,
        insecure=ctl.insecure,
    )


class RestError(Exception):
    """A member's answer is not what the caller asked for: a body that is not JSON."""


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The member's REST API could not be reached: `reason` says how the call failed, naming the URL."""

    reason: str


@dataclass(frozen=True, slots=True)
class RestReply:
    """An HTTP answer: status code, body text and headers (names case-insensitive)."""

    status: int
    text: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON; RestError if it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            raise RestError(f"expected a JSON answer, got: {self.text[:200]!r}") from None

    def json_object(self) -> Mapping[str, Any] | None:
        """The body if it is a JSON object, else None."""
        try:
            body = json.loads(self.text)
        except ValueError:
            return None
        return body if isinstance(body, Mapping) else None

    def describe(self) -> str:
        """'503 restart failed' style, for messages."""
        return f"{self.status} {self.text.strip()}".strip()


@dataclass(frozen=True, slots=True)
class FailsafeReply:
    """A member's answer to a failsafe ping (`POST /failsafe`, contract 2.8): `accepted` only on 200;
    `lsn` the member's received/replayed position from the `lsn` header (None when absent or not an
    LSN); `detail` says what happened in words (no credentials)."""

    accepted: bool
    lsn: LSN | None
    detail: str


def _header_lsn(value: str | None) -> LSN | None:
    """The `lsn` header: a decimal integer from 0 to 2**64 - 1, else None."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        return None
    lsn = int(text)
    return lsn if lsn <= MAX_LSN else None


def redacted_url(url: str) -> str:
    """`url` without a user name or password in it (for messages)."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
    except ValueError:
        return "<malformed URL>"


def endpoint_url(api_url: str, path: str) -> str:
    """`http://h:p/patroni` + `/switchover` -> `http://h:p/switchover`; ValueError for a URL that is not
    a REST API's."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a REST API URL: {api_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, "/" + path.lstrip("/"), "", ""))


def _basic_auth(username: str, password: str) -> str:
    """The HTTP Basic `Authorization` value (built here: aiohttp's helpers differ between versions)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _tls_context(settings: RestSettings) -> ssl.SSLContext | bool | Unreachable:
    """The TLS context for https members: the CA file, a client certificate, or no verification (-k);
    True (aiohttp's default: the system's CAs) when the settings name none of them; Unreachable when
    a file cannot be loaded."""
    if not (settings.insecure or settings.cafile or settings.certfile):
        return True
    if settings.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cafile=settings.cafile)
        except (OSError, ssl.SSLError) as exc:
            return Unreachable(f"cannot load the CA file {settings.cafile}: {exc}")
    if settings.certfile:
        try:
            context.load_cert_chain(settings.certfile, settings.keyfile, settings.keyfile_password)
        except (OSError, ssl.SSLError) as exc:
            return Unreachable(f"cannot load the client certificate {settings.certfile}: {exc}")
    return context


class RestClient:
    """Calls members' REST APIs over one aiohttp session: its own (`async with RestClient(settings)`),
    or a caller's (`RestClient(session=...)`, used without `async with` and left open)."""

    def __init__(self, settings: RestSettings | None = None, *, session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings or RestSettings()
        self._session = session
        self._owns_session = session is None
        self._headers: dict[str, str] = {}
        if self.settings.username is not None:
            self._headers["Authorization"] = _basic_auth(self.settings.username, self.settings.password or "")
        self._tls: ssl.SSLContext | bool | Unreachable | None = None

    async def __aenter__(self) -> RestClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, api_url: str, method: str, path: str, body: Any = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> RestReply | Unreachable:
        """`method path` on the member whose `api_url` is given, with a JSON body when not None."""
        try:
            url = endpoint_url(api_url, path)
        except ValueError as exc:
            return Unreachable(str(exc))
        return await self._send(method, url, body, timeout)

    async def status(self, api_url: str, *, timeout: float) -> Mapping[str, Any] | None:
        """The member's status document (`GET` of its published `api_url`) whatever the HTTP status, as a
        member whose PostgreSQL is not running answers 503 with it; None when the member cannot be
        reached or its answer is not a JSON object."""
        reply = await self._send("GET", api_url, None, timeout)
        return reply.json_object() if isinstance(reply, RestReply) else None

    async def _send(self, method: str, url: str, body: Any, timeout: float) -> RestReply | Unreachable:
        if self._session is None:
            raise RuntimeError("RestClient used outside 'async with'")
        tls = self._tls_for(url)
        if isinstance(tls, Unreachable):
            return tls
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(CONNECT_TIMEOUT, timeout))
        try:
            async with self._session.request(method, url, json=body, headers=self._headers, timeout=limits,
                                             ssl=tls) as response:
                return RestReply(response.status, await response.text(errors="replace"), response.headers)
        except TimeoutError:
            return Unreachable(f"{method} {url}: no answer within {timeout:g}s")
        except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
            return Unreachable(f"{method} {url}: {exc or type(exc).__name__}")

    async def post_failsafe(self, api_url: str, body: Mapping[str, Any], *, timeout: float) -> FailsafeReply:
        """A failsafe leader's ping (`body`: `model.FailsafePing.as_json()`) to the member at `api_url`.
        Accepted only on 200; an unreachable member or any other answer is not, `detail` saying why."""
        reply = await self.request(api_url, "POST", "/failsafe", dict(body), timeout=timeout)
        if isinstance(reply, Unreachable):
            reason = reply.reason
            for url in (api_url, _failsafe_url(api_url)):  # an api_url may carry a user and password
                if url:
                    reason = reason.replace(url, redacted_url(url))
            return FailsafeReply(False, None, f"unreachable: {_cut(reason)}")
        if reply.status != 200:
            return FailsafeReply(False, None, f"answered {_cut(reply.describe())}")
        lsn = _header_lsn(reply.headers.get("lsn"))
        return FailsafeReply(True, lsn, "accepted" if lsn is not None else "accepted, without a valid lsn header")

    def _tls_for(self, url: str) -> ssl.SSLContext | bool | Unreachable:
        """The TLS setting of a call to `url`, built once per client (it reads files)."""
        if not url.startswith("https:"):
            return True
        if self._tls is None:
            self._tls = _tls_context(self.settings)
        return self._tls


def _failsafe_url(api_url: str) -> str:
    """The /failsafe URL of `api_url`, or "" when it is not a REST API's."""
    try:
        return endpoint_url(api_url, "/failsafe")
    except ValueError:
        return ""


def _cut(text: str, limit: int = 200) -> str:
    """A member's words, cut short: a detail must not carry a whole page."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
