"""A change to the dynamic configuration (`/config`), computed without IO: `-s`/`-p` changes and merge
patches applied, the YAML the user reads and edits, the diff, and the validation. `edit_config_command`
runs `edit-config` with these.

Values on the command line are YAML scalars (`-s ttl=30` is the integer 30, `-s pause=true` a bool);
`null` deletes a key. A patch (`--apply`) is a JSON merge patch (RFC 7386): mappings merge, `null`
deletes, anything else replaces.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from pgwarden.config import parse_dynamic
from pgwarden.config.support import dynamic_refusals

REPAIR_CLAUSE = re.compile(r"; (using|ignoring) .*$")
TIMING_RULE = re.compile(r"loop_wait \(-?\d+\) \+ 2\*retry_timeout \(-?\d+\) exceeds ttl ")


class EditError(ValueError):
    """A change that cannot be applied (bad `key=value`, a path through a non-mapping, bad YAML)."""


def parse_assignment(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", YAML value of `value`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise EditError(f"{text!r}: expected key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value  # not YAML: keep the raw text, as a string is what was meant
    return key.strip(), parsed


def set_path(config: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `config` with `dotted` (a.b.c) set to `value`; `None` deletes the key."""
    out = copy.deepcopy(dict(config))
    parts = dotted.split(".")
    node = out
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            if value is None:
                return out  # deleting below a missing key: nothing to do
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: index + 1])
            raise EditError(f"cannot set {dotted}: {where} is a {type(child).__name__}, not a mapping")
        node = child
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out


def apply_assignments(
    config: Mapping[str, Any], settings: Iterable[str] = (), parameters: Iterable[str] = ()
) -> dict[str, Any]:
    """`-s key=value` (dotted paths) and `-p param=value` (postgresql.parameters.param), in order."""
    out = copy.deepcopy(dict(config))
    for text in settings:
        key, value = parse_assignment(text)
        out = set_path(out, key, value)
    for text in parameters:
        key, value = parse_assignment(text)
        out = set_path(out, f"postgresql.parameters.{key}", value)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `patch` onto `target` (neither is modified)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def load_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """A YAML document that must be a mapping (an empty document is an empty mapping)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EditError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EditError(f"{source}: expected a YAML mapping, found a {type(data).__name__}")
    return data


def to_yaml(config: Mapping[str, Any]) -> str:
    """The configuration as the user reads and edits it: block YAML, keys sorted."""
    if not config:
        return ""
    return yaml.safe_dump(dict(config), default_flow_style=False, sort_keys=True, allow_unicode=True)


def unified_diff(before: Mapping[str, Any], after: Mapping[str, Any], scope: str) -> list[str]:
    """Unified diff lines of the two configurations' YAML; empty when they are equal."""
    return list(difflib.unified_diff(
        to_yaml(before).splitlines(), to_yaml(after).splitlines(),
        fromfile=f"{scope} /config (current)", tofile=f"{scope} /config (new)", lineterm="",
    ))  # fmt: skip


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """Why the agents would not use `config` as written: every repair `parse_dynamic` would make
    (an invalid value replaced by its default, timing adjusted, a per-member key ignored)."""
    _, warnings = parse_dynamic(config, notes=False)
    # The warnings say how the agents would repair the value; here the change is refused instead,
    # except the timing rule, which the agents apply as Patroni does (timing_warnings).
    return dynamic_refusals(config) + [REPAIR_CLAUSE.sub("", w).removeprefix("/config: ") for w in warnings
                                       if not TIMING_RULE.match(w.removeprefix("/config: "))]


def timing_warnings(config: Mapping[str, Any]) -> list[str]:
    """How the agents will lower loop_wait, then retry_timeout, to keep `loop_wait + 2*retry_timeout
    <= ttl` (accepted with this warning, as Patroni does)."""
    _, warnings = parse_dynamic(config, notes=False)
    return [w.removeprefix("/config: ") for w in warnings if TIMING_RULE.match(w.removeprefix("/config: "))]
