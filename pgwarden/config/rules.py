"""The validation rules the configuration types carry, without importing pydantic until they are used.

The configuration types (`schema.py`, `dynamic.py`) are frozen dataclasses, so every process can
hold, compare and pass them around without loading pydantic; the agent never does (pydantic and its
validators cost about 9 MB per process: validation runs in a short-lived child, `checker.py`). What
pydantic needs to validate them rides along as `Annotated` metadata defined here (plus
annotated_types' `Ge`/`Le`/`Gt`, which pydantic reads natively); each piece builds its part of the
pydantic-core schema only when a validator is built (`validation.py`).

    port: Annotated[int, Ge(1), Le(65535)] = 5432
    listen: Annotated[str, After(check_host_port)]
    hosts: Annotated[list[str], Before(comma_list)] = field(default_factory=list)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar


class _FunctionRule:
    __slots__ = ("fn",)
    _SCHEMA_FUNCTION: ClassVar[str]  # the pydantic-core schema builder wrapping the field's schema

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return getattr(core_schema, self._SCHEMA_FUNCTION)(self.fn, handler(source))


class Before(_FunctionRule):
    """`fn(raw value)` runs before the field's own type check: to normalise what YAML or env gave."""

    __slots__ = ()
    _SCHEMA_FUNCTION = "no_info_before_validator_function"


class After(_FunctionRule):
    """`fn(typed value)` runs after the type check: to check (raise ValueError("expected ...")) or refine."""

    __slots__ = ()
    _SCHEMA_FUNCTION = "no_info_after_validator_function"


class Section:
    """Base of every configuration section (each a frozen dataclass).

    - `key:` with nothing under it is null in YAML; Patroni reads it as an empty section, so do we.
    - Keys a section does not model are accepted (a file written for Patroni never fails on a setting
      pgwarden merely ignores). A section whose `EXTRA` names one of its fields keeps them there, as
      a mapping (custom tags, `parameters_<role>`, cluster-wide keys misplaced in a local file);
      the other sections drop them.
    - Cross-field rules go in `__post_init__`, raising ValueError("expected ..."): pydantic reports
      them at the section's key path.
    """

    EXTRA: ClassVar[str | None] = None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(cls._prepare, handler(source))

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            return data  # pydantic then says it expected a mapping
        known = {name for name in getattr(cls, "__dataclass_fields__", {}) if name != cls.EXTRA}
        kept = {k: v for k, v in data.items() if k in known}
        if cls.EXTRA is not None:
            kept[cls.EXTRA] = {k: v for k, v in data.items() if k not in known}
        return kept
