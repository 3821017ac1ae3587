"""The DYNAMIC configuration: the cluster-wide `/config` key in the DCS, seeded from `bootstrap.dcs`.

Another member or `edit-config` may have written anything there, so reading it never fails:
`validation.parse_dynamic` keeps every valid key, falls back to the default for each invalid one,
and says so. The timing rules (contract 2.6) are applied the way Patroni applies them, with a warning.
The sections are frozen dataclasses carrying their validation rules (`rules.py`); `DynamicConfig()`
is the all-defaults configuration and needs no validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le

from pgwarden.config.gucs import Parameters
from pgwarden.config.rules import Before, Section
from pgwarden.core.snapshot import PermanentSlot, SlotMatcher, StandbyCluster
from pgwarden.model import (
    DEFAULT_LOOP_WAIT,
    DEFAULT_MAXIMUM_LAG_ON_FAILOVER,
    DEFAULT_TTL,
    MAX_BYTES,
    MAX_TIMING,
    SynchronousMode,
    switch_of,
    synchronous_mode_of,
)

MIN_TTL, MIN_LOOP_WAIT, MIN_RETRY_TIMEOUT = 20, 1, 3

# Upper bounds of the numeric settings (issue 20): a value beyond them is a typo or an attack, never a
# configuration. Unbounded, `ttl: 1e18` reached etcd's lease grant (an int64) and failed every renewal
# while the leader kept serving. `parse_dynamic` repairs a value out of range to its default (with a
# warning); PATCH/PUT /config and edit-config refuse it (`validation.config_problems`). MAX_TIMING and
# MAX_BYTES live in the model, whose `DynamicView` reads timing and lag too.
MAX_TIMEOUT = 86400
"""primary_start_timeout, primary_stop_timeout, pg_ctl_timeout: at most a day."""
MAX_SYNC_NODES = 64
"""synchronous_node_count."""
MAX_TIMELINES = 2**32 - 1
"""max_timelines_history: timeline ids are 32-bit."""
MAX_SLOTS_TTL = 365 * 86400
"""member_slots_ttl: a year."""

# postgresql.* keys that describe one machine, so a cluster-wide value makes no sense.
LOCAL_ONLY_POSTGRESQL_KEYS = frozenset(
    {"connect_address", "proxy_address", "listen", "config_dir", "data_dir", "pgpass", "authentication"}
)

DYNAMIC_ALIASES: Mapping[tuple[str, ...], Mapping[str, str]] = {
    (): {
        "master_start_timeout": "primary_start_timeout",
        "master_stop_timeout": "primary_stop_timeout",
        "permanent_slots": "slots",
        "permanent_replication_slots": "slots",
    },
}
"""Legacy key names, by section path: accepted and read as the current name (validation.canonical)."""

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}


def _whole_seconds(value: Any) -> Any:
    """Patroni casts timing values to int: accept 10.0 and '10' as 10."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _duration(value: Any) -> Any:
    """member_slots_ttl: seconds, or a string with a unit ('30min', '1h', '1800s')."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected seconds or a duration such as '30min', '1h', '1800s'")
        return int(int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2) or "s"])
    return value


def _synchronous_mode(value: Any) -> Any:
    # YAML reads bare on/off/true/false as booleans; Patroni's legacy form is a boolean. The model's
    # reading, so the REST API and the CLI (ClusterView.dynamic) answer as the agent runs.
    mode = synchronous_mode_of(value)
    if mode is None:
        raise ValueError("expected off, on or quorum")
    return mode


def _switch(value: Any) -> Any:
    # The model's reading (Patroni's), so the agent's `pause` is the cluster model's (ClusterView.paused).
    switch = switch_of(value)
    if switch is None and value is not None:
        raise ValueError("expected a boolean (true/false)")
    return switch


SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
"""What PostgreSQL accepts as a replication slot's name."""


def _slots(value: Any) -> Any:
    # Every form Patroni accepts: `name:` with an empty value, `name: 0` (or null, false, "", {}) is a
    # physical slot with the defaults; otherwise a mapping (`type`, `database`, `plugin`, `cluster_type`).
    if value is None:
        return {}
    if isinstance(value, dict):
        bad = [str(name) for name in value if not SLOT_NAME.match(str(name))]
        if bad:
            raise ValueError(f"invalid slot name(s) {', '.join(map(repr, bad))}: a slot name has 1 to 63 "
                             "characters of a-z, 0-9 and _")
        return {str(name): {} if _default_slot(spec) else spec for name, spec in value.items()}
    return value


def _default_slot(spec: Any) -> bool:
    """`name:`, `name: 0`, `name: null`, `name: {}`: a physical slot with the defaults."""
    return spec is None or spec is False or (not isinstance(spec, bool) and spec in (0, "", {}))


Seconds = Annotated[int, Before(_whole_seconds), Le(MAX_TIMING)]
NonNegativeSeconds = Annotated[int, Before(_whole_seconds), Ge(0), Le(MAX_TIMEOUT)]

@dataclass(frozen=True, kw_only=True)
class SlotSpec(Section):
    """One permanent slot of `slots:` (Patroni's permanent replication slots)."""

    type: Literal["physical", "logical"] = "physical"
    database: str | None = None
    plugin: str | None = None
    cluster_type: Literal["primary", "standby"] | None = None
    """Only in a cluster of that kind (a standby cluster's `standby_leader` keeps `standby` ones, a
    primary cluster's primary `primary` ones); unset: in any."""

    def __post_init__(self) -> None:
        if self.type == "logical" and not (self.database and self.plugin):
            raise ValueError("expected database and plugin for a logical slot")


# Leader lease defaults (see PgwardenTiming): 7 s survives a 3 s DCS stall with room to spare (the
# leader stops writes 1.5 s before the lease can expire) and keeps host-loss failover under 8 s.
DEFAULT_LEASE_TTL = 7
MIN_LEASE_TTL = 4


_HOST = re.compile(r"^[A-Za-z0-9._\-:\[\]%/,]{1,255}$")
"""A host name, an IP address (v6 in brackets or bare), a socket directory, or a comma-separated list of
them (libpq's multi-host form): nothing that could end a conninfo value or a line."""
_APPLY_DELAY = re.compile(r"^\s*\d{1,10}\s*(us|ms|s|min|h|d)?\s*$")
STANDBY_METHODS = ("basebackup",)
"""How a new standby cluster copies the remote when `create_replica_methods` is not given."""
_METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
"""A replica creation method's name: `basebackup`, or a method whose section `postgresql.<name>` (local
configuration, with its `command`) the agent looks up when it runs it."""


def _standby_host(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not _HOST.match(value):
        raise ValueError("expected a host name, an IP address or a socket directory (letters, digits and . - _ : "
                         "[ ] % / , only)")
    return value


def _slot_name(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not SLOT_NAME.match(value):
        raise ValueError("expected a replication slot name: 1 to 63 characters of a-z, 0-9 and _")
    return value


def _command(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c in value for c in "\x00\n\r"):
        raise ValueError("expected a one-line shell command")
    return value


def _apply_delay(value: Any) -> Any:
    # PostgreSQL's recovery_min_apply_delay: milliseconds, or a number with a time unit ('5min').
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not _APPLY_DELAY.match(str(value)):
        raise ValueError("expected milliseconds or a duration such as '30s', '5min', '1h'")
    return str(value).strip()


def _methods(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ValueError("expected a list of replica creation method names")
    bad = [m for m in value if not _METHOD_NAME.match(m)]
    if bad:
        raise ValueError(f"expected replica creation method names (basebackup, or the name of a postgresql.<name> "
                         f"section), not {', '.join(map(repr, bad))}")
    return value


@dataclass(frozen=True, kw_only=True)
class StandbyClusterConfig(Section):
    """`standby_cluster`: this cluster follows a remote primary (contract 2.12). Its lock holder, the
    standby leader, streams from `host`:`port` (through `primary_slot_name` on the remote when set)
    and/or restores WAL with `restore_command`, and never promotes while the section is there."""

    host: Annotated[str | None, Before(_standby_host)] = None
    port: Annotated[int, Ge(1), Le(65535)] = 5432
    primary_slot_name: Annotated[str | None, Before(_slot_name)] = None
    create_replica_methods: Annotated[list[str], Before(_methods)] = field(default_factory=list)
    restore_command: Annotated[str | None, Before(_command)] = None
    archive_cleanup_command: Annotated[str | None, Before(_command)] = None
    recovery_min_apply_delay: Annotated[str | None, Before(_apply_delay)] = None

    def __post_init__(self) -> None:
        if not self.host and not self.restore_command:
            raise ValueError("expected `host` (stream from the remote primary) or `restore_command` (restore its "
                             "archived WAL), or both")


def standby_cluster_of(dynamic: DynamicConfig) -> StandbyCluster | None:
    """`standby_cluster` as the decision core reads it (None: this is no standby cluster)."""
    section = dynamic.standby_cluster
    if section is None or not (section.host or section.restore_command):
        return None
    return StandbyCluster(
        host=section.host, port=section.port, primary_slot_name=section.primary_slot_name,
        create_replica_methods=tuple(section.create_replica_methods) or STANDBY_METHODS,
        restore_command=section.restore_command, archive_cleanup_command=section.archive_cleanup_command,
        recovery_min_apply_delay=section.recovery_min_apply_delay)


@dataclass(frozen=True, kw_only=True)
class DynamicPostgresql(Section):
    EXTRA: ClassVar[str | None] = "other_keys"

    use_pg_rewind: bool | None = None
    use_slots: bool = True
    parameters: Parameters = field(default_factory=dict)
    pg_hba: list[str] | None = None
    pg_ident: list[str] | None = None
    """Used when the local configuration has no pg_ident; `pg_ident_<role>` replaces it for a role."""
    recovery_conf: dict[str, Any] | None = None
    """Used when the local configuration has no recovery_conf (schema.PostgresqlConfig.recovery_conf)."""
    pg_ctl_timeout: Annotated[int, Ge(0), Le(MAX_TIMEOUT)] | None = None
    remove_data_directory_on_rewind_failure: bool | None = None
    remove_data_directory_on_diverged_timelines: bool | None = None
    other_keys: Mapping[str, Any] = field(default_factory=dict)
    """Keys not modelled here, such as `parameters_<role>` and `pg_hba_<role>`."""


@dataclass(frozen=True, kw_only=True)
class PgwardenTiming(Section):
    """pgwarden's own timing (a `pgwarden:` section in /config; Patroni ignores it).

    The leader key and the member key live on a lease of `lease_ttl` seconds (never more than
    `ttl`), refreshed by a keepalive that runs apart from the HA cycle: every `keepalive_interval`
    seconds on the leader (by default a seventh of the lease: 1 s for the default 7 s lease), three
    times per lease on the other members. A dead host's leader key therefore expires after about
    `lease_ttl`, not `ttl`. Set `lease_ttl: null` (or a value >= ttl) for Patroni's behaviour: the
    lease is then `ttl`.
    """

    lease_ttl: Annotated[int, Ge(MIN_LEASE_TTL), Le(MAX_TIMING)] | None = DEFAULT_LEASE_TTL
    keepalive_interval: Annotated[float, Gt(0), Le(10)] | None = None


@dataclass(frozen=True, kw_only=True)
class DynamicConfig(Section):
    """`/config` with Patroni's defaults (contract 6.3). Build it with `validation.parse_dynamic`."""

    ttl: Seconds = DEFAULT_TTL
    loop_wait: Seconds = DEFAULT_LOOP_WAIT
    retry_timeout: Seconds = 10
    maximum_lag_on_failover: Annotated[int, Ge(0), Le(MAX_BYTES)] = DEFAULT_MAXIMUM_LAG_ON_FAILOVER
    maximum_lag_on_syncnode: Annotated[int, Ge(-1), Le(MAX_BYTES)] = -1
    primary_start_timeout: NonNegativeSeconds = 300
    """Also read from the legacy `master_start_timeout` (DYNAMIC_ALIASES)."""
    primary_stop_timeout: NonNegativeSeconds = 0
    """In synchronous mode (on or quorum), how long a primary's stop (demote, restart, shutdown) may take
    before PostgreSQL is killed with SIGKILL; 0: no limit (pg_ctl_timeout). Also read from the legacy
    `master_stop_timeout`."""
    primary_race_backoff: Annotated[float, Ge(0), Le(MAX_TIMING)] = 0
    max_timelines_history: Annotated[int, Ge(0), Le(MAX_TIMELINES)] = 0
    check_timeline: bool = False
    synchronous_mode: Annotated[SynchronousMode, Before(_synchronous_mode)] = "off"
    synchronous_mode_strict: bool = False
    synchronous_node_count: Annotated[int, Ge(1), Le(MAX_SYNC_NODES)] = 1
    failsafe_mode: bool = False
    pause: Annotated[bool | None, Before(_switch)] = None
    member_slots_ttl: Annotated[int, Before(_duration), Ge(0), Le(MAX_SLOTS_TTL)] = 1800
    slots: Annotated[dict[str, SlotSpec], Before(_slots)] = field(default_factory=dict)
    """Also read from the legacy `permanent_slots` / `permanent_replication_slots`."""
    ignore_slots: list[dict[str, Any]] = field(default_factory=list)
    standby_cluster: StandbyClusterConfig | None = None
    postgresql: DynamicPostgresql = field(default_factory=DynamicPostgresql)
    pgwarden: PgwardenTiming = field(default_factory=PgwardenTiming)

    @property
    def lease_ttl(self) -> int:
        """The effective leader lease: pgwarden.lease_ttl, capped by ttl."""
        wanted = self.pgwarden.lease_ttl
        return self.ttl if wanted is None else min(wanted, self.ttl)


def adjust_timing(ttl: int, loop_wait: int, retry_timeout: int) -> tuple[int, int, int, list[str]]:
    """Apply the minimums, then `loop_wait + 2*retry_timeout <= ttl` (lowering loop_wait first)."""
    warnings: list[str] = []
    for name, value, minimum in (
        ("ttl", ttl, MIN_TTL),
        ("loop_wait", loop_wait, MIN_LOOP_WAIT),
        ("retry_timeout", retry_timeout, MIN_RETRY_TIMEOUT),
    ):
        if value < minimum:
            warnings.append(f"{name}={value} is below the minimum {minimum}; using {minimum}")
    ttl, loop_wait = max(ttl, MIN_TTL), max(loop_wait, MIN_LOOP_WAIT)
    retry_timeout = max(retry_timeout, MIN_RETRY_TIMEOUT)
    if loop_wait + 2 * retry_timeout > ttl:
        # ttl >= 20 and 1 + 2*3 <= 20, so lowering both always reaches a valid triple.
        new_loop_wait = max(MIN_LOOP_WAIT, ttl - 2 * retry_timeout)
        new_retry_timeout = min(retry_timeout, (ttl - new_loop_wait) // 2)
        warnings.append(
            f"loop_wait ({loop_wait}) + 2*retry_timeout ({retry_timeout}) exceeds ttl ({ttl}); "
            f"using loop_wait={new_loop_wait}, retry_timeout={new_retry_timeout}"
        )
        loop_wait, retry_timeout = new_loop_wait, new_retry_timeout
    return ttl, loop_wait, retry_timeout, warnings


def permanent_slots_of(dynamic: DynamicConfig) -> tuple[PermanentSlot, ...]:
    """`slots` as the decision core reads it, sorted by name."""
    return tuple(PermanentSlot(name, spec.type, spec.database, spec.plugin, spec.cluster_type)
                 for name, spec in sorted(dynamic.slots.items()))


def ignore_matchers_of(dynamic: DynamicConfig) -> tuple[SlotMatcher, ...]:
    """`ignore_slots` as the decision core reads it: each entry's name, type, database and plugin (those
    given; other keys are Patroni's none either). An entry giving none of them would match every slot:
    it is kept, as Patroni keeps it (nothing is then created or dropped by pgwarden but member slots)."""
    out: list[SlotMatcher] = []
    for entry in dynamic.ignore_slots:
        if not isinstance(entry, Mapping):
            continue
        given = {key: None if entry.get(key) is None else str(entry[key])
                 for key in ("name", "type", "database", "plugin")}
        out.append(SlotMatcher(**given))
    return tuple(out)

