"""decide(snapshot) -> Decision: the whole HA policy of one node, as a pure function.

Shape (see docs/ARCHITECTURE.md):
1. `remember` folds the previous action's outcome into Memory (lease deadline, failure counters).
2. GUARDS run in order; the first that returns a decision wins. Their order is the safety order:
   shutdown, an action already running, an unreachable DCS, an unusable data directory, a foreign
   system identifier.
3. Otherwise the (lock, PostgreSQL) pair picks one handler from RULES. Every pair of the product is
   listed, so a missing combination is a test failure, not a silent fall-through.

Nothing here does IO, reads a clock, logs, or keeps state between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from pgwarden.core.actions import (
    AcquireLeader,
    Action,
    Bootstrap,
    BootstrapStandby,
    Clone,
    CopyLogicalSlots,
    Decision,
    Demote,
    DemoteMode,
    EnsureSlots,
    FailsafeKeyWrite,
    FailsafeRound,
    Follow,
    Promote,
    Reinitialize,
    ReleaseLeader,
    RemoveDataDirectory,
    RenewLeader,
    Restart,
    Rewind,
    Shutdown,
    StartPostgres,
    Wait,
)
from pgwarden.core.classify import (
    Lock,
    PgClass,
    local_timeline,
    lock_state,
    pg_class,
    slot_name,
    switch_lsn,
    was_primary,
)
from pgwarden.core.race import failover_possible, replica_race, within_lag
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.slots import (
    COPY_WAITING,
    copy_backoff,
    leads_replication,
    logical_ready,
    permanent_here,
    plan_copies,
    plan_logical_copies,
    plan_primary,
    remember_copies,
)
from pgwarden.core.snapshot import ActionKind as K
from pgwarden.core.snapshot import (
    HaSettings,
    Memory,
    Outcome,
    ReinitRequested,
    RestartRequested,
    Snapshot,
    StandbyCluster,
    TaskKind,
    WatchdogMode,
)
from pgwarden.core.sync.plan import NoChange, SyncStep, plan_sync
from pgwarden.core.sync.promotion import pre_promote_step, pre_promote_sync, switchover_allowed
from pgwarden.core.sync.reasons import render_sync
from pgwarden.model import (
    LSN,
    ClusterView,
    DataDirState,
    FailoverRequest,
    Member,
    PgState,
    Role,
    is_system_identifier,
    timeline_to_claim,
)

# How often to look again while something is in motion (starting, a task running, DCS down).
SHORT_NAP = 1.0
FAILSAFE_PING_TIMEOUT = 2.0
"""Seconds a member may take to answer a failsafe ping (Patroni's)."""
FAILSAFE_STOP_RESERVE = 0.5
FAILSAFE_MIN_TIMEOUT = 0.2
"""A failsafe round keeps FAILSAFE_STOP_RESERVE of the lease to stop PostgreSQL after it; with less
than FAILSAFE_MIN_TIMEOUT left for the answers, no round is started."""
MAX_START_FAILURES = 3
MAX_BOOTSTRAP_FAILURES = 3
"""Failed bootstraps (won the initialize race, then initdb, the start or a later step failed) after
which the agent gives up and exits non-zero, naming the cause: a configuration PostgreSQL refuses
does not fix itself, and each attempt costs a new data directory's worth of writes."""
RETRY_BACKOFF_FIRST = 5.0
RETRY_BACKOFF_MAX = 30.0
"""Between failed bootstraps or clones: 5 s, 10 s, 20 s, then every 30 s (`retry_backoff`)."""


START_BACKOFF_MAX = 30.0


def _optime(s: Snapshot, observed: LSN | None) -> LSN | None:
    """The optime a renewal or a release writes to `/status`: what a running primary observed, else
    the one the DCS has. Writing none would erase the only record of how far the cluster's WAL went,
    and the next race, which checks maximum_lag_on_failover against it, would let any replica,
    however far behind, promote (a renewal during a restart or a promotion, a release after a crash)."""
    if observed is not None or s.dcs is None:
        return observed
    return s.dcs.status.optime


def failsafe_targets(cluster: ClusterView, me: str) -> tuple[tuple[str, str], ...]:
    """The members (name, api_url) a leader cut off from the DCS must reach in failsafe mode: every one
    the `/failsafe` key lists, and every member with a REST address, which the leader's next renewal
    writes there (`failsafe_key`). Both: the key in the DCS may already be the one this leader wrote
    after the read (members that came back from an outage), and each member it lists may race once the
    leader key expires; pinging fewer would let one of them promote beside us (simulator seed 625).
    Never this member itself."""
    listed = dict(cluster.failsafe or {})
    for m in cluster.members:
        if m.api_url:
            listed.setdefault(m.name, m.api_url)
    return tuple(sorted((name, url) for name, url in listed.items() if name != me))


def failsafe_key(s: Snapshot) -> tuple[tuple[str, str], ...] | None:
    """What the leader keeps in `/failsafe`: every member with a REST address, itself included (None:
    failsafe mode is off, no key)."""
    if not s.settings.failsafe_mode:
        return None
    return tuple(sorted((m.name, m.api_url) for m in _cluster(s).members if m.api_url))


def _failsafe_leader(s: Snapshot) -> str | None:
    """The leader whose `POST /failsafe` this member accepted less than a lease ago, if any: it was
    running as the primary, cut off from the DCS but not from us, and it goes on writing only as long as
    every member it pings accepts, each acceptance counting as a renewal of its lease. So we do not race
    it while the acceptance is fresh, whatever the DCS says of its key."""
    ping = s.failsafe_ping
    if not s.settings.failsafe_mode or ping is None or ping.leader == s.me:
        return None
    return ping.leader if s.now < ping.received_at + s.settings.lease_ttl else None


def start_backoff(failures: int) -> float:
    """Seconds to wait after the `failures`-th failed start in a row: 1, 2, 4, 8, 16, then every 30 s.
    A postmaster that refuses its configuration fails in milliseconds; without a pause the agent started
    it again every cycle (issue 20: 298 attempts in 40 s)."""
    return min(START_BACKOFF_MAX, 2.0 ** max(0, min(failures, 16) - 1))


def retry_backoff(failures: int) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1-based) of a bootstrap or clone."""
    return min(RETRY_BACKOFF_MAX, RETRY_BACKOFF_FIRST * 2.0 ** max(0, min(failures, 16) - 1))


def decide(s: Snapshot) -> Decision:
    memory = remember(s)
    if memory is not s.memory:
        s = replace(s, memory=memory)
    for guard in GUARDS:
        decision = guard(s)
        if decision is not None:
            return decision
    return RULES[(lock_state(s), pg_class(s.pg))](s)


# ---------------------------------------------------------------------------------------------------
# Memory


def remember(s: Snapshot) -> Memory:
    """Fold the last outcomes and this observation into what the core remembers."""
    m = s.memory
    for last in s.last:
        m = _absorb(m, last, s.settings)
    if s.dcs is not None and m.paused_when_last_seen != s.dcs.paused:
        m = replace(m, paused_when_last_seen=s.dcs.paused)
    if s.dcs is not None:
        targets = failsafe_targets(s.dcs, s.me) if s.settings.failsafe_mode else ()
        if targets != m.failsafe_members or m.failsafe_active:
            m = replace(m, failsafe_members=targets, failsafe_active=False)
    if m.lock_deadline is not None and s.now >= m.lock_deadline and not s.pg.is_primary:
        # The lease may be somebody else's by now and no writer is left to stop: forget it. Kept, it would
        # also keep the loop from reading the DCS (`engine.loop.read_budget`: no read past the deadline),
        # and only a keepalive proving our leader key could bring the reads back (simulator seed 1,
        # tests/sim/test_sim.py, once keepalives of a lease without our key stopped counting).
        m = replace(m, lock_deadline=None)
    lock = lock_state(s)
    if lock in (Lock.OTHER, Lock.NONE) and (m.lock_deadline is not None or m.start_deadline is not None):
        m = replace(m, lock_deadline=None, start_deadline=None)
    if lock is Lock.MINE and s.pg.accepting and (m.start_deadline is not None or m.start_failures != 0):
        m = replace(m, start_deadline=None, start_failures=0)
    if pg_class(s.pg) not in (PgClass.NO_DATA, PgClass.UNUSABLE) and s.task is None and _retrying(m):
        # A usable data directory: whatever failed before (a bootstrap, a clone) is over.
        m = replace(m, bootstrap_failures=0, clone_failures=0, retry_at=None, last_failure="")
    ready = logical_ready(replace(s, memory=m))
    if ready != m.logical_slots_ready:
        m = replace(m, logical_slots_ready=ready)
    return m


def _retrying(m: Memory) -> bool:
    return m.bootstrap_failures != 0 or m.clone_failures != 0 or m.retry_at is not None


def _absorb(m: Memory, last: Outcome, settings: HaSettings) -> Memory:
    if last.action in (K.RENEW_LEADER, K.ACQUIRE_LEADER, K.BOOTSTRAP, K.PROMOTE) and last.ok:
        m = replace(m, lock_deadline=settings.lock_deadline(last.sent_at))
    elif last.action == K.KEEPALIVE and last.ok and m.lock_deadline is not None:
        # The lease keepalive (apart from the HA cycle) extends a lock we already hold; it never
        # creates one.
        extended = settings.lock_deadline(last.sent_at)
        if extended > m.lock_deadline:
            m = replace(m, lock_deadline=extended)
    elif last.action == K.FAILSAFE_PING:
        # Every listed member accepted a ping sent while we held the lease: none of them races us for
        # a lease from its receipt (`_failsafe_leader`), and nobody else may race at all, so it proves
        # the lock as a keepalive would. Like a keepalive it never creates a lock, nor revives a lapsed one.
        held = m.lock_deadline is not None and last.sent_at < m.lock_deadline
        if last.ok and held:
            assert m.lock_deadline is not None
            m = replace(m, lock_deadline=max(m.lock_deadline, settings.lock_deadline(last.sent_at)),
                        failsafe_active=True)
        elif m.failsafe_active:
            m = replace(m, failsafe_active=False)
    elif last.action in (K.DEMOTE, K.RELEASE_LEADER, K.SHUTDOWN):
        m = replace(m, lock_deadline=None, failsafe_active=False)
    if last.action == K.REWIND:
        m = replace(m, rewind_failed=not last.ok, diverged=m.diverged and not last.ok)
    if last.action == K.COPY_SLOTS:
        # A failed (or waiting) copy restarted PostgreSQL, or may have: back off, so a copy that cannot
        # succeed never loops restarts.
        # A copy that waits (nothing was stopped: the leader is unreachable, the WAL the slot needs is too
        # much to fetch or the leader lacks it, or a long fetch goes on at the next attempt) is retried
        # sooner, without doubling.
        waiting = not last.ok and last.detail.startswith(COPY_WAITING)
        failures = 0 if last.ok else m.slot_copy_failures + (0 if waiting else 1)
        retry = None if last.ok else last.sent_at + copy_backoff(settings, 0 if waiting else failures)
        m = replace(m, slot_copy_failures=failures, slot_copy_retry_at=retry)
    # K.REWIND_SOURCE_UNREACHABLE, K.REWIND_NO_SPACE: nothing was tried; the next cycle rewinds again.
    if last.action == K.PRE_PROMOTE_REFUSED and not last.ok:
        m = replace(m, promote_backoff_until=last.sent_at + settings.ttl, lock_deadline=None)
    if last.action == K.WATCHDOG_FAILED:
        # No race for a ttl (Patroni's backoff after a refused promotion); on a leader the renewal's
        # outcome makes the next decision demote (`mine_primary`).
        m = replace(m, promote_backoff_until=last.sent_at + settings.ttl)
    if last.action == K.START:
        m = replace(m, start_failures=0 if last.ok else m.start_failures + 1)
    if last.action in (K.START, K.RESTART):
        retry_at = None if last.ok else last.sent_at + start_backoff(max(1, m.start_failures))
        m = replace(m, start_retry_at=retry_at)
    if last.action in (K.REMOVE_DATA, K.REINITIALIZE, K.CLONE) and last.ok:
        m = replace(m, rewind_failed=False, diverged=False)
    if last.action in (K.BOOTSTRAP, K.CLONE, K.REINITIALIZE):
        m = _count_setup(m, last)
    return m


def _count_setup(m: Memory, last: Outcome) -> Memory:
    """A bootstrap or clone (a reinitialize clones too) finished: reset the counters on success, else
    count the failure and set when the next attempt may start (exponential backoff)."""
    if last.ok:
        return replace(m, bootstrap_failures=0, clone_failures=0, retry_at=None, last_failure="")
    if last.action == K.BOOTSTRAP:
        failures, m = m.bootstrap_failures + 1, replace(m, bootstrap_failures=m.bootstrap_failures + 1)
    else:
        failures, m = m.clone_failures + 1, replace(m, clone_failures=m.clone_failures + 1)
    return replace(m, retry_at=last.sent_at + retry_backoff(failures), last_failure=last.detail)


# ---------------------------------------------------------------------------------------------------
# Helpers


def _d(s: Snapshot, action: Action, why: Why, *, nap: float | None = None, memory: Memory | None = None,
       **facts: object) -> Decision:
    regular = s.now + (s.settings.loop_wait if nap is None else nap)
    wake, bounded_by_lock = regular, None
    if s.memory.lock_deadline is not None:
        # A leader must get another chance to renew before its deadline (the keepalive usually has
        # moved it on by then); close to it, it looks again every SHORT_NAP (never in a busy loop).
        renew_by = s.memory.lock_deadline - SHORT_NAP
        wake = min(regular, renew_by if renew_by > s.now else s.now + SHORT_NAP)
        bounded_by_lock = regular if wake < regular else None
    return Decision(
        action=action,
        reason=Reason(why, tuple((k, str(v)) for k, v in sorted(facts.items()))),
        wake_at=wake,
        memory=memory or s.memory,
        regular_wake_at=bounded_by_lock,
    )


def extended_wake(decision: Decision, lock_deadline: float | None, now: float) -> float | None:
    """How long the nap after `decision` may go on at `now`, its `wake_at` reached, now that the lock
    is proven until `lock_deadline` (moved on by keepalives since the decision): the decision's
    regular wake-up, or SHORT_NAP before that deadline if earlier. None: run the cycle now.

    Without this, a leader whose keepalive renews its lease every second would still run a whole
    HA cycle every few seconds only to learn that the lease holds.
    """
    regular = decision.regular_wake_at
    if regular is None or lock_deadline is None or regular <= now:
        return None
    renew_by = lock_deadline - SHORT_NAP
    if renew_by <= now:
        return None
    return min(regular, renew_by)


def _cluster(s: Snapshot) -> ClusterView:
    assert s.dcs is not None, "rules run only with a DCS view"
    return s.dcs


def _lock_valid(s: Snapshot) -> bool:
    return s.memory.lock_deadline is not None and s.now < s.memory.lock_deadline


def _leader_name(s: Snapshot) -> str:
    cluster = _cluster(s)
    assert cluster.leader is not None
    return cluster.leader.name


def _is_running(member: Member | None) -> bool:
    return member is not None and member.state == PgState.RUNNING


def _is_running_primary(member: Member | None) -> bool:
    return _is_running(member) and member is not None and member.role in (Role.PRIMARY, "master")


def _renew(s: Snapshot, why: Why, *, nap: float | None = None, clear_failover: int | None = None,
           **facts: object) -> Decision:
    """RenewLeader with this cycle's slot plan and, if needed, the system identifier for `initialize`."""
    cluster = _cluster(s)
    slots = plan_primary(s)
    memory = slots.memory
    sysid = s.pg.sysid if s.pg.sysid and cluster.initialize != s.pg.sysid else None
    sync_step: SyncStep | None = None
    if s.pg.is_primary and _lock_valid(s):
        plan = plan_sync(s.me, cluster, s.pg, s.pg.synchronous_standby_names or "", s.settings.sync, memory.sync)
        memory = replace(memory, sync=plan.memory)
        if not isinstance(plan.step, NoChange):
            sync_step = plan.step
            facts = {**facts, "sync": render_sync(plan.why, plan.facts)}
            why = Why.SYNC_STEP if why is Why.LOCK_HELD else why
        if plan.again_soon:
            nap = SHORT_NAP if nap is None else min(nap, SHORT_NAP)
    if sysid and is_system_identifier(cluster.initialize) and why is Why.LOCK_HELD:
        why, facts = Why.SYSID_RESTORED, {**facts, "mine": sysid, "cluster": cluster.initialize}
    repair = s.task is None and _history_incomplete(s)
    wanted = failsafe_key(s)
    have = tuple(sorted(cluster.failsafe.items())) if cluster.failsafe is not None else None
    failsafe = FailsafeKeyWrite(wanted) if wanted != have else None
    primary = leads_replication(s) and s.settings.use_slots
    standby_leader = _standby_leader(s)
    # A standby leader publishes how far it has received or replayed: the next race's lag check needs it.
    observed = s.pg.lsn if standby_leader else s.pg.wal_lsn
    action = RenewLeader(optime=_optime(s, observed), create_slots=slots.create, drop_slots=slots.drop,
                         retain_slots=slots.retain if primary else None, slots=slots.publish if primary else None,
                         write_initialize=sysid,
                         clear_failover=clear_failover, sync_step=sync_step, repair_history=repair,
                         watchdog=_watchdog_on(s) and not standby_leader, failsafe=failsafe,
                         create_logical=slots.create_logical, error=slots.blocked)
    return _d(s, action, why, nap=nap, memory=memory, name=s.me, **facts)


def _standby_leader(s: Snapshot) -> bool:
    """This node runs as the standby leader: a standby cluster's lock holder, in recovery. It writes
    nothing, so it needs no watchdog."""
    return s.settings.standby_cluster is not None and s.pg.is_replica and lock_state(s) is Lock.MINE


def _watchdog_on(s: Snapshot) -> bool:
    return _watchdog_wanted(s) is not WatchdogMode.OFF


def _watchdog_wanted(s: Snapshot) -> WatchdogMode:
    """The watchdog mode a leader runs with now: off in maintenance mode (Patroni disables it there:
    the operator may stop the agent, and a primary left running must not reset its host)."""
    return WatchdogMode.OFF if s.paused else s.settings.watchdog.mode


def _history_incomplete(s: Snapshot) -> bool:
    """Does `history` lack a timeline this primary's PostgreSQL went through (a lost write, at the end
    or in the middle)? Only the last `max_timelines_history` timelines count when that is set."""
    tl = s.pg.timeline
    if not s.pg.is_primary or tl is None or tl <= 1:
        return False
    known = {h.timeline for h in _cluster(s).history}
    limit = s.settings.max_timelines_history
    first = max(1, tl - limit) if limit > 0 else 1
    return any(t not in known for t in range(first, tl))


def _upstream(s: Snapshot) -> str:
    """Whom a replica should stream from: its replicatefrom member when that one runs, else the leader;
    the standby leader (a standby cluster's lock holder) follows the remote primary."""
    cluster = _cluster(s)
    standby = s.settings.standby_cluster
    if standby is not None and cluster.led_by(s.me):
        return standby.follow_name
    wanted = s.settings.tags.replicatefrom
    if wanted and wanted != s.me and _is_running(cluster.member(wanted)):
        return wanted
    return _leader_name(s)


def _clone_source(s: Snapshot) -> str | None:
    """A running member to copy the data directory from: a `clonefrom` member, else the leader."""
    cluster = _cluster(s)
    others = [m for m in cluster.members if m.name != s.me and _is_running(m)]
    tagged = [m.name for m in others if m.tags.clonefrom]
    if tagged:
        return tagged[0]
    if cluster.leader and _is_running(cluster.leader_member):
        return cluster.leader.name
    replicas = [m.name for m in others if m.role == Role.REPLICA]
    return replicas[0] if replicas else None


# ---------------------------------------------------------------------------------------------------
# Guards, in order. Each returns None when it does not apply.


def guard_shutdown(s: Snapshot) -> Decision | None:
    if not s.shutting_down:
        return None
    if s.paused or (s.dcs is None and s.memory.paused_when_last_seen):
        # Maintenance mode: the operator owns PostgreSQL; the agent leaves it and the key alone.
        return _d(s, Shutdown(release=False, optime=None, stop_postgres=False), Why.PAUSED_SHUTDOWN)
    if lock_state(s) is Lock.MINE:
        if failover_possible(s):
            return _d(s, Shutdown(release=True, optime=_optime(s, s.pg.wal_lsn)), Why.SHUTDOWN_HANDOVER)
        if not _promotable_members(s):
            # Nobody may take over (nofailover or failover_priority 0 everywhere): keeping the key
            # would only hide for a lease that there is no leader. As Patroni, release it.
            return _d(s, Shutdown(release=True, optime=_optime(s, s.pg.wal_lsn)), Why.SHUTDOWN_RELEASE)
        return _d(s, Shutdown(release=False, optime=_optime(s, s.pg.wal_lsn)), Why.SHUTDOWN_KEEP)
    return _d(s, Shutdown(release=False, optime=None), Why.SHUTDOWN)


def _promotable_members(s: Snapshot) -> bool:
    """Another member whose tags allow it to promote is registered in the DCS."""
    return s.dcs is not None and any(m.name != s.me and m.tags.can_promote for m in s.dcs.members)


def guard_task(s: Snapshot) -> Decision | None:
    if s.task is None:
        return None
    lock = lock_state(s)
    if lock is Lock.MINE:
        # A promotion, a restart, a restart after a crash: the leader keeps its lock meanwhile.
        return _renew(s, Why.TASK_IN_PROGRESS_RENEW, nap=SHORT_NAP, task=s.task.kind)
    if s.pg.is_primary and not (s.task.kind is TaskKind.BOOTSTRAP and lock is Lock.NONE):
        # E.g. a promotion that completed after the lock was lost: never leave a second writer up. A
        # bootstrap's own new primary runs before it takes the key (after its recovery, post_bootstrap):
        # it won `initialize`, so no other member has data to lead with meanwhile.
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.NOT_LEADER_PRIMARY, nap=0,
                  leader=s.dcs.leader.name if s.dcs and s.dcs.leader else "none")
    return _d(s, Wait(), Why.TASK_IN_PROGRESS, nap=SHORT_NAP, task=s.task.kind)


def guard_request(s: Snapshot) -> Decision | None:
    """An operator's restart or reinitialize: carried out, or refused with the reason."""
    request = s.request
    if request is None:
        return None
    decision = _restart(s, request) if isinstance(request, RestartRequested) else _reinitialize(s, request)
    if isinstance(decision.action, Wait) and s.pg.is_primary and lock_state(s) is Lock.OTHER and not s.paused:
        # A refused request must not keep a primary running under another member's key: the table
        # stops it (the request is answered with that reason).
        return None
    return decision


def _restart(s: Snapshot, request: RestartRequested) -> Decision:
    role = "primary" if s.pg.is_primary else "replica"
    wanted = request.role
    if wanted in ("master", "leader"):
        wanted = "primary"
    if wanted is not None and wanted not in ("any", role):
        return _d(s, Wait(), Why.RESTART_REFUSED, nap=0, detail=f"role is {role}, not {wanted}")
    if request.restart_pending and not s.pg.pending_restart:
        return _d(s, Wait(), Why.RESTART_REFUSED, nap=0, detail="no restart is pending")
    version = s.pg.server_version
    if request.postgres_version is not None and version is not None and version >= request.postgres_version:
        return _d(s, Wait(), Why.RESTART_REFUSED, nap=0, detail=f"server version {version} is not older")
    kind = pg_class(s.pg)
    if kind in (PgClass.NO_DATA, PgClass.UNUSABLE):
        return _d(s, Wait(), Why.RESTART_REFUSED, nap=0, detail="no usable data directory")
    if kind is PgClass.STARTING:
        return _d(s, Wait(), Why.RESTART_REFUSED, nap=0, detail="postgres is still starting")
    if kind is PgClass.STOPPED:
        start = _paused_start(s) if s.paused else None
        if start is not None:
            return start
        # Starting a stopped node is the HA loop's decision (as a primary or a replica), not a restart.
        return _d(s, Wait(), Why.RESTART_REFUSED, nap=0, detail="postgres is not running")
    follow = None if role == "primary" or s.dcs is None or s.dcs.leader is None else _upstream(s)
    return _d(s, Restart(role=role, follow=follow), Why.RESTART, nap=SHORT_NAP)


def _paused_start(s: Snapshot) -> Decision | None:
    """In maintenance mode the HA loop starts nothing, so a restart of a stopped PostgreSQL starts it
    (as Patroni does), in the role its data directory has: a replica (standby.signal) of the leader,
    or a primary, but never a second one: not while another member holds the leader key."""
    lock = lock_state(s)
    if s.pg.standby_signal:
        follow = _upstream(s) if s.dcs is not None and s.dcs.leader is not None and lock is not Lock.MINE else None
        return _d(s, Restart(role="replica", follow=follow), Why.RESTART, nap=SHORT_NAP)
    cluster = _cluster(s)
    if lock is Lock.OTHER or any(m.name != s.me and _is_running_primary(m) for m in cluster.members):
        return None
    return _d(s, Restart(role="primary", follow=None, require_lock=lock is Lock.MINE), Why.RESTART, nap=SHORT_NAP)


def _reinitialize(s: Snapshot, request: ReinitRequested) -> Decision:
    cluster = _cluster(s)
    if lock_state(s) is Lock.MINE:
        return _d(s, Wait(), Why.REINITIALIZE_REFUSED, nap=0, detail="I am the leader, can not reinitialize")
    if cluster.leader is None:
        return _d(s, Wait(), Why.REINITIALIZE_REFUSED, nap=0, detail="Cluster has no leader, can not reinitialize")
    if request.from_leader and not _is_running(cluster.leader_member):
        return _d(s, Wait(), Why.REINITIALIZE_REFUSED, nap=0, detail="the leader is not running")
    source = cluster.leader.name if request.from_leader else _clone_source(s)
    if source is None:
        return _d(s, Wait(), Why.REINITIALIZE_REFUSED, nap=0, detail="no running member to clone from")
    return _d(s, Reinitialize(source=source, follow=cluster.leader.name), Why.REINITIALIZE, nap=SHORT_NAP,
              member=source)


def guard_dcs_down(s: Snapshot) -> Decision | None:
    if s.dcs is not None:
        return None
    if s.memory.paused_when_last_seen:
        # In maintenance mode nothing is stopped, not even a primary that cannot renew its lease:
        # the operator asked pgwarden to keep its hands off.
        return _d(s, Wait(), Why.PAUSED_DCS_DOWN, nap=SHORT_NAP)
    if s.pg.is_primary and s.memory.lock_deadline is not None:
        if _lock_valid(s):
            left = s.memory.lock_deadline - s.now
            if s.settings.failsafe_mode:
                return _failsafe_ping(s, left)
            return _d(s, Wait(), Why.DCS_DOWN_LEADER_WAITING, nap=min(SHORT_NAP, left), left=f"{left:.1f}")
        # Immediate, not fast: a fast stop's shutdown checkpoint could outlast the lease.
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.LEASE_AT_RISK, nap=0)
    if s.pg.is_primary:
        # Primary without a known lease: it cannot prove it may write, so it must stop.
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.LEASE_AT_RISK, nap=0)
    return _d(s, Wait(), Why.DCS_DOWN, nap=SHORT_NAP)


def _failsafe_ping(s: Snapshot, left: float) -> Decision:
    """Failsafe mode, the DCS unreachable, the lease still ours: ask every member to accept us as the
    leader (each round that all accept extends the lease, `_absorb`); a round that fails changes
    nothing, so the next rounds try again until the lock deadline, where the primary stops as without
    failsafe mode (`LEASE_AT_RISK`)."""
    targets = s.memory.failsafe_members
    why = Why.FAILSAFE_ACTIVE if s.memory.failsafe_active else Why.FAILSAFE_PING
    # The round runs inline in the HA loop: it must end in time to stop PostgreSQL at the deadline.
    timeout = min(FAILSAFE_PING_TIMEOUT, left - FAILSAFE_STOP_RESERVE)
    if timeout < FAILSAFE_MIN_TIMEOUT:
        return _d(s, Wait(), Why.DCS_DOWN_LEADER_WAITING, nap=min(SHORT_NAP, left), left=f"{left:.1f}")
    ping = FailsafeRound(targets=targets, timeout=timeout, watchdog=_watchdog_on(s))
    return _d(s, ping, why, nap=min(SHORT_NAP, left), members=len(targets), left=f"{left:.1f}")


def guard_data_dir(s: Snapshot) -> Decision | None:
    kind = pg_class(s.pg)
    if kind not in (PgClass.NO_DATA, PgClass.UNUSABLE):
        return None
    cluster = _cluster(s)
    mine = lock_state(s) is Lock.MINE
    if s.pg.running:
        # A postmaster whose data directory we cannot use must not stay up (it may be a writable
        # primary). Stopping it also releases our key when we hold it.
        mode = DemoteMode.IMMEDIATE if mine else DemoteMode.IMMEDIATE_NOLOCK
        return _d(s, Demote(mode), Why.DATA_DIR_UNUSABLE, nap=0, data_dir=s.pg.data_dir)
    if mine:
        # Patroni's words: "data dir empty" / "data dir not accessible".
        state = {DataDirState.MISSING: "empty", DataDirState.INACCESSIBLE: "not accessible"}.get(
            s.pg.data_dir, str(s.pg.data_dir))
        return _d(s, ReleaseLeader(optime=_optime(s, None)), Why.EMPTY_DATA_WITH_LOCK, data_dir=state)
    m = s.memory
    if m.bootstrap_failures >= MAX_BOOTSTRAP_FAILURES:
        # As Patroni ("Failed to bootstrap cluster"): exit non-zero with the cause. `initialize` was
        # deleted after each failure, so another node may try meanwhile.
        return _d(s, Shutdown(release=False, optime=None, stop_postgres=False, fatal=True), Why.BOOTSTRAP_GAVE_UP,
                  failures=m.bootstrap_failures, error=m.last_failure or "unknown error")
    if kind is PgClass.UNUSABLE:
        return _d(s, Wait(), Why.DATA_DIR_UNUSABLE, data_dir=s.pg.data_dir)
    backoff = m.retry_at - s.now if m.retry_at is not None and s.now < m.retry_at else 0.0
    if cluster.initialize is None:
        if backoff and m.bootstrap_failures:
            return _d(s, Wait(), Why.BOOTSTRAP_BACKOFF, nap=backoff, failures=m.bootstrap_failures,
                      left=f"{backoff:.0f}", error=m.last_failure or "unknown error")
        if s.settings.standby_cluster is not None:
            # A standby cluster holds the remote's database: its first member copies it, never initdb.
            return _d(s, BootstrapStandby(), Why.BOOTSTRAP_STANDBY)
        return _d(s, Bootstrap(), Why.BOOTSTRAP)
    if cluster.initialize == "":
        why = Why.WAIT_FOR_BOOTSTRAP if s.settings.standby_cluster is None else Why.WAIT_FOR_STANDBY_BOOTSTRAP
        return _d(s, Wait(), why, nap=SHORT_NAP)
    source = _clone_source(s)
    if source is None and not s.settings.clone_without_leader:
        return _d(s, Wait(), Why.WAIT_FOR_LEADER_TO_CLONE, nap=SHORT_NAP)
    if backoff and m.clone_failures:
        return _d(s, Wait(), Why.CLONE_BACKOFF, nap=backoff, failures=m.clone_failures, left=f"{backoff:.0f}",
                  error=m.last_failure or "unknown error")
    if source is None:
        # No member runs, but a `no_leader` method (a backup repository) can create this replica alone.
        follow_leader = cluster.leader.name if cluster.leader else None
        return _d(s, Clone(source=None, follow=follow_leader), Why.CLONE_WITHOUT_LEADER)
    why = Why.CLONE_FROM_LEADER if cluster.leader and source == cluster.leader.name else Why.CLONE_FROM_REPLICA
    follow = cluster.leader.name if cluster.leader else None
    return _d(s, Clone(source=source, follow=follow), why, member=source)


def guard_sysid(s: Snapshot) -> Decision | None:
    """A data directory of another database never joins: it does not race, clone or follow.

    The lock holder is exempt. It passed this guard when it took the lock (or bootstrapped the cluster),
    so a different identifier appearing in `initialize` later was written behind its back (by hand, or a
    corrupted value): the leader keeps leading and writes its own back (`_renew`). Patroni releases the
    key and exits, which turns one bad value into a cluster without a leader: no other member may race
    either, since they all carry the leader's identifier."""
    cluster = _cluster(s)
    if not is_system_identifier(cluster.initialize) or not s.pg.sysid or cluster.initialize == s.pg.sysid:
        return None  # garbage in `initialize` proves no other cluster: the leader writes its own back
    if lock_state(s) is Lock.MINE:
        return None
    return _d(s, Wait(), Why.SYSID_MISMATCH, mine=s.pg.sysid, cluster=cluster.initialize)


def guard_paused(s: Snapshot) -> Decision | None:
    """Maintenance mode: nothing is started, stopped, promoted or demoted, except a switchover the
    operator asked for by name. The leader keeps renewing; a lock whose holder is no longer a
    primary is released; a primary finding the lock free takes it."""
    if not s.paused:
        return None
    cluster = _cluster(s)
    lock, kind = lock_state(s), pg_class(s.pg)
    failover = cluster.failover
    if lock is Lock.MINE and kind is PgClass.PRIMARY:
        return None  # the normal leader rule: renew, and act on a switchover to a named candidate
    named = failover is not None and failover.member == s.me
    if lock is not Lock.OTHER and kind is PgClass.REPLICA and named:
        return None  # the named candidate of a switchover in maintenance mode takes the lock and promotes
    if kind is PgClass.STOPPED and any(o.action == K.DEMOTE and o.ok for o in s.last):
        return None  # our own graceful demote of such a switchover: come back as a replica
    if lock is Lock.MINE:
        return _d(s, ReleaseLeader(optime=_optime(s, None)), Why.PAUSED_RELEASE)
    if kind is PgClass.PRIMARY:
        mine = local_timeline(s.pg) or 0
        if is_system_identifier(cluster.initialize) and s.pg.sysid and cluster.initialize != s.pg.sysid:
            return _d(s, Wait(), Why.SYSID_MISMATCH, mine=s.pg.sysid, cluster=cluster.initialize)
        if lock is Lock.NONE and mine >= cluster.timeline:
            return _d(s, AcquireLeader(), Why.RACE_PRIMARY_RECLAIM, nap=0)
        if lock is Lock.OTHER and _is_running_primary(cluster.leader_member):
            # Two writable primaries (e.g. this one was cut off from the DCS in maintenance mode, the
            # operator resumed, another member took over, then paused again): the one without the
            # key stops, pause or not. Patroni keeps it running; "no two writers" comes first.
            return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.NOT_LEADER_PRIMARY, nap=0,
                      leader=_leader_name(s))
        return _d(s, Wait(), Why.PAUSED_PRIMARY_WITHOUT_LOCK)
    if kind is PgClass.REPLICA:
        return _d(s, Wait(), Why.PAUSED_NO_ACTION, name=s.me)
    return _d(s, Wait(), Why.PAUSED_PG_STOPPED, state=kind)


GUARDS: tuple[Callable[[Snapshot], Decision | None], ...] = (
    guard_shutdown,
    guard_dcs_down,  # before guard_task: a running task must never hide an expired lease
    guard_task,
    guard_request,
    guard_paused,
    guard_data_dir,
    guard_sysid,
)


# ---------------------------------------------------------------------------------------------------
# Rules by (lock, PostgreSQL)


def mine_primary(s: Snapshot) -> Decision:
    deadline = s.memory.lock_deadline
    if deadline is not None and s.now >= deadline and not s.paused:
        # Renewals failed for so long that the lease may expire elsewhere at any moment: stop writes
        # now, whatever this read says. The next cycles renew and start again if the key is still ours.
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.LOCK_LOST, nap=0)
    if s.settings.standby_cluster is not None and not s.paused:
        # demote-cluster: `standby_cluster` was added to a running cluster. Stop writes now (a fast stop:
        # its shutdown checkpoint reaches the replicas and whoever follows us), keep the key, and come
        # back as the standby leader following the remote (`mine_stopped`).
        return _d(s, Demote(DemoteMode.DEMOTE_CLUSTER), Why.STANDBY_DEMOTE, nap=0)
    if any(o.action == K.WATCHDOG_FAILED for o in s.last) and _watchdog_wanted(s) is WatchdogMode.REQUIRED:
        # Mode required: no writes without fencing. Immediate, and the key released so that another
        # member (one whose watchdog works) takes over.
        return _d(s, Demote(DemoteMode.IMMEDIATE), Why.WATCHDOG_DEMOTE, nap=0)
    if any(o.action == K.RENEW_LEADER and not o.ok for o in s.last):
        return _renew(s, Why.RENEW_RETRY, nap=SHORT_NAP)
    failover = _cluster(s).failover
    if failover is not None:
        return _leader_failover(s, failover)
    return _renew(s, Why.LOCK_HELD)


def _scheduled_at(failover: FailoverRequest) -> float | None:
    """The scheduled instant as epoch seconds; None if not scheduled. Raises ValueError if unparsable."""
    if not failover.scheduled_at:
        return None
    at = datetime.fromisoformat(failover.scheduled_at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # Patroni writes a zone; a bare time is read as UTC, never local
    return at.timestamp()


def _scheduled_in_future(s: Snapshot, failover: FailoverRequest) -> bool:
    try:
        at = _scheduled_at(failover)
    except ValueError:
        return False
    return at is not None and at > s.wall


def _leader_failover(s: Snapshot, failover: FailoverRequest) -> Decision:
    """The leader and a `failover` key: demote gracefully for a due switchover whose target can take
    over; clear a key that is stale or impossible (saying why); wait for a scheduled one."""
    if failover.leader and failover.leader != s.me:
        return _renew(s, Why.FAILOVER_STALE, clear_failover=failover.revision, leader=failover.leader)
    if failover.member == s.me:
        return _renew(s, Why.FAILOVER_STALE, clear_failover=failover.revision, leader=s.me)
    action = "switchover" if failover.leader else "manual failover"
    try:
        _scheduled_at(failover)
    except ValueError:
        return _renew(s, Why.FAILOVER_IMPOSSIBLE, clear_failover=failover.revision, op=action,
                      member=f"(unreadable scheduled_at {failover.scheduled_at!r})")
    if _scheduled_in_future(s, failover):
        return _renew(s, Why.FAILOVER_SCHEDULED, at=failover.scheduled_at)
    if s.paused and not failover.member:
        # Maintenance mode: nobody races, so only a named candidate can take over.
        return _renew(s, Why.FAILOVER_IMPOSSIBLE, clear_failover=failover.revision, op=action, member="any member")
    if _candidate_ready(s, failover.member) if failover.member else failover_possible(s):
        waiting = _poolers_not_holding(s, failover)
        if waiting:
            return waiting
        return _d(s, Demote(DemoteMode.GRACEFUL, finish_by=s.memory.lock_deadline), Why.SWITCHOVER_DEMOTE, nap=0,
                  op=action)
    target = failover.member or "any member"
    return _renew(s, Why.FAILOVER_IMPOSSIBLE, clear_failover=failover.revision, op=action, member=target)


POOLER_HOLD_WAIT = 5.0


def _poolers_not_holding(s: Snapshot, failover: FailoverRequest) -> Decision | None:
    """A planned switchover waits (at most POOLER_HOLD_WAIT seconds) until every connection pooler
    managed by a `pgwarden route` sidecar has paused its clients for this very request: then no
    transaction is left running on the old primary when it stops, and clients see a short delay
    instead of an error. Past the deadline the switchover goes on anyway."""
    pending = [r.name for r in _cluster(s).routers if "pgbouncer" in r.kinds and r.held_for != failover.revision]
    if not pending:
        return None
    hold = s.memory.pooler_hold
    if hold is None or hold[0] != failover.revision:
        hold = (failover.revision, s.now + POOLER_HOLD_WAIT)
    if s.now >= hold[1]:
        return None
    waiting = replace(s, memory=replace(s.memory, pooler_hold=hold))
    return _renew(waiting, Why.WAITING_FOR_POOLERS, nap=0.1, routers=",".join(pending))


def _candidate_ready(s: Snapshot, name: str) -> bool:
    """The named candidate answers, streams as a replica close enough to us, and may promote."""
    member = _cluster(s).member(name)
    if member is None or not member.tags.can_promote:
        return False
    if not switchover_allowed(name, s.settings.sync, _cluster(s).sync).allowed:
        return False  # synchronous mode: only a synchronous standby holds every acknowledged commit
    for peer in s.peers:
        if peer.name == name:
            lag = (s.pg.lsn or 0) - (peer.lsn or 0)
            on_timeline = not s.settings.check_timeline or peer.timeline == local_timeline(s.pg)
            return bool(peer.reachable and peer.in_recovery and on_timeline
                        and lag <= s.settings.maximum_lag_on_failover)
    return False


def mine_replica(s: Snapshot) -> Decision:
    standby = s.settings.standby_cluster
    if standby is not None:
        return _hold_standby_leader(s, standby)
    if any(o.action == K.WATCHDOG_FAILED for o in s.last) and _watchdog_wanted(s) is WatchdogMode.REQUIRED:
        # Mode required and no watchdog: give the key up so that a member with one takes over.
        return _d(s, ReleaseLeader(optime=_optime(s, None)), Why.WATCHDOG_NO_RACE, nap=SHORT_NAP)
    if not _lock_valid(s):
        # Only a lease renewed in this incarnation proves we may promote.
        return _renew(s, Why.PROMOTE_WITH_LOCK, nap=0)
    pre = pre_promote_sync(s.me, s.settings.sync, _cluster(s).sync)
    if pre is not None:
        step = pre_promote_step(pre, s.pg.synchronous_standby_names or "", _cluster(s).sync)
        if not isinstance(step, NoChange):
            # Synchronous mode: the standbys and `/sync` the new primary will honour are in place
            # before it accepts its first write (if the CAS fails, promotion waits a cycle).
            renew = RenewLeader(optime=_optime(s, None), sync_step=step, watchdog=_watchdog_on(s))
            return _d(s, renew, Why.SYNC_PRE_PROMOTE, nap=0, step=step.kind)
    tl = local_timeline(s.pg) or 1
    entry = (tl, s.pg.lsn or 0, "no recovery target specified")
    assert s.memory.lock_deadline is not None  # _lock_valid
    claim, ignored = timeline_to_claim(_cluster(s), tl)
    action = Promote(history_entry=entry, finish_by=s.memory.lock_deadline, timeline=claim, ignored_timeline=ignored,
                     watchdog=_watchdog_wanted(s))
    return _d(s, action, Why.PROMOTE_WITH_LOCK, nap=0, name=s.me)


def _hold_standby_leader(s: Snapshot, standby: StandbyCluster) -> Decision:
    """A standby cluster's lock holder in recovery: it never promotes. It follows the remote primary
    (re-pointed when it followed a member, as after winning a race, or an older address), then renews."""
    if s.pg.following != standby.follow_name:
        return _d(s, Follow(leader=standby.follow_name), Why.STANDBY_LEADER_FOLLOW, nap=SHORT_NAP, name=s.me)
    return _renew(s, Why.STANDBY_LEADER_HELD)


def mine_starting(s: Snapshot) -> Decision:
    deadline = s.memory.start_deadline
    if deadline is not None and s.now > deadline:
        return _d(s, Demote(DemoteMode.IMMEDIATE), Why.START_TIMEOUT, timeout=s.settings.primary_start_timeout)
    memory = s.memory
    if deadline is None:
        deadline = s.now + s.settings.primary_start_timeout
        memory = replace(memory, start_deadline=deadline)
    renew = RenewLeader(optime=_optime(s, None), watchdog=_watchdog_on(s))
    return _d(s, renew, Why.STARTING, nap=SHORT_NAP, memory=memory, left=f"{deadline - s.now:.0f}")


def mine_stopped(s: Snapshot) -> Decision:
    m = s.memory
    timed_out = m.start_deadline is not None and s.now > m.start_deadline
    if m.start_failures >= MAX_START_FAILURES or timed_out:
        return _d(s, ReleaseLeader(optime=_optime(s, None)), Why.START_FAILED_RELEASE, failures=m.start_failures)
    if s.settings.primary_start_timeout == 0:
        # The operator prefers a failover to a restart in place after a crash.
        return _d(s, ReleaseLeader(optime=_optime(s, None)), Why.CRASH_FAILOVER)
    if not _lock_valid(s):
        why = Why.START_PRIMARY_AFTER_CRASH if s.settings.standby_cluster is None else Why.START_STANDBY_LEADER
        return _renew(s, why, nap=0)
    left = _start_backoff(s)
    if left is not None:  # keep the lock meanwhile: START_FAILED_RELEASE decides when to give it up
        return _renew(s, Why.START_BACKOFF, nap=left, failures=m.start_failures, left=f"{left:.0f}")
    memory = m if m.start_deadline is not None else replace(
        m, start_deadline=s.now + s.settings.primary_start_timeout)
    standby = s.settings.standby_cluster
    if standby is not None:
        # Never a writable start in a standby cluster, whatever the control file says (demote-cluster).
        return _d(s, StartPostgres(role="replica", follow=standby.follow_name), Why.START_STANDBY_LEADER,
                  nap=SHORT_NAP, memory=memory)
    if was_primary(s.pg):
        return _d(s, StartPostgres(role="primary", follow=None), Why.START_PRIMARY_AFTER_CRASH,
                  nap=SHORT_NAP, memory=memory)
    return _d(s, StartPostgres(role="replica", follow=None), Why.START_READONLY_WITH_LOCK,
              nap=SHORT_NAP, memory=memory)


def other_primary(s: Snapshot) -> Decision:
    return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.NOT_LEADER_PRIMARY, nap=0, leader=_leader_name(s))


def other_replica(s: Snapshot) -> Decision:
    if not s.pg.streaming and (_forked_off_leader(s) or _replica_beyond_switch(s)):
        # It holds WAL the new timeline does not have: it can never stream again as it is. Remember
        # that: once stopped, its control file (an older restartpoint) no longer shows it. A fast stop,
        # not an immediate one: pg_rewind cannot finish a standby's interrupted recovery itself
        # (single-user mode refuses standby mode), but it takes a standby shut down in recovery.
        # Stopped even where it may not be rewound (it then waits, stopped, for the operator): a diverged
        # node must neither serve reads of WAL the cluster never had nor feed cascading replicas
        # (a `replicatefrom` member would follow it off the leader's timeline; simulator seed 200331).
        return _d(s, Demote(DemoteMode.OFFLINE), Why.REWIND, nap=0, leader=_leader_name(s),
                  memory=replace(s.memory, diverged=True))
    upstream = _upstream(s)
    if s.pg.following != upstream:
        return _d(s, Follow(leader=upstream), Why.FOLLOW_NEW_LEADER, name=s.me, leader=upstream)
    cascading = {slot_name(m.name) for m in _cluster(s).members
                 if m.name != s.me and m.tags.replicatefrom == s.me and not m.tags.nostream}
    missing = tuple(sorted(cascading - set(s.pg.slots))) if s.settings.use_slots else ()
    copies, memory = plan_copies(s, cascading)
    logical, memory = plan_logical_copies(replace(s, memory=memory))
    memory = replace(memory, permanent_slots=tuple(sorted({*memory.permanent_slots, *logical.managed})))
    drop = tuple(sorted({*copies.drop, *logical.drop}))
    if missing:
        action = EnsureSlots(create=tuple(sorted({*missing, *copies.create})), drop=drop,
                             advance=copies.advance, advance_logical=logical.advance)
        return _d(s, action, Why.CASCADE_SLOTS, nap=SHORT_NAP, memory=memory, slots=",".join(missing))
    if copies.changes or logical.drop:
        action = EnsureSlots(create=copies.create, drop=drop, advance=copies.advance,
                             advance_logical=logical.advance)
        # After a failure (all of max_replication_slots in use, say) the next try waits a whole loop_wait:
        # every replica keeps the members' slots, and a busy retry would flood the log.
        failed = any(o.action == K.ENSURE_SLOTS and not o.ok for o in s.last)
        return _d(s, action, Why.SLOT_COPIES, nap=None if failed else SHORT_NAP, memory=memory,
                  create=",".join(copies.create) or "-", drop=",".join(drop) or "-")
    if logical.copy:
        leader = _leader_name(s)
        memory = remember_copies(memory, logical.copy, leader)
        return _d(s, CopyLogicalSlots(leader=leader, names=logical.copy), Why.COPY_LOGICAL_SLOTS, nap=SHORT_NAP,
                  memory=memory, slots=",".join(logical.copy), leader=leader)
    if copies.advance or logical.advance:  # routine: the log line stays the follower's
        return _d(s, EnsureSlots(create=(), advance=copies.advance, advance_logical=logical.advance),
                  _following(s), memory=memory, name=s.me, leader=upstream)
    return _d(s, Wait(), _following(s), memory=memory, name=s.me, leader=upstream)


def _following(s: Snapshot) -> Why:
    return Why.FOLLOWING if s.settings.standby_cluster is None else Why.FOLLOWING_STANDBY_LEADER


def other_starting(s: Snapshot) -> Decision:
    """Wait for PostgreSQL to accept connections; but a standby that is still starting while its
    primary_conninfo names a member that is no longer its upstream (the leader changed while it was
    rewound or started) is re-pointed at once, as a running replica would be: from a demoted member it
    may never get the WAL it needs to reach consistency, and would wait "starting" for ever (the chaos
    suite, after a partition of the primary during a failover cascade). PostgreSQL applies the new
    primary_conninfo on a reload, consistent or not."""
    if s.pg.standby_signal and lock_state(s) is Lock.OTHER:
        upstream = _upstream(s)
        if s.pg.following != upstream and _is_running(_cluster(s).member(upstream)):
            return _d(s, Follow(leader=upstream), Why.FOLLOW_NEW_LEADER, name=s.me, leader=upstream)
    return _d(s, Wait(), Why.STARTING, nap=SHORT_NAP)


def other_stopped(s: Snapshot) -> Decision:
    """Come back as a replica of the leader; a former primary that may have diverged is rewound first."""
    leader = _leader_name(s)
    if not _may_have_diverged(s):
        return _start(s, StartPostgres(role="replica", follow=_upstream(s)))
    settings = s.settings
    if s.memory.rewind_failed:
        if settings.remove_data_directory_on_rewind_failure or settings.remove_data_directory_on_diverged_timelines:
            return _d(s, RemoveDataDirectory(), Why.REWIND_FAILED_REMOVE)
        return _d(s, Wait(), Why.REWIND_FAILED)
    if settings.use_pg_rewind:
        tl = local_timeline(s.pg) or 0
        pending = switch_lsn(_cluster(s), tl) is None and not _off_lineage(s)
        if pending or not _is_running(_cluster(s).leader_member):
            # History is written after the new primary's post-promote checkpoint; before that
            # pg_rewind could wrongly conclude that nothing diverged.
            return _d(s, Wait(), Why.REWIND, nap=SHORT_NAP, leader=leader, waiting="leader checkpoint")
        if any(o.action == K.REWIND_SOURCE_UNREACHABLE for o in s.last):
            # Nothing was tried, but trying again at once would run pg_rewind dozens of times a second
            # while the leader refuses connections (a restart, a crash, a member key not yet updated).
            return _d(s, Wait(), Why.REWIND, nap=SHORT_NAP, leader=leader, waiting="the leader to accept connections")
        keep = tuple(sorted(permanent_here(s))) if s.settings.use_slots else ()
        return _d(s, Rewind(source=leader, keep_slots=keep), Why.REWIND, leader=leader)
    if settings.remove_data_directory_on_diverged_timelines:
        return _d(s, RemoveDataDirectory(), Why.DIVERGED_REMOVE)
    return _d(s, Wait(), Why.REWIND_NOT_ALLOWED, leader=leader)


def _leader_timeline(s: Snapshot) -> int:
    cluster = _cluster(s)
    leader = cluster.leader_member
    return max(cluster.timeline, (leader.timeline or 0) if leader else 0)


def _may_have_diverged(s: Snapshot) -> bool:
    """Could this stopped data directory hold WAL the leader's timeline does not?

    Only a node on an older timeline can. A former primary after a crash has an unknown end of WAL,
    so it counts as diverged (pg_rewind then finds out, doing crash recovery first). Otherwise the
    last checkpoint (a lower bound of the WAL it holds) at or past the point where its timeline
    ended proves divergence; a former primary whose timeline's end is unknown is treated as diverged.
    """
    if s.memory.diverged or _off_lineage(s):
        return True
    mine = local_timeline(s.pg) or 0
    if mine >= _leader_timeline(s):
        return False
    ended_at = switch_lsn(_cluster(s), mine)
    checkpoint = s.pg.checkpoint_lsn
    if was_primary(s.pg):
        clean = s.pg.cluster_state == "shut down"
        return not (clean and ended_at is not None and checkpoint is not None and checkpoint < ended_at)
    return ended_at is not None and checkpoint is not None and checkpoint >= ended_at


def _replica_beyond_switch(s: Snapshot) -> bool:
    """A running replica on an older timeline that already replayed past where that timeline ended."""
    mine = local_timeline(s.pg) or 0
    if mine >= _leader_timeline(s):
        return False
    if _off_lineage(s):
        return True
    ended_at = switch_lsn(_cluster(s), mine)
    return ended_at is not None and s.pg.replay_lsn is not None and s.pg.replay_lsn > ended_at


def _forked_off_leader(s: Snapshot) -> bool:
    """PostgreSQL refuses to follow the newest timeline it fetched from its upstream (`LocalPg.
    forked_timeline`), and the leader runs that timeline or a later one (not a stale history file)."""
    forked = s.pg.forked_timeline
    return forked is not None and forked <= _leader_timeline(s)


def _off_lineage(s: Snapshot) -> bool:
    """Is my timeline older than the leader's and absent from its lineage (another branch, e.g. one
    whose number a promotion skipped because it was reserved)?

    `history` is the leader's lineage as its PostgreSQL records it (the executor steps write it from the
    timeline history file), so once it is current for this leader, a missing row means "not an
    ancestor". It is current when its newest row names the leader, i.e. the leader wrote it after
    its promotion's checkpoint; before that a missing row only means the write is still to come.
    (Should a leader promote twice with the second write lost, the row of its first promotion
    passes for current: a replica of its previous timeline is then rewound once, needlessly.)
    """
    cluster = _cluster(s)
    mine = local_timeline(s.pg) or 0
    if cluster.leader is None or not cluster.history or mine >= _leader_timeline(s):
        return False
    newest = max(cluster.history, key=lambda h: h.timeline)
    return switch_lsn(cluster, mine) is None and newest.new_leader == cluster.leader.name


def none_primary(s: Snapshot) -> Decision:
    cluster = _cluster(s)
    if s.settings.standby_cluster is not None:
        return _d(s, Demote(DemoteMode.DEMOTE_CLUSTER), Why.STANDBY_DEMOTE, nap=0)
    mine = local_timeline(s.pg) or 0
    if mine < cluster.timeline:
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.RACE_TIMELINE_BEHIND_PRIMARY,
                  mine=mine, cluster=cluster.timeline)
    alive = [p.name for p in s.peers if p.name != s.me and p.is_running_primary]
    if alive:
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.RACE_PRIMARY_ALIVE, member=alive[0])
    if not s.settings.tags.can_promote:
        return _d(s, Demote(DemoteMode.IMMEDIATE_NOLOCK), Why.RACE_NOFAILOVER)
    return _d(s, AcquireLeader(), Why.RACE_PRIMARY_RECLAIM, nap=0)


def none_replica(s: Snapshot) -> Decision:
    blocked = _failsafe_blocks_race(s)
    if blocked is not None:
        return blocked
    if s.watchdog_failed and _watchdog_wanted(s) is WatchdogMode.REQUIRED:
        return _d(s, Wait(), Why.WATCHDOG_NO_RACE, nap=SHORT_NAP)
    backoff = s.memory.promote_backoff_until
    if backoff is not None and s.now < backoff:
        return _d(s, Wait(), Why.PRE_PROMOTE_BACKOFF, nap=min(SHORT_NAP * 5, backoff - s.now),
                  left=f"{backoff - s.now:.0f}")
    failover = _cluster(s).failover
    if failover is not None and not _scheduled_in_future(s, failover):
        decided = _race_with_failover_key(s, failover)
        if decided is not None:
            return decided
    verdict = replica_race(s)
    if verdict.may_acquire:
        reason = verdict.reason
        if s.settings.standby_cluster is not None and reason.why is Why.RACE_HEALTHIEST:
            reason = Reason(Why.RACE_HEALTHIEST_STANDBY, reason.facts)  # no promotion follows: Patroni's words
        return Decision(AcquireLeader(), reason, s.now, s.memory)
    return Decision(Wait(), verdict.reason, s.now + SHORT_NAP, s.memory)


def _failsafe_blocks_race(s: Snapshot) -> Decision | None:
    """Failsafe mode: no race while the leader's ping is fresh (it may still be writing, cut off from the
    DCS only), and none for a member `/failsafe` does not list (the leader never asked it, so it cannot
    know whether the leader still writes)."""
    leader = _failsafe_leader(s)
    if leader is not None:
        return _d(s, Wait(), Why.FAILSAFE_LEADER, nap=SHORT_NAP, name=s.me, leader=leader)
    listed = _cluster(s).failsafe
    if s.settings.failsafe_mode and listed is not None and s.me not in listed and not _failsafe_over(s, listed):
        return _d(s, Wait(), Why.FAILSAFE_NOT_LISTED, nap=SHORT_NAP)
    return None


def _failsafe_over(s: Snapshot, listed: Mapping[str, str]) -> bool:
    """Can a member `/failsafe` does not list see that no leader runs on failsafe pings? Yes when a member
    it does list, a running replica (whose status carries `failsafe_mode_is_active`), answers that it
    accepted none for a lease: a leader keeps writing only while every listed member accepts, so its lease
    has lapsed. Without this, a stale
    `/failsafe` (written while the others' member keys had expired) barred every member that could take
    over, for ever (simulator seed 51)."""
    return any(p.reachable and p.in_recovery is True and p.name in listed and p.name != s.me
               and not p.failsafe_active for p in s.peers)


def _race_with_failover_key(s: Snapshot, failover: FailoverRequest) -> Decision | None:
    """A switchover or failover is under way: its candidate takes the free lock, the others defer
    to it while it is healthy, and the former leader does not race while someone can take over."""
    if failover.leader == s.me:
        if _nobody_can_take_over(s, failover):
            # The switchover's leader lost its lease before handing over (paused, cut off), and no
            # member it was handing over to could promote without losing more than the configuration
            # allows: an ordinary race, which the former leader, with every commit, may win (seed 4245).
            return None
        return _d(s, Wait(), Why.FORMER_LEADER_WAITS, nap=SHORT_NAP)
    alive = [p.name for p in s.peers if p.name != s.me and p.is_running_primary]
    if alive:
        return _d(s, Wait(), Why.RACE_PRIMARY_ALIVE, nap=SHORT_NAP, member=alive[0])
    # A switchover whose leader vanished before demoting is an unplanned failover after all: its
    # candidate must be within maximum_lag_on_failover like any racer, or acknowledged commits beyond
    # that limit are lost (found by the simulator). A manual failover (no leader named) is the
    # operator's explicit choice and keeps the contract's "the candidate wins".
    lag_checked = failover.leader is not None
    if failover.member == s.me and s.settings.tags.can_promote:
        if not lag_checked or within_lag(s, s.pg.lsn):
            return Decision(AcquireLeader(), Reason(Why.RACE_HEALTHIEST, (("candidate", s.me),)), s.now, s.memory)
        return None  # an ordinary race, which a lagging node loses
    if failover.member:
        candidate = next((p for p in s.peers if p.name == failover.member), None)
        promotable = candidate is not None and not candidate.nofailover and candidate.failover_priority > 0
        healthy = candidate is not None and (not lag_checked or within_lag(s, candidate.lsn))
        if candidate is not None and promotable and healthy and candidate.reachable and candidate.in_recovery:
            return _d(s, Wait(), Why.CANDIDATE_DEFER, nap=SHORT_NAP, member=failover.member)
    return None  # no usable candidate: an ordinary race among the others


def _nobody_can_take_over(s: Snapshot, failover: FailoverRequest) -> bool:
    """Every member a switchover from this one hands over to (its candidate, else all) answered, and
    none can take over: not a running replica, not promotable, or lagging past maximum_lag_on_failover.
    A member that does not answer might still take over: then the former leader keeps waiting."""
    others = [p for p in s.peers if p.name != s.me and (failover.member is None or p.name == failover.member)]
    if not others or any(not p.reachable for p in others):
        return False
    return not any(p.in_recovery and not p.nofailover and p.failover_priority > 0 and within_lag(s, p.lsn)
                   for p in others)


def none_stopped(s: Snapshot) -> Decision:
    # A data directory whose pg_rewind failed midway is neither the old one nor the leader's copy: started, it
    # waits for ever for WAL past its upstream's timeline (or, were it to win the race, serves a half-copied
    # cluster). It waits for a leader to rewind from again or to be removed (chaos suite, seed 212).
    if s.memory.rewind_failed:
        return _d(s, Wait(), Why.REWIND_FAILED)
    # Start read-only first; the race is run by the next cycles with real WAL positions.
    return _start(s, StartPostgres(role="replica", follow=None))


def _start_backoff(s: Snapshot) -> float | None:
    """Seconds left before PostgreSQL may be started again after failed starts, None: now."""
    retry_at = s.memory.start_retry_at
    return retry_at - s.now if retry_at is not None and s.now < retry_at else None


def _start(s: Snapshot, action: StartPostgres) -> Decision:
    """Start PostgreSQL as a replica, unless it failed to start moments ago (`start_backoff`)."""
    left = _start_backoff(s)
    if left is not None:
        return _d(s, Wait(), Why.START_BACKOFF, nap=left, failures=s.memory.start_failures, left=f"{left:.0f}")
    return _d(s, action, Why.START_REPLICA, nap=SHORT_NAP)


def _unreachable(s: Snapshot) -> Decision:
    """Rows that the guards make impossible (kept so the table covers the whole product)."""
    raise AssertionError(f"guards should have handled {lock_state(s)}/{pg_class(s.pg)}")


RULES: dict[tuple[Lock, PgClass], Callable[[Snapshot], Decision]] = {
    (Lock.MINE, PgClass.PRIMARY): mine_primary,
    (Lock.MINE, PgClass.REPLICA): mine_replica,
    (Lock.MINE, PgClass.STARTING): mine_starting,
    (Lock.MINE, PgClass.STOPPED): mine_stopped,
    (Lock.MINE, PgClass.NO_DATA): _unreachable,
    (Lock.MINE, PgClass.UNUSABLE): _unreachable,
    (Lock.OTHER, PgClass.PRIMARY): other_primary,
    (Lock.OTHER, PgClass.REPLICA): other_replica,
    (Lock.OTHER, PgClass.STARTING): other_starting,
    (Lock.OTHER, PgClass.STOPPED): other_stopped,
    (Lock.OTHER, PgClass.NO_DATA): _unreachable,
    (Lock.OTHER, PgClass.UNUSABLE): _unreachable,
    (Lock.NONE, PgClass.PRIMARY): none_primary,
    (Lock.NONE, PgClass.REPLICA): none_replica,
    (Lock.NONE, PgClass.STARTING): other_starting,
    (Lock.NONE, PgClass.STOPPED): none_stopped,
    (Lock.NONE, PgClass.NO_DATA): _unreachable,
    (Lock.NONE, PgClass.UNUSABLE): _unreachable,
    (Lock.UNKNOWN, PgClass.PRIMARY): _unreachable,
    (Lock.UNKNOWN, PgClass.REPLICA): _unreachable,
    (Lock.UNKNOWN, PgClass.STARTING): _unreachable,
    (Lock.UNKNOWN, PgClass.STOPPED): _unreachable,
    (Lock.UNKNOWN, PgClass.NO_DATA): _unreachable,
    (Lock.UNKNOWN, PgClass.UNUSABLE): _unreachable,
}
