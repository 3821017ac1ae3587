"""Many runs over consecutive seeds, spread over worker processes, summarised for a person or CI."""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from pgwarden.core.actions import Action
from pgwarden.core.reasons import Why
from pgwarden.sim.mutants import MUTANTS
from pgwarden.sim.run import run
from pgwarden.sim.world import SimOptions

ONLY_WITH_LOGICAL_SLOTS = frozenset({"copy logical slots"})
"""Actions only a run with SimOptions.logical_slots reaches; the campaigns keep their seeds' traces without
them (tests/sim/test_sim_slots.py checks that logical runs reach them)."""
ALL_ACTIONS = tuple(sorted(t.__dataclass_fields__["kind"].default for t in Action.__args__
                           if t.__dataclass_fields__["kind"].default not in ONLY_WITH_LOGICAL_SLOTS))


@dataclass(frozen=True, slots=True)
class RunSummary:
    seed: int
    nodes: int
    violations: tuple[str, ...]
    invariants: tuple[str, ...]
    excused: tuple[str, ...]
    known: tuple[str, ...]
    """For each violation, the known open bug it is a symptom of ("" for a new finding)."""
    waits: tuple[str, ...]
    """The rules by which the run ended waiting for the operator by design (`invariants.MEMBER_WAITS`...)."""
    actions: dict[str, int]
    whys: dict[str, int]
    events: int
    decisions: int

    @property
    def new_invariants(self) -> tuple[str, ...]:
        """The invariants broken by violations that no known open bug explains."""
        return tuple(i for i, known in zip(self.invariants, self.known, strict=True) if not known)


@dataclass(slots=True)
class CampaignResult:
    runs: int = 0
    seconds: float = 0.0
    events: int = 0
    decisions: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    whys: Counter[str] = field(default_factory=Counter)
    failures: list[RunSummary] = field(default_factory=list)
    excused: list[RunSummary] = field(default_factory=list)
    waiting: list[RunSummary] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0

    @property
    def new_findings(self) -> list[RunSummary]:
        """The runs that fail the gate: a violation (safety, or liveness that no named rule excuses) that
        no known open bug explains."""
        return [f for f in self.failures if f.new_invariants]

    def missing_actions(self) -> list[str]:
        return [a for a in ALL_ACTIONS if not self.actions[a]]

    def missing_whys(self) -> list[str]:
        return [w.name for w in Why if not self.whys[w.name]]

    def report(self) -> str:
        lines = [
            f"{self.runs} schedules in {self.seconds:.1f}s: {self.per_second:.1f} schedules/s, "
            f"{self.events} events, {self.decisions} decisions",
            f"actions reached {len(ALL_ACTIONS) - len(self.missing_actions())}/{len(ALL_ACTIONS)}; "
            f"missing: {', '.join(self.missing_actions()) or 'none'}",
            f"Why codes reached {len(Why) - len(self.missing_whys())}/{len(Why)}; "
            f"missing: {', '.join(self.missing_whys()) or 'none'}",
            f"runs with violations: {len(self.failures)}; runs with excused overlaps (no watchdog: agent paused "
            f"past its lease, or cut off in maintenance mode): {len(self.excused)}",
        ]
        by_invariant = Counter(i for f in self.failures for i in set(f.new_invariants))
        for invariant, count in sorted(by_invariant.items()):
            seeds = [f.seed for f in self.failures if invariant in f.new_invariants][:8]
            lines.append(f"  {invariant}: {count} run(s), e.g. seeds {seeds}")
        by_bug = Counter(k for f in self.failures for k in set(f.known) if k)
        for bug, count in sorted(by_bug.items()):
            seeds = [f.seed for f in self.failures if bug in f.known][:8]
            lines.append(f"  known open bug {bug}: {count} run(s), e.g. seeds {seeds}")
        for f in self.failures[:5]:
            lines.append(f"  seed {f.seed} ({f.nodes} nodes): {f.violations[0]}")
        if self.excused:
            lines.append(f"  excused example: seed {self.excused[0].seed}: {self.excused[0].excused[0]}")
        lines.append(f"runs ending unconverged by design (the core waits for the operator): {len(self.waiting)}")
        by_rule = Counter(w.partition(":")[0] for f in self.waiting for w in set(f.waits))
        for rule, count in sorted(by_rule.items()):
            seeds = [f.seed for f in self.waiting if any(w.partition(":")[0] == rule for w in f.waits)][:8]
            lines.append(f"  {rule}: {count} run(s), e.g. seeds {seeds}")
        return "\n".join(lines)


def nodes_for(seed: int, nodes: int | tuple[int, int]) -> int:
    if isinstance(nodes, int):
        return nodes
    low, high = nodes
    return low + seed % (high - low + 1)


def run_one(seed: int, opts: SimOptions, nodes: int | tuple[int, int], mutant: str | None) -> RunSummary:
    opts = replace(opts, nodes=nodes_for(seed, nodes))
    decide = MUTANTS[mutant].decide if mutant else None
    result = run(seed, opts, keep_trace=False) if decide is None else run(seed, opts, decide=decide,
                                                                          keep_trace=False)
    return RunSummary(seed, opts.nodes, tuple(str(v) for v in result.violations),
                      tuple(v.invariant for v in result.violations), tuple(str(v) for v in result.excused),
                      tuple(v.known for v in result.violations), tuple(result.waits),
                      dict(result.actions), dict(result.whys), result.events, result.decisions)


def _run_chunk(args: tuple[list[int], SimOptions, int | tuple[int, int], str | None]) -> list[RunSummary]:
    seeds, opts, nodes, mutant = args
    return [run_one(seed, opts, nodes, mutant) for seed in seeds]


def default_workers() -> int:
    """One worker process per core."""
    return os.cpu_count() or 1


def campaign(runs: int, *, first_seed: int = 0, nodes: int | tuple[int, int] = 3, opts: SimOptions | None = None,
             workers: int | None = None, mutant: str | None = None, chunk: int = 20) -> CampaignResult:
    """Run seeds first_seed .. first_seed+runs-1 (each a full schedule) and aggregate. Each run is a pure
    function of its seed, so the result does not depend on `workers` (default: one per core)."""
    opts = opts or SimOptions()
    workers = default_workers() if workers is None else workers
    seeds = list(range(first_seed, first_seed + runs))
    chunks = [(seeds[i:i + chunk], opts, nodes, mutant) for i in range(0, len(seeds), chunk)]
    started = time.perf_counter()
    result = CampaignResult()
    with _rare_collections():
        if workers <= 1:
            _absorb_all(result, map(_run_chunk, chunks))
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                _absorb_all(result, pool.imap_unordered(_run_chunk, chunks))
    result.seconds = time.perf_counter() - started
    result.failures.sort(key=lambda f: f.seed)
    result.excused.sort(key=lambda f: f.seed)
    result.waiting.sort(key=lambda f: f.seed)
    return result


GC_THRESHOLD = (50_000, 20, 100)
"""A run allocates millions of short-lived objects (generators, snapshots, views) and few reference
cycles: collecting the young generation every 50,000 allocations instead of 700 saves about a tenth
of a campaign's time. Results never depend on the collector."""


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Rarer garbage collections for the campaign (inherited by forked workers); what exists before it
    starts is frozen out of the collector's scans."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _absorb_all(result: CampaignResult, batches: Iterable[list[RunSummary]]) -> None:
    for batch in batches:
        for summary in batch:
            result.runs += 1
            result.events += summary.events
            result.decisions += summary.decisions
            result.actions.update(summary.actions)
            result.whys.update(summary.whys)
            if summary.violations:
                result.failures.append(summary)
            if summary.excused:
                result.excused.append(summary)
            if summary.waits:
                result.waiting.append(summary)
