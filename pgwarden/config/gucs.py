"""PostgreSQL parameters (GUCs) as the configuration may hold them, checked before they reach a file.

pgwarden writes `postgresql.parameters` into postgresql.conf, one `name = value` line each, so a name or
a value must never be able to end that line (issue 20: `'8MB'\\nlog_min_messages` set two parameters).
Two levels of checks:

* static ones, needing no server (`name_problem`, `value_problem`; the configuration types apply them
  to `postgresql.parameters`, local and dynamic): a name is an identifier, or one dotted pair of them
  for a custom parameter (`^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)?$`, what postgresql.conf's
  own syntax accepts); a value is a string, number or boolean without a newline, carriage return or
  NUL (postgresql.conf has no way to write a newline in a value, and PostgreSQL cuts a value at NUL);
* the server's own rules (`catalog_problems`), given its `pg_settings` (`GucCatalog`, read by the agent
  once per PostgreSQL start): the name must exist (or be a dotted custom one, or one `versions.py`
  translates), an internal (read-only) one cannot be set, and the value must parse as PostgreSQL parses
  it: booleans, integers and reals with PostgreSQL's units (B, kB, MB, GB, TB; us, ms, s, min, h, d, both
  case-sensitive as in guc.c, a fraction rounded for integers), within min_val .. max_val, and enums
  case-insensitively among enumvals (plus the hidden aliases PostgreSQL also takes: on/off words for
  enums offering on/off, archive/hot_standby for wal_level).

Why a parser here rather than asking the server (`SELECT set_config(...)` in a rolled-back
transaction): set_config refuses every parameter that is not user-settable (shared_buffers,
max_connections, ...: exactly the ones that stop PostgreSQL from starting), while pg_settings carries
the type, unit and range of all of them; the parsing rules above are guc.c's (parse_bool, parse_int,
parse_real, convert_to_base_unit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pgwarden.config.rules import After, Before

GUC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_FORBIDDEN = re.compile(r"[\x00\n\r]")


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a parameter name in postgresql.conf, or None."""
    if isinstance(name, str) and GUC_NAME.match(name):
        return None
    return (f"{name!r} is not a valid parameter name (expected letters, digits and underscores, not starting "
            "with a digit; a custom parameter has one dot: 'extension.name')")


def value_problem(value: Any) -> str | None:
    """Why `value` cannot be written as a parameter value, or None."""
    if isinstance(value, bool | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a finite number"
        return None
    if not isinstance(value, str):
        kind = "nothing (null)" if value is None else type(value).__name__
        return f"expected a string, number or boolean, found {kind}"
    if _FORBIDDEN.search(value):
        return f"{value!r} contains a newline, carriage return or NUL character, which postgresql.conf cannot hold"
    return None


def check_name(name: Any) -> Any:
    """The pydantic rule for a parameter name (`rules.After`)."""
    if name_problem(name) is not None:
        raise ValueError("expected a parameter name (letters, digits and underscores, not starting with a digit; "
                         "a custom parameter has one dot: 'extension.name')")
    return name


def check_value(value: Any) -> Any:
    """The pydantic rule for a parameter value (`rules.After`)."""
    if isinstance(value, str) and _FORBIDDEN.search(value):
        raise ValueError("expected a parameter value without a newline, carriage return or NUL character "
                         "(postgresql.conf cannot hold them)")
    if value_problem(value) is not None:
        raise ValueError("expected a string, a finite number or a boolean")
    return value


def _null_as_empty(value: Any) -> Any:
    return {} if value is None else value


Parameters = Annotated[dict[Annotated[str, After(check_name)], Annotated[Any, After(check_value)]],
                       Before(_null_as_empty)]
"""`postgresql.parameters` (local and dynamic): each name and value checked on its own, so repairing
/config (`validation.parse_dynamic`) drops only the parameter at fault."""


def as_text(value: Any) -> str:
    """The value as PostgreSQL reads it from postgresql.conf (`conf.format_guc` writes booleans as on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


# -- the server's own rules ------------------------------------------------------------------------

CATALOG_QUERY = ("SELECT name, vartype, unit, min_val, max_val, enumvals, context FROM pg_settings "
                 "ORDER BY name")
"""What `GucCatalog.from_rows` reads (enumvals as text[])."""


@dataclass(frozen=True, slots=True)
class Guc:
    name: str
    vartype: str  # bool | integer | real | enum | string
    unit: str | None
    min_val: str | None
    max_val: str | None
    enumvals: tuple[str, ...]
    context: str


@dataclass(frozen=True, slots=True)
class GucCatalog:
    """One server's pg_settings, by lower-case name (PostgreSQL's names are case-insensitive)."""

    gucs: Mapping[str, Guc]

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> GucCatalog:
        gucs = {}
        for name, vartype, unit, min_val, max_val, enumvals, context in rows:
            gucs[str(name).lower()] = Guc(str(name), str(vartype), unit, min_val, max_val,
                                          tuple(enumvals or ()), str(context))
        return cls(gucs)

    def problem(self, name: str, value: Any) -> str | None:
        """Why PostgreSQL would refuse `name = value` in postgresql.conf, or None."""
        guc = self.gucs.get(name.lower())
        if guc is None:
            if "." in name:
                return None  # a custom parameter: PostgreSQL keeps it as a placeholder string
            return "unknown parameter (not in this server's pg_settings; a custom one needs a dot: 'extension.name')"
        if guc.context == "internal":
            return "a read-only parameter (internal): it cannot be set"
        text = as_text(value)
        if guc.vartype == "bool":
            return None if parse_bool(text) is not None else f"{text!r}: expected a boolean (on/off, true/false, ...)"
        if guc.vartype in ("integer", "real"):
            return _number_problem(guc, text)
        if guc.vartype == "enum":
            return _enum_problem(guc, text)
        return None


def catalog_problems(catalog: GucCatalog, config: Mapping[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """What the server would refuse among a dynamic configuration's `postgresql.parameters` and
    `parameters_<role>`, one sentence each. `skip`: names pgwarden translates for other versions."""
    postgresql = config.get("postgresql")
    if not isinstance(postgresql, Mapping):
        return []
    skipped = {name.lower() for name in skip}
    problems = []
    for section, params in postgresql.items():
        if not (section == "parameters" or str(section).startswith("parameters_")) or not isinstance(params, Mapping):
            continue
        for name, value in params.items():
            if name_problem(name) or value_problem(value):
                continue  # the static checks (validation.config_problems) say what is wrong
            if name.lower() in skipped and name.lower() not in catalog.gucs:
                continue
            problem = catalog.problem(name, value)
            if problem is not None:
                problems.append(f"postgresql.{section}.{name}: {problem}")
    return problems


FILE_ERRORS_QUERY = ("SELECT f.name, f.setting, f.error, s.context FROM pg_file_settings f "
                     "LEFT JOIN pg_settings s ON s.name = lower(f.name) WHERE f.error IS NOT NULL "
                     "ORDER BY f.seqno")
"""The lines of the configuration files PostgreSQL cannot apply (it parses the files when asked)."""


def refused_settings(rows: Iterable[Sequence[Any]], catalog: GucCatalog | None) -> list[str]:
    """What PostgreSQL refuses in its files, one sentence each, from FILE_ERRORS_QUERY's rows.

    pg_file_settings says only "setting could not be applied" both for a refused value and for a
    restart-only parameter whose new value waits for a restart (pending_restart, not an error); a
    restart-only parameter counts as refused only when its value is invalid (`GucCatalog.problem`)."""
    refused = []
    for name, setting, error, context in rows:
        if name is None:
            refused.append(str(error))  # a syntax error: PostgreSQL applied nothing from the file
            continue
        problem = catalog.problem(name, setting) if catalog is not None else None
        if context == "postmaster" and problem is None:
            continue  # a valid new value waiting for a restart
        vague = error == "setting could not be applied"  # PostgreSQL's own reason is in its log only
        refused.append(f"{name} = {setting!r}: {problem if vague and problem else error}")
    return refused


def parse_bool(text: str) -> bool | None:
    """PostgreSQL's parse_bool: a unique prefix of true/false/yes/no, on/off, 1/0 (case-insensitive)."""
    word = text.strip().lower()
    if not word:
        return None
    if word in ("1", "0"):
        return word == "1"
    if word in ("on", "of", "off") or (len(word) >= 2 and word.startswith("of") and "off".startswith(word)):
        return word == "on"
    for full, meaning in (("true", True), ("false", False), ("yes", True), ("no", False)):
        if full.startswith(word):
            return meaning
    return None


_MEMORY_BYTES = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_NUMBER = re.compile(r"^\s*([+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))\s*([A-Za-z]*)\s*$")


def _base_unit(unit: str | None) -> tuple[dict[str, float], float] | None:
    """(the unit table, the size of one base unit in it) for a pg_settings unit such as '8kB' or 'ms'."""
    if not unit:
        return None
    match = re.fullmatch(r"(\d*)\s*([A-Za-z]+)", unit)
    if match is None:
        return None
    count = int(match.group(1) or 1)
    for table in (_MEMORY_BYTES, _TIME_MS):
        if match.group(2) in table:
            return dict(table), count * table[match.group(2)]
    return None


def parse_number(text: str, unit: str | None, integer: bool) -> float | None:
    """`text` in the parameter's base unit (PostgreSQL's parse_int / parse_real), or None if unparsable."""
    match = _NUMBER.match(text)
    if match is None:
        return None
    literal, suffix = match.groups()
    digits = literal.lower().lstrip("+-")
    try:
        if digits.startswith("0x"):
            number = float(int(digits, 16))
        elif integer and len(digits) > 1 and digits.startswith("0") and digits.isdigit():
            number = float(int(digits, 8))  # strtol's base 0, as parse_int: 0600 is octal
        else:
            number = float(digits)
    except ValueError:
        return None
    if literal.startswith("-"):
        number = -number
    if suffix:
        base = _base_unit(unit)
        if base is None or suffix not in base[0]:
            return None
        number = number * base[0][suffix] / base[1]
    if not math.isfinite(number):
        return None
    return float(round(number)) if integer else number  # rint(): half to even, as Python's round


def _number_problem(guc: Guc, text: str) -> str | None:
    integer = guc.vartype == "integer"
    value = parse_number(text, guc.unit, integer)
    unit = f", in units of {guc.unit}" if guc.unit else ""
    if value is None:
        base = _base_unit(guc.unit)
        units = f" with a unit among {', '.join(base[0])}" if base else ""
        kind = "an integer" if integer else "a number"
        return f"{text!r} is not a valid value: expected {kind}{units} (range {guc.min_val} .. {guc.max_val}{unit})"
    try:
        low = float(guc.min_val) if guc.min_val is not None else -math.inf
        high = float(guc.max_val) if guc.max_val is not None else math.inf
    except ValueError:
        return None
    if not low <= value <= high:
        return f"{text} is outside the range {guc.min_val} .. {guc.max_val}{unit}"
    return None


_HIDDEN_ENUM_VALUES = {"wal_level": ("archive", "hot_standby")}
"""Enum values PostgreSQL accepts without listing them in enumvals (besides the on/off words)."""


def _enum_problem(guc: Guc, text: str) -> str | None:
    word = text.strip().lower()
    allowed = [value.lower() for value in guc.enumvals]
    if word in allowed or word in _HIDDEN_ENUM_VALUES.get(guc.name.lower(), ()):
        return None
    if ("on" in allowed or "off" in allowed) and word in ("true", "false", "yes", "no", "1", "0"):
        return None
    return f"{text!r}: expected one of {', '.join(guc.enumvals)}"
