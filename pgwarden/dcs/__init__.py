"""DCS backends behind one interface (`pgwarden.dcs.base.Dcs`), and the factory that picks one from config."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pgwarden.config.addresses import etcd_addresses
from pgwarden.dcs.base import Dcs, DcsError

__all__ = ["DCS_KINDS", "Dcs", "DcsError", "EtcdEndpoints", "dcs_from_config", "etcd_endpoints",
           "etcd_hosts_from_config", "open_dcs"]

DCS_KINDS = ("etcd3", "etcd", "zookeeper")
"""The implemented backends, by the name of Patroni's configuration section: etcd's v3 API, its v2 API
(`etcd`) and ZooKeeper."""

DEFAULT_ETCD_PORT = 2379


def _host_port(item: str) -> tuple[str, int]:
    """'h', 'h:p' or 'http://h:p' -> (h, p)."""
    text = item.strip()
    if not text:
        raise ValueError("etcd3: empty host")
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port or DEFAULT_ETCD_PORT
    except ValueError as exc:
        raise ValueError(f"etcd3: invalid port in {item!r}") from exc
    if not parts.hostname:
        raise ValueError(f"etcd3: no host name in {item!r}")
    return parts.hostname, port


def etcd_hosts_from_config(section: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The etcd endpoints named by Patroni's `etcd3` section (`config.addresses.etcd_addresses`), as
    (host, port); Patroni's default 127.0.0.1:2379 when it names none."""
    return [_host_port(item) for item in etcd_addresses(section) or ["127.0.0.1:2379"]]


@dataclass(frozen=True)
class EtcdEndpoints:
    """How to reach etcd, as Patroni's `etcd3` and `etcd` sections say (both take the same keys)."""

    hosts: list[tuple[str, int]]
    ssl_context: ssl.SSLContext | None
    username: str | None
    password: str | None


UNSUPPORTED_ETCD_KEYS = ("srv", "srv_suffix", "proxy", "discovery_srv")


def etcd_endpoints(section: Mapping[str, Any], label: str) -> EtcdEndpoints:
    """Patroni's etcd section read once for either API: host | hosts | url, protocol, cacert, cert, key,
    key_password, username | user, password. Discovery through DNS SRV records or a proxy is refused.
    Problems are DcsError naming the section (`label`)."""
    from pgwarden.dcs.etcd_http import ssl_context_from_config  # here, so that the pure modules stay light

    for unsupported in UNSUPPORTED_ETCD_KEYS:
        if section.get(unsupported):
            raise DcsError(f"{label}: '{unsupported}' is not supported yet; list the endpoints in 'hosts'")
    try:
        hosts = etcd_hosts_from_config(section)
        ssl_context = ssl_context_from_config(section)
    except (ValueError, OSError) as exc:  # OSError: a TLS file is missing or unreadable
        raise DcsError(f"{label}: {str(exc).removeprefix('etcd3: ')}") from exc
    username, password = section.get("username") or section.get("user"), section.get("password")
    return EtcdEndpoints(hosts, ssl_context, str(username) if username else None,
                         None if password is None else str(password))


async def dcs_from_config(
    etcd3_section: Mapping[str, Any],
    *,
    namespace: str,
    scope: str,
    name: str,
    ttl: int,
    timeout: float = 2.0,
    readonly: bool = False,
) -> Dcs:
    """An etcd v3 DCS from Patroni's `etcd3` section (`etcd_endpoints`), its watch started (no network call)."""
    from pgwarden.dcs.etcd3 import Etcd3Dcs  # imported here so that the pure modules stay light

    endpoints = etcd_endpoints(etcd3_section, "etcd3")
    dcs = Etcd3Dcs(
        hosts=endpoints.hosts,
        namespace=namespace,
        scope=scope,
        name=name,
        ttl=ttl,
        timeout=timeout,
        username=endpoints.username,
        password=endpoints.password,
        readonly=readonly,
        ssl_context=endpoints.ssl_context,
    )
    await dcs.connect()
    return dcs


async def open_dcs(
    kind: str,
    section: Mapping[str, Any],
    *,
    namespace: str,
    scope: str,
    name: str,
    ttl: int,
    timeout: float = 2.0,
    readonly: bool = False,
) -> Dcs:
    """A connected DCS of `kind` (a name of `DCS_KINDS`) from Patroni's configuration section of that name."""
    common: dict[str, Any] = {"namespace": namespace, "scope": scope, "name": name, "ttl": ttl, "timeout": timeout,
                              "readonly": readonly}
    if kind == "etcd3":
        return await dcs_from_config(section, **common)
    if kind == "etcd":
        from pgwarden.dcs.etcd2 import etcd2_from_config

        return await etcd2_from_config(section, **common)
    if kind == "zookeeper":
        from pgwarden.dcs.zookeeper import zookeeper_from_config

        return await zookeeper_from_config(section, **common)
    raise DcsError(f"unknown DCS {kind!r}; expected one of {', '.join(DCS_KINDS)}")
