"""The WAL a replica's copy of a logical slot needs and the replica no longer has.

A replica cloned after the slot's `restart_lsn` (or one whose restartpoints removed that WAL) cannot decode
from the copy: `pg_replication_slot_advance` reads every record from `restart_lsn` on. The copy therefore
fetches the missing segment files from the leader (`pg_read_binary_file` in bounded chunks, while this
replica's PostgreSQL still runs), stages them in `pg_wal/pgwarden-slot-wal/`, and moves them into `pg_wal`
with PostgreSQL stopped, next to the slot's state file: from its start on the copied slot holds them
(`KeepLogSeg` honours slots on a standby's restartpoints too).

Which file names: decoding on a standby (`read_local_xlog_page` then `XLogReadDetermineTimeline`,
PostgreSQL 11 to 16) opens each segment under the timeline of the segment's *last* byte in the history of
the timeline it replays. A segment holding a timeline switch is thus read from the new timeline's file (the
promotion copied it there, the old one became `.partial`), every earlier one from its old timeline's file.
The history is the replica's own `pg_wal/<timeline>.history` (its WAL receiver fetched it before streaming
that timeline, pg_basebackup copies it), as PostgreSQL reads it.

The pure functions come first (no IO); the staging and the installation follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.aio import bounded
from pgwarden.postgres.walfiles import SEGMENT_NAME, segment_file, segment_number

STAGING = "pgwarden-slot-wal"
"""The directory under pg_wal where fetched segments wait for PostgreSQL's stop (same filesystem as pg_wal,
so moving them is a link; PostgreSQL ignores subdirectories of pg_wal other than its own)."""

CHUNK = 1024 * 1024
"""Bytes read from the leader per query: a 16 MB (or 1 GB) segment never sits in one result."""

FETCH_CAP = 2 * 1024 ** 3
"""The most WAL a copy fetches: a slot pinning more is left to its consumer (and the operator)."""

def timeline_at(lsn: int, history: Sequence[tuple[int, int]], current: int) -> int:
    """The timeline `lsn` belongs to (PostgreSQL's tliOfPointInHistory): `history` holds (parent timeline,
    switch LSN) in the order of the history file; a parent owns the positions before its switch point."""
    for timeline, end in history:
        if lsn < end:
            return timeline
    return current


def missing_numbers(restart_lsn: int, local_names: Collection[str], replay_lsn: int | None,
                    size: int) -> range:
    """The segment numbers from `restart_lsn`'s up to (not including) the oldest of the unbroken run of
    segments this replica has ending at its replay position: what decoding from `restart_lsn` lacks here.
    Empty when the replica has that WAL (or has no segment at all: nothing to compare with)."""
    have = {segment_number(name, size) for name in local_names if SEGMENT_NAME.match(name)}
    if not have:
        return range(0)
    top = (replay_lsn - 1) // size if replay_lsn else -1
    if top not in have:
        top = max(have)
    oldest = top
    while oldest - 1 in have:
        oldest -= 1
    return range(restart_lsn // size, oldest)


def missing_files(numbers: Iterable[int], size: int, history: Sequence[tuple[int, int]], current: int,
                  local_names: Collection[str]) -> tuple[str, ...]:
    """The file names decoding will open for `numbers` (each under the timeline of its segment's last byte),
    oldest first, without those already in pg_wal (never overwritten)."""
    present = set(local_names)
    names = (segment_file(timeline_at((n + 1) * size - 1, history, current), n, size) for n in numbers)
    return tuple(name for name in names if name not in present)


def fetch_refusal(needed: int, free: int, cap: int | None = None) -> str:
    """Why `needed` bytes of WAL are not fetched into a filesystem with `free` bytes available ("" when
    they are): more than half the free space, or more than `cap` (FETCH_CAP)."""
    cap = FETCH_CAP if cap is None else cap
    if needed > cap:
        return f"more than the {mib(cap)} cap"
    if needed * 2 > free:
        return f"more than half the free space of pg_wal ({mib(free)} free)"
    return ""


def mib(size: int) -> str:
    """`size` bytes in MiB, for messages."""
    return f"{size / 1024 / 1024:.0f} MiB"


# -- files ------------------------------------------------------------------------------------------------


def clear_staging(pg_wal: Path) -> None:
    """Remove the staging directory and what an earlier, interrupted copy left there."""
    shutil.rmtree(pg_wal / STAGING, ignore_errors=True)


def keep_staged(pg_wal: Path, wanted: Collection[str]) -> set[str]:
    """Keep, of what earlier attempts staged, the whole segments among `wanted` (a fetch cut short by its
    time budget goes on from there); remove the rest (a half-written `.part`, segments no longer needed).
    Returns the names kept."""
    staging = pg_wal / STAGING
    kept: set[str] = set()
    try:
        entries = list(staging.iterdir())
    except OSError:
        return kept
    for entry in entries:
        if entry.name in wanted and SEGMENT_NAME.match(entry.name) and entry.is_file():
            kept.add(entry.name)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return kept


def open_staged(pg_wal: Path, name: str) -> int:
    """A new file for segment `name` in the staging directory (created 0700 if missing), opened for
    writing as `<name>.part`; `seal` turns it into `<name>`."""
    if not SEGMENT_NAME.match(name):
        raise ValueError(f"invalid WAL segment name: {name!r}")
    staging = pg_wal / STAGING
    staging.mkdir(mode=0o700, exist_ok=True)
    return os.open(staging / f"{name}.part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def seal(pg_wal: Path, name: str, fd: int) -> None:
    """fsync the staged `<name>.part`, close it, rename it to `<name>` and fsync the staging directory."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    staging = pg_wal / STAGING
    os.replace(staging / f"{name}.part", staging / name)
    fsync_dir(staging)


def install(pg_wal: Path, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """With PostgreSQL stopped: link each staged segment of `names` into pg_wal (a link fails rather than
    replace a file: an existing one is kept), mark it archived (`archive_status/<name>.done`, as the WAL
    receiver marks what it streams: the leader archives its own WAL), fsync, then remove the staging
    directory. Returns (installed, kept: already present). Raises OSError (the staging is removed anyway)."""
    staging = pg_wal / STAGING
    installed: list[str] = []
    kept: list[str] = []
    try:
        for name in names:
            if not SEGMENT_NAME.match(name):
                raise OSError(f"invalid WAL segment name: {name!r}")
            try:
                os.link(staging / name, pg_wal / name)
            except FileExistsError:
                kept.append(name)
                continue
            installed.append(name)
            _mark_done(pg_wal / "archive_status", name)
        if installed:
            fsync_dir(pg_wal / "archive_status")
            fsync_dir(pg_wal)
    finally:
        clear_staging(pg_wal)
    return installed, kept


def _mark_done(status: Path, name: str) -> None:
    status.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(status / f"{name}.done", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that the names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the transfer -----------------------------------------------------------------------------------------

_READ_CHUNK = "SELECT pg_read_binary_file(%s::text, %s::bigint, %s::bigint, true)"
"""The four-argument form (the one Patroni's rewind role is granted); missing_ok: a segment the leader
removed meanwhile reads as NULL, not as an error."""


FETCH_BUDGET = 20.0
"""Seconds one copy attempt may spend fetching WAL. The copy is a background task, during which the replica
takes part in no leader race: a big fetch goes on over several attempts (the segments staged are kept), with
the loop free in between."""
OUT_OF_TIME = "the fetch's time budget for one attempt ran out"


async def fetch(conn: psycopg.AsyncConnection[Any], pg_wal: Path, names: Sequence[str], size: int,
                timeout: float, budget: float = FETCH_BUDGET) -> str:
    """Read each segment of `names` (whole segments of `size` bytes) from the leader over `conn`, CHUNK bytes
    per query, each query bounded by `timeout` seconds here (the session's statement_timeout bounds it
    there), into the staging directory, each file fsynced and renamed once complete. Returns "" when all
    are staged, else why not (OUT_OF_TIME once `budget` seconds have passed: the segments sealed so far stay
    staged for the next attempt); raises psycopg.Error, OSError or TimeoutError. The caller clears the
    staging directory when this returns another problem."""
    deadline = asyncio.get_running_loop().time() + budget
    for name in names:
        if asyncio.get_running_loop().time() >= deadline:
            return OUT_OF_TIME
        fd = open_staged(pg_wal, name)
        try:
            problem = await _fetch_one(conn, fd, name, size, timeout)
        except BaseException:
            os.close(fd)
            raise
        if problem:
            os.close(fd)
            return problem
        await asyncio.to_thread(seal, pg_wal, name, fd)  # an fsync of a segment: not in the agent's loop
    return ""


async def _fetch_one(conn: psycopg.AsyncConnection[Any], fd: int, name: str, size: int, timeout: float) -> str:
    async with conn.cursor(binary=True) as cur:  # bytea in binary: half the bytes of hex on the wire
        for offset in range(0, size, CHUNK):
            length = min(CHUNK, size - offset)
            await bounded(cur.execute(_READ_CHUNK, (f"pg_wal/{name}", offset, length)), timeout)
            row = await cur.fetchone()
            data = None if row is None else row[0]
            if data is None:
                return f"the leader no longer has WAL file {name}"
            if not isinstance(data, bytes | bytearray | memoryview) or len(data) != length:
                return f"the leader's WAL file {name} is shorter than a segment"
            await asyncio.to_thread(write_all, fd, bytes(data))
    return ""
