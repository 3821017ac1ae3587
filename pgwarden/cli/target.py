"""Which cluster the CLI talks to, and how: the DCS endpoints, the scope, and the REST credentials.

patronictl reads a small YAML (`-c`), or the agent's own configuration, or the PATRONI_* environment;
`--dcs-url etcd3://host:port/namespace` (or `etcd://`, `zookeeper://`) overrides the DCS part. The CLI needs
only a few sections, so it reads them leniently: a ctl-only file (just `etcd3:` and `ctl:`) is as good as a
full agent file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import ValidationError

from pgwarden.config.errors import ConfigError, describe_validation_error
from pgwarden.config.loader import read_raw
from pgwarden.config.schema import DCS_SECTIONS, Credentials, CtlConfig, EtcdConfig, ZooKeeperConfig
from pgwarden.config.validation import validate_model
from pgwarden.rest_client import RestSettings

DEFAULT_NAMESPACE = "/service"
DCS_URL_SCHEMES = DCS_SECTIONS
"""`--dcs-url` schemes, as patronictl's: etcd3://, etcd:// (the v2 API) and zookeeper://."""
DEFAULT_PORTS = {"etcd3": 2379, "etcd": 2379, "zookeeper": 2181}

CONFIGURATION_VAR = "PATRONI_CONFIGURATION"


class TargetError(Exception):
    """The configuration or the DCS URL cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """Everything the CLI needs to reach one deployment (the scope may still come from an argument)."""

    dcs: Mapping[str, Any]
    """Patroni's configuration section of the DCS (`dcs_kind`)."""
    namespace: str
    scope: str | None
    rest: RestSettings = field(default_factory=RestSettings)
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The merged configuration as read (for commands that want more, e.g. `query`'s credentials)."""
    dcs_kind: str = "etcd3"


def parse_dcs_url(url: str) -> tuple[str, dict[str, Any], str | None]:
    """`etcd3://[user:password@]host:port[/namespace]` (or etcd://, zookeeper://) -> (kind, section, namespace
    or None)."""
    parts = urlsplit(url if "://" in url else f"etcd3://{url}")
    if parts.scheme not in DCS_URL_SCHEMES:
        raise TargetError(f"--dcs-url {url!r}: unsupported scheme {parts.scheme!r}; expected one of "
                          f"{', '.join(scheme + '://host:port' for scheme in DCS_URL_SCHEMES)}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise TargetError(f"--dcs-url {url!r}: invalid port") from None
    if not parts.hostname:
        raise TargetError(f"--dcs-url {url!r}: no host name")
    section: dict[str, Any] = {"hosts": [f"{parts.hostname}:{port}"]}
    if parts.username and parts.scheme != "zookeeper":
        section["username"], section["password"] = parts.username, parts.password or ""
    namespace = parts.path.rstrip("/") or None
    return parts.scheme, section, namespace


def read_config_source(path: Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """The raw configuration: a YAML file or a directory of them (merged in name order), else
    PATRONI_CONFIGURATION, else nothing; with the PATRONI_* variables merged over it."""
    try:
        return read_raw(path, environ)
    except ConfigError as exc:
        raise TargetError("; ".join(exc.problems)) from None


def default_config_path() -> Path | None:
    """patronictl's default file (`~/.config/patroni/patronictl.yaml`) if it exists."""
    path = Path(click.get_app_dir("patroni")) / "patronictl.yaml"
    return path if path.is_file() else None


def resolve_target(
    config_path: Path | None, dcs_url: str | None, insecure: bool, environ: Mapping[str, str]
) -> Target:
    """Build the target from the config file (or environment) and an optional DCS URL override."""
    raw = read_config_source(config_path or default_config_path(), environ)
    kind, dcs, namespace = _dcs_section(raw, dcs_url)
    scope = raw.get("scope")
    return Target(
        dcs=dcs,
        dcs_kind=kind,
        namespace=namespace,
        scope=str(scope) if scope not in (None, "") else None,
        rest=_rest_settings(raw, insecure),
        raw=raw,
    )


def _dcs_section(raw: Mapping[str, Any], dcs_url: str | None) -> tuple[str, Mapping[str, Any], str]:
    namespace = str(raw.get("namespace") or DEFAULT_NAMESPACE)
    if dcs_url:
        kind, section, url_namespace = parse_dcs_url(dcs_url)
        return kind, section, url_namespace or namespace
    given = [kind for kind in DCS_SECTIONS if isinstance(raw.get(kind), Mapping)]
    if not given:
        raise TargetError(
            "no DCS to read: give -c/--config-file with an etcd3, etcd or zookeeper section, -d/--dcs-url "
            "etcd3://host:port, or set PATRONI_ETCD3_HOSTS"
        )
    if len(given) > 1:
        raise TargetError(f"{given[-1]}: expected one DCS section, found {len(given)} ({', '.join(given)})")
    kind = given[0]
    configured = raw[kind]
    try:
        validate_model(ZooKeeperConfig if kind == "zookeeper" else EtcdConfig, configured)
    except ValidationError as exc:
        raise TargetError("; ".join(describe_validation_error(exc, kind))) from None
    return kind, copy.deepcopy(dict(configured)), namespace


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    return value if isinstance(value, Mapping) else {}


def _rest_settings(raw: Mapping[str, Any], insecure: bool) -> RestSettings:
    try:
        ctl = validate_model(CtlConfig, _section(raw, "ctl"))
    except ValidationError as exc:
        raise TargetError("; ".join(describe_validation_error(exc, "ctl"))) from None
    restapi = _section(raw, "restapi")
    credentials = ctl.authentication or _restapi_credentials(restapi)
    return RestSettings(
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        cafile=ctl.cacert or restapi.get("cafile"),
        certfile=ctl.certfile or restapi.get("certfile"),
        keyfile=ctl.keyfile or restapi.get("keyfile"),
        keyfile_password=ctl.keyfile_password or restapi.get("keyfile_password"),
        insecure=insecure or ctl.insecure,
    )


def _restapi_credentials(restapi: Mapping[str, Any]) -> Credentials | None:
    authentication = restapi.get("authentication")
    if not isinstance(authentication, Mapping):
        return None
    try:
        return validate_model(Credentials, authentication)
    except ValidationError as exc:
        raise TargetError("; ".join(describe_validation_error(exc, "restapi.authentication"))) from None
