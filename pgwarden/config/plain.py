"""Validated configuration as plain JSON values and back, for the agent's validating child process.

`to_plain` turns a configuration dataclass into JSON types; `from_plain` rebuilds the very same
dataclass from them by following the field types (nested sections, optional sections, lists and
mappings of sections). It trusts its input to be what `to_plain` wrote from a validated object: it
converts, it does not validate, so it needs no pydantic.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


def to_plain(config: Any) -> dict[str, Any]:
    """A configuration dataclass as a JSON-ready mapping (dataclasses.asdict)."""
    plain = dataclasses.asdict(config)
    if not isinstance(plain, dict):
        raise TypeError(f"not a configuration dataclass: {type(config).__name__}")
    return plain


def from_plain(cls: type[T], data: Mapping[str, Any]) -> T:
    """The `cls` instance whose `to_plain` is `data`."""
    hints = _field_types(cls)
    values = {name: _convert(hints[name], value) for name, value in data.items() if name in hints}
    return cls(**values)


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    found = _FIELD_TYPES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)  # resolves the string annotations; strips Annotated metadata
        found = _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return found


def _convert(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        sections = [arg for arg in get_args(kind) if isinstance(arg, type) and dataclasses.is_dataclass(arg)]
        return from_plain(sections[0], value) if sections and isinstance(value, Mapping) else value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return from_plain(kind, value)
    args = get_args(kind)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [_convert(args[0], item) for item in value]
    if origin in (dict, Mapping) and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return {key: _convert(args[1], item) for key, item in value.items()}
    return value
