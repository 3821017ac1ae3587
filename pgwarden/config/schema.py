"""The LOCAL configuration: a Patroni YAML file, accepted unchanged.

Every section accepts keys we do not model, as Patroni does, so a file written for Patroni never
fails on a setting pgwarden merely ignores. What we do model is type-checked, and each problem
becomes one message naming its key path (see `errors.py`). The sections are frozen dataclasses:
validation (pydantic, `validation.py`) reads the rules they carry (`rules.py`); holding them needs
no pydantic.

Of the DCS sections only `etcd3` (and `etcd`, read as a list of v3 endpoints) is implemented; the
others (consul, zookeeper, kubernetes, raft, ...) are accepted but cannot be the cluster's store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge

from pgwarden.config.addresses import etcd_endpoint, parse_listen
from pgwarden.config.rules import After, Before, Section
from pgwarden.model import Tags

ETCD_SECTIONS = ("etcd3", "etcd")
OTHER_DCS_SECTIONS = ("consul", "zookeeper", "exhibitor", "kubernetes", "raft")
LOCAL_ALIASES: Mapping[tuple[str, ...], Mapping[str, str]] = {("bootstrap",): {"post_init": "post_bootstrap"}}
"""Legacy key names, by section path: accepted and read as the current name (validation.canonical)."""


# -- reusable field types ---------------------------------------------------------------------------


def _host_port(require_host: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        host, _ = parse_listen(value)
        if require_host and not host:
            raise ValueError("expected 'host:port' with a host")
        return value

    return check


def _null_as(empty: Callable[[], Any]) -> Callable[[Any], Any]:
    """`key:` with nothing after it is null in YAML; treat it as the empty value of the key's type."""
    return lambda value: empty() if value is None else value


def _text(value: Any) -> Any:
    """Secrets and names that YAML may read as numbers (`password: 123456`) are meant as text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _comma_list(value: Any) -> Any:
    """'a,b' -> ['a', 'b']; lists pass through (their items are checked by the field type)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _options(value: Any) -> Any:
    """Tool options (initdb, basebackup, rewind): a list of `str` / `{k: v}` items, or one mapping."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, list) or not all(_is_option(item) for item in value):
        raise ValueError("expected a mapping or a list whose items are 'flag' or a one-key {name: value}")
    return value


def _is_option(item: Any) -> bool:
    return isinstance(item, str) or (isinstance(item, dict) and len(item) == 1)


HostPort = Annotated[str, After(_host_port(require_host=False))]
ConnectAddress = Annotated[str, After(_host_port(require_host=True))]
Text = Annotated[str, Before(_text)]
StrList = Annotated[list[str], Before(_null_as(list))]
CommaList = Annotated[list[str], Before(_comma_list)]
AnyDict = Annotated[dict[str, Any], Before(_null_as(dict))]
Options = Annotated[list[Any] | dict[str, Any], Before(_options)]
NonNegative = Annotated[int, Ge(0)]
Positive = Annotated[int, Ge(1)]


# -- sections: each a frozen dataclass, built by keyword ---------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Credentials(Section):
    username: Text | None = None
    password: Text | None = None


@dataclass(frozen=True, kw_only=True)
class RestApiConfig(Section):
    listen: HostPort
    connect_address: ConnectAddress
    authentication: Credentials | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: Text | None = None
    cafile: str | None = None
    ciphers: str | None = None
    verify_client: Literal["none", "optional", "required"] | None = None
    allowlist: CommaList = field(default_factory=list)
    allowlist_include_members: bool = False
    http_extra_headers: AnyDict = field(default_factory=dict)
    https_extra_headers: AnyDict = field(default_factory=dict)
    request_queue_size: NonNegative = 5
    server_tokens: str = "Original"


@dataclass(frozen=True, kw_only=True)
class CtlConfig(Section):
    authentication: Credentials | None = None
    insecure: bool = False
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: Text | None = None


@dataclass(frozen=True, kw_only=True)
class LogConfig(Section):
    type: Literal["plain", "json"] = "plain"
    level: str = "INFO"
    traceback_level: str = "ERROR"
    format: Any = None
    dateformat: str | None = None
    static_fields: AnyDict = field(default_factory=dict)
    max_queue_size: Positive = 1000
    dir: str | None = None
    mode: int | None = None
    file_num: Positive = 4
    file_size: Positive = 25_000_000
    loggers: AnyDict = field(default_factory=dict)
    deduplicate_heartbeat_logs: bool = False


@dataclass(frozen=True, kw_only=True)
class EtcdConfig(Section):
    """`etcd3` (or `etcd`): where the etcd v3 cluster is. One of host/hosts/url/proxy is required."""

    EXTRA: ClassVar[str | None] = "other_keys"

    host: str | None = None
    hosts: CommaList = field(default_factory=list)
    url: str | None = None
    proxy: str | None = None
    srv: str | None = None
    srv_suffix: str | None = None
    protocol: Literal["http", "https"] = "http"
    username: Text | None = None
    password: Text | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: Text | None = None
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """Keys this section does not model (`user`, `discovery_srv`, ...), for the DCS factory to judge."""

    def __post_init__(self) -> None:
        if not (self.host or self.hosts or self.url or self.proxy):
            raise ValueError("expected one of host, hosts, url or proxy (srv discovery is not supported)")

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The etcd client URLs to use, in order: `url`, else `hosts`, else `host`, else `proxy`."""
        if self.url:
            return (self.url.rstrip("/"),)
        if self.hosts:
            return tuple(etcd_endpoint(h, self.protocol) for h in self.hosts)
        if self.host:
            return tuple(etcd_endpoint(h, self.protocol) for h in _comma_list(self.host))
        return (etcd_endpoint(self.proxy or "", self.protocol),)

    def as_mapping(self) -> dict[str, Any]:
        """The section as Patroni's `etcd3` mapping (what `pgwarden.dcs.dcs_from_config` reads)."""
        modeled = dataclasses.asdict(self)
        return {**modeled.pop("other_keys"), **modeled}


@dataclass(frozen=True, kw_only=True)
class BootstrapConfig(Section):
    dcs: AnyDict = field(default_factory=dict)
    method: str = "initdb"
    initdb: Options = field(default_factory=list)
    pg_hba: StrList = field(default_factory=list)
    post_bootstrap: str | None = None
    """Also read from the legacy `post_init` (LOCAL_ALIASES)."""


@dataclass(frozen=True, kw_only=True)
class RoleCredentials(Section):
    """One of postgresql.authentication.{superuser,replication,rewind}."""

    username: Text
    password: Text | None = None
    sslmode: str | None = None
    sslkey: str | None = None
    sslpassword: Text | None = None
    sslcert: str | None = None
    sslrootcert: str | None = None
    sslcrl: str | None = None
    sslcrldir: str | None = None
    sslnegotiation: str | None = None
    gssencmode: str | None = None
    channel_binding: str | None = None


@dataclass(frozen=True, kw_only=True)
class PgAuthentication(Section):
    superuser: RoleCredentials
    replication: RoleCredentials
    rewind: RoleCredentials | None = None


@dataclass(frozen=True, kw_only=True)
class Callbacks(Section):
    on_start: str | None = None
    on_stop: str | None = None
    on_restart: str | None = None
    on_reload: str | None = None
    on_role_change: str | None = None

    def as_mapping(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class PostgresqlConfig(Section):
    EXTRA: ClassVar[str | None] = "other_keys"

    listen: ConnectAddress
    connect_address: ConnectAddress
    proxy_address: ConnectAddress | None = None
    data_dir: str
    config_dir: str | None = None
    bin_dir: str | None = None
    bin_name: Annotated[dict[str, str], Before(_null_as(dict))] = field(default_factory=dict)
    pgpass: str | None = None
    custom_conf: str | None = None
    authentication: PgAuthentication
    parameters: AnyDict = field(default_factory=dict)
    pg_hba: StrList | None = None
    pg_ident: StrList | None = None
    use_pg_rewind: bool | None = None
    remove_data_directory_on_rewind_failure: bool | None = None
    remove_data_directory_on_diverged_timelines: bool | None = None
    create_replica_methods: CommaList = field(default_factory=lambda: ["basebackup"])
    basebackup: Options | None = None
    rewind: Options | None = None
    callbacks: Callbacks = field(default_factory=Callbacks)
    pre_promote: str | None = None
    before_stop: str | None = None
    pg_ctl_timeout: NonNegative | None = None
    use_unix_socket: bool = False
    use_unix_socket_repl: bool = False
    recovery_conf: AnyDict | None = None
    replica_method: str | None = None
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """Keys not modelled here: `parameters_<role>`, `pg_hba_<role>`, and misplaced ones (`use_slots`)."""

    @property
    def listen_hosts(self) -> tuple[str, ...]:
        """`listen: 'a,b:5432'` -> ('a', 'b')."""
        host, _ = parse_listen(self.listen)
        return tuple(h.strip() for h in host.split(",") if h.strip())

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


@dataclass(frozen=True, kw_only=True)
class TagsConfig(Section):
    """`tags`: the known tags are typed; any other key is a custom tag, kept as written."""

    EXTRA: ClassVar[str | None] = "custom"

    nofailover: bool = False
    failover_priority: NonNegative | None = None
    clonefrom: bool = False
    noloadbalance: bool = False
    replicatefrom: str | None = None
    nosync: bool = False
    sync_priority: NonNegative | None = None
    nostream: bool = False
    custom: Mapping[str, Any] = field(default_factory=dict)

    def to_tags(self) -> Tags:
        # An explicit `nofailover: true` makes the member ineligible whatever failover_priority says.
        return Tags(
            nofailover=self.nofailover,
            failover_priority=1 if self.failover_priority is None else self.failover_priority,
            clonefrom=self.clonefrom,
            noloadbalance=self.noloadbalance,
            replicatefrom=self.replicatefrom,
            nosync=self.nosync,
            sync_priority=1 if self.sync_priority is None else self.sync_priority,
            nostream=self.nostream,
            custom=dict(self.custom),
        )

    def conflicts(self) -> list[str]:
        """Warnings for tag pairs Patroni treats as either/or."""
        out = []
        if self.nofailover and self.failover_priority:
            out.append("tags: nofailover and failover_priority are both set; nofailover wins")
        if self.nosync and self.sync_priority:
            out.append("tags: nosync and sync_priority are both set; nosync wins")
        return out


def _watchdog_mode(value: Any) -> Any:
    # YAML 1.1 reads a bare `off`/`on` as a boolean.
    if value is False:
        return "off"
    if value is True:
        return "automatic"
    return value.lower() if isinstance(value, str) else value


@dataclass(frozen=True, kw_only=True)
class WatchdogConfig(Section):
    mode: Annotated[Literal["off", "automatic", "required"], Before(_watchdog_mode)] = "automatic"
    device: str = "/dev/watchdog"
    safety_margin: Annotated[int, Ge(-1)] = 5
    driver: str = "default"


@dataclass(frozen=True, kw_only=True)
class LocalConfig(Section):
    """The whole local configuration (file and/or PATRONI_* environment)."""

    EXTRA: ClassVar[str | None] = "other_keys"

    scope: Text
    namespace: str = "/service"
    name: Text
    restapi: RestApiConfig
    ctl: CtlConfig = field(default_factory=CtlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    etcd3: Annotated[EtcdConfig | None, Before(_null_as(dict))] = None
    etcd: Annotated[EtcdConfig | None, Before(_null_as(dict))] = None
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    postgresql: PostgresqlConfig
    tags: TagsConfig = field(default_factory=TagsConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """Top-level keys not modelled here (cluster-wide settings misplaced in a local file are warned of)."""

    @property
    def dcs(self) -> EtcdConfig:
        """The etcd section in use (validation guarantees exactly one)."""
        section = self.etcd3 or self.etcd
        if section is None:  # only reachable for a configuration built without validation
            raise ValueError("no etcd3/etcd section")
        return section


def dcs_section_problems(data: dict[str, Any]) -> list[str]:
    """Exactly one etcd section must be present: say which one is missing or what is there instead."""
    present = [name for name in ETCD_SECTIONS if name in data]
    if len(present) == 1:
        return []
    if len(present) == 2:
        return ["etcd3: expected exactly one of the sections etcd3 or etcd, found both"]
    others = [name for name in OTHER_DCS_SECTIONS if name in data]
    found = f"only {', '.join(others)} (not supported by pgwarden)" if others else "no DCS section"
    return [f"etcd3: expected an etcd3 (or etcd) section giving the etcd v3 endpoints, found {found}"]
