"""One simulated agent: the loop of `pgwarden.agent.loop.Agent`, observe -> decide -> act, as processes.

Mirrors the real loop's contract: the DCS is read first, PostgreSQL probed, peers asked only when
`needs_peer_statuses` says so, `now` sampled after observation on the node's own (drifting) clock,
then the real `decide` (or a wrapped variant), long actions in the background (`Snapshot.task`),
outcomes fed back as `Snapshot.last`, the member key written after acting, and a nap until
`wake_at` that a leader-key watch event, a finished background task or a dead postmaster cuts short.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any, TypeVar

from pgwarden.config.layering import ha_settings_from
from pgwarden.config.validation import parse_dynamic
from pgwarden.core.actions import Action, Decision, Demote, Shutdown
from pgwarden.core.decide import extended_wake
from pgwarden.core.reasons import Why
from pgwarden.core.snapshot import (
    ActionKind,
    HaSettings,
    OperatorRequest,
    Outcome,
    Snapshot,
    TaskInFlight,
    keepalive_period,
)
from pgwarden.engine.drive import interpret
from pgwarden.engine.loop import (
    NO_REPROBE,
    Act,
    CycleEnded,
    Decided,
    DecideFailed,
    FetchPeers,
    LoopBook,
    LoopEffect,
    Moment,
    MomentSample,
    ProbeLocal,
    PublishMember,
    ReadCluster,
    RefreshSettings,
    Stopping,
    TaskRunning,
    cycle,
    keepalive_stall_limit,
)
from pgwarden.engine.steps import BACKGROUND
from pgwarden.model import ClusterView, LocalPg, Tags
from pgwarden.sim import fencing, observe
from pgwarden.sim.dcs_client import FAST_LATENCY, SimDcsClient, SimDcsError
from pgwarden.sim.effects import execute
from pgwarden.sim.invariants import BLIND
from pgwarden.sim.kernel import Nap, Proc, Step
from pgwarden.sim.world import DCS_TIMEOUT, World

DecideFn = Callable[[Snapshot], Decision]
_T = TypeVar("_T")

FOREVER = 1e12
POSTMASTER_CHECK = 0.1
PROBE_TIME = 0.005


class SimAgent:
    def __init__(self, world: World, name: str, decide: DecideFn) -> None:
        self.world = world
        self.name = name
        self.decide = decide
        tags = world.nodes[name].tags
        self.local_settings = world.opts.settings if tags == Tags() else replace(world.opts.settings, tags=tags)
        if world.watchdog.active:
            self.local_settings = replace(self.local_settings, watchdog=world.watchdog)
        # Before the first DCS read: the local settings with /config's defaults (Agent.config).
        self.settings, _ = settings_from_dynamic(self.local_settings, {}, world.opts.keepalive)
        self.book = LoopBook()  # memory, outcomes, keepalive send time, request desk: the agent's own rules
        self.background: tuple[Proc, TaskInFlight] | None = None
        self.stopping = False
        self.finished = False
        self.cluster: ClusterView | None = None
        self.dcs_error: str | None = None
        self.last_why: Why | None = None
        self.blind_stop = False
        """The last decision stops writes right after a blind one (`invariants._blind_writers`)."""
        self.config_revision = -1
        self.keepalive_interval: float | None = None  # pgwarden.keepalive_interval (None: the default)
        self.dcs = SimDcsClient(world, name, self.settings.lease_ttl)
        self.main: Proc | None = None
        self.keeper: Proc | None = None
        self.pg: LocalPg | None = None  # the last probe (AgentState.pg)
        self.woken = False  # set by wake(), consumed after each nap of the main loop
        self.ka_next: float | None = None  # global send time of the next virtual keepalive tick
        self.ka_pending: tuple[float, float] | None = None  # a virtual tick sent, its answer due
        self.ka_resume: str | tuple[float, float, float] | None = None  # how the keeper leaves virtual mode

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        kernel = self.world.kernel
        self.main = kernel.spawn(self._loop(), self.name, f"{self.name}-loop")
        if self.world.opts.keepalive:
            self.keeper = kernel.spawn(self._keepalive(), self.name, f"{self.name}-keepalive")

    def kill(self) -> None:
        """The host died: every process of this agent is gone."""
        self.end_virtual()
        self.finished = True
        kernel = self.world.kernel
        for proc in (self.main, self.keeper):
            if proc is not None:
                kernel.kill(proc)
        if self.background is not None:
            kernel.kill(self.background[0])
            self.background = None

    def request_stop(self) -> None:
        """SIGTERM: decide a Shutdown next cycle; a running background task is cancelled."""
        self.end_virtual()
        self.stopping = True
        if self.background is not None:
            proc, _ = self.background
            self.world.kernel.kill(proc)
            self.background = None
            self.book.outcomes.append(Outcome(ActionKind(proc.name), False, "cancelled", self.local_now()))
        self.wake()

    def submit(self, request: OperatorRequest, due: float = 0.0) -> bool:
        """POST /restart or /reinitialize reached this agent: False (409) when one is pending already."""
        if self.finished or not self.book.requests.submit(request, due):
            return False
        self.wake()
        return True

    def wake(self) -> None:
        if self.main is not None and not self.finished:
            self.woken = True
            self.world.kernel.wake(self.main)

    def postmaster_died(self) -> None:
        """The monitor notices within POSTMASTER_CHECK and wakes the loop (unless a task runs)."""
        if self.background is None and not self.finished:
            self.world.kernel.at(self.world.now + POSTMASTER_CHECK, self.wake)

    # -- helpers for the executor ------------------------------------------------------------------

    def local_now(self) -> float:
        return self.world.local_time(self.name)

    @property
    def task_label(self) -> str | None:
        return str(self.background[1].kind) if self.background is not None else None

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> Generator[Step, None, None]:
        while not self.finished:
            started = self.local_now()
            decision = yield from self._cycle()
            if self.finished:
                break
            yield from self._nap_after(decision, self.book.nap(decision, started, self.local_now()))

    def _nap_after(self, decision: Decision, seconds: float) -> Generator[Step, None, None]:
        """Agent._nap_after: nap, or until woken; a leader's nap that ends only to renew before its
        lock deadline goes on while keepalives have moved that deadline on (`extended_wake`)."""
        clock = self.world.nodes[self.name].clock
        while True:
            yield Nap(seconds / clock.rate)
            woken, self.woken = self.woken, False  # consumed, like the agent's wake.clear()
            if woken or self.finished or seconds <= 0:
                return
            self.catch_up()  # virtual keepalive ticks sent by now count, as they would for real
            now = self.local_now()
            later = extended_wake(decision, self.published_lock_deadline(self.book.memory.lock_deadline is not None),
                                  now)
            if later is None:
                return
            seconds = later - now

    def _cycle(self) -> Generator[Step, None, Decision]:
        """One HA cycle: the agent's own (`engine.loop.cycle`), its effects done in the simulated world."""
        return (yield from interpret(cycle(self.book, self.name, self.decide), self._perform))

    def _perform(self, effect: LoopEffect) -> Generator[Step, None, Any]:
        world, name = self.world, self.name
        match effect:
            case ReadCluster():
                return (yield from self._read_cluster())
            case ProbeLocal():
                yield PROBE_TIME
                world.refresh()
                self.pg = observe.local_pg(world, name)
                return self.pg
            case RefreshSettings(cluster=cluster):
                self._refresh_config(cluster)
                return self.settings
            case Stopping():
                return self.stopping
            case FetchPeers(cluster=cluster):
                return (yield from observe.fetch_peers(world, name, cluster))
            case TaskRunning():
                return self.background is not None
            case Moment():
                task = self.background[1] if self.background else None
                return MomentSample(self.local_now(), world.wall_time(name), task, self.stopping)
            case DecideFailed(error=error):
                # The loop's fallback runs, and it is a violation: the core must never raise.
                world.recorder.violation(world.now, "core-exception",
                                         f"{name}: decide raised {type(error).__name__}: {error}")
                return None
            case Decided(snapshot=snapshot, decision=decision, started=started):
                if started is False:
                    world.recorder.event(world.now, name, f"request refused: {decision.reason.why.name}")
                world.recorder.decision(world.now, name, snapshot.now, decision)
                blind = self.last_why in BLIND
                self.last_why = decision.reason.why
                self.blind_stop = blind and isinstance(decision.action, Demote)
                return None
            case Act(decision=decision, snapshot=snapshot):
                yield from self._act(decision.action, snapshot.dcs)
                return None
            case PublishMember():
                if not self.finished and self.pg is not None:
                    with contextlib.suppress(SimDcsError):
                        yield from self.dcs.touch_member(observe.member(self, self.pg))
                return None
            case CycleEnded():
                return self.local_now()
            case _:
                raise AssertionError(f"unhandled loop effect {effect!r}")

    def _keepalive(self) -> Generator[Step, None, None]:
        """pgwarden.agent.loop.Agent._keepalive: refresh the lease every `keepalive_period` while the
        HA loop is alive (not stalled for more than two cycles, not stopping).

        Fast-forwarded: once a tick succeeds on a fast, reachable DCS, the following ticks are
        *virtual* (no events) until something that could change their result happens; they are then
        replayed tick by tick (`catch_up`), with exactly the send times the event-driven ticks would
        have had. What can change a tick's result: a fault (reachability, latency, a pause, a stop),
        this agent's own lease handling (a TTL change, a lease replaced) and the loop stalling (which
        the replay computes per tick). Observers (this agent's own steps, the lease's expiry check,
        a peer reading its status) call `catch_up` first. A test checks that traces are identical
        with and without the fast-forward.
        """
        world = self.world
        rate = world.nodes[self.name].clock.rate
        while not self.finished:
            resume, self.ka_resume = self.ka_resume, None
            if isinstance(resume, tuple):
                yield from self._finish_inflight(*resume)
                continue
            if resume is None:
                yield self._keepalive_period() / rate
            now = self.local_now()
            if self.finished or not self.book.keepalive_allowed(now, self.settings.loop_wait, self.stopping):
                continue
            sent, sent_global = now, world.now
            try:
                ok = yield from self.dcs.keepalive()
            except SimDcsError:
                ok = False
            self._keepalive_done(ok, sent, sent_global)
            if ok and world.opts.virtual_keepalive and self._steady():
                self.ka_next = world.now + self._keepalive_period() / rate
                yield Nap(FOREVER)

    def _finish_inflight(self, sent: float, sent_global: float, rtt: float) -> Generator[Step, None, None]:
        """The rest of a virtual tick that was in flight when virtual mode ended: its refresh was
        applied when sent; its answer arrives one round trip later (or is lost), as in `_rpc`."""
        yield (sent_global + rtt) - self.world.now
        ok = self.world.dcs_reachable(self.name)
        if not ok:
            yield DCS_TIMEOUT - rtt
        self._keepalive_done(ok, sent, sent_global)

    def _keepalive_done(self, ok: bool, sent: float, sent_global: float, answered: float | None = None) -> None:
        """A keepalive sent at `sent` (local; `sent_global`) was answered at global time `answered` (None:
        now; a replayed virtual tick's answer lies in the past)."""
        self.record_keepalive(self.book.keepalive_done(ok, sent, self.dcs.holds_leader_on_lease()))
        if self.book.wake_after_keepalive(self.settings, ok):
            self.wake()
        if ok:
            world = self.world
            node = world.nodes[self.name]
            if self.dcs.holds_leader_on_lease():
                node.lease_sent = max(node.lease_sent, sent_global)
            at = world.now if answered is None else answered
            if node.watchdog_timeout is not None and self.book.may_feed_watchdog(
                    self.settings, sent, node.clock.local(at)):
                fencing.feed(world, self.name, at)

    def _steady(self) -> bool:
        """Would the next keepalive surely succeed in one fast round trip, the world staying as it is?"""
        world = self.world
        lease = self.dcs.lease
        return (world.dcs_latency <= FAST_LATENCY and world.dcs_reachable(self.name) and not self.stopping
                and lease is not None and lease[1] == self.dcs.ttl and world.etcd.lease_alive(lease[0])
                and self.name not in world.kernel.paused)

    def catch_up(self) -> None:
        """Replay the virtual keepalive ticks sent by now (their refresh) and answered by now (their
        outcome)."""
        t = self.ka_next
        if t is None:
            return
        world = self.world
        now = world.kernel.now
        if t > now:
            # Fast path (most calls): no tick due and no in-flight tick answered by now.
            pending = self.ka_pending
            if pending is None or pending[1] + 2 * world.dcs_latency > now:
                return
        if not self._replay():
            self._resume_real()

    def _replay(self) -> bool:
        """Replay up to now; False when the next tick is not a plain refresh (it must run for real).

        Only the tick times are computed one by one (with exactly the float arithmetic of the
        event-driven ticks); nothing else can change while the ticks are virtual, so the lease is
        refreshed once, from the last tick sent, and only the last answered tick is reported."""
        world = self.world
        t = self.ka_next
        assert t is not None
        clock = world.nodes[self.name].clock
        offset, rate = clock.offset, clock.rate
        now, rtt = world.kernel.now, 2 * world.dcs_latency
        limit = keepalive_stall_limit(self.settings.loop_wait)
        step = self._keepalive_period() / rate  # constant while virtual: a role change ends virtual mode
        last_cycle_end = self.book.last_cycle_end
        lease = self.dcs.lease
        lease_ok = lease is not None and lease[1] == self.dcs.ttl and world.etcd.lease_alive(lease[0])
        pending = self.ka_pending
        last_ok: tuple[float, float] | None = None
        sent: float | None = None
        plain = True
        while True:
            if pending is not None:
                if pending[1] + rtt > now:
                    break
                last_ok, pending = pending, None
            if t > now:
                break
            local = offset + rate * t  # clock.local(t)
            if local - last_cycle_end > limit:
                t = t + step  # skipped: the loop stalled
                continue
            if not lease_ok:
                plain = False
                break
            sent = t
            pending = (local, t)
            t = (t + rtt) + step
        self.ka_next, self.ka_pending = t, pending
        if sent is not None:
            assert lease is not None
            world.etcd.refresh(sent, lease[0])
        if last_ok is not None:
            self._keepalive_done(True, *last_ok, answered=last_ok[1] + rtt)
        return plain

    def end_virtual(self) -> None:
        """Something may change the next keepalive's result: replay, then tick for real again."""
        if self.ka_next is not None:
            self._replay()
            self._resume_real()

    def _resume_real(self) -> None:
        """Leave virtual mode: finish an in-flight tick, or wake the keeper at the next tick's time."""
        t, pending = self.ka_next, self.ka_pending
        self.ka_next = self.ka_pending = None
        keeper = self.keeper
        if keeper is None or self.finished or t is None:
            return
        kernel = self.world.kernel
        if pending is not None:
            self.ka_resume = (*pending, 2 * self.world.dcs_latency)
            kernel.wake(keeper)
        else:
            self.ka_resume = "tick"
            kernel.at(t, lambda: kernel.wake(keeper))

    def record_keepalive(self, outcome: Outcome) -> None:
        """Append a keepalive outcome, folding a run of consecutive keepalive outcomes into at most
        two: the latest successful one and, if the run ends with a failure, that failure. The core
        folds an ok keepalive as max(lock_deadline, deadline(sent)) and ignores a failed one, and the
        loop looks only at the last outcome's `ok`, so the fold is exact (a test compares traces)."""
        out = self.book.outcomes
        if self.world.opts.fold_keepalives and out and out[-1].action == ActionKind.KEEPALIVE:
            tail = out.pop()
            best: Outcome | None = tail if tail.ok else None
            if out and out[-1].action == ActionKind.KEEPALIVE and out[-1].ok and not tail.ok:
                best = out.pop()  # [ok, failed] so far
            if outcome.ok:
                out.append(outcome)
                return
            if best is not None:
                out.append(best)
        out.append(outcome)

    def published_lock_deadline(self, holds_lock: bool) -> float | None:
        """The core's deadline, moved on by keepalives since (`LoopBook.published_lock_deadline`)."""
        return self.book.published_lock_deadline(self.settings, holds_lock)

    def _read_cluster(self) -> Generator[Step, None, ClusterView | None]:
        """Agent._read_cluster: one read of the scope, which a leader bounds by its lock deadline (a
        read hanging until the client timeout must not carry it past the point where it must stop
        writes): with less than READ_STOP_BUDGET left it does not read at all, and a read that does
        not answer within the budget counts as the DCS being unreachable. Past the deadline it reads
        normally in maintenance mode only (`read_budget`)."""
        budget = self.book.read_budget(self.settings, self.local_now())
        try:
            if budget is not None and budget <= 0:
                raise SimDcsError("not reading the DCS: the lock deadline is too close")
            read = self.dcs.get_cluster()
            if budget is not None:
                rate = self.world.nodes[self.name].clock.rate
                cluster = yield from within(read, budget / rate, "read timed out before the lock deadline")
            else:
                cluster = yield from read
        except SimDcsError as exc:
            self.dcs_error = str(exc)
            return None
        self.dcs_error = None
        was_leading = self._leading()
        self.cluster = cluster
        if self._leading() != was_leading:
            self.end_virtual()  # the keepalive period changes with the role
        return cluster

    def _leading(self) -> bool:
        """Agent._holds_lock: the last DCS read names this agent as the leader."""
        return self.cluster is not None and self.cluster.led_by(self.name)

    def _keepalive_period(self) -> float:
        s = self.settings
        return keepalive_period(self.keepalive_interval, s.lease_ttl, leading=self._leading(),
                                watchdog_timeout=s.watchdog_timeout if s.watchdog.active else None)

    def _refresh_config(self, cluster: ClusterView | None) -> None:
        """The effective settings: local ones overridden by the DCS /config (kept while it is away)."""
        if cluster is None or cluster.config is None or cluster.config.revision == self.config_revision:
            return
        self.config_revision = cluster.config.revision
        self.settings, interval = settings_from_dynamic(self.local_settings, cluster.config.value,
                                                        self.world.opts.keepalive)
        if self.settings.lease_ttl != self.dcs.ttl or interval != self.keepalive_interval:
            self.end_virtual()
            self.dcs.set_ttl(self.settings.lease_ttl)
            self.keepalive_interval = interval

    def _act(self, action: Action, cluster: ClusterView | None) -> Generator[Step, None, None]:
        kind = BACKGROUND.get(type(action))
        if kind is not None:
            info = TaskInFlight(kind, self.local_now())
            proc = self.world.kernel.spawn(execute(self, action, cluster), self.name, action.kind,
                                           on_exit=self._background_done)
            self.background = (proc, info)
            return
        outcome = yield from execute(self, action, cluster)
        self.book.outcomes.append(outcome)
        if isinstance(action, Shutdown):
            self.end_virtual()
            self.finished = True
            self.world.recorder.event(self.world.now, self.name, "agent stopped")
        if not isinstance(action, NO_REPROBE):
            # PostgreSQL changed: the member key gets the truth, not the cycle's probe.
            self.world.refresh()
            self.pg = observe.local_pg(self.world, self.name)

    def _background_done(self, outcome: Outcome) -> None:
        self.book.outcomes.append(outcome)
        self.background = None
        self.book.requests.finished(outcome)
        self.wake()


def within(operation: Generator[Step, None, _T], limit: float, message: str) -> Generator[Step, None, _T]:
    """asyncio.wait_for for a simulated operation: run it, but give up after `limit` global seconds
    (raising SimDcsError(message)) if it has not finished by then. The operation is abandoned where
    it stands, like a cancelled coroutine: what it already applied stays applied."""
    elapsed = 0.0
    try:
        step = next(operation)
        while True:
            wait = step.seconds if isinstance(step, Nap) else step
            if elapsed + wait > limit:
                yield max(limit - elapsed, 0.0)
                raise SimDcsError(message)
            yield step
            elapsed += wait
            step = operation.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        operation.close()


def settings_from_dynamic(local: HaSettings, dynamic: Any, keepalive: bool = True) -> tuple[HaSettings, float | None]:
    """HaSettings and the keepalive interval from the simulator's /config value, through the agent's own
    reading (`parse_dynamic`) and derivation (`ha_settings_from`). Without a keepalive (Patroni's
    behaviour) the lease is `ttl`."""
    config, _ = parse_dynamic(dynamic or None, notes=False)
    if not keepalive:
        config = replace(config, pgwarden=replace(config.pgwarden, lease_ttl=None))
    return ha_settings_from(config, tags=local.tags, watchdog=local.watchdog), config.pgwarden.keepalive_interval
