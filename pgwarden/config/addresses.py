"""'host:port' strings as Patroni writes them, and the URLs other members use to reach us."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pgwarden.config.schema import RestApiConfig

DEFAULT_ETCD_PORT = 2379


def parse_listen(value: str) -> tuple[str, int]:
    """'host:port' -> (host, port). Also 'h1,h2:port', '[::1]:port', '*:port' and ':port' (empty host).

    Brackets around an IPv6 host are removed. Raises ValueError with an `expected ...` message.
    """
    host, sep, port_text = value.strip().rpartition(":")
    if not sep:
        raise ValueError("expected 'host:port'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError("expected 'host:port' with a numeric port") from None
    if not 1 <= port <= 65535:
        raise ValueError("expected 'host:port' with a port between 1 and 65535")
    return host, port


def url_host(host: str) -> str:
    """A host as it must appear in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _RestApiLike(Protocol):
    @property
    def connect_address(self) -> str: ...

    @property
    def certfile(self) -> str | None: ...


class _PostgresqlLike(Protocol):
    @property
    def connect_address(self) -> str: ...


def api_url(restapi: _RestApiLike) -> str:
    """The member's `api_url`: `http(s)://<restapi.connect_address>/patroni` (https when a certfile is set)."""
    host, port = parse_listen(restapi.connect_address)
    scheme = "https" if restapi.certfile else "http"
    return f"{scheme}://{url_host(host)}:{port}/patroni"


def conn_url(postgresql: _PostgresqlLike) -> str:
    """The member's `conn_url`: `postgres://<postgresql.connect_address>/postgres`."""
    host, port = parse_listen(postgresql.connect_address)
    return f"postgres://{url_host(host)}:{port}/postgres"


def proxy_url(proxy_address: str | None) -> str | None:
    """The member's `proxy_url` (`postgres://<postgresql.proxy_address>/postgres`), None without one."""
    if not proxy_address:
        return None
    host, port = parse_listen(proxy_address)
    return f"postgres://{url_host(host)}:{port}/postgres"


def etcd_addresses(section: Mapping[str, Any]) -> list[str]:
    """The etcd addresses Patroni's `etcd3` section names, in Patroni's order of forms: `url`, else
    `hosts` (a list or a comma string), else `host` (one address or a comma string); [] for none.
    Empty values never shadow the next form (a section built from the typed configuration carries
    `hosts: []` next to the `host` the user wrote). The one reading of these forms: the typed
    configuration (`EtcdConfig.endpoints`) and the DCS adapter (`dcs.etcd_hosts_from_config`) use it."""
    if section.get("url"):
        return [str(section["url"])]
    for key in ("hosts", "host"):
        value = section.get(key)
        if value:
            items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
            return [item.strip() for item in items if item.strip()]
    return []


def etcd_endpoint(address: str, protocol: str) -> str:
    """'host[:port]' -> 'protocol://host:port', with etcd's client port when none is given."""
    if "://" in address:
        return address.rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port, or a bare bracketed IPv6 address
        host, port = address, str(DEFAULT_ETCD_PORT)
    return f"{protocol}://{url_host(host.strip('[]'))}:{port}"


def listens_beyond_loopback(listen: str) -> bool:
    """`restapi.listen` accepts connections from other hosts: every interface, a non-loopback
    address, or a host name other than localhost."""
    try:
        host, _ = parse_listen(listen)
    except ValueError:
        return False
    host = host.strip("[]").split("%", 1)[0].lower()
    if host in ("localhost", "localhost.localdomain"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "", "*", or a host name: reachable from elsewhere


def unauthenticated_api_warning(restapi: RestApiConfig) -> str | None:
    """The warning for a REST API that other hosts can reach while `restapi.authentication` is not
    set (its unsafe endpoints then answer anyone the allowlist lets through), else None."""
    auth = restapi.authentication
    if (auth is not None and auth.username and auth.password) or not listens_beyond_loopback(restapi.listen):
        return None
    limit = "only restapi.allowlist limits who" if restapi.allowlist else "anyone who can reach it"
    return (f"restapi.listen {restapi.listen!r} accepts connections from other hosts and restapi.authentication "
            f"is not set: {limit} can switch over, restart or reconfigure the cluster")
