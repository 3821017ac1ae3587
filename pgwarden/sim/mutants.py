"""Deliberately unsafe variants of the core, to prove the simulator catches what it should.

Each mutant wraps the real `decide` (the core itself is never edited) and breaks one safety rule.
`tests/sim/test_mutants.py` asserts that every one is caught within a bounded number of schedules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pgwarden.core import decide as real_decide
from pgwarden.core.types import (
    AcquireLeader,
    Decision,
    RemoveDataDirectory,
    Snapshot,
    Wait,
    Why,
)

DecideFn = Callable[[Snapshot], Decision]


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    breaks: str  # the invariant expected to catch it
    description: str
    decide: DecideFn


def _ignore_lag(s: Snapshot) -> Decision:
    """Race for the leader key even when lagging more than maximum_lag_on_failover."""
    d = real_decide(s)
    if d.reason.why is Why.RACE_LAGGING:
        return replace(d, action=AcquireLeader(), wake_at=s.now)
    return d


def _outlive_lease(s: Snapshot) -> Decision:
    """Keep the primary running when the lease can no longer be proven (DCS down, renewals failing)."""
    d = real_decide(s)
    if d.reason.why in (Why.LEASE_AT_RISK, Why.LOCK_LOST):
        return replace(d, action=Wait(), wake_at=s.now + 1)
    return d


def _ignore_timeline(s: Snapshot) -> Decision:
    """Race for the key from a timeline behind the cluster's, although check_timeline forbids it."""
    d = real_decide(s)
    if d.reason.why is Why.RACE_TIMELINE_BEHIND:
        return replace(d, action=AcquireLeader(), wake_at=s.now)
    return d


def _remove_data_freely(s: Snapshot) -> Decision:
    """Move a data directory aside whenever a rewind is not allowed, whatever the configuration says."""
    d = real_decide(s)
    if d.reason.why in (Why.REWIND_NOT_ALLOWED, Why.REWIND_FAILED):
        return replace(d, action=RemoveDataDirectory())
    return d


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant("ignore-lag", "durability", "a lagging replica races for the key", _ignore_lag),
        Mutant("outlive-lease", "one-writer", "a primary keeps writing after its lease may have expired",
               _outlive_lease),
        # "ignore-timeline" (a replica behind the cluster's timeline races) was caught as timeline-number
        # reuse until promotions reserved their number in /status (agent.execute._claim_timeline): since
        # then it promotes to an unused number and loses at most maximum_lag_on_failover, which no
        # invariant forbids, so it is kept only as `_ignore_timeline`, not as a mutant expected to fail.
        Mutant("remove-data-freely", "data-dir", "data directories moved aside against the configuration",
               _remove_data_freely),
    )
}
