"""The configuration one agent runs with: defaults <- dynamic <- local, layered.

    defaults  <-  dynamic (/config, or bootstrap.dcs before the cluster exists)  <-  local (file + env)

Local wins, except for the settings only the cluster may decide: the timing and HA settings, and
`postgresql.use_slots` and the command-line GUCs below. Pure functions of already validated
configuration (no YAML, no pydantic: the agent imports this module, see checker.py). The decision
core's settings are derived here, once, by `ha_settings_from`: the agent's and the simulator's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from pgwarden.config.addresses import api_url, conn_url, proxy_url
from pgwarden.config.dynamic import (
    DynamicConfig,
    adjust_timing,
    ignore_matchers_of,
    permanent_slots_of,
    standby_cluster_of,
)
from pgwarden.config.schema import LocalConfig, WatchdogConfig
from pgwarden.core.snapshot import HaSettings, WatchdogMode, WatchdogSettings
from pgwarden.core.sync.plan import AckPoint, SyncMode, SyncSettings
from pgwarden.model import Tags

# GUCs passed as `-c` options (they outrank postgresql.conf), settable only in dynamic config:
# name -> (default, minimum).
INT_CMDLINE_GUCS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "max_connections": (100, 25),
    "max_locks_per_transaction": (64, 32),
    "max_worker_processes": (8, 2),
    "max_prepared_transactions": (0, 0),
    "max_wal_senders": (10, 3),
    "max_replication_slots": (10, 4),
})  # fmt: skip
FORCED_ON_GUCS = ("hot_standby", "wal_log_hints")
WAL_LEVELS = ("replica", "hot_standby", "logical")
CMDLINE_GUCS = frozenset({*INT_CMDLINE_GUCS, *FORCED_ON_GUCS, "wal_level", "track_commit_timestamp"})
DERIVED_GUCS = frozenset({"listen_addresses", "port", "cluster_name"})
ROLES = ("primary", "replica", "standby_leader")
DEFAULT_PG_CTL_TIMEOUT = 60
# postgresql.* switches a member's own configuration decides over /config (Patroni layers them so).
LOCAL_POSTGRESQL_SWITCHES = ("use_pg_rewind", "remove_data_directory_on_rewind_failure",
                             "remove_data_directory_on_diverged_timelines")
# synchronous_commit -> the pg_stat_replication position a commit waits for (on, local, off: flush).
_ACK_POINTS: Mapping[str, AckPoint] = MappingProxyType({"remote_write": AckPoint.WRITE,
                                                        "remote_apply": AckPoint.APPLY})
# recovery_conf keys pgwarden sets itself (a replica must follow the member the HA loop chose, through
# its own slot, onto the newest timeline) and the pre-12 recovery.conf keys standby.signal replaced.
RESERVED_RECOVERY_KEYS: Mapping[str, str] = MappingProxyType({
    "primary_conninfo": "pgwarden points a replica at the member it follows",
    "primary_slot_name": "pgwarden names the slot (use_slots)",
    "recovery_target_timeline": "pgwarden always follows the latest timeline",
    "standby_mode": "PostgreSQL 12+ uses standby.signal, which pgwarden writes",
})


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """The configuration one agent runs with for one cycle. Immutable; rebuild it when /config changes."""

    name: str
    scope: str
    namespace: str
    dynamic: DynamicConfig
    """/config (or bootstrap.dcs) with what the member's own configuration decides over it layered in
    (its ttl/loop_wait/retry_timeout and LOCAL_POSTGRESQL_SWITCHES): the cluster-wide settings it runs with."""
    ha: HaSettings
    """The decision core's settings, derived from `dynamic` once (`ha_settings_from`)."""
    parameters: Mapping[str, Any]
    """postgresql parameters: dynamic <- local, with the enforced and derived values applied."""
    pg_hba: tuple[str, ...]
    bootstrap_pg_hba: tuple[str, ...]
    role_parameters: Mapping[str, Mapping[str, Any]]
    role_pg_hba: Mapping[str, tuple[str, ...]]
    pg_ident: tuple[str, ...]
    """pg_ident.conf lines: the local list, else the dynamic one; empty leaves an existing file alone."""
    role_pg_ident: Mapping[str, tuple[str, ...]]
    recovery_conf: Mapping[str, Any]
    """Recovery parameters for a replica (local `recovery_conf`, else the dynamic one), without the
    ones pgwarden sets itself (RESERVED_RECOVERY_KEYS, warned of)."""
    pg_ctl_timeout: int
    """`pg_ctl_timeout`: the local value, else the dynamic one, else 60 seconds."""
    local: LocalConfig
    warnings: tuple[str, ...]

    @property
    def api_url(self) -> str:
        return api_url(self.local.restapi)

    @property
    def conn_url(self) -> str:
        return conn_url(self.local.postgresql)

    @property
    def proxy_url(self) -> str | None:
        """The member JSON `proxy_url`, from `postgresql.proxy_address` (None without one)."""
        return proxy_url(self.local.postgresql.proxy_address)

    def parameters_for(self, role: str) -> Mapping[str, Any]:
        """`parameters` with the role's `parameters_<role>` merged in (enforced GUCs stay as they are)."""
        merged = dict(self.parameters)
        for key, value in self.role_parameters.get(role, {}).items():
            if key not in CMDLINE_GUCS | DERIVED_GUCS:
                merged[key] = _pg_value(value)
        return MappingProxyType(merged)

    def pg_hba_for(self, role: str) -> tuple[str, ...]:
        """`pg_hba_<role>` replaces the base list when present."""
        return self.role_pg_hba.get(role, self.pg_hba)

    def pg_ident_for(self, role: str) -> tuple[str, ...]:
        """`pg_ident_<role>` replaces the base list when present."""
        return self.role_pg_ident.get(role, self.pg_ident)


def layer(local: LocalConfig, dynamic: DynamicConfig, dynamic_warnings: Sequence[str] = ()) -> EffectiveConfig:
    """Layer defaults <- dynamic <- local: the configuration an agent runs with. `dynamic` is the
    parsed DCS /config (or bootstrap.dcs before the cluster exists), `dynamic_warnings` what parsing
    it said (see validation.parse_dynamic). Pure: no validation happens here."""
    warnings = list(dynamic_warnings)
    warnings += local.tags.conflicts()
    dynamic = _local_overrides(local, dynamic, warnings)
    parameters = _merged_parameters(local, dynamic, warnings)
    pg_local, pg_dynamic = local.postgresql, dynamic.postgresql
    return EffectiveConfig(
        name=local.name,
        scope=local.scope,
        namespace=local.namespace,
        dynamic=dynamic,
        ha=replace(ha_settings_from(dynamic, tags=local.tags.to_tags(), parameters=parameters,
                                    watchdog=watchdog_settings(local.watchdog)),
                   clone_without_leader=any(m.no_leader for m in local.postgresql.replica_methods())),
        parameters=MappingProxyType(parameters),
        pg_hba=tuple(pg_local.pg_hba if pg_local.pg_hba is not None else pg_dynamic.pg_hba or ()),
        bootstrap_pg_hba=tuple(local.bootstrap.pg_hba),
        role_parameters=MappingProxyType(_role_values(local, dynamic, "parameters_", dict, warnings)),
        role_pg_hba=MappingProxyType(_role_values(local, dynamic, "pg_hba_", list, warnings)),
        pg_ident=tuple(pg_local.pg_ident if pg_local.pg_ident is not None else pg_dynamic.pg_ident or ()),
        role_pg_ident=MappingProxyType(_role_values(local, dynamic, "pg_ident_", list, warnings)),
        recovery_conf=MappingProxyType(_recovery_conf(local, dynamic, warnings)),
        pg_ctl_timeout=next((t for t in (pg_local.pg_ctl_timeout, pg_dynamic.pg_ctl_timeout) if t is not None),
                            DEFAULT_PG_CTL_TIMEOUT),
        local=local,
        warnings=tuple(warnings),
    )


def ha_settings_from(dynamic: DynamicConfig, *, tags: Tags, parameters: Mapping[str, Any] | None = None,
                     watchdog: WatchdogSettings | None = None) -> HaSettings:
    """The decision core's settings: the one derivation, for the agent (`layer`) and the simulator.

    `dynamic` is /config as `validation.parse_dynamic` reads it, with what a member's own configuration
    decides layered in (`layer` does that); `parameters` are the PostgreSQL parameters in force
    (default: /config's own), which say what a commit waits for and the ssn kept outside synchronous mode;
    `watchdog` the member's own `watchdog` section (off when not given).
    """
    pg = dynamic.postgresql
    return HaSettings(
        ttl=dynamic.ttl,
        loop_wait=dynamic.loop_wait,
        retry_timeout=dynamic.retry_timeout,
        lease_ttl=dynamic.lease_ttl,
        maximum_lag_on_failover=dynamic.maximum_lag_on_failover,
        primary_start_timeout=dynamic.primary_start_timeout,
        check_timeline=dynamic.check_timeline,
        use_pg_rewind=bool(pg.use_pg_rewind),
        remove_data_directory_on_rewind_failure=bool(pg.remove_data_directory_on_rewind_failure),
        remove_data_directory_on_diverged_timelines=bool(pg.remove_data_directory_on_diverged_timelines),
        use_slots=pg.use_slots,
        member_slots_ttl=dynamic.member_slots_ttl,
        permanent_slots=permanent_slots_of(dynamic),
        ignore_slots=ignore_matchers_of(dynamic),
        max_timelines_history=dynamic.max_timelines_history,
        tags=tags,
        sync=_sync_settings(dynamic, pg.parameters if parameters is None else parameters),
        failsafe_mode=dynamic.failsafe_mode,
        watchdog=watchdog or WatchdogSettings(),
        standby_cluster=standby_cluster_of(dynamic),
    )


def watchdog_settings(section: WatchdogConfig) -> WatchdogSettings:
    """The core's view of a member's `watchdog` section (the device and driver are the adapter's)."""
    return WatchdogSettings(mode=WatchdogMode(section.mode), safety_margin=section.safety_margin)


def _sync_settings(dynamic: DynamicConfig, parameters: Mapping[str, Any]) -> SyncSettings:
    commit = str(parameters.get("synchronous_commit", "on")).lower()
    return SyncSettings(
        mode=SyncMode(dynamic.synchronous_mode),
        strict=dynamic.synchronous_mode_strict,
        node_count=dynamic.synchronous_node_count,
        maximum_lag_on_syncnode=dynamic.maximum_lag_on_syncnode,
        configured_ssn=str(parameters.get("synchronous_standby_names", "")),
        ack=_ACK_POINTS.get(commit, AckPoint.FLUSH),
    )


def _local_overrides(local: LocalConfig, dynamic: DynamicConfig, warnings: list[str]) -> DynamicConfig:
    """/config with the member's own timing and LOCAL_POSTGRESQL_SWITCHES (those it sets) layered in."""
    dynamic = _local_timing(local, dynamic, warnings)
    switches = {name: value for name in LOCAL_POSTGRESQL_SWITCHES
                if (value := getattr(local.postgresql, name)) is not None}
    if not switches:
        return dynamic
    return dataclasses.replace(dynamic, postgresql=dataclasses.replace(dynamic.postgresql, **switches))


def _local_timing(local: LocalConfig, dynamic: DynamicConfig, warnings: list[str]) -> DynamicConfig:
    """A member's own ttl/loop_wait/retry_timeout win over /config (as in Patroni, contract 6.1), under
    the same minimums and `loop_wait + 2*retry_timeout <= ttl` rule."""
    if local.ttl is None and local.loop_wait is None and local.retry_timeout is None:
        return dynamic
    ttl, loop_wait, retry_timeout, adjusted = adjust_timing(
        dynamic.ttl if local.ttl is None else local.ttl,
        dynamic.loop_wait if local.loop_wait is None else local.loop_wait,
        dynamic.retry_timeout if local.retry_timeout is None else local.retry_timeout)
    warnings += [f"local configuration: {w}" for w in adjusted]
    return dataclasses.replace(dynamic, ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout)


def _merged_parameters(local: LocalConfig, dynamic: DynamicConfig, warnings: list[str]) -> dict[str, Any]:
    dynamic_params = dynamic.postgresql.parameters
    merged = {k: v for k, v in dynamic_params.items() if k not in CMDLINE_GUCS}
    for key, value in local.postgresql.parameters.items():
        if key in CMDLINE_GUCS:
            warnings.append(
                f"postgresql.parameters.{key}: ignored in the local configuration (only dynamic config sets it)"
            )
        else:
            merged[key] = value
    merged = {key: _pg_value(value) for key, value in merged.items()}
    merged.update(_cmdline_values(dynamic_params, warnings))
    merged["listen_addresses"] = ",".join(local.postgresql.listen_hosts)
    merged["port"] = local.postgresql.port
    merged["cluster_name"] = local.scope
    return merged


def _cmdline_values(dynamic_params: Mapping[str, Any], warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (default, minimum) in INT_CMDLINE_GUCS.items():
        out[name] = _bounded_int(name, dynamic_params.get(name), default, minimum, warnings)
    wal_level = str(dynamic_params.get("wal_level", "replica")).lower()
    if wal_level not in WAL_LEVELS:
        warnings.append(f"postgresql.parameters.wal_level: expected one of {WAL_LEVELS}, found {wal_level!r}")
        wal_level = "replica"
    out["wal_level"] = wal_level
    for name in FORCED_ON_GUCS:
        if _pg_value(dynamic_params.get(name, "on")) != "on":
            warnings.append(f"postgresql.parameters.{name}: pgwarden requires 'on'; using 'on'")
        out[name] = "on"
    track = _pg_value(dynamic_params.get("track_commit_timestamp", "off"))
    out["track_commit_timestamp"] = track if track in ("on", "off") else "off"
    return out


def _bounded_int(name: str, value: Any, default: int, minimum: int, warnings: list[str]) -> int:
    if value is None:
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        warnings.append(f"postgresql.parameters.{name}: expected an integer, found {value!r}; using {default}")
        return default
    if number < minimum:
        warnings.append(f"postgresql.parameters.{name}: {number} is below the minimum {minimum}; using {default}")
        return default
    return number


def _pg_value(value: Any) -> Any:
    """YAML booleans as PostgreSQL writes them."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _role_values(
    local: LocalConfig, dynamic: DynamicConfig, prefix: str, kind: type, warnings: list[str]
) -> dict[str, Any]:
    """`parameters_<role>` / `pg_hba_<role>`: the local value, else the dynamic one."""
    out: dict[str, Any] = {}
    for role in ROLES:
        key = prefix + role
        for source in (local.postgresql.other_keys, dynamic.postgresql.other_keys):
            value: Any = source.get(key)
            if value is None:
                continue
            if isinstance(value, dict) and kind is dict:
                out[role] = MappingProxyType(dict(value))
                break
            if isinstance(value, list) and kind is list:
                out[role] = tuple(str(line) for line in value)
                break
            warnings.append(f"postgresql.{key}: expected a {kind.__name__}, found {value!r}; ignored")
    return out


def _recovery_conf(local: LocalConfig, dynamic: DynamicConfig, warnings: list[str]) -> dict[str, Any]:
    """`recovery_conf`: the local mapping, else the dynamic one (the whole mapping, as Patroni layers it),
    less the keys pgwarden keeps for itself."""
    local_value = local.postgresql.recovery_conf
    source = local_value if local_value is not None else dynamic.postgresql.recovery_conf or {}
    out: dict[str, Any] = {}
    for key, value in source.items():
        why = RESERVED_RECOVERY_KEYS.get(str(key).lower())
        if why is not None:
            warnings.append(f"postgresql.recovery_conf.{key}: ignored ({why})")
        elif value is not None:
            out[str(key)] = _pg_value(value)
    return out
