"""Who may change things through the REST API (contract 4.1), and the server's TLS context.

Every endpoint that changes something is checked, in Patroni's order:
1. `restapi.allowlist` (IPs, CIDRs or host names) and `allowlist_include_members` (the hosts of
   every member's api_url and conn_url; not for POST /failsafe) -> 403;
2. with `verify_client` optional or required, a client certificate -> 403;
3. `restapi.authentication` (HTTP Basic) -> 401 with `WWW-Authenticate: Basic realm="Patroni"`.
Reads (GET, HEAD, OPTIONS) are never checked: load balancers and monitoring must not need secrets.
Refusals never echo a credential; the client's own address is the only detail they give.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import BasicAuth, hdrs

from pgwarden.api.http import Request, Response
from pgwarden.api.state import NodeState
from pgwarden.config.schema import RestApiConfig

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT = 2.0  # seconds for one host name lookup of an allowlist entry or a member host
RESOLVE_CACHE_SECONDS = 60.0  # host names are looked up again after this long (addresses move)


@dataclass(frozen=True, slots=True)
class BasicAuthCredentials:
    """`restapi.authentication`: required on every request that changes something, when configured."""

    username: str
    password: str

    def __repr__(self) -> str:  # a stray log line must not print the password
        return f"BasicAuthCredentials(username={self.username!r}, password=***)"


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The access rules for requests that change something."""

    auth: BasicAuthCredentials | None = None
    allowlist: tuple[str, ...] = ()
    """IP addresses, CIDR networks or host names; empty: no address restriction (unless members)."""
    allowlist_include_members: bool = False
    client_certificate_required: bool = False
    """verify_client optional/required: an unsafe request must come with a verified certificate."""


def access_policy_from(restapi: RestApiConfig) -> AccessPolicy:
    """The AccessPolicy of a `restapi` section."""
    auth = restapi.authentication
    credentials = None
    if auth is not None and auth.username and auth.password:
        credentials = BasicAuthCredentials(auth.username, auth.password)
    return AccessPolicy(
        auth=credentials,
        allowlist=tuple(entry.strip() for entry in restapi.allowlist if entry.strip()),
        allowlist_include_members=restapi.allowlist_include_members,
        client_certificate_required=restapi.verify_client in ("optional", "required"),
    )


def tls_fingerprint(restapi: RestApiConfig) -> tuple[object, ...]:
    """What the TLS context is made of: the settings and the identity of each file (a rotated
    certificate or key changes it), so a reload rebuilds the context only when something changed."""
    files = (restapi.certfile, restapi.keyfile, restapi.cafile)
    identities: list[object] = []
    for name in files:
        try:
            st = os.stat(name) if name else None
        except OSError:
            st = None
        identities.append(None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    settings = (*files, restapi.keyfile_password, restapi.ciphers, restapi.verify_client)
    return (*settings, *identities)


class TlsConfigError(ValueError):
    """The restapi TLS settings cannot be used (the message names the setting, never a password)."""


_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def ssl_context_from(restapi: RestApiConfig) -> ssl.SSLContext | None:
    """The server's TLS context from `restapi.certfile/keyfile/keyfile_password/cafile/ciphers/
    verify_client`, or None when no certfile is set (plain HTTP). Raises TlsConfigError."""
    verify = restapi.verify_client or "none"
    if not restapi.certfile:
        if verify != "none":
            raise TlsConfigError(f"restapi.verify_client is {verify!r} but restapi.certfile is not set")
        return None
    if verify != "none" and not restapi.cafile:
        raise TlsConfigError(f"restapi.verify_client is {verify!r}: restapi.cafile must name the client CA")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(restapi.certfile, restapi.keyfile or None, password=restapi.keyfile_password)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"restapi.certfile/keyfile: cannot load {restapi.certfile!r}: {exc}") from None
    if restapi.cafile:
        try:
            context.load_verify_locations(cafile=restapi.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"restapi.cafile: cannot load {restapi.cafile!r}: {exc}") from None
    context.verify_mode = _VERIFY_MODES[verify]
    if restapi.ciphers:
        try:
            context.set_ciphers(restapi.ciphers)
        except ssl.SSLError:
            raise TlsConfigError(f"restapi.ciphers: no usable cipher in {restapi.ciphers!r}") from None
    return context


# --------------------------------------------------------------------------------------------------
# The checks


def credentials_match(header: str, auth: BasicAuthCredentials) -> bool:
    """The Authorization header carries exactly these credentials (compared in constant time)."""
    try:
        given = BasicAuth.decode(header)
    except ValueError:
        return False
    user_ok = hmac.compare_digest(given.login.encode(), auth.username.encode())
    password_ok = hmac.compare_digest(given.password.encode(), auth.password.encode())
    return user_ok and password_ok


def client_address(remote: str | None) -> IpAddress | None:
    """The peer's IP (an IPv4-mapped IPv6 address as IPv4), or None when unknown."""
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def member_hosts(state: NodeState) -> set[str]:
    """The hosts in every member's api_url and conn_url, as of the latest DCS read."""
    hosts: set[str] = set()
    if state.cluster is None:
        return hosts
    for member in state.cluster.members:
        for url in (member.api_url, member.conn_url):
            try:
                host = urlsplit(url).hostname if url else None
            except ValueError:
                host = None
            if host:
                hosts.add(host)
    return hosts


def _literal(entry: str) -> IpNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


class AccessGuard:
    """Applies an AccessPolicy to requests; caches host name lookups for RESOLVE_CACHE_SECONDS."""

    def __init__(self, policy: AccessPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._resolved: dict[str, tuple[float, frozenset[IpAddress]]] = {}

    async def refusal(self, request: Request, state: NodeState, *, members: bool = True) -> Response | None:
        """None when the request may change things, else the 403 or 401 response. `members`: whether
        `allowlist_include_members` applies (not to POST /failsafe, contract 4.1)."""
        policy = self.policy
        members = members and policy.allowlist_include_members
        if policy.allowlist or members:
            address = client_address(request.remote)
            if address is None or not await self._allowed(address, state, members):
                return Response(status=403, text=f"access denied: {address or 'unknown address'} "
                                                     "is not allowed by restapi.allowlist")  # fmt: skip
        if policy.client_certificate_required and not _peer_certificate(request):
            return Response(status=403, text="access denied: a valid client certificate is required")
        if policy.auth is not None and not credentials_match(request.headers.get(hdrs.AUTHORIZATION, ""), policy.auth):
            return Response(
                status=401, text="authentication required",
                headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="Patroni"'},
            )  # fmt: skip
        return None

    async def _allowed(self, address: IpAddress, state: NodeState, members: bool) -> bool:
        entries: list[str] = list(self.policy.allowlist)
        if members:
            entries += sorted(member_hosts(state))
        names: list[str] = []
        for entry in entries:
            network = _literal(entry)
            if network is None:
                names.append(entry)
            elif address in network:
                return True
        for name in names:
            if address in await self._addresses(name):
                return True
        return False

    async def _addresses(self, host: str) -> frozenset[IpAddress]:
        now = self._clock()
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = await _resolve(host)
        self._resolved[host] = (now + RESOLVE_CACHE_SECONDS, addresses)
        return addresses


async def _resolve(host: str) -> frozenset[IpAddress]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        log.warning("REST API allowlist: cannot resolve %r: %s", host, exc)
        return frozenset()
    return frozenset(_addresses(str(info[4][0]) for info in infos))


def _addresses(texts: Iterable[str]) -> Iterable[IpAddress]:
    for text in texts:
        address = client_address(text)
        if address is not None:
            yield address


def _peer_certificate(request: Request) -> bool:
    transport = request.transport
    return bool(transport is not None and transport.get_extra_info("peercert"))
