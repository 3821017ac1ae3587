"""Can a running standby follow the newest timeline it knows of? Read from its pg_wal, never raises.

A standby's WAL receiver fetches the history files of its upstream's timelines before it streams. When
the newest one forked off the standby's own timeline before the standby's replay position (it replayed
WAL of the old timeline that the new primary never had), PostgreSQL refuses it for ever: "new timeline
N forked off current database system timeline T before current recovery point X" (or "is not a child
of"), and the standby neither streams nor switches. Only a rewind (or a new copy) repairs it.

PostgreSQL does not tell through SQL which timeline a standby replays (T): pg_control has the timeline
of its last restartpoint only, and the history files in pg_wal include refused timelines. T is the
newest of the restartpoint's timeline and the history files' timelines that have a WAL segment file
for the replay position: WAL of a timeline reaches pg_wal only once the standby follows it (streamed
or restored from the archive), never for a refused one. Every uncertainty leans to "not forked".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

from pgwarden.model import LSN, LocalPg
from pgwarden.postgres.controller import parse_timeline_history
from pgwarden.postgres.walfiles import SEGMENT_NAME, segment_file

_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_XLOGID = 0x100000000

_Reader = Callable[[str], str]
_Sizer = Callable[[str], int]


def with_forked_timeline(pg: LocalPg, pg_wal: Path) -> LocalPg:
    """`pg` with `forked_timeline` (and `timeline` the one it replays) when it is a standby that does not
    stream and cannot follow the newest timeline in `pg_wal`; `pg` itself otherwise."""
    if not pg.is_replica or pg.streaming or pg.replay_lsn is None:
        return pg
    received = pg.wal_receiver.received_tli if pg.wal_receiver else None
    try:
        names = os.listdir(pg_wal)
        found = forked_timeline(names, lambda name: (pg_wal / name).read_text(errors="replace"),
                                lambda name: (pg_wal / name).stat().st_size,
                                checkpoint_tli=pg.controldata_timeline, replay_lsn=pg.replay_lsn,
                                received_tli=received)
    except OSError:
        return pg
    if found is None:
        return pg
    newest, replaying = found
    return replace(pg, forked_timeline=newest, timeline=replaying)


def forked_timeline(names: Collection[str], read: _Reader, size: _Sizer, *, checkpoint_tli: int | None,
                    replay_lsn: LSN, received_tli: int | None) -> tuple[int, int] | None:
    """(newest timeline, timeline replayed) when the newest timeline with a history file among `names`
    (pg_wal's entries) cannot be followed from `replay_lsn`; None when it can, or when unsure.

    `read(name)` returns a file's text and `size(name)` its size (both may raise OSError)."""
    histories = sorted(int(m.group(1), 16) for name in names if (m := _HISTORY.match(name)))
    if not histories or not checkpoint_tli:
        return None
    newest = histories[-1]
    replaying = replay_timeline(names, size, checkpoint_tli, histories, replay_lsn)
    if received_tli:
        replaying = max(replaying, received_tli)
    if replaying >= newest:
        return None
    lineage = parse_timeline_history(read(f"{newest:08X}.history"))
    if not lineage:
        return None  # a comment-only placeholder (the executor steps reserve numbers with them), or junk
    ends = {tli: end for tli, end, _reason in lineage}
    if replaying in ends and ends[replaying] >= replay_lsn:
        return None  # it forks off later: PostgreSQL switches to it on reaching the switch point
    return newest, replaying


def replay_timeline(names: Collection[str], size: _Sizer, checkpoint_tli: int, histories: Collection[int],
                    replay_lsn: LSN) -> int:
    """The newest timeline, from the last restartpoint's on, whose WAL segment of `replay_lsn` is in pg_wal."""
    segments = [name for name in names if SEGMENT_NAME.match(name)]
    if not segments or replay_lsn <= 0:
        return checkpoint_tli
    segment_size = size(segments[0])
    if segment_size <= 0 or segment_size & (segment_size - 1) or segment_size > _XLOGID:
        return checkpoint_tli  # not a WAL segment's size (a power of two up to 1 GB)
    number = (replay_lsn - 1) // segment_size  # the segment holding the last replayed byte
    present = set(segments)
    candidates = [tli for tli in histories if tli > checkpoint_tli
                  and segment_file(tli, number, segment_size) in present]
    return max([checkpoint_tli, *candidates])
