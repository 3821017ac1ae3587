"""A simulated PostgreSQL server: WAL position, timelines and their history, streaming replication.

Two views of the WAL are kept on purpose:
- what PostgreSQL itself can see: timeline *numbers* and the switch points of its history files. The
  simulated server decides whether streaming or pg_rewind works with exactly those (so it is fooled
  where the real one would be, e.g. by two different timelines that got the same number);
- the ground truth: every promotion creates a timeline instance with a unique `uid`, and a node's
  `lineage` says which instance each byte of its WAL came from. Invariants compare lineages.

WAL grows continuously while a node accepts writes (clients write to every writable node, and every
commit is flushed before it is acknowledged), so no event per commit is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pgwarden.model import LSN, DataDirState

PROMOTE_REASON = "no recovery target specified"  # the reason PostgreSQL writes for a promotion
CHECKPOINT_RECORD = 114  # bytes of a checkpoint WAL record (XLOG_CHECKPOINT_ONLINE/SHUTDOWN)

Segment = tuple[int, int, int]
"""(uid, timeline number, start LSN) of one stretch of WAL."""
Lineage = tuple[Segment, ...]


class Proc(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"  # shutdown requested: no new writes, not accepting connections


def owner(lineage: Lineage, offset: LSN) -> int:
    """The timeline instance (uid) that wrote the WAL byte at `offset`."""
    found = 0
    for uid, _tl, start in lineage:
        if start > offset:
            break
        found = uid
    return found


def same_prefix(a: Lineage, b: Lineage, upto: LSN) -> bool:
    """Ground truth: are the first `upto` bytes of WAL the same in both lineages?"""
    points = {0} | {s for _, _, s in a if s < upto} | {s for _, _, s in b if s < upto}
    return all(owner(a, p) == owner(b, p) for p in points if p < upto)


def truncate(lineage: Lineage, upto: LSN) -> Lineage:
    """The history of a node whose WAL ends at `upto` (a switch exactly at `upto` is kept)."""
    return tuple(s for i, s in enumerate(lineage) if i == 0 or s[2] <= upto)


def switch_point(lineage: Lineage, timeline: int) -> LSN | None:
    """Where timeline `timeline` ended in this history (PostgreSQL's view: by number), if it did."""
    for i, (_uid, tl, _start) in enumerate(lineage):
        if tl == timeline and i + 1 < len(lineage):
            return lineage[i + 1][2]
    return None


def timeline_history(lineage: Lineage) -> list[tuple[int, LSN, str]]:
    """PostgreSQL's history file of the lineage's last timeline: (ended timeline, switch LSN, reason)
    for every timeline before it, oldest first (what `PgController.timeline_history` parses)."""
    return [(tl, lineage[i + 1][2], PROMOTE_REASON) for i, (_uid, tl, _start) in enumerate(lineage[:-1])]


def has_timeline(lineage: Lineage, timeline: int) -> bool:
    return any(tl == timeline for _, tl, _ in lineage)


@dataclass(slots=True)
class SimPg:
    """One node's PostgreSQL: its data directory and, when running, its server process."""

    name: str
    data: DataDirState = DataDirState.EMPTY
    sysid: str | None = None
    lineage: Lineage = ()
    reserved: frozenset[int] = frozenset()
    """Timeline numbers with a placeholder history file in pg_wal (engine.steps._claim_timeline):
    a promotion skips them. Gone with the data directory's WAL (rewind, base backup, initdb)."""
    lsn: LSN = 0
    checkpoint_lsn: LSN | None = None
    control_tl: int | None = None
    control_state: str | None = None
    standby_signal: bool = False
    following: str | None = None
    slots: set[str] = field(default_factory=set)
    slot_pos: dict[str, LSN] = field(default_factory=dict)
    """restart_lsn of each slot of `slots` (an entry whose slot is gone is stale and never read)."""
    logical: dict[str, LSN] = field(default_factory=dict)
    """The logical slots present -> their confirmed_flush_lsn (SimOptions.logical_slots)."""
    ssn: str = ""
    """synchronous_standby_names as ALTER SYSTEM left it (kept with the data directory). Only the value
    is modelled: commits never wait for a synchronous standby in the simulator (yet)."""
    proc: Proc = Proc.STOPPED
    in_recovery: bool = True
    writable_since: float | None = None
    write_base: LSN = 0
    write_rate: float = 0.0
    streaming_from: str | None = None
    lag_seconds: float = 0.0
    incarnation: int = 0  # bumped whenever the postmaster stops, to cancel its pending transitions
    write_log: list[tuple[float, LSN, float | None, float]] = field(default_factory=list)
    """While writable on the current lineage: (since, base LSN, until or None, rate), for lag lookups."""

    @property
    def timeline(self) -> int:
        return self.lineage[-1][1] if self.lineage else 0

    @property
    def uid(self) -> int:
        return self.lineage[-1][0] if self.lineage else 0

    @property
    def running(self) -> bool:
        return self.proc is not Proc.STOPPED

    @property
    def accepting(self) -> bool:
        return self.proc is Proc.RUNNING

    @property
    def writable(self) -> bool:
        return self.proc is Proc.RUNNING and not self.in_recovery

    # -- WAL -------------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Bring the WAL position of a writable node up to `now`."""
        if self.writable_since is not None:
            self.lsn = self.write_base + int(self.write_rate * (now - self.writable_since))

    def start_writes(self, now: float, rate: float) -> None:
        self.writable_since, self.write_base, self.write_rate = now, self.lsn, rate
        self.write_log.append((now, self.lsn, None, rate))

    def stop_writes(self, now: float) -> None:
        if self.writable_since is None:
            return
        self.advance(now)
        since, base, _, rate = self.write_log[-1]
        self.write_log[-1] = (since, base, now, rate)
        self.writable_since = None

    def lsn_at(self, t: float) -> LSN:
        """This node's WAL end at an earlier instant (exact while it was writing, else current)."""
        for since, base, until, rate in reversed(self.write_log):
            if since <= t:
                end = t if until is None else min(t, until)
                return min(self.lsn, base + int(rate * (end - since)))
        return self.lsn

    # -- process ----------------------------------------------------------------------------------------

    def crash(self, now: float) -> None:
        """The postmaster dies (host crash, OOM kill...). Flushed WAL survives; no shutdown checkpoint."""
        self.stop_writes(now)
        if self.proc is not Proc.STOPPED:
            self.control_state = "in production" if not self.in_recovery else "in archive recovery"
        self._down()

    def shut_down(self, now: float, checkpoint: bool) -> None:
        """A stop that completed: fast (with a shutdown checkpoint) or immediate (like a crash)."""
        self.stop_writes(now)
        if not checkpoint:
            self.crash(now)
            return
        self.checkpoint()
        self.control_state = "shut down in recovery" if self.in_recovery else "shut down"
        self._down()

    def _down(self) -> None:
        self.proc = Proc.STOPPED
        self.in_recovery = True
        self.streaming_from = None
        self.incarnation += 1
        self.write_log = []

    def checkpoint(self) -> None:
        """A checkpoint's location is where its record starts, always before the end of the WAL: a
        primary writes the record at its WAL end (the WAL grows by it); a standby's restartpoint
        points at a checkpoint record it replayed, which ends at or before its WAL end. (With the
        location *at* the WAL end, the core's "checkpoint at or past the switch point" test would
        see divergence where PostgreSQL and pg_rewind see none.)"""
        if not self.running:
            return
        self.control_tl = self.timeline
        if self.in_recovery:
            self.checkpoint_lsn = max(self.lsn - CHECKPOINT_RECORD, 0)
            return
        self.checkpoint_lsn = self.lsn
        self.lsn += CHECKPOINT_RECORD
        self.write_base += CHECKPOINT_RECORD
