"""Validating configuration with pydantic: raw mappings in, frozen configuration dataclasses out.

The only module of the package that imports pydantic. The CLI and the tests call it directly; the
agent never imports it (about 9 MB it would keep for its lifetime) and asks a short-lived child
process instead (`checker.py`), which runs exactly these functions.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from pgwarden.config.dynamic import (
    DYNAMIC_ALIASES,
    LOCAL_ONLY_POSTGRESQL_KEYS,
    MIN_LOOP_WAIT,
    MIN_RETRY_TIMEOUT,
    MIN_TTL,
    DynamicConfig,
    adjust_timing,
)
from pgwarden.config.errors import describe_error, describe_validation_error, key_path
from pgwarden.config.schema import LOCAL_ALIASES, LocalConfig
from pgwarden.config.support import dynamic_refusals, judge_dynamic, judge_local, refusals
from pgwarden.config.support import warnings as support_warnings

T = TypeVar("T")

_MAX_REPAIR_ROUNDS = 8


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def validate_model(cls: type[T], data: Any) -> T:
    """`data` validated into `cls` (a configuration dataclass). Raises pydantic's ValidationError."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)  # building a validator is costly: once per type
    result: T = adapter.validate_python(data)
    return result


def canonical(data: Mapping[str, Any], aliases: Mapping[tuple[str, ...], Mapping[str, str]]) -> dict[str, Any]:
    """A deep copy of `data` with legacy key names renamed to the current ones (the current name wins
    when both are present), so validation and its error paths speak of one name per setting."""
    out = copy.deepcopy(dict(data))
    for path, renames in aliases.items():
        node: Any = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        for old, new in renames.items():
            if old in node:
                value = node.pop(old)
                node.setdefault(new, value)
    return out


# -- the local configuration --------------------------------------------------------------------------


def local_problems(data: Mapping[str, Any]) -> tuple[LocalConfig | None, list[str]]:
    """(the validated LocalConfig or None, every problem found), for a merged raw mapping. Keys that
    pgwarden refuses (`support.py`) are problems too, whatever their type checks say."""
    refused = refusals(judge_local(data))
    try:
        config = validate_model(LocalConfig, canonical(data, LOCAL_ALIASES))
    except ValidationError as exc:
        return None, refused + describe_validation_error(exc)
    return (None if refused else config), refused


def local_warnings(data: Mapping[str, Any]) -> list[str]:
    """What an agent logs at start about a valid local configuration's keys: the harmless ones it
    ignores and the unknown ones (`support.py`)."""
    return support_warnings(judge_local(data))


# -- the dynamic configuration ------------------------------------------------------------------------


def parse_dynamic(raw: Mapping[str, Any] | None, *, notes: bool = True) -> tuple[DynamicConfig, list[str]]:
    """`/config` (or bootstrap.dcs) -> (DynamicConfig, warnings). Never raises on bad content.

    The warnings say what was repaired and, with `notes`, which keys pgwarden ignores (harmless or
    unknown ones, `support.py`). Keys pgwarden refuses are not judged here: `support.dynamic_refusals`
    does, and an agent never runs with a /config that has any."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return _with_valid_timing(DynamicConfig(), [f"/config: expected a mapping, found {type(raw).__name__}"])
    data = canonical(raw, DYNAMIC_ALIASES)
    warnings = [f"/config: {w}" for w in support_warnings(judge_dynamic(raw))] if notes else []
    dropped = _drop_local_only_keys(data)
    warnings += [] if notes else dropped
    for _ in range(_MAX_REPAIR_ROUNDS):
        try:
            return _with_valid_timing(validate_model(DynamicConfig, data), warnings)
        except ValidationError as exc:
            if not _drop_invalid_keys(data, exc, warnings):
                break
    warnings.append("/config: could not be repaired; using the defaults for every setting")
    return _with_valid_timing(DynamicConfig(), warnings)


def dynamic_problems(raw: Any, prefix: str) -> list[str]:
    """Strict check of a dynamic config written in the local file (bootstrap.dcs): all problems."""
    refused = [f"{prefix}.{line}" for line in dynamic_refusals(raw)]
    try:
        validate_model(DynamicConfig, canonical(raw, DYNAMIC_ALIASES) if isinstance(raw, Mapping) else raw)
    except ValidationError as exc:
        return refused + describe_validation_error(exc, prefix)
    return refused


def config_problems(value: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a dynamic configuration about to be written, one sentence per key;
    [] when usable as is.

    Stricter than `parse_dynamic` (which repairs): values below the timing minimums are problems
    here, not silent adjustments. A `loop_wait + 2*retry_timeout > ttl` triple is not: as Patroni,
    the agents accept it and lower loop_wait, then retry_timeout, with a warning (`adjust_timing`).
    """
    refused = dynamic_refusals(value)
    try:
        config = validate_model(DynamicConfig, canonical(value, DYNAMIC_ALIASES))
    except ValidationError as exc:
        return refused + describe_validation_error(exc)
    return refused + _timing_problems(config)


def _timing_problems(config: DynamicConfig) -> list[str]:
    problems = [
        f"{name}: expected a number >= {minimum}, found {value}"
        for name, value, minimum in (
            ("ttl", config.ttl, MIN_TTL),
            ("loop_wait", config.loop_wait, MIN_LOOP_WAIT),
            ("retry_timeout", config.retry_timeout, MIN_RETRY_TIMEOUT),
        )
        if value < minimum
    ]
    return problems


def _with_valid_timing(config: DynamicConfig, warnings: list[str]) -> tuple[DynamicConfig, list[str]]:
    ttl, loop_wait, retry_timeout, timing_warnings = adjust_timing(config.ttl, config.loop_wait, config.retry_timeout)
    adjusted = dataclasses.replace(config, ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout)
    return adjusted, warnings + timing_warnings


def _drop_local_only_keys(data: dict[str, Any]) -> list[str]:
    postgresql = data.get("postgresql")
    if not isinstance(postgresql, dict):
        return []
    found = sorted(LOCAL_ONLY_POSTGRESQL_KEYS & postgresql.keys())
    for key in found:
        del postgresql[key]
    # support.py's table warns of them ("a per-member setting"); without the notes, say it here.
    return [f"/config: postgresql.{key}: a per-member setting, read only from each member's own configuration; "
            "ignored" for key in found]


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
        if dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            node = getattr(node, part)
        else:
            return f"ignoring {key_path(path)}"
    if dataclasses.is_dataclass(node):
        return f"using the defaults for {key_path(path)}"
    return f"using the default for {key_path(path)} ({'unset' if node is None else repr(node)})"
