"""The LOCAL configuration: a Patroni YAML file, accepted unchanged.

Every section accepts keys we do not model, as Patroni does, so a file written for Patroni never
fails on a setting pgwarden merely ignores. What we do model is type-checked, and each problem
becomes one message naming its key path (see `errors.py`). The sections are frozen dataclasses:
validation (pydantic, `validation.py`) reads the rules they carry (`rules.py`); holding them needs
no pydantic.

Of the DCS sections `etcd3`, `etcd` (the v2 API) and `zookeeper` are implemented, one per configuration;
the others (consul, kubernetes, exhibitor, raft) are refused (`support.py`).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le

from pgwarden.config.addresses import etcd_addresses, etcd_endpoint, parse_listen
from pgwarden.config.dynamic import Seconds
from pgwarden.config.gucs import Parameters, name_problem, value_problem
from pgwarden.config.paths import check_data_dir
from pgwarden.config.rules import After, Before, Section
from pgwarden.model import Tags

DCS_SECTIONS = ("etcd3", "etcd", "zookeeper")
"""The implemented DCS backends, by the name of Patroni's configuration section (`pgwarden.dcs.open_dcs`)."""
OTHER_DCS_SECTIONS = ("consul", "exhibitor", "kubernetes", "raft")
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


BIN_NAMES = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind")


def _bin_names(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(BIN_NAMES))
    if unknown:
        raise ValueError(f"expected keys among {', '.join(BIN_NAMES)}; unknown: {', '.join(unknown)}")
    return value


HostPort = Annotated[str, After(_host_port(require_host=False))]
ConnectAddress = Annotated[str, After(_host_port(require_host=True))]
Text = Annotated[str, Before(_text)]
StrList = Annotated[list[str], Before(_null_as(list))]
CommaList = Annotated[list[str], Before(_comma_list)]
AnyDict = Annotated[dict[str, Any], Before(_null_as(dict))]
Options = Annotated[list[Any] | dict[str, Any], Before(_options)]
# Upper bounds (issue 20: a value beyond them is a typo, never a configuration; see dynamic.py for /config).
MAX_INT32 = 2**31 - 1
Timeout = Annotated[int, Ge(0), Le(86400)]  # seconds: at most a day
Priority = Annotated[int, Ge(0), Le(MAX_INT32)]


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
    request_queue_size: Annotated[int, Ge(0), Le(65535)] = 5
    server_tokens: str = "Original"


@dataclass(frozen=True, kw_only=True)
class CtlConfig(Section):
    authentication: Credentials | None = None
    insecure: bool = False
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: Text | None = None


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NOTSET")


def _log_level(value: Any) -> Any:
    """'info' -> 'INFO'; Python's level names only (what `logging` accepts)."""
    if isinstance(value, str) and value.strip().upper() in _LOG_LEVELS:
        return value.strip().upper()
    raise ValueError(f"expected a log level ({', '.join(_LOG_LEVELS[:-1])})")


def _log_levels(value: Any) -> Any:
    """`loggers`: {logger name: level}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return value  # the type check says a mapping was expected
    levels = {}
    for name, level in value.items():
        try:
            levels[str(name)] = _log_level(level)
        except ValueError as exc:
            raise ValueError(f"{exc} for logger {name!r}") from None
    return levels


def _file_mode(value: Any) -> Any:
    """`mode: 0640` (YAML reads it as octal) or the text '0640' / '640' / '0o640' (octal, as for chmod)."""
    if isinstance(value, str):
        try:
            value = int(value.strip(), 8)
        except ValueError:
            raise ValueError("expected file permissions in octal, such as 0640") from None
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 0o777:
        raise ValueError("expected file permissions in octal, such as 0640 (between 0 and 0777)")
    return value


def _log_format(value: Any) -> Any:
    """A logging format string, or (for json) a list of field names and one-key {field: json name}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(
            isinstance(item, str) or (isinstance(item, dict) and len(item) == 1
                                      and all(isinstance(part, str) for part in (*item, *item.values())))
            for item in value):
        return value
    raise ValueError("expected a format string, or a list of field names and {field: name} items")


LogLevel = Annotated[str, Before(_log_level)]


@dataclass(frozen=True, kw_only=True)
class LogConfig(Section):
    """Patroni's `log` section; what each key does: `pgwarden.agent.logsetup`."""

    type: Literal["plain", "json"] = "plain"
    level: LogLevel = "INFO"
    traceback_level: LogLevel = "ERROR"
    format: Annotated[Any, Before(_log_format)] = None
    dateformat: str | None = None
    static_fields: AnyDict = field(default_factory=dict)
    max_queue_size: Annotated[int, Ge(1), Le(10_000_000)] = 1000
    dir: str | None = None
    mode: Annotated[int | None, Before(_file_mode)] = None
    file_num: Annotated[int, Ge(1), Le(1000)] = 4
    file_size: Annotated[int, Ge(1), Le(2**40)] = 25_000_000
    """Bytes per log file before rotation: at most 1 TiB."""
    loggers: Annotated[dict[str, str], Before(_log_levels)] = field(default_factory=dict)
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
        """The etcd client URLs to use, in order: `url`, else `hosts`, else `host` (`etcd_addresses`),
        else `proxy`."""
        addresses = etcd_addresses(self.as_mapping()) or [self.proxy or ""]
        return tuple(etcd_endpoint(address, self.protocol) for address in addresses)

    def as_mapping(self) -> dict[str, Any]:
        """The section as Patroni's `etcd3` mapping (what `pgwarden.dcs.dcs_from_config` reads)."""
        modeled = dataclasses.asdict(self)
        other = modeled.pop("other_keys")
        # Unset fields are left out: an empty `hosts` must not shadow the `host` or `url` the user wrote.
        return {**other, **{key: value for key, value in modeled.items() if value not in (None, [], "")}}


def _zookeeper_hosts(value: Any) -> Any:
    """Patroni's `zookeeper.hosts`: a list or a comma string of 'host[:port]'."""
    return _comma_list(value)


@dataclass(frozen=True, kw_only=True)
class ZooKeeperConfig(Section):
    """`zookeeper`: the ensemble's addresses (`hosts`, required), TLS and authentication, as Patroni reads them."""

    EXTRA: ClassVar[str | None] = "other_keys"

    hosts: Annotated[list[str], Before(_zookeeper_hosts)]
    use_ssl: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: Text | None = None
    verify: bool = True
    set_acls: AnyDict | None = None
    auth_data: Any = None
    other_keys: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not [host for host in self.hosts if host.strip()]:
            raise ValueError("expected 'hosts': the ZooKeeper ensemble's 'host:port' addresses")

    def as_mapping(self) -> dict[str, Any]:
        """The section as Patroni's `zookeeper` mapping (what `pgwarden.dcs.open_dcs` reads)."""
        modeled = dataclasses.asdict(self)
        other = modeled.pop("other_keys")
        return {**other, **{key: value for key, value in modeled.items() if value is not None}}


# -- replica creation and custom bootstrap methods (Patroni's `create_replica_methods`, `bootstrap.method`) --

BASEBACKUP = "basebackup"
"""The built-in replica creation method (pg_basebackup with `postgresql.basebackup`'s options)."""
INITDB = "initdb"
"""The built-in bootstrap method (initdb with `bootstrap.initdb`'s options)."""
REPLICA_METHOD_KEYS = ("command", "keep_data", "no_leader", "no_params")
"""Keys of a `postgresql.<method>` section that pgwarden reads itself; every other key is passed to the
command as `--key=value`, as Patroni does."""
BOOTSTRAP_METHOD_KEYS = ("command", "keep_existing_recovery_conf", "no_params", "recovery_conf")
"""Keys of a `bootstrap.<method>` section that pgwarden reads itself; the others become `--key=value`."""
_OPTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FALSE_WORDS = ("", "0", "false", "no", "off", "n", "f")


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One custom method's section, read the way Patroni reads it: a replica creation method
    (`postgresql.<name>`) or a custom bootstrap method (`bootstrap.<name>`)."""

    name: str
    command: str = ""
    """The command line, split like a shell would (`shlex`) but never run through a shell."""
    keep_data: bool = False
    """Replica methods: the data directory is not emptied before the command, nor after it fails."""
    no_leader: bool = False
    """Replica methods: the method may run with no member to copy from (`--connstring=` empty)."""
    no_params: bool = False
    """Pass none of Patroni's arguments (`--scope`, `--datadir`, `--role`, `--connstring`)."""
    keep_existing_recovery_conf: bool = False
    """Bootstrap methods: keep the recovery.signal and recovery settings the command left behind."""
    recovery_conf: Mapping[str, Any] = field(default_factory=dict)
    """Bootstrap methods: PostgreSQL starts in archive recovery with these settings until recovery ends."""
    params: tuple[tuple[str, str], ...] = ()
    """The section's other keys, passed as `--key=value` in the order written."""


def flag(value: Any) -> bool:
    """A method's switch (`keep_data: 1`, `no_leader: true`, `no_params: 'yes'`): Patroni tests them for
    truth; the words false/no/off/0 (which a bare truth test would read as true) are false here."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


def _option_value(value: Any) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if not isinstance(value, str | int | float | bool) or any(c in text for c in "\x00\n\r"):
        raise ValueError("expected a one-line string, number or boolean")
    return text


def method_spec(name: str, section: Any, reserved: tuple[str, ...]) -> MethodSpec:
    """The section of method `name` as a `MethodSpec`; ValueError ("expected ...") naming what is wrong."""
    if not isinstance(section, Mapping):
        raise ValueError(f"expected a section `{name}` with the method's `command`")
    command = section.get("command")
    if not isinstance(command, str) or not command.strip() or any(c in command for c in "\x00\n\r"):
        raise ValueError(f"expected `{name}.command`: the method's command line (one line)")
    try:
        shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"expected `{name}.command` to be a command line ({exc})") from None
    params = []
    for key, value in section.items():
        if key in reserved:
            continue
        if not isinstance(key, str) or not _OPTION_NAME.match(key):
            raise ValueError(f"expected option names of letters, digits, '_', '-' and '.' in `{name}` (got {key!r})")
        try:
            params.append((key, _option_value(value)))
        except ValueError as exc:
            raise ValueError(f"{exc} for `{name}.{key}`") from None
    recovery = section.get("recovery_conf") or {}
    if "recovery_conf" in reserved:
        recovery = _recovery_settings(name, recovery)
    return MethodSpec(name=name, command=command, keep_data=flag(section.get("keep_data")),
                      no_leader=flag(section.get("no_leader")), no_params=flag(section.get("no_params")),
                      keep_existing_recovery_conf=flag(section.get("keep_existing_recovery_conf")),
                      recovery_conf=recovery, params=tuple(params))


def _recovery_settings(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected `{name}.recovery_conf` to be a mapping of recovery settings")
    for key, item in value.items():
        problem = name_problem(key) or value_problem(item)
        if problem is not None:
            raise ValueError(f"expected recovery settings in `{name}.recovery_conf`: {problem}")
    return dict(value)


@dataclass(frozen=True, kw_only=True)
class BootstrapConfig(Section):
    EXTRA: ClassVar[str | None] = "other_keys"

    dcs: AnyDict = field(default_factory=dict)
    method: Text = INITDB
    initdb: Options = field(default_factory=list)
    pg_hba: StrList = field(default_factory=list)
    post_bootstrap: str | None = None
    """Also read from the legacy `post_init` (LOCAL_ALIASES)."""
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """The custom methods' sections (`bootstrap.<method>`), and keys pgwarden does not model (`users`)."""

    def __post_init__(self) -> None:
        self.custom_method()  # a selected method must be usable: checked here, at validation

    def custom_method(self) -> MethodSpec | None:
        """The selected custom bootstrap method (None: initdb)."""
        if self.method == INITDB:
            return None
        return method_spec(self.method, self.other_keys.get(self.method), BOOTSTRAP_METHOD_KEYS)


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
    """host:port of a connection pooler in front of this member: published as `proxy_url` in its member key."""
    data_dir: Annotated[str, After(check_data_dir)]
    config_dir: str | None = None
    """Where postgresql.conf (pgwarden's, passed as `-c config_file=`), postgresql.base.conf, pg_hba.conf
    and pg_ident.conf live (Debian: /etc/postgresql/<version>/<cluster>); default: data_dir."""
    bin_dir: str | None = None
    bin_name: Annotated[dict[str, str], Before(_null_as(dict)), After(_bin_names)] = field(default_factory=dict)
    """Other names for the binaries in bin_dir: {pg_ctl, initdb, pg_controldata, pg_basebackup, postgres,
    pg_isready, pg_rewind} -> name. pgwarden never runs pg_isready; `postgres` reaches pg_ctl as -p."""
    pgpass: str | None = None
    custom_conf: str | None = None
    """The user's base configuration, included by pgwarden's postgresql.conf instead of
    postgresql.base.conf and never written (a relative path is relative to config_dir)."""
    authentication: PgAuthentication
    parameters: Parameters = field(default_factory=dict)
    pg_hba: StrList | None = None
    pg_ident: StrList | None = None
    use_pg_rewind: bool | None = None
    remove_data_directory_on_rewind_failure: bool | None = None
    remove_data_directory_on_diverged_timelines: bool | None = None
    create_replica_methods: CommaList = field(default_factory=list)
    """In order; empty: `replica_method` (Patroni's legacy single method), else basebackup (`replica_methods`)."""
    basebackup: Options | None = None
    rewind: Options | None = None
    callbacks: Callbacks = field(default_factory=Callbacks)
    pre_promote: str | None = None
    before_stop: str | None = None
    pg_ctl_timeout: Timeout | None = None
    """Seconds pg_ctl start/stop/promote may wait; default: the dynamic value, else 60."""
    use_unix_socket: bool = False
    use_unix_socket_repl: bool = False
    recovery_conf: AnyDict | None = None
    """Recovery parameters (restore_command, recovery_min_apply_delay, recovery_target_*, ...), written into
    postgresql.conf (PostgreSQL 12+ has no recovery.conf); replaces the dynamic mapping. primary_conninfo,
    primary_slot_name, recovery_target_timeline and standby_mode are pgwarden's own: ignored with a warning."""
    replica_method: str | None = None
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """Keys not modelled here: `parameters_<role>`, `pg_hba_<role>`, the replica creation methods' sections
    (`postgresql.<method>`), and misplaced ones (`use_slots`)."""

    def __post_init__(self) -> None:
        self.replica_methods()  # every method named must be usable: checked here, at validation

    def replica_methods(self) -> tuple[MethodSpec, ...]:
        """The replica creation methods to try, in order (Patroni: `create_replica_methods`, else the legacy
        `replica_method`, else basebackup). basebackup is the built-in one; any other needs its section."""
        names = self.create_replica_methods or ([self.replica_method] if self.replica_method else [BASEBACKUP])
        if len(set(names)) != len(names):
            raise ValueError("expected each replica creation method once in create_replica_methods")
        return tuple(_replica_method(name, self.other_keys.get(name)) for name in names)

    def method(self, name: str) -> MethodSpec | None:
        """Replica creation method `name` as this configuration defines it (basebackup, or a
        `postgresql.<name>` section with its `command`), listed in create_replica_methods or not
        (`standby_cluster.create_replica_methods` names them too); None if it is not defined usably."""
        try:
            return _replica_method(name, self.other_keys.get(name))
        except ValueError:
            return None

    @property
    def listen_hosts(self) -> tuple[str, ...]:
        """`listen: 'a,b:5432'` -> ('a', 'b')."""
        host, _ = parse_listen(self.listen)
        return tuple(h.strip() for h in host.split(",") if h.strip())

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


def _replica_method(name: str, section: Any) -> MethodSpec:
    if name == BASEBACKUP and (section is None or not isinstance(section, Mapping) or "command" not in section):
        # `postgresql.basebackup` holds pg_basebackup's options, not a method section
        return MethodSpec(name=BASEBACKUP)
    return method_spec(name, section, REPLICA_METHOD_KEYS)


@dataclass(frozen=True, kw_only=True)
class TagsConfig(Section):
    """`tags`: the known tags are typed; any other key is a custom tag, kept as written."""

    EXTRA: ClassVar[str | None] = "custom"

    nofailover: bool | None = None  # None: not set (failover_priority decides)
    failover_priority: Priority | None = None
    clonefrom: bool = False
    noloadbalance: bool = False
    replicatefrom: str | None = None
    nosync: bool | None = None  # None: not set (sync_priority decides)
    sync_priority: Priority | None = None
    nostream: bool = False
    custom: Mapping[str, Any] = field(default_factory=dict)

    def to_tags(self) -> Tags:
        # When both are set and disagree, nofailover (nosync) decides, as in Patroni: an explicit
        # `nofailover: true` makes the member ineligible whatever failover_priority says, and an
        # explicit `nofailover: false` makes it eligible even with failover_priority 0.
        return Tags(
            nofailover=bool(self.nofailover),
            failover_priority=_either_or(self.nofailover, self.failover_priority),
            clonefrom=self.clonefrom,
            noloadbalance=self.noloadbalance,
            replicatefrom=self.replicatefrom,
            nosync=bool(self.nosync),
            sync_priority=_either_or(self.nosync, self.sync_priority),
            nostream=self.nostream,
            custom=dict(self.custom),
        )

    def conflicts(self) -> list[str]:
        """Warnings for tag pairs Patroni treats as either/or, in Patroni's words."""
        return [conflicting_tags_line(flag, value, priority, number)
                for flag, value, priority, number in (("nofailover", self.nofailover, "failover_priority",
                                                       self.failover_priority),
                                                      ("nosync", self.nosync, "sync_priority", self.sync_priority))
                if value is not None and number is not None and value == (number > 0)]


CONFLICTING_TAGS = "Conflicting configuration between "


def conflicting_tags_line(flag: str, value: bool, priority: str, number: int) -> str:
    """Patroni's WARNING for `nofailover`/`failover_priority` (or `nosync`/`sync_priority`) that disagree."""
    return (f"{CONFLICTING_TAGS}{flag}: {value} and {priority}: {number}. "
            f"Defaulting to {flag}: {value}")


def _either_or(flag: bool | None, priority: int | None) -> int:
    """The effective priority: the given one, 1 when unset or when an explicit false flag overrides a 0."""
    if priority is None or (flag is False and priority <= 0):
        return 1
    return priority


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
    safety_margin: Annotated[int, Ge(-1), Le(3600)] = 5
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
    zookeeper: Annotated[ZooKeeperConfig | None, Before(_null_as(dict))] = None
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    postgresql: PostgresqlConfig
    tags: TagsConfig = field(default_factory=TagsConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    ttl: Seconds | None = None
    loop_wait: Seconds | None = None
    retry_timeout: Seconds | None = None
    """As in Patroni, a member's own ttl/loop_wait/retry_timeout win over /config (layering.layer)."""
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """Top-level keys not modelled here (`support.py` judges them: cluster-wide settings misplaced in a
    local file are refused or warned of)."""

    @property
    def dcs_kind(self) -> str:
        """Which backend: the name of the one DCS section given (`DCS_SECTIONS`)."""
        for kind in DCS_SECTIONS:
            if getattr(self, kind) is not None:
                return kind
        raise ValueError("no DCS section")  # only reachable for a configuration built without validation

    @property
    def dcs(self) -> EtcdConfig | ZooKeeperConfig:
        """The one DCS section (validation requires exactly one of `DCS_SECTIONS`)."""
        section: EtcdConfig | ZooKeeperConfig | None = getattr(self, self.dcs_kind)
        assert section is not None
        return section


def dcs_section_problems(data: dict[str, Any]) -> list[str]:
    """Exactly one implemented DCS section must be present: Patroni would pick one of several silently, by
    the order it loads its backends in. Other DCS sections are refused by the support table (`support.py`),
    which says what to do instead."""
    given = [name for name in DCS_SECTIONS if name in data]
    if len(given) > 1:
        return [f"{given[-1]}: expected one DCS section, found {len(given)} ({', '.join(given)}); keep the one "
                "the cluster runs on"]
    if given or any(name in data for name in OTHER_DCS_SECTIONS):
        return []
    return ["etcd3: expected a DCS section (etcd3, etcd or zookeeper) giving the store's addresses, found none"]
