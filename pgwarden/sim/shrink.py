"""Shrink a failing schedule: drop faults while the run still fails the same invariant.

Delta debugging in its simplest useful form: try removing halves, then quarters, ... then single
faults, keeping every removal after which the same invariant still breaks. Each try is one run, and
a run is a pure function of (seed, options, schedule), so the result is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

from pgwarden.core import decide as real_decide
from pgwarden.sim.agent import DecideFn
from pgwarden.sim.faults import Schedule
from pgwarden.sim.run import RunResult, run
from pgwarden.sim.world import SimOptions


def fails_like(invariant: str) -> Callable[[RunResult], bool]:
    return lambda result: any(v.invariant == invariant for v in result.violations)


def shrink(seed: int, opts: SimOptions, schedule: Schedule, *, decide: DecideFn = real_decide,
           still_fails: Callable[[RunResult], bool] | None = None, max_runs: int = 200) -> tuple[Schedule, RunResult]:
    """The smallest schedule found that still fails (by default: with the first violation's invariant)."""
    best = run(seed, opts, schedule=schedule, decide=decide)
    if best.ok:
        raise ValueError(f"seed {seed} does not fail with this schedule; nothing to shrink")
    predicate = still_fails or fails_like(best.violations[0].invariant)
    current = schedule
    runs = 0
    chunk = max(1, len(current) // 2)
    while chunk >= 1 and runs < max_runs:
        removed_any = False
        start = 0
        while start < len(current) and runs < max_runs:
            candidate = current[:start] + current[start + chunk:]
            runs += 1
            result = run(seed, opts, schedule=candidate, decide=decide)
            if predicate(result):
                current, best, removed_any = candidate, result, True
            else:
                start += chunk
        if not removed_any:
            chunk //= 2
    return current, best
