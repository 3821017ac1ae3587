"""The DYNAMIC configuration: the cluster-wide `/config` key in the DCS, seeded from `bootstrap.dcs`.

Another member or `edit-config` may have written anything there, so reading it never fails:
`parse_dynamic` keeps every valid key, falls back to the default for each invalid one, and says so.
The timing rules (contract 2.6) are applied the way Patroni applies them, with a warning.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from pgwarden.config.errors import describe_error, describe_validation_error, key_path

SynchronousMode = Literal["off", "on", "quorum"]

MIN_TTL, MIN_LOOP_WAIT, MIN_RETRY_TIMEOUT = 20, 1, 3

# postgresql.* keys that describe one machine, so a cluster-wide value makes no sense.
LOCAL_ONLY_POSTGRESQL_KEYS = frozenset(
    {"connect_address", "proxy_address", "listen", "config_dir", "data_dir", "pgpass", "authentication"}
)

_FIELD_BY_ALIAS = {
    "master_start_timeout": "primary_start_timeout",
    "master_stop_timeout": "primary_stop_timeout",
    "permanent_slots": "slots",
    "permanent_replication_slots": "slots",
}
_MAX_REPAIR_ROUNDS = 8
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|h|d)?\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: Any) -> Any:
        return {} if data is None else data


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
    # YAML reads bare on/off/true/false as booleans; Patroni's legacy form is a boolean.
    words = {"true": "on", "yes": "on", "on": "on", "false": "off", "no": "off", "off": "off", "quorum": "quorum"}
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ValueError("expected off, on or quorum")


def _slots(value: Any) -> Any:
    # `slots: {name: null}` (or an empty section) means a physical slot with no options.
    if value is None:
        return {}
    if isinstance(value, dict):
        return {name: {} if spec is None else spec for name, spec in value.items()}
    return value


def _null_as_empty(value: Any) -> Any:
    return {} if value is None else value


Seconds = Annotated[int, BeforeValidator(_whole_seconds)]


class SlotSpec(_Section):
    type: Literal["physical", "logical"] = "physical"
    database: str | None = None
    plugin: str | None = None

    @model_validator(mode="after")
    def _logical_needs_database_and_plugin(self) -> SlotSpec:
        if self.type == "logical" and not (self.database and self.plugin):
            raise ValueError("expected database and plugin for a logical slot")
        return self


# Leader lease defaults (see PgwardenTiming): 7 s survives a 3 s DCS stall with room to spare (the
# leader stops writes 1.5 s before the lease can expire) and keeps host-loss failover under 8 s.
DEFAULT_LEASE_TTL = 7
MIN_LEASE_TTL = 4


class StandbyClusterConfig(_Section):
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    primary_slot_name: str | None = None
    create_replica_methods: list[str] = []
    restore_command: str | None = None
    archive_cleanup_command: str | None = None
    recovery_min_apply_delay: int | str | None = None


class DynamicPostgresql(_Section):
    use_pg_rewind: bool | None = None
    use_slots: bool = True
    parameters: Annotated[dict[str, Any], BeforeValidator(_null_as_empty)] = {}
    pg_hba: list[str] | None = None
    pg_ident: list[str] | None = None
    recovery_conf: dict[str, Any] | None = None
    pg_ctl_timeout: int | None = Field(default=None, ge=0)
    remove_data_directory_on_rewind_failure: bool | None = None
    remove_data_directory_on_diverged_timelines: bool | None = None


class PgwardenTiming(_Section):
    """pgwarden's own timing (a `pgwarden:` section in /config; Patroni ignores it).

    The leader key and the member key live on a lease of `lease_ttl` seconds (never more than
    `ttl`), refreshed by a keepalive that runs apart from the HA cycle: every `keepalive_interval`
    seconds on the leader (by default a seventh of the lease: 1 s for the default 7 s lease), three
    times per lease on the other members. A dead host's leader key therefore expires after about
    `lease_ttl`, not `ttl`. Set `lease_ttl: null` (or a value >= ttl) for Patroni's behaviour: the
    lease is then `ttl`.
    """

    lease_ttl: int | None = Field(default=DEFAULT_LEASE_TTL, ge=MIN_LEASE_TTL)
    keepalive_interval: float | None = Field(default=None, gt=0, le=10)


class DynamicConfig(_Section):
    """`/config` with Patroni's defaults (contract 6.3). Build it with `parse_dynamic`."""

    ttl: Seconds = 30
    loop_wait: Seconds = 10
    retry_timeout: Seconds = 10
    maximum_lag_on_failover: int = 1048576
    maximum_lag_on_syncnode: int = -1
    primary_start_timeout: Seconds = Field(
        default=300, ge=0, validation_alias=AliasChoices("primary_start_timeout", "master_start_timeout")
    )
    primary_stop_timeout: Seconds = Field(
        default=0, ge=0, validation_alias=AliasChoices("primary_stop_timeout", "master_stop_timeout")
    )
    primary_race_backoff: float = Field(default=0, ge=0)
    max_timelines_history: int = Field(default=0, ge=0)
    check_timeline: bool = False
    synchronous_mode: Annotated[SynchronousMode, BeforeValidator(_synchronous_mode)] = "off"
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = Field(default=1, ge=1)
    failsafe_mode: bool = False
    pause: bool | None = None
    member_slots_ttl: Annotated[int, BeforeValidator(_duration)] = Field(default=1800, ge=0)
    slots: Annotated[dict[str, SlotSpec], BeforeValidator(_slots)] = Field(
        default={}, validation_alias=AliasChoices("slots", "permanent_slots", "permanent_replication_slots")
    )
    ignore_slots: list[dict[str, Any]] = []
    standby_cluster: StandbyClusterConfig | None = None
    postgresql: DynamicPostgresql = DynamicPostgresql()
    pgwarden: PgwardenTiming = PgwardenTiming()

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


def parse_dynamic(raw: Mapping[str, Any] | None) -> tuple[DynamicConfig, list[str]]:
    """`/config` (or bootstrap.dcs) -> (DynamicConfig, warnings). Never raises on bad content."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return _with_valid_timing(DynamicConfig(), [f"/config: expected a mapping, found {type(raw).__name__}"])
    data = copy.deepcopy(dict(raw))
    warnings = _drop_local_only_keys(data)
    for _ in range(_MAX_REPAIR_ROUNDS):
        try:
            return _with_valid_timing(DynamicConfig.model_validate(data), warnings)
        except ValidationError as exc:
            if not _drop_invalid_keys(data, exc, warnings):
                break
    warnings.append("/config: could not be repaired; using the defaults for every setting")
    return _with_valid_timing(DynamicConfig(), warnings)


def dynamic_problems(raw: Any, prefix: str) -> list[str]:
    """Strict check of a dynamic config written in the local file (bootstrap.dcs): all problems."""
    try:
        DynamicConfig.model_validate(raw)
    except ValidationError as exc:
        return describe_validation_error(exc, prefix)
    return []


def _with_valid_timing(config: DynamicConfig, warnings: list[str]) -> tuple[DynamicConfig, list[str]]:
    ttl, loop_wait, retry_timeout, timing_warnings = adjust_timing(config.ttl, config.loop_wait, config.retry_timeout)
    adjusted = config.model_copy(update={"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout})
    return adjusted, warnings + timing_warnings


def _drop_local_only_keys(data: dict[str, Any]) -> list[str]:
    postgresql = data.get("postgresql")
    if not isinstance(postgresql, dict):
        return []
    found = sorted(LOCAL_ONLY_POSTGRESQL_KEYS & postgresql.keys())
    for key in found:
        del postgresql[key]
    return [f"/config: postgresql.{key} is a per-member setting; ignored in dynamic config" for key in found]


def _drop_invalid_keys(data: dict[str, Any], exc: ValidationError, warnings: list[str]) -> bool:
    """Remove the key behind each error (so its default applies); False if nothing could be removed."""
    doomed: list[tuple[str, ...]] = []
    for error in exc.errors():
        path = _deepest_existing_key(data, error["loc"])
        if not path:
            return False
        if any(path[: len(other)] == other for other in doomed):
            continue  # already inside a key being removed
        doomed = [other for other in doomed if other[: len(path)] != path] + [path]
        warnings.append(f"/config: {describe_error(error)[1]}; {_fallback(path)}")
    for path in doomed:
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
    return True


def _deepest_existing_key(data: dict[str, Any], loc: tuple[str | int, ...]) -> tuple[str, ...]:
    """The longest run of mapping keys along `loc` present in `data` (a list item maps to its list)."""
    node: Any = data
    path: list[str] = []
    for part in loc:
        if not (isinstance(part, str) and isinstance(node, dict) and part in node):
            break
        path.append(part)
        node = node[part]
    return tuple(path)


def _fallback(path: tuple[str, ...]) -> str:
    node: Any = DynamicConfig()
    for part in path:
        name = _FIELD_BY_ALIAS.get(part, part)
        if isinstance(node, BaseModel) and name in type(node).model_fields:
            node = getattr(node, name)
        else:
            return f"ignoring {key_path(path)}"
    if isinstance(node, BaseModel):
        return f"using the defaults for {key_path(path)}"
    return f"using the default for {key_path(path)} ({'unset' if node is None else repr(node)})"
