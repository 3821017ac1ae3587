"""`synchronous_standby_names` (ssn): parsing the value PostgreSQL reports, and writing one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"
"""A standby name nobody has: strict mode lists it when no real standby can be synchronous, so that
commits wait instead of being acknowledged asynchronously. (Patroni's name, kept for operators' tools.)"""


class SsnKind(StrEnum):
    NONE = "none"  # empty: commits do not wait
    PRIORITY = "FIRST"
    QUORUM = "ANY"


class SsnSyntaxError(ValueError):
    """A synchronous_standby_names value PostgreSQL itself would reject."""


@dataclass(frozen=True, slots=True)
class Ssn:
    """One parsed synchronous_standby_names value."""

    kind: SsnKind
    num: int = 0
    names: tuple[str, ...] = ()

    def render(self) -> str:
        """The value to write: names always double-quoted, so any member name is a valid entry."""
        if self.kind is SsnKind.NONE:
            return ""
        quoted = ",".join('"' + name.replace('"', '""') + '"' for name in self.names)
        return f"{self.kind.value} {self.num} ({quoted})"

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(name_key(n) for n in self.names)

    def same_as(self, other: Ssn) -> bool:
        """Equal in effect (PostgreSQL matches names without regard to case)."""
        if self.kind is SsnKind.NONE or other.kind is SsnKind.NONE:
            return self.kind is other.kind
        return (self.kind, self.num, self.keys) == (other.kind, other.num, other.keys)


ASYNC = Ssn(SsnKind.NONE)


def name_key(name: str) -> str:
    """PostgreSQL compares standby names with application_name case-insensitively."""
    return name.lower()


def name_keys(names: Iterable[str]) -> frozenset[str]:
    """The names as PostgreSQL matches them (`name_key` of each)."""
    return frozenset(name_key(n) for n in names)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: 'word' (bare name or keyword), 'quoted' (always a name), 'num', punctuation."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            out.append((ch, ch))
            i += 1
        elif ch == '"':
            i = _quoted(text, i + 1, out)
        elif ch == "*":
            out.append(("quoted", "*"))
            i += 1
        elif ch.isalnum() or ch in "_$" or ord(ch) > 127:
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] in "_$" or ord(text[j]) > 127):
                j += 1
            word = text[i:j]
            out.append(("num" if all(c in "0123456789" for c in word) else "word", word))
            i = j
        else:
            raise SsnSyntaxError(f"unexpected {ch!r} at position {i} in {text!r}")
    return out


def _quoted(text: str, i: int, out: list[tuple[str, str]]) -> int:
    chars: list[str] = []
    while i < len(text):
        if text[i] == '"':
            if text[i + 1:i + 2] == '"':
                chars.append('"')
                i += 2
                continue
            out.append(("quoted", "".join(chars)))
            return i + 1
        chars.append(text[i])
        i += 1
    raise SsnSyntaxError(f"unterminated quoted name in {text!r}")


def parse_ssn(text: str) -> Ssn:
    """Parse synchronous_standby_names as PostgreSQL reports it (`SHOW`).

    Accepts `FIRST n (a, b)`, `ANY n (a, b)`, `n (a, b)` (= FIRST), `a, b` (= FIRST 1), `*`, quoted
    names with `""` escapes, and the empty string (no synchronous replication). FIRST and ANY are
    keywords in any case when unquoted, as in PostgreSQL.
    """
    toks = _tokens(text)
    if not toks:
        return ASYNC
    kind = SsnKind.PRIORITY
    head = toks[0][1].upper() if toks[0][0] == "word" else ""
    if head in ("FIRST", "ANY") and len(toks) > 1 and toks[1][0] == "num":
        kind = SsnKind.QUORUM if head == "ANY" else SsnKind.PRIORITY
        toks = toks[1:]
    if toks[0][0] == "num" and len(toks) > 1 and toks[1][0] == "(":
        num = int(toks[0][1])
        if num < 1:
            raise SsnSyntaxError(f"the number of synchronous standbys must be at least 1 in {text!r}")
        if toks[-1][0] != ")":
            raise SsnSyntaxError(f"missing ')' in {text!r}")
        return Ssn(kind, num, _name_list(toks[2:-1], text))
    if kind is SsnKind.QUORUM or head == "FIRST":
        raise SsnSyntaxError(f"expected '{head} <number> (names)' in {text!r}")
    return Ssn(SsnKind.PRIORITY, 1, _name_list(toks, text))


def parse_ssn_or_none(text: str) -> Ssn | None:
    try:
        return parse_ssn(text)
    except SsnSyntaxError:
        return None  # treated as guaranteeing nothing, and replaced by the planner's own value


_KEYWORDS = frozenset({"FIRST", "ANY"})


def _name_list(toks: list[tuple[str, str]], text: str) -> tuple[str, ...]:
    names: list[str] = []
    for i, (kind, value) in enumerate(toks):
        want_name = i % 2 == 0
        keyword = kind == "word" and value.upper() in _KEYWORDS
        if want_name and kind in ("word", "quoted", "num") and value and not keyword:
            names.append(value)
        elif not want_name and kind == ",":
            continue
        else:
            raise SsnSyntaxError(f"malformed list of standby names in {text!r}")
    if not names or len(toks) % 2 == 0:
        raise SsnSyntaxError(f"malformed list of standby names in {text!r}")
    return tuple(names)
