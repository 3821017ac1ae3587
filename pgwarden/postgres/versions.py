"""Parameters written for another PostgreSQL version, made fit for the one that runs. Pure.

A `postgresql.conf` naming a parameter the server does not know makes PostgreSQL refuse to start, so
a Patroni configuration written years ago (`wal_keep_segments`, `stats_temp_directory`, ...) must be
translated for the data directory's major version, as Patroni does: a renamed parameter takes its
new name (and unit), a removed one is dropped; each with a note naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

WAL_SEGMENT_MB = 16
"""wal_keep_segments -> wal_keep_size assumes the default 16 MB segments, as Patroni does."""


class Change(NamedTuple):
    gone_in: int
    """The first major version without the parameter."""
    renamed_to: str | None = None
    """Its successor, when there is one: the value is carried over (converted by `_convert`)."""


# From the PostgreSQL release notes of each major version (9.5 counts as 9 here: every version pgwarden
# runs, 13 and later, is past it).
CHANGES: Mapping[str, Change] = {
    "checkpoint_segments": Change(9),  # 9.5: max_wal_size / min_wal_size, a different meaning
    "wal_keep_segments": Change(13, "wal_keep_size"),
    "operator_precedence_warning": Change(14),
    "vacuum_cleanup_index_scale_factor": Change(14),
    "stats_temp_directory": Change(15),
    "promote_trigger_file": Change(16),
    "vacuum_defer_cleanup_age": Change(16),
    "force_parallel_mode": Change(16, "debug_parallel_query"),
    "old_snapshot_threshold": Change(17),
    "db_user_namespace": Change(17),
    "trace_recovery_messages": Change(17),
    "trigger_file": Change(12, "promote_trigger_file"),  # recovery.conf's name (a recovery_conf key)
}

_SIZE = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)?\s*$")
_MB_PER_UNIT = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}


def server_major(pg_version_text: str) -> int | None:
    """The content of a data directory's PG_VERSION file ('15', '9.6') -> its major version (15, 9)."""
    head = pg_version_text.strip().split(".")[0]
    return int(head) if head.isdigit() else None


def wal_keep_size(segments: Any) -> str | None:
    """wal_keep_segments -> the wal_keep_size keeping as much WAL: 8 -> '128MB'; None if not a number."""
    try:
        count = int(str(segments).strip())
    except ValueError:
        return None
    return f"{max(count, 0) * WAL_SEGMENT_MB}MB"


def _wal_keep_segments(size: Any) -> int | None:
    """wal_keep_size ('128MB', '1GB', or a number of MB) -> whole segments, for servers before 13."""
    match = _SIZE.match(str(size))
    if not match:
        return None
    megabytes = int(match.group(1)) * _MB_PER_UNIT[match.group(2) or "MB"]
    return int(megabytes // WAL_SEGMENT_MB)


def for_version(params: Mapping[str, Any], major: int | None) -> tuple[dict[str, Any], list[str]]:
    """`params` fit for PostgreSQL `major` (None: unknown, nothing changes), and one note per change.

    A renamed parameter takes its successor's name unless the successor is set too (then the new name
    wins and the old one is dropped); a parameter the version no longer knows is dropped. Before 13,
    wal_keep_size (which pgwarden always sets) becomes wal_keep_segments.
    """
    out = dict(params)
    notes: list[str] = []
    if major is None:
        return out, notes
    for old, change in CHANGES.items():
        if old not in out or major < change.gone_in:
            continue
        value = out.pop(old)
        new = change.renamed_to
        if new is not None and new in CHANGES and major >= CHANGES[new].gone_in:
            new = None  # renamed, then removed as well (trigger_file -> promote_trigger_file on 16+)
        if new is None:
            notes.append(f"parameter {old} was removed in PostgreSQL {_version_text(change.gone_in)}; dropped")
        elif new in out:
            notes.append(f"parameter {old} = {value!r} is {new} since PostgreSQL {change.gone_in}; "
                         f"using {new} = {out[new]!r}")
        else:
            converted = wal_keep_size(value) if old == "wal_keep_segments" else value
            if converted is None:
                notes.append(f"parameter {old} = {value!r} cannot be converted to {new}; dropped")
                continue
            out[new] = converted
            notes.append(f"parameter {old} = {value!r} is {new} = {converted!r} since PostgreSQL {change.gone_in}")
    if major < 13 and "wal_keep_size" in out:  # the reverse rename, for an older server
        segments = _wal_keep_segments(out.pop("wal_keep_size"))
        if segments is not None:
            out.setdefault("wal_keep_segments", segments)
    return out, notes


def _version_text(major: int) -> str:
    return "9.5" if major == 9 else str(major)
