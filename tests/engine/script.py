"""A scripted interpreter for the executor's steps: no IO, no clock; every effect recorded.

`Script` answers each effect from a table of overrides (by effect type: a value, an exception to
throw into the step, or a function of the effect), else with a plain success, and advances a fake
clock by `tick` per effect so deadlines can be tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from pgwarden.core.actions import Action
from pgwarden.core.snapshot import HaSettings, Outcome
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import StepContext, run
from pgwarden.model import ClusterView, DataDirState, LocalPg

PRIMARY = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=False, wal_lsn=100,
                  timeline=2, sysid="7000")

DEFAULTS: dict[type, Any] = {
    fx.WallStamp: "2026-12-02T00:00:00+00:00",
    fx.Log: None,
    fx.Probe: PRIMARY,
    fx.StandbySignal: False,
    fx.ReadTimelineHistory: [],
    fx.InspectDataDir: (False, ""),
    fx.CancelInitialization: None,
    fx.DeleteFailoverKey: None,
    fx.SetHistory: None,
    fx.DeleteSyncKey: None,
    fx.UnreserveTimelines: None,
    fx.DisarmWatchdog: None,
    fx.RewindSpace: None,
    fx.Pause: None,
}
BOOLEAN = (fx.AcquireLeaderKey, fx.UpdateLeaderKey, fx.DeleteLeaderKey, fx.WriteInitialize, fx.SeedConfig,
           fx.SetSyncKey, fx.SetFailsafeKey)


@dataclass
class Script:
    answers: dict[type, Any] = field(default_factory=dict)
    now: float = 1000.0
    tick: float = 0.0
    effects: list[fx.Effect] = field(default_factory=list)

    def answer(self, effect: fx.Effect) -> Any:
        self.effects.append(effect)
        if isinstance(effect, fx.Now):
            self.now += self.tick
            return self.now
        self.now += self.tick
        kind = type(effect)
        if kind in self.answers:
            value = self.answers[kind]
            return value(effect) if callable(value) and not isinstance(value, type) else value
        if kind in DEFAULTS:
            return DEFAULTS[kind]
        if kind in BOOLEAN:
            return True
        if isinstance(effect, fx.ReserveTimelines):
            return effect.timelines
        if isinstance(effect, fx.PingFailsafe):
            return tuple(fx.PingAnswer(name, True) for name, _ in effect.targets)
        return fx.Result(True, "done")

    def run(self, action: Action, ctx: StepContext) -> Outcome:
        return drive(run(action, ctx), self.answer)

    def kinds(self, *ignore: type) -> list[str]:
        skipped = (fx.Now, fx.Log, *ignore)
        return [type(e).__name__ for e in self.effects if not isinstance(e, skipped)]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


def drive(steps: Generator[fx.Effect, Any, Outcome], answer: Callable[[fx.Effect], Any]) -> Outcome:
    value: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = steps.send(value) if failure is None else steps.throw(failure)
        except StopIteration as done:
            outcome: Outcome = done.value
            return outcome
        value, failure = None, None
        result = answer(effect)
        if isinstance(result, BaseException):
            failure = result
        else:
            value = result


def context(cluster: ClusterView | None = None, *, me: str = "n1", settings: HaSettings | None = None,
            primary_stop_timeout: float = 0.0) -> StepContext:
    return StepContext(me=me, cluster=cluster, settings=settings or HaSettings(lease_ttl=7, ttl=30),
                       primary_stop_timeout=primary_stop_timeout, bootstrap_dcs={"ttl": 30})
