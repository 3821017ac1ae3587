"""What clients saw during a fault, computed from the write log alone (pure: no IO, no clock).

The workload records one `Attempt` per write it tried: when it started, when it ended, whether the
database acknowledged it. From that log and the instant the fault was injected this module derives the
numbers a drill reports:

- an *outage window* starts at the first write that failed or was blocked (took longer than
  `blocked_after` seconds) and ends when the first write started at or after it is acknowledged;
  "writes impossible for" is the first window after the fault, as users feel it;
- *failed transactions* are the attempts after the fault that were not acknowledged (including the
  ones whose commit outcome is unknown: the client could not count on them);
- *missing writes* are acknowledged ids that the new primary does not have.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_BLOCKED_AFTER = 0.5
"""Seconds after which a write that has not finished counts as blocked (normal writes take ~1 ms)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One write the workload tried: row `id`, monotonic start and end, acknowledged or not."""

    id: int
    started: float
    finished: float
    ok: bool
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass(frozen=True, slots=True)
class Window:
    """An interval during which writes were impossible, as offsets in seconds from the fault."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Measurement:
    """The client's view of one fault. Times are seconds; None when it did not happen in the log."""

    writes_impossible: float | None
    """First outage window after the fault; 0.0 when no write failed or blocked."""
    windows: tuple[Window, ...]
    total_outage: float
    failed_transactions: int
    acknowledged: int
    first_ack_after_fault: float | None
    """Seconds from the fault to the end of the first outage (when a write succeeded again)."""
    recovered: bool
    """False when the log ends inside an outage: writes never came back."""


def is_bad(attempt: Attempt, blocked_after: float) -> bool:
    """A write that failed, or that was stuck long enough that a client would call it an outage."""
    return not attempt.ok or attempt.latency > blocked_after


def outage_windows(attempts: Sequence[Attempt], since: float, blocked_after: float) -> tuple[list[Window], bool]:
    """Windows of impossible writes among attempts that ended after `since` (absolute times).

    Returns the windows and whether the log ends with writes working (False: an open last window,
    closed at the last attempt's end).
    """
    relevant = sorted((a for a in attempts if a.finished >= since), key=lambda a: a.started)
    windows: list[Window] = []
    open_start: float | None = None
    for attempt in relevant:
        if open_start is None:
            if is_bad(attempt, blocked_after):
                open_start = attempt.started
                if attempt.ok:  # blocked, then acknowledged: the window closes with this very write
                    windows.append(Window(open_start, attempt.finished))
                    open_start = None
        elif attempt.ok:
            windows.append(Window(open_start, attempt.finished))
            open_start = None
    if open_start is not None:
        windows.append(Window(open_start, relevant[-1].finished))
        return windows, False
    return windows, True


def measure(attempts: Sequence[Attempt], fault_at: float, blocked_after: float = DEFAULT_BLOCKED_AFTER) -> Measurement:
    """Summarize the write log of one drill; `fault_at` is the monotonic instant of the injection.

    A write in flight when the fault hit counts as part of the outage, so windows may start slightly
    before `fault_at` (negative offsets).
    """
    windows, recovered = outage_windows(attempts, fault_at, blocked_after)
    relative = tuple(Window(w.start - fault_at, w.end - fault_at) for w in windows)
    after = [a for a in attempts if a.finished >= fault_at]
    return Measurement(
        writes_impossible=relative[0].duration if relative else 0.0,
        windows=relative,
        total_outage=sum(w.duration for w in relative),
        failed_transactions=sum(1 for a in after if not a.ok),
        acknowledged=sum(1 for a in attempts if a.ok),
        first_ack_after_fault=relative[0].end if relative else None,
        recovered=recovered,
    )


def acknowledged_ids(attempts: Iterable[Attempt]) -> list[int]:
    return sorted(a.id for a in attempts if a.ok)


def missing_ids(acknowledged: Iterable[int], present: Iterable[int]) -> list[int]:
    """Acknowledged ids the database no longer has: lost writes."""
    return sorted(set(acknowledged) - set(present))


@dataclass(frozen=True, slots=True)
class Spread:
    """Median, min and max of one metric over repetitions (None: no repetition produced a value)."""

    median: float | None
    min: float | None
    max: float | None
    n: int

    def as_json(self) -> dict[str, float | int | None]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def spread(values: Iterable[float | None]) -> Spread:
    present = [v for v in values if v is not None]
    if not present:
        return Spread(None, None, None, 0)
    return Spread(statistics.median(present), min(present), max(present), len(present))
