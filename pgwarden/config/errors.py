"""`ConfigError` and the translation of pydantic's errors into one plain sentence per problem.

Every problem reads `<key path>: expected <what>, found <what>`, so an operator can fix a file
without knowing how the validation is implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic is imported only where validation happens (validation.py)
    from pydantic import ValidationError

_EXPECTED_BY_TYPE = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean (true/false)",
    "bool_parsing": "a boolean (true/false)",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


class ConfigError(Exception):
    """The configuration cannot be used. `problems` holds one message per problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def key_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """('postgresql', 'pg_hba', 2) -> 'postgresql.pg_hba[2]'."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic's marker for "the key itself", which the path already ends with
        else:
            part = part if part.isprintable() else repr(part)  # a key must not break the line it is shown in
            path = f"{path}.{part}" if path else part
    return path or "(top level)"


_KINDS = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}


def _kind(value: Any) -> str:
    """A value's YAML-ish type name."""
    return _KINDS.get(type(value), type(value).__name__)


def describe_value(value: Any, *, hidden: bool = False) -> str:
    """A short, unambiguous rendering of a found value: its repr (cut) and its YAML-ish type; with
    `hidden` (where a secret may be) its type only, never its text."""
    if value is None:
        return "nothing (null)"
    if hidden:
        return f"a {_kind(value)} (not shown)"
    if isinstance(value, dict):
        # Its keys only: a section's values may be secrets under any key name (`key_password`, `auth`).
        keys = ", ".join(str(k) if str(k).isprintable() else repr(k) for k in value) or "none"
        return f"a mapping with keys {keys[:57] + '...' if len(keys) > 60 else keys}"
    if isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        return f"a list of {len(value)} items"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_kind(value)})"


_SECRET_PARTS = ("authentication", "password", "passphrase", "secret", "token", "auth_data", "credential")
"""A key path containing one of these may hold a secret (`replication: 'user:password'` included)."""


def is_secret_path(path: str) -> bool:
    lowered = path.lower()
    return any(part in lowered for part in _SECRET_PARTS)


def describe_error(error: Any, prefix: str = "") -> tuple[str, str]:
    """One pydantic error dict -> (key path, message). No value found under a key that may hold a
    secret is ever repeated: messages end up in logs and terminals."""
    path = key_path(error["loc"], prefix)
    if error["type"] == "missing":
        return path, f"{path}: expected a value (required key), found nothing"
    found = error.get("input")
    shown = describe_value(found, hidden=is_secret_path(path))
    return path, f"{path}: {_expected(error)}, found {shown}"


def describe_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """All problems of one validation, one message per key path (the first one wins)."""
    seen: set[str] = set()
    problems: list[str] = []
    for error in exc.errors():
        path, message = describe_error(error, prefix)
        if path not in seen:
            seen.add(path)
            problems.append(message)
    return problems


def _expected(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED_BY_TYPE:
        return f"expected {_EXPECTED_BY_TYPE[kind]}"
    if kind == "greater_than_equal":
        return f"expected a number >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"expected a number <= {ctx.get('le')}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}"
    message = str(error["msg"])
    # Our own validators raise ValueError("expected ..."); pydantic prefixes it with "Value error, ".
    message = message.removeprefix("Value error, ").removeprefix("Input should be ")
    return message if message.startswith("expected") else f"expected {message}"
