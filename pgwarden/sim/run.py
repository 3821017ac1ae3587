"""One simulated run: a pure function of (seed, options, schedule, decide).

`run(seed)` builds an N-node world, bootstraps it with the real agents' logic, injects the seed's
fault schedule, checks the invariants after every event and liveness at the end.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from pgwarden.core import decide as real_decide
from pgwarden.core.snapshot import WatchdogMode, WatchdogSettings
from pgwarden.engine.steps import StepsFn
from pgwarden.sim import faults as faults_mod
from pgwarden.sim.agent import DecideFn, SimAgent
from pgwarden.sim.etcd import EtcdStore
from pgwarden.sim.faults import Fault, Schedule
from pgwarden.sim.invariants import Checker, check_liveness, liveness_problems
from pgwarden.sim.kernel import ChangeFlag, Clock, Kernel
from pgwarden.sim.postgres import SimPg
from pgwarden.sim.recorder import Recorder, Violation
from pgwarden.sim.world import SimNode, SimOptions, World


@dataclass(slots=True)
class RunResult:
    seed: int
    options: SimOptions
    schedule: Schedule
    violations: list[Violation]
    excused: list[Violation]
    waits: list[str]
    """How the run ended waiting for the operator by design (`invariants.MEMBER_WAITS`, `CLUSTER_WAITS`)."""
    actions: Counter[str]
    whys: Counter[str]
    events: int
    decisions: int
    recorder: Recorder = field(repr=False)
    config: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self, trace_lines: int = 200) -> str:
        """Seed, schedule and the trace tail: everything needed to understand and replay a failure."""
        lines = [f"seed {self.seed}: {len(self.violations)} violation(s), {len(self.excused)} excused",
                 f"options: nodes={self.options.nodes} fault_window={self.options.fault_window} "
                 f"settle={self.options.settle}", f"initial /config: {self.config}", "schedule:"]
        lines += [f"  {f}" for f in self.schedule] or ["  (none)"]
        lines += ["violations:"] + [f"  {v}" for v in self.violations]
        if self.waits:
            lines += ["waiting for the operator by design:"] + [f"  {w}" for w in self.waits]
        if self.excused:
            lines += ["excused (no watchdog: agent paused past its lease, or cut off in maintenance mode):"]
            lines += [f"  {v}" for v in self.excused]
        lines += [f"trace (last {trace_lines} entries):", *self.recorder.render_trace(trace_lines)]
        return "\n".join(lines)


def names_for(nodes: int) -> tuple[str, ...]:
    return tuple(f"n{i}" for i in range(1, nodes + 1))


def schedule_for(seed: int, opts: SimOptions) -> Schedule:
    return faults_mod.make_schedule(random.Random(f"schedule-{seed}"), opts, names_for(opts.nodes))


def run(seed: int, opts: SimOptions | None = None, *, schedule: Schedule | None = None,
        decide: DecideFn = real_decide, steps: StepsFn | None = None, keep_trace: bool = True) -> RunResult:
    """`decide` and `steps` are the code under test: the real core and executor steps, or a mutant's."""
    opts = opts or SimOptions()
    if schedule is None:
        schedule = schedule_for(seed, opts)
    world = _build_world(seed, opts, keep_trace)
    world.steps = steps
    for node in world.nodes.values():
        agent = SimAgent(world, node.name, decide)
        node.agent = agent
        world.kernel.at(world.rng.uniform(0.0, 3.0), agent.start)
    for fault in schedule:
        world.kernel.at(fault.at, _injector(world, fault, decide))
    checker = world.checker
    assert isinstance(checker, Checker)
    after_event = partial(checker.after_event, world)
    changed = None if opts.check_every_event else world
    if opts.stable_exit > 0:
        _run_until_stable(world, after_event, changed)
    else:
        world.kernel.run_until(opts.end, after_event, changed)
    check_liveness(world)
    rec = world.recorder
    return RunResult(seed, opts, schedule, rec.violations, rec.excused, rec.waits, rec.actions, rec.whys,
                     world.kernel.events, rec.decisions, rec, dict(world.config))


STABLE_PROBE = 5.0
"""Seconds between liveness probes after the fault window (SimOptions.stable_exit)."""


def _run_until_stable(world: World, after_event: Callable[[], None], changed: ChangeFlag | None) -> None:
    """Run through the fault window, then until the cluster has stayed converged for `stable_exit` seconds
    (or the settle time is over)."""
    opts = world.opts
    world.kernel.run_until(opts.fault_window, after_event, changed)
    converged_since: float | None = None
    t = opts.fault_window
    while t < opts.end:
        t = min(t + STABLE_PROBE, opts.end)
        world.kernel.run_until(t, after_event, changed)
        if liveness_problems(world):
            converged_since = None
        elif converged_since is None:
            converged_since = t
        elif t - converged_since >= opts.stable_exit:
            return


def _injector(world: World, fault: Fault, decide: DecideFn) -> Callable[[], None]:
    return lambda: faults_mod.apply(world, fault, decide)


def _build_world(seed: int, opts: SimOptions, keep_trace: bool) -> World:
    rng = random.Random(f"world-{seed}")
    kernel = Kernel()
    world = World(opts=opts, rng=rng, kernel=kernel, recorder=Recorder(keep_trace=keep_trace))
    world.checker = Checker()
    world.config = faults_mod.initial_config(random.Random(f"config-{seed}"))
    if opts.permanent_slots or opts.logical_slots:
        logical = {slot: {"type": "logical", "database": "app", "plugin": "pgoutput"} for slot in opts.logical_slots}
        world.config = {**world.config, "slots": {**dict.fromkeys(opts.permanent_slots), **logical}}
    world.etcd = EtcdStore(
        scope="sim",
        schedule_expiry=lambda t, lease: kernel.at(t, lambda: _expire(world, lease)),
        on_leader_change=lambda revision, writer: _leader_changed(world, revision, writer),
    )
    kernel.before_step = world.catch_up
    for name in names_for(opts.nodes):
        clock = Clock(offset=rng.uniform(0.0, 10_000.0), rate=1.0 + rng.uniform(-opts.drift, opts.drift))
        pg = SimPg(name, lag_seconds=rng.uniform(0.01, 0.5))
        world.nodes[name] = SimNode(name, clock, pg)
        world.pgs.append(pg)
    if opts.operations:
        for name, tags in faults_mod.member_tags(random.Random(f"tags-{seed}"), names_for(opts.nodes)).items():
            world.nodes[name].tags = tags
    if opts.fencing:
        world.watchdog, failsafe = fencing_for(seed)
        if failsafe:
            world.config = {**world.config, "failsafe_mode": True}
    return world


def fencing_for(seed: int) -> tuple[WatchdogSettings, bool]:
    """A run's fencing when `SimOptions.fencing` is on: the watchdog (mode required on every host, with
    one of Patroni's safety margins) and whether /config turns failsafe mode on, each in about half of
    the runs, from a generator of their own (the run's other draws stay as they were)."""
    rng = random.Random(f"fencing-{seed}")
    watchdog = WatchdogSettings()
    if rng.random() < 0.5:
        watchdog = WatchdogSettings(WatchdogMode.REQUIRED, safety_margin=rng.choice((5, 2, -1)))
    return watchdog, rng.random() < 0.5


def _expire(world: World, lease_id: int) -> None:
    """A lease's expiry check; its owner's virtual keepalives are replayed first."""
    lease = world.etcd.leases.get(lease_id)
    if lease is None:
        return
    world.catch_up(lease.owner)
    world.etcd.expire(world.now, lease_id)
    agent = world.nodes[lease.owner].agent if lease.owner in world.nodes else None
    if lease_id not in world.etcd.leases and agent is not None:
        agent.end_virtual()  # its next keepalive finds the lease gone: that one runs for real


def _leader_changed(world: World, revision: int, writer: str | None) -> None:
    """The agents' leader-key watches fire (pgwarden.dcs.etcd3: own writes do not wake the writer)."""
    if writer is None:
        world.recorder.event(world.now, "*", "leader key expired")
    for name, node in world.nodes.items():
        agent = node.agent
        if agent is None or name == writer or not world.dcs_reachable(name):
            continue
        world.kernel.at(world.now + world.dcs_latency, _watch_delivery(agent, revision))


def _watch_delivery(agent: SimAgent, revision: int) -> Callable[[], None]:
    def deliver() -> None:
        if agent.dcs.seen_revision < revision:
            agent.wake()
    return deliver
