"""Deliberately unsafe variants of the core, to prove the simulator catches what it should.

Each mutant wraps the real `decide` or the real executor steps (neither is ever edited) and breaks one
safety rule.
`tests/sim/test_mutants.py` asserts that every one is caught within a bounded number of schedules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pgwarden.core import decide as real_decide
from pgwarden.core.actions import AcquireLeader, Action, Decision, Promote, RemoveDataDirectory, Wait
from pgwarden.core.reasons import Why
from pgwarden.core.snapshot import Outcome, Snapshot
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import StepContext, StepGen, StepsFn
from pgwarden.engine.steps import run as real_steps

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
        # reuse until promotions reserved their number in /status (engine.steps._claim_timeline): since
        # then it promotes to an unused number and loses at most maximum_lag_on_failover, which no
        # invariant forbids, so it is kept only as `_ignore_timeline`, not as a mutant expected to fail.
        Mutant("remove-data-freely", "data-dir", "data directories moved aside against the configuration",
               _remove_data_freely),
    )
}


# ---------------------------------------------------------------------------------------------------
# Mutants of the executor's steps: the simulator runs the agent's own steps, so a step that breaks an
# ordering rule is caught like a core that breaks a decision rule.


@dataclass(frozen=True, slots=True)
class StepMutant:
    name: str
    breaks: str
    description: str
    steps: StepsFn


def _rewritten(steps: StepGen[Outcome], rewrite: Callable[[fx.Effect], fx.Effect | None],
               skipped: Any = None) -> StepGen[Outcome]:
    """`steps` with each effect replaced by `rewrite(effect)`, or not done at all when that is None
    (then the step receives `skipped`); results and DCS failures go through to the steps unchanged."""
    answer: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = steps.send(answer) if failure is None else steps.throw(failure)
        except StopIteration as done:
            outcome: Outcome = done.value
            return outcome
        answer, failure = None, None
        changed = rewrite(effect)
        if changed is None:
            answer = skipped
            continue
        try:
            answer = yield changed
        except fx.DcsFailed as exc:
            failure = exc


def _promote_unreserved(action: Action, ctx: StepContext) -> StepGen[Outcome]:
    """Promote without claiming the timeline number first: no `/status` reservation, no placeholder
    history files (the real steps' `_claim_timeline` skipped)."""
    def rewrite(effect: fx.Effect) -> fx.Effect | None:
        if isinstance(effect, fx.ReserveTimelines):
            return None
        if isinstance(effect, fx.UpdateLeaderKey) and effect.status is not None:
            return fx.UpdateLeaderKey(None)  # the renewal without the claimed number
        return effect

    steps = real_steps(action, ctx)
    return (yield from _rewritten(steps, rewrite, skipped=())) if isinstance(action, Promote) else (yield from steps)


STEP_MUTANTS: dict[str, StepMutant] = {
    m.name: m
    for m in (
        StepMutant("promote-unreserved", "history", "a promotion that does not reserve its timeline number",
                   _promote_unreserved),
    )
}
