"""The HA loop's bookkeeping, without IO: what the agent's loop and the simulator's share.

`LoopBook` holds what the loop carries from one cycle to the next besides the cluster it saw: the
core's memory, the outcomes not yet shown to the core, the send time of the last lease keepalive,
when the last cycle ended, and the operator request waiting for a decision (`RequestBook`). Its
methods are the loop's rules: how long a leader's DCS read may take, when the keepalive may run,
what to do when `decide` raises, how long to nap, the lock deadline the REST API publishes. The
agent's loop (`agent/loop.py`) and the simulator's (`sim/agent.py`) are drivers around it that only
add their own IO and their own clock.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from pgwarden.core.actions import (
    AcquireLeader,
    Action,
    Bootstrap,
    Decision,
    Demote,
    DemoteMode,
    Promote,
    Reinitialize,
    ReleaseLeader,
    RenewLeader,
    Restart,
    Wait,
)
from pgwarden.core.classify import needs_peer_statuses
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.snapshot import (
    ActionKind,
    FailsafePingSeen,
    HaSettings,
    Memory,
    OperatorRequest,
    Outcome,
    PeerStatus,
    RestartRequested,
    Snapshot,
    TaskInFlight,
    TaskKind,
)
from pgwarden.model import ClusterView, LocalPg

READ_STOP_BUDGET = 0.5
"""Seconds kept, after a bounded DCS read, to stop PostgreSQL before the lock deadline."""
FAILSAFE_ROUND_RESERVE = 1.0
"""In failsafe mode, seconds a leader's DCS read also leaves for a round of failsafe pings (answered
in milliseconds on a LAN) before the deadline: a read that hangs must not eat the time to ask the members."""
MIN_NAP = 0.05
MIN_NAP_AFTER_FAILURE = 1.0
"""A cycle whose last action failed waits at least this long before the next (no busy retry loop)."""
FALLBACK_MARGIN = 1.0
"""When `decide` raises, a primary whose lease is not proven for this many more seconds is stopped."""
KEEPALIVE_STALL_CYCLES = 2
"""The keepalive stops once the HA loop has not completed a cycle for this many loop_waits (+2 s)."""
NO_REPROBE = (Wait, RenewLeader, AcquireLeader, ReleaseLeader)
"""Actions that leave PostgreSQL as it was: the member key may be written from the cycle's probe."""


def read_budget(left: float, paused: bool, reserve: float = 0.0) -> float | None:
    """How long a leader's DCS read may take, `left` seconds before its lock deadline: None for no
    bound beyond the client's own timeout, 0 or less for no read at all.

    Before the deadline the read must leave READ_STOP_BUDGET to stop PostgreSQL, so close to it there
    is no read. Past it, an unpaused agent does not read either: the core stops a primary at once
    without a read (a read hanging until its timeout would only delay that), and a keepalive that
    proves a new lease brings the reads back. In maintenance mode, though, a primary keeps running
    past its lease by design, and only a read can show it that the operator resumed and another
    member took over (then it demotes): it reads normally, with the client's own timeout.
    `reserve`: seconds more to leave before the deadline (FAILSAFE_ROUND_RESERVE in failsafe mode).
    """
    if left > READ_STOP_BUDGET + reserve:
        return left - READ_STOP_BUDGET - reserve
    return None if left <= 0 and paused else 0.0


def keepalive_stall_limit(loop_wait: float) -> float:
    """Seconds since the last completed cycle after which the keepalive stops."""
    return KEEPALIVE_STALL_CYCLES * loop_wait + 2


def fallback_decision(snapshot: Snapshot) -> Decision:
    """What the loop does when `decide` raised (a bug), fixed in advance and independent of the core:
    never renew, and stop a primary whose last proven lease is about to lapse, so the keepalive
    (which stops once cycles stop completing) can never leave a writer behind."""
    deadline = snapshot.memory.lock_deadline
    must_stop = snapshot.pg.is_primary and (deadline is None or snapshot.now >= deadline - FALLBACK_MARGIN)
    action: Action = Demote(DemoteMode.IMMEDIATE_NOLOCK) if must_stop else Wait()
    return Decision(action, Reason(Why.NO_ACTION), snapshot.now + 1, snapshot.memory)


def must_stop_after_failed_cycle(is_primary: bool, deadline: float | None, now: float) -> bool:
    """A whole cycle raised: the same rule as `fallback_decision` for the loop's emergency stop."""
    return is_primary and (deadline is None or now >= deadline - FALLBACK_MARGIN)


@dataclass
class RequestBook:
    """At most one operator request (POST /restart, /reinitialize) at a time: given to the core until
    it is refused or started; once started, kept until the action's outcome arrives."""

    request: OperatorRequest | None = None
    due: float = 0.0
    """Wall time from which the request is due (a scheduled restart)."""
    started: bool = False

    def submit(self, request: OperatorRequest, due: float = 0.0) -> bool:
        """False (409) when one is pending already."""
        if self.request is not None:
            return False
        self.request, self.due, self.started = request, due, False
        return True

    def due_request(self, wall: float) -> OperatorRequest | None:
        """The request for this snapshot: the pending one, if due and not started yet."""
        if self.request is None or self.started or wall < self.due:
            return None
        return self.request

    def decided(self, decision: Decision) -> bool | None:
        """The core answered the pending request: True started (the outcome follows), False refused
        (dropped), None when nothing was waiting for an answer."""
        if self.request is None or self.started:
            return None
        wanted = Restart if isinstance(self.request, RestartRequested) else Reinitialize
        if isinstance(decision.action, wanted):
            self.started = True
            return True
        self.request = None
        return False

    def finished(self, outcome: Outcome) -> OperatorRequest | None:
        """The started request whose action just ended (then dropped), else None."""
        if self.request is None or not self.started:
            return None
        if outcome.action not in (ActionKind.RESTART, ActionKind.REINITIALIZE):
            return None
        request, self.request = self.request, None
        return request


@dataclass
class LoopBook:
    """What the HA loop carries between cycles (see the module docstring)."""

    memory: Memory = field(default_factory=Memory)
    outcomes: list[Outcome] = field(default_factory=list)
    keepalive_sent_at: float | None = None
    """Send time of the last successful lease keepalive."""
    last_cycle_end: float = 0.0
    """When the last cycle ended (0.0 until the first has)."""
    requests: RequestBook = field(default_factory=RequestBook)
    failsafe_ping: FailsafePingSeen | None = None
    """The last `POST /failsafe` this member accepted (`accept_failsafe_ping`)."""
    racing: bool = False
    """The decision being carried out may make this member a primary (a race, a promotion, a bootstrap)."""

    def take_outcomes(self) -> tuple[Outcome, ...]:
        """The outcomes for the next snapshot (each shown to the core once)."""
        taken = tuple(self.outcomes)
        self.outcomes.clear()
        return taken

    def adopt(self, decision: Decision) -> None:
        self.memory = decision.memory
        self.racing = isinstance(decision.action, AcquireLeader | Promote | Bootstrap)

    def accept_failsafe_ping(self, leader: str, me: str, now: float, *, enabled: bool, primary: bool,
                             task: TaskInFlight | None) -> bool:
        """A leader's `POST /failsafe` (failsafe mode, it cannot reach the DCS): accept it, and remember it
        for the core (`Snapshot.failsafe_ping`: no race while it is fresh), unless this member is, or may
        be about to become, a primary itself: then it refuses (Patroni's 500 "Running as a leader") and
        the pinging leader must stop. Checked and recorded in one step, with no wait in between, and
        never while a decision to race or promote is being carried out (`racing`): an acceptance and a
        race of this member can never both happen. Refused, too, when failsafe mode is off here: the
        core would not honour the acceptance."""
        promoting = task is not None and task.kind in (TaskKind.PROMOTE, TaskKind.BOOTSTRAP)
        if not enabled or leader == me or primary or self.memory.lock_deadline is not None or self.racing or promoting:
            return False
        self.failsafe_ping = FailsafePingSeen(leader, now)
        return True

    def failsafe_active(self, settings: HaSettings, now: float) -> bool:
        """For the REST API (`failsafe_mode_is_active`): the leader runs on accepted pings, or this member
        accepted a leader's ping less than a lease ago."""
        if not settings.failsafe_mode:
            return False
        ping = self.failsafe_ping
        return self.memory.failsafe_active or (ping is not None and now < ping.received_at + settings.lease_ttl)

    def may_feed_watchdog(self, settings: HaSettings, sent: float, now: float) -> bool:
        """After a successful lease keepalive sent at `sent`: may it keep the watchdog alive? Only on a
        leader (the keepalive then refreshed the leader key's lease) and only while that keepalive proves
        the lease for longer than the watchdog's timeout (`HaSettings.may_feed_watchdog`)."""
        return (settings.watchdog.active and self.memory.lock_deadline is not None
                and settings.may_feed_watchdog(sent, now))

    def published_lock_deadline(self, settings: HaSettings, holds_lock: bool) -> float | None:
        """The core's lock deadline, moved on by keepalives sent since the last decision."""
        deadline = self.memory.lock_deadline
        if not holds_lock or deadline is None:
            return None
        if self.keepalive_sent_at is not None:
            deadline = max(deadline, settings.lock_deadline(self.keepalive_sent_at))
        return deadline

    def read_budget(self, settings: HaSettings, now: float) -> float | None:
        """How long this cycle's DCS read may take (`read_budget`); None: no bound of the loop's own."""
        deadline = self.published_lock_deadline(settings, self.memory.lock_deadline is not None)
        if deadline is None:
            return None
        reserve = FAILSAFE_ROUND_RESERVE if settings.failsafe_mode else 0.0
        return read_budget(deadline - now, self.memory.paused_when_last_seen, reserve)

    def keepalive_allowed(self, now: float, loop_wait: float, stopping: bool) -> bool:
        """The keepalive only extends what a live HA loop holds: not before the first cycle, not once
        cycles stop completing (the lease then runs out as if the agent had died), not when stopping."""
        if self.last_cycle_end == 0.0 or stopping:
            return False
        return now - self.last_cycle_end <= keepalive_stall_limit(loop_wait)

    def wake_after_keepalive(self, settings: HaSettings, ok: bool) -> bool:
        """Should a keepalive's outcome cut the HA loop's nap short? A leader's failed keepalive in
        failsafe mode: the DCS may be gone, and the time left to ask the members is the lease's."""
        return not ok and settings.failsafe_mode and self.memory.lock_deadline is not None

    def keepalive_done(self, ok: bool, sent: float, leads_on_lease: bool = True) -> Outcome:
        """Record a keepalive; its outcome goes to the next decision like any other's. On a leader it counts
        only if the leader key is on the lease it refreshed (`leads_on_lease`): after the key expired with
        its lease (a long DCS outage ridden out in failsafe mode), a keepalive of the new lease proves nothing
        about the key, and must not extend the lock (simulator seed 19883)."""
        ok = ok and (leads_on_lease or self.memory.lock_deadline is None)
        if ok:
            self.keepalive_sent_at = sent
        return Outcome(action=ActionKind.KEEPALIVE, ok=ok, sent_at=sent)

    def nap(self, decision: Decision, started: float, now: float) -> float:
        """Seconds to nap after a cycle that started at `started`: until the decision's wake-up, but
        never a busy loop, and at least MIN_NAP_AFTER_FAILURE after a failed action."""
        last = self.outcomes[-1] if self.outcomes else None
        floor = MIN_NAP_AFTER_FAILURE if last is not None and not last.ok else MIN_NAP
        return max(decision.wake_at - now, floor - (now - started))



# ---------------------------------------------------------------------------------------------------
# One HA cycle, as a generator of the loop's effects: the agent's loop and the simulator's drive it.


@dataclass(frozen=True, slots=True)
class ReadCluster:
    """-> ClusterView | None: one read of the scope, bounded by `LoopBook.read_budget` (None: the DCS
    could not be read in time)."""


@dataclass(frozen=True, slots=True)
class ProbeLocal:
    """-> LocalPg: probe the local PostgreSQL (what the member key and the REST API then show)."""


@dataclass(frozen=True, slots=True)
class RefreshSettings:
    """-> HaSettings: adopt the configuration `cluster`'s `/config` makes (kept while the DCS is away);
    `pg` is this cycle's probe (a driver may wait briefly for a validation in flight when PostgreSQL
    is down: what happens after a crash may depend on the new configuration)."""

    cluster: ClusterView | None
    pg: LocalPg


@dataclass(frozen=True, slots=True)
class Stopping:
    """-> bool: the agent was asked to stop."""


@dataclass(frozen=True, slots=True)
class FetchPeers:
    """-> tuple[PeerStatus, ...]: every other member's status, asked in parallel."""

    cluster: ClusterView


@dataclass(frozen=True, slots=True)
class TaskRunning:
    """-> bool: is a background task (a clone, a rewind, a start...) running, just before the probe?"""


@dataclass(frozen=True, slots=True)
class Moment:
    """-> MomentSample: the clocks and the agent's own state, sampled once after observation."""


@dataclass(frozen=True, slots=True)
class MomentSample:
    now: float
    """The monotonic clock."""
    wall: float
    task: TaskInFlight | None
    """The background task in flight."""
    stopping: bool
    watchdog_failed: bool = False
    """Mode required and the watchdog device unusable (the driver's probe)."""


@dataclass(frozen=True, slots=True)
class DecideFailed:
    """-> None: `decide` raised (a bug): say so loudly; the cycle goes on with `fallback_decision`."""

    error: Exception


@dataclass(frozen=True, slots=True)
class Decided:
    """-> None: the decision is made and adopted (log it, record it, publish the new state).
    `request` is the operator request it answered, `started` whether it started it (False: refused)."""

    snapshot: Snapshot
    decision: Decision
    request: OperatorRequest | None = None
    started: bool | None = None


@dataclass(frozen=True, slots=True)
class Act:
    """-> None: carry out the decision's action (in the background if long, `engine.steps.BACKGROUND`;
    else now, its outcome appended to the book), on the snapshot's cluster view."""

    decision: Decision
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class PublishMember:
    """-> None: write this member's key (after acting, so it shows what the action did)."""

    cluster: ClusterView


@dataclass(frozen=True, slots=True)
class CycleEnded:
    """-> float: the cycle is over (count it); answers the monotonic clock."""

    decision: Decision
    cluster: ClusterView | None
    started: float


LoopEffect = (ReadCluster | TaskRunning | ProbeLocal | RefreshSettings | Stopping | FetchPeers | Moment | DecideFailed
              | Decided | Act | PublishMember | CycleEnded)
DecideFn = Callable[[Snapshot], Decision]


def cycle(book: LoopBook, me: str, decide: DecideFn) -> Generator[LoopEffect, Any, Decision]:
    """Observe, decide, act, publish: one HA cycle, in the order both loops follow.

    The DCS is read first, then PostgreSQL probed (again if a background task ended meanwhile), peers
    asked only when `needs_peer_statuses` says a race or a handover needs them, `now` sampled once after
    observation; the outcomes since the last cycle go to the core once; the member key is written after
    acting.
    """
    cluster: ClusterView | None = yield ReadCluster()
    busy: bool = yield TaskRunning()
    pg: LocalPg = yield ProbeLocal()
    settings: HaSettings = yield RefreshSettings(cluster, pg)
    peers: tuple[PeerStatus, ...] = ()
    if cluster is not None and needs_peer_statuses(cluster, me, (yield Stopping())):
        peers = yield FetchPeers(cluster)
    moment: MomentSample = yield Moment()
    if busy and moment.task is None:
        # The task ended after the probe: its outcome goes to the core now, with what it left behind (a
        # finished clone's data directory), not with the directory as it was mid-task (which, empty, would
        # ask for another clone).
        pg = yield ProbeLocal()
    request = book.requests.due_request(moment.wall)
    # The failsafe ping is read here, in the same step as the decision: no acceptance can slip in between
    # (`LoopBook.accept_failsafe_ping`).
    snapshot = Snapshot(me=me, now=moment.now, settings=settings, pg=pg, dcs=cluster, peers=peers,
                        memory=book.memory, last=book.take_outcomes(), task=moment.task, shutting_down=moment.stopping,
                        wall=moment.wall, request=request, failsafe_ping=book.failsafe_ping,
                        watchdog_failed=moment.watchdog_failed)
    try:
        decision = decide(snapshot)
    except Exception as exc:
        yield DecideFailed(exc)
        decision = fallback_decision(snapshot)
    started = book.requests.decided(decision) if request is not None else None
    book.adopt(decision)
    yield Decided(snapshot, decision, request, started)
    yield Act(decision, snapshot)
    if cluster is not None:
        yield PublishMember(cluster)
    book.last_cycle_end = yield CycleEnded(decision, cluster, moment.now)
    return decision
