"""DCS backends behind one interface (`pgwarden.dcs.base.Dcs`), and the factory that picks one from config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pgwarden.config.addresses import etcd_addresses
from pgwarden.dcs.base import Dcs, DcsError

__all__ = ["DCS_KINDS", "Dcs", "DcsError", "dcs_from_config", "etcd_hosts_from_config", "open_dcs"]

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


def _check_supported(section: Mapping[str, Any]) -> None:
    for unsupported in ("srv", "srv_suffix", "proxy", "discovery_srv"):
        if section.get(unsupported):
            raise DcsError(f"etcd3: '{unsupported}' is not supported yet; list the endpoints in 'hosts'")


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
    """An etcd v3 DCS from Patroni's `etcd3` section.

    Keys read: host | hosts | url, protocol (http | https), cacert, cert, key, key_password, username | user,
    password.
    """
    from pgwarden.dcs.etcd3 import Etcd3Dcs  # imported here so that the pure modules stay light
    from pgwarden.dcs.etcd_http import ssl_context_from_config

    _check_supported(etcd3_section)
    try:
        hosts = etcd_hosts_from_config(etcd3_section)
        ssl_context = ssl_context_from_config(etcd3_section)
    except (ValueError, OSError) as exc:  # OSError: a TLS file is missing or unreadable
        raise DcsError(f"etcd3: {exc}") from exc
    dcs = Etcd3Dcs(
        hosts=hosts,
        namespace=namespace,
        scope=scope,
        name=name,
        ttl=ttl,
        timeout=timeout,
        username=etcd3_section.get("username") or etcd3_section.get("user"),
        password=etcd3_section.get("password"),
        readonly=readonly,
        ssl_context=ssl_context,
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
