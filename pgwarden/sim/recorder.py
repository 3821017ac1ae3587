"""What a run records: the trace of events and decisions, violations, excused overlaps and coverage.

Trace entries are kept as tuples and only rendered when somebody asks (a failing run), so recording
costs little in the millions of uneventful cycles of a campaign.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pgwarden.core import render
from pgwarden.core.actions import Decision
from pgwarden.core.reasons import Why


@dataclass(frozen=True, slots=True)
class Violation:
    at: float
    invariant: str  # one-writer | durability | history | liveness | data-dir | core-exception
    detail: str
    known: str = ""
    """The id of the known open bug this violation is a symptom of (`invariants.KNOWN_BUGS`), if any."""

    def __str__(self) -> str:
        text = f"[{self.at:9.3f}] {self.invariant}: {self.detail}"
        return f"{text} [known bug: {self.known}]" if self.known else text


TraceEntry = tuple[float, str, str, object]
"""(global time, node or '*', kind, payload): kind 'decide' carries a Decision, others a string."""


@dataclass(slots=True)
class Recorder:
    keep_trace: bool = True
    trace: list[TraceEntry] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    excused: list[Violation] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)
    """Unconverged ends that a named rule recognises as the core waiting for an operator
    (`invariants.MEMBER_WAITS`, `invariants.CLUSTER_WAITS`): "rule" or "rule: member"."""
    decisions: int = 0
    _seen: set[tuple[object, ...]] = field(default_factory=set)
    _counts: dict[tuple[type, Why], int] = field(default_factory=dict)
    """Decisions by (action type, Why): the cheapest key to count in the hot loop."""
    _kinds: dict[type, str] = field(default_factory=dict)

    def decision(self, at: float, node: str, local_now: float, decision: Decision) -> None:
        self.decisions += 1
        key = (type(decision.action), decision.reason.why)
        counts = self._counts
        if key in counts:
            counts[key] += 1
        else:
            counts[key] = 1
            self._kinds[key[0]] = decision.action.kind
        if self.keep_trace:
            self.trace.append((at, node, "decide", (local_now, decision)))

    @property
    def actions(self) -> Counter[str]:
        """Decisions by action kind."""
        found: Counter[str] = Counter()
        for (action, _), n in self._counts.items():
            found[self._kinds[action]] += n
        return found

    @property
    def whys(self) -> Counter[str]:
        """Decisions by Why code (its name)."""
        found: Counter[str] = Counter()
        for (_, why), n in self._counts.items():
            found[why.name] += n
        return found

    def event(self, at: float, node: str, text: str) -> None:
        if self.keep_trace:
            self.trace.append((at, node, "event", text))

    def violation(self, at: float, invariant: str, detail: str, *, key: tuple[object, ...] | None = None,
                  excused: bool = False, known: str = "") -> None:
        """Record a violation once per `key` (an ongoing condition is reported when it starts)."""
        if key is not None:
            if key in self._seen:
                return
            self._seen.add(key)
        found = Violation(at, invariant, detail, known)
        (self.excused if excused else self.violations).append(found)
        self.event(at, "*", ("EXCUSED " if excused else "VIOLATION ") + str(found))

    def operator_wait(self, at: float, wait: str) -> None:
        self.waits.append(wait)
        self.event(at, "*", f"WAITING FOR THE OPERATOR (by design): {wait}")

    def render_trace(self, last: int | None = None) -> list[str]:
        entries = self.trace if last is None else self.trace[len(self.trace) - last:] if last > 0 else []
        return [render_entry(e) for e in entries]


def render_entry(entry: TraceEntry) -> str:
    at, node, kind, payload = entry
    if kind == "decide":
        assert isinstance(payload, tuple)
        local_now, decision = payload
        assert isinstance(decision, Decision)
        action = decision.action
        fields = ", ".join(f"{k}={getattr(action, k)!r}" for k in getattr(action, "__slots__", ())
                           if k != "kind")
        return (f"{at:9.3f} {node:>3} decide {action.kind}({fields}) <- {decision.reason.why.name}: "
                f"{render(decision.reason)} [now={local_now:.3f} wake={decision.wake_at:.3f}]")
    return f"{at:9.3f} {node:>3} {payload}"
