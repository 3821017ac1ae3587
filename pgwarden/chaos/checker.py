"""The checker: pure functions over a run's history (no IO), in the spirit of Jepsen.

* **Lost commits**: every acknowledged row must be on the primary once the faults are healed and the
  cluster converged. In synchronous modes one missing row is a violation; in asynchronous mode the
  missing rows and the window in which they were acknowledged are reported (that is async's contract).
* **Double writers**: a host is *certainly writable* between two acknowledged writes of one session
  (one connection, no error in between): a PostgreSQL session on a primary never survives a demotion.
  Two hosts certainly writable at one instant, or a host acknowledging a write entirely inside another
  host's certainly writable span, is a violation. Every timestamp is this process's `time.time()`.
* **Unavailability** of a fault: the longest time without an acknowledged write through the multi-host
  DSN (what an application sees) from the fault's start to the next fault's (or the run's end).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pgwarden.chaos.workload import Attempt

APPLICATION_WRITER = "multi"


@dataclass(frozen=True)
class Span:
    """An interval in which `host` was certainly a writable primary."""

    host: str
    start: float
    end: float
    session: str


@dataclass(frozen=True)
class DoubleWriter:
    """Two hosts accepting writes at once: the instants and the evidence."""

    first: Span
    second_host: str
    start: float
    end: float
    evidence: str


def lost_commits(attempts: Iterable[Attempt], stored: set[int]) -> list[Attempt]:
    """Acknowledged attempts whose row is not stored."""
    return [a for a in attempts if a.ok and a.id not in stored]


def loss_window(lost: Sequence[Attempt]) -> tuple[float, float] | None:
    """From the first lost acknowledgement's start to the last one's end."""
    if not lost:
        return None
    return min(a.start for a in lost), max(a.end or a.start for a in lost)


def writable_spans(attempts: Iterable[Attempt]) -> list[Span]:
    """Per session, from each acknowledgement's end to the next one's start (sessions never outlive a demotion)."""
    by_session: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        if attempt.ok and attempt.session:
            by_session[attempt.session].append(attempt)
    spans = []
    for session, acks in by_session.items():
        acks.sort(key=lambda a: a.start)
        for before, after in itertools.pairwise(acks):
            if before.end is not None and before.end < after.start:
                spans.append(Span(before.host, before.end, after.start, session))
    return spans


def double_writers(attempts: Sequence[Attempt]) -> list[DoubleWriter]:
    """Every instant at which two hosts were certainly accepting writes (see the module docstring)."""
    spans = writable_spans(attempts)
    found: list[DoubleWriter] = []
    by_host: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_host[span.host].append(span)
    hosts = sorted(by_host)
    for i, host in enumerate(hosts):
        for other in hosts[i + 1:]:
            for a in by_host[host]:
                for b in by_host[other]:
                    start, end = max(a.start, b.start), min(a.end, b.end)
                    if start < end:
                        found.append(DoubleWriter(a, other, start, end, f"session {b.session} writable too"))
    for attempt in attempts:
        if not attempt.ok or attempt.end is None:
            continue
        for span in spans:
            if span.host != attempt.host and span.start <= attempt.start and attempt.end <= span.end:
                found.append(DoubleWriter(span, attempt.host, attempt.start, attempt.end,
                                          f"row {attempt.id} acknowledged by {attempt.host} ({attempt.writer})"))
    return found


@dataclass(frozen=True)
class Incident:
    """Overlapping double-writer findings of one pair of hosts, merged into one interval."""

    hosts: tuple[str, str]
    start: float
    end: float
    findings: int
    evidence: str


def incidents(found: Sequence[DoubleWriter], slack: float = 0.5) -> list[Incident]:
    """`found` merged per pair of hosts: findings less than `slack` seconds apart are one incident."""
    by_pair: dict[tuple[str, str], list[DoubleWriter]] = defaultdict(list)
    for d in found:
        by_pair[(min(d.first.host, d.second_host), max(d.first.host, d.second_host))].append(d)
    out = []
    for pair, items in sorted(by_pair.items()):
        items.sort(key=lambda d: d.start)
        current = Incident(pair, items[0].start, items[0].end, 1, items[0].evidence)
        for d in items[1:]:
            if d.start <= current.end + slack:
                current = Incident(pair, current.start, max(current.end, d.end), current.findings + 1, current.evidence)
            else:
                out.append(current)
                current = Incident(pair, d.start, d.end, 1, d.evidence)
        out.append(current)
    return out


def longest_gap(acks: Sequence[float], start: float, end: float) -> float:
    """The longest time in [start, end] without an acknowledgement (`acks`: completion times, sorted)."""
    points = [start, *(t for t in acks if start < t < end), end]
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def unavailability(attempts: Iterable[Attempt], windows: Sequence[tuple[str, float, float]]) -> list[tuple[str, float]]:
    """(fault kind, longest write gap of the application's writer) for each (kind, start, end) window."""
    acks = sorted(a.end for a in attempts if a.ok and a.end is not None and a.writer == APPLICATION_WRITER)
    return [(kind, longest_gap(acks, start, end)) for kind, start, end in windows]
