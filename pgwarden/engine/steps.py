"""The executor's steps: one generator per action, yielding effects and ending in one `Outcome`.

"The executor reports; the core decides" (style-anchors): each action is one fixed sequence of
effects, with no retries and no fallbacks; if something fails, the next decision sees the failure
and chooses what to do. The ordering rules that keep the cluster safe live here, once, for the agent
and the simulator alike: renew before touching slots, refresh the lease before promoting, reserve
the timeline number before the promotion takes it, release the key only after the stop, never start
a primary after a stop without a renewal proving the key still ours.

A step never does IO itself. It yields an effect (`pgwarden.engine.effects`) and receives the
result; a DCS failure is thrown into it as `DcsFailed`. `run` turns one escaping from a step into a
failed outcome, as the imperative executor did with a `DcsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pgwarden.core.actions import (
    AcquireLeader,
    Action,
    Bootstrap,
    BootstrapStandby,
    Clone,
    CopyLogicalSlots,
    Demote,
    DemoteMode,
    EnsureSlots,
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
from pgwarden.core.render import TAKEN_BY_ANOTHER
from pgwarden.core.slots import COPY_WAITING
from pgwarden.core.snapshot import ActionKind, HaSettings, Outcome, TaskKind, WatchdogMode
from pgwarden.core.sync.plan import DeleteSync, SetSsn, SyncMode, SyncStep, WriteSync
from pgwarden.engine import effects as fx
from pgwarden.model import (
    TIMELINE_RESERVE_MARGIN,
    ClusterStatus,
    ClusterView,
    LocalPg,
    history_after_promotion,
    history_for_lineage,
)

_T = TypeVar("_T")
StepGen = Generator[fx.Effect, Any, _T]
"""A step: yields effects, receives their results, returns `_T`."""

HOOK_TIMEOUT = 60.0
"""Seconds a user's hook script (pre_promote, before_stop) may run without a tighter deadline."""
STOP_REQUEST_RESERVE = 0.5
"""Seconds of the lease a graceful demote keeps, after its CHECKPOINT and before_stop hook, to get the
stop request (which ends new commits) to PostgreSQL before the lock deadline."""
MIN_STEP_BEFORE_STOP = 0.2
"""Below this many seconds left, the step before the stop is skipped rather than started."""

BACKGROUND: Mapping[type, TaskKind] = {
    Bootstrap: TaskKind.BOOTSTRAP,
    BootstrapStandby: TaskKind.BOOTSTRAP,
    Clone: TaskKind.CLONE,
    Rewind: TaskKind.REWIND,
    StartPostgres: TaskKind.START,
    Promote: TaskKind.PROMOTE,
    RemoveDataDirectory: TaskKind.REMOVE_DATA,
    Restart: TaskKind.RESTART,
    Reinitialize: TaskKind.REINITIALIZE,
    CopyLogicalSlots: TaskKind.RESTART,
}
"""Actions that may run for a long time: they run in the background while the loop keeps deciding
(and, on a leader, renewing its lock)."""


@dataclass(frozen=True, slots=True)
class ReplicaMethod:
    """A replica creation method as the steps see it (`postgresql.create_replica_methods`): its name
    (`basebackup`: the built-in pg_basebackup) and the switches that change the order of things."""

    name: str
    keep_data: bool = False
    """The data directory is not emptied before the method runs, nor after it fails."""
    no_leader: bool = False
    """It can create a replica with no member to copy from."""


BASEBACKUP = ReplicaMethod("basebackup")


@dataclass(frozen=True, slots=True)
class BootstrapMethod:
    """A custom bootstrap method (`bootstrap.method` other than initdb) as the steps see it."""

    name: str
    keep_existing_recovery_conf: bool = False
    recovery_conf: tuple[tuple[str, Any], ...] = ()
    """Settings of the archive recovery that follows the command (empty: none unless the command left a
    recovery.signal that `keep_existing_recovery_conf` keeps)."""


class UnknownAction(Exception):
    """The core returned an action with no steps here: never silently ignored (a bug to fix here)."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step knows besides its action: who it runs for, the cluster view the decision was made on,
    and the settings that shape its effects."""

    me: str
    cluster: ClusterView | None
    settings: HaSettings
    primary_stop_timeout: float = 0.0
    """Patroni's primary_stop_timeout: in synchronous mode, how long a primary's stop may take before
    PostgreSQL is killed (0: never)."""
    bootstrap_dcs: Mapping[str, Any] = field(default_factory=dict)
    """`bootstrap.dcs`: the `/config` a new cluster starts with."""
    replica_methods: tuple[ReplicaMethod, ...] = (BASEBACKUP,)
    """How a replica's data directory is created, in the order to try (`create_replica_methods`)."""
    bootstrap_method: BootstrapMethod | None = None
    """How a new cluster is created: None for initdb, else the custom method."""
    standby_methods: tuple[ReplicaMethod, ...] = (BASEBACKUP,)
    """How the first member of a standby cluster copies the remote (`standby_cluster.create_replica_methods`,
    each defined like a replica creation method)."""


StepsFn = Callable[[Action, StepContext], StepGen[Outcome]]
"""`run`'s type: what the simulator runs (the real steps, or a test's mutant of them)."""


def run(action: Action, ctx: StepContext) -> StepGen[Outcome]:
    """The steps of `action`; a DCS failure that escapes them becomes a failed outcome."""
    try:
        return (yield from _dispatch(action, ctx))
    except fx.DcsFailed as exc:
        return (yield from _outcome(action, False, f"DCS error: {exc}"))


def _dispatch(action: Action, ctx: StepContext) -> StepGen[Outcome]:
    match action:
        case Wait():
            return (yield from _outcome(action, True))
        case Bootstrap():
            return (yield from _bootstrap(action, ctx))
        case BootstrapStandby():
            return (yield from _bootstrap_standby(action, ctx))
        case Clone():
            return (yield from _clone(action, ctx))
        case AcquireLeader():
            sent = yield fx.Now()
            won = yield fx.AcquireLeaderKey()
            return Outcome(action.kind, won, "" if won else TAKEN_BY_ANOTHER, sent)
        case RenewLeader():
            return (yield from _renew(action, ctx))
        case Promote():
            return (yield from _promote(action, ctx))
        case Demote():
            return (yield from _demote(action, ctx))
        case StartPostgres():
            return (yield from _start(action, ctx))
        case Follow():
            return (yield from _with_upstream(action, ctx, action.leader, fx.FollowUpstream))
        case Rewind():
            return (yield from _rewind(action, ctx))
        case RemoveDataDirectory():
            return (yield from _result(action, (yield fx.MoveDataAside())))
        case ReleaseLeader():
            released = yield fx.DeleteLeaderKey(status_document(ctx.cluster, action.optime))
            yield fx.DisarmWatchdog()  # no longer the leader (and PostgreSQL is no primary: the core checked)
            return (yield from _outcome(action, released))
        case FailsafeRound():
            return (yield from _failsafe_ping(action, ctx))
        case Shutdown():
            return (yield from _shutdown(action, ctx))
        case Restart():
            return (yield from _restart(action, ctx))
        case EnsureSlots():
            return (yield from _ensure_slots(action))
        case CopyLogicalSlots():
            return (yield from _copy_logical_slots(action, ctx))
        case Reinitialize():
            return (yield from _reinitialize(action, ctx))
        case _:
            raise UnknownAction(f"no steps for the action {action!r}")


# -- small pieces ----------------------------------------------------------------------------------------


def _outcome(action: Action, ok: bool, detail: str = "", sent: float | None = None,
             kind: ActionKind | None = None) -> StepGen[Outcome]:
    """The action's outcome; `sent` (the first request's send time) defaults to now."""
    if sent is None:
        sent = yield fx.Now()
    return Outcome(action=kind or action.kind, ok=ok, detail=detail, sent_at=sent)


def _result(action: Action, result: fx.Result) -> StepGen[Outcome]:
    return (yield from _outcome(action, result.ok, result.message))


def upstream(cluster: ClusterView | None, member_name: str | None) -> fx.Upstream | None:
    """`member_name`'s PostgreSQL address in the cluster view the decision was made on (None: unknown)."""
    if member_name is None or cluster is None:
        return None
    member = cluster.member(member_name)
    address = member.host_port if member else None
    return None if address is None else fx.Upstream(member_name, address[0], address[1])


def remote_upstream(settings: HaSettings) -> fx.Upstream | None:
    """The remote primary a standby leader follows (`standby_cluster`; None: this is no standby cluster)."""
    standby = settings.standby_cluster
    if standby is None:
        return None
    recovery = tuple((key, value) for key, value in (
        ("restore_command", standby.restore_command),
        ("archive_cleanup_command", standby.archive_cleanup_command),
        ("recovery_min_apply_delay", standby.recovery_min_apply_delay)) if value is not None)
    return fx.Upstream(standby.follow_name, standby.host or "", standby.port,
                       remote=fx.RemoteFollow(standby.primary_slot_name or "", recovery))


def target(ctx: StepContext, name: str | None) -> fx.Upstream | None:
    """Whom to follow for an action's `follow` (or `leader`) name: the remote primary when it is the
    standby cluster's (`StandbyCluster.follow_name`), else that member (`upstream`)."""
    standby = ctx.settings.standby_cluster
    if standby is not None and name == standby.follow_name:
        return remote_upstream(ctx.settings)
    return upstream(ctx.cluster, name)


def _with_upstream(action: Action, ctx: StepContext, member: str,
                   effect: type[fx.FollowUpstream]) -> StepGen[Outcome]:
    source = target(ctx, member)
    if source is None:
        return (yield from _outcome(action, False, f"no address known for {member}"))
    return (yield from _result(action, (yield effect(source))))


REWIND_SPACE_SEGMENTS = 3
"""WAL segments a rewind needs free room for at the least: single-user crash recovery's end-of-recovery
checkpoint may open a new segment, and pg_rewind copies the source's WAL since the divergence in full."""
REWIND_SPACE_MARGIN = 16 * 1024 * 1024
"""Room beyond those segments: the lock file, the copied changed blocks, new relation files, pg_xact."""
REWIND_SPACE_FIRST_PAUSE = 1.0
REWIND_SPACE_MAX_PAUSE = 8.0
"""How often a rewind held back for space looks again: the first pause, doubled up to this."""


def rewind_space_needed(segment_size: int) -> int:
    """The free bytes below which pg_rewind is not started: a floor, not pg_rewind's own figure (its
    --dry-run refuses a target that was not shut down cleanly, as a crashed primary on a full disk is);
    a rewind needing more fails midway and is a failed rewind."""
    return REWIND_SPACE_SEGMENTS * segment_size + REWIND_SPACE_MARGIN


def rewind_space_shortfall(space: fx.DiskSpace | None) -> str | None:
    """Why pg_rewind should not start on `space` (None: it may; so when the space is unknown)."""
    if space is None:
        return None
    need = rewind_space_needed(space.segment_size)
    where = [("the data directory's", space.data_free)]
    if space.wal_free is not None:
        where.append(("pg_wal's", space.wal_free))
    short = [f"{name} file system has {_mib(free)} free" for name, free in where if free < need]
    return f"{' and '.join(short)}, less than the {_mib(need)} a rewind needs" if short else None


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _room_for_rewind(budget: float) -> StepGen[str | None]:
    """Wait up to `budget` seconds (pausing 1, 2, 4, ... s) for the free space a rewind needs; None once
    it is there, else why not. A pg_rewind that runs out of space midway leaves a data directory that
    can only be re-cloned, while one that has not started loses nothing by waiting."""
    short = rewind_space_shortfall((yield fx.RewindSpace()))
    if short is None:
        return None
    yield fx.Log("warning", f"not starting pg_rewind: {short}; waiting for free space")
    waited, pause = 0.0, REWIND_SPACE_FIRST_PAUSE
    while waited < budget:
        pause = min(pause, budget - waited)
        yield fx.Pause(pause)
        waited += pause
        short = rewind_space_shortfall((yield fx.RewindSpace()))
        if short is None:
            yield fx.Log("info", "enough free space for pg_rewind again: starting it")
            return None
        pause = min(2 * pause, REWIND_SPACE_MAX_PAUSE)
    return short


def _rewind(action: Rewind, ctx: StepContext) -> StepGen[Outcome]:
    """pg_rewind from the leader. A source that could not be reached is reported as such, not as a
    failed rewind: the core tries again rather than giving up on this member (Patroni checks that it
    can connect to the leader before rewinding, and retries while it cannot). So is a target file
    system without room for it (`REWIND_NO_SPACE`, after waiting for room up to `loop_wait`): a rewind
    that has not started has failed at nothing, and the core's next decision starts it again."""
    source = upstream(ctx.cluster, action.source)
    if source is None:
        return (yield from _outcome(action, False, f"no address known for {action.source}"))
    # Never less than the longest pause: an outcome at once would have the next decision rewind at once.
    short = yield from _room_for_rewind(max(float(ctx.settings.loop_wait), REWIND_SPACE_MAX_PAUSE))
    if short is not None:
        return (yield from _outcome(action, False, f"pg_rewind not started: {short}",
                                    kind=ActionKind.REWIND_NO_SPACE))
    result: fx.Result = yield fx.RewindPg(source, action.keep_slots)
    kind = ActionKind.REWIND_SOURCE_UNREACHABLE if result.unreachable and not result.ok else None
    return (yield from _outcome(action, result.ok, result.message, kind=kind))


def status_document(cluster: ClusterView | None, optime: int | None, retain: tuple[str, ...] | None = None,
                    slots: tuple[tuple[str, int], ...] | None = None) -> ClusterStatus:
    """The `/status` document to write with a renewal or a release: the optime the core chose to
    publish (`decide._optime`: it never erases the one the DCS has), the slots to retain and the slot
    positions (None: those the DCS has: the next leader learns from them which slots it manages, the
    replicas go on advancing their copies to them), and the timeline number a promotion reserved,
    which only a promotion's claim ever changes."""
    status = cluster.status if cluster is not None else ClusterStatus()
    return ClusterStatus(optime=optime, slots=dict(status.slots) if slots is None else dict(slots),
                         retain_slots=status.retain_slots if retain is None else retain, timeline=status.timeline)


def _ensure_slots(action: EnsureSlots) -> StepGen[Outcome]:
    """A replica's slots: create, drop, then advance; each goes on whatever the one before did (they
    touch different slots), and the outcome names what failed."""
    if not action.drop and not action.advance and not action.advance_logical:
        return (yield from _result(action, (yield fx.EnsureSlots(action.create))))
    results: list[fx.Result] = []
    if action.create:
        results.append((yield fx.EnsureSlots(action.create)))
    if action.drop:
        results.append((yield fx.DropSlots(action.drop)))
    if action.advance:
        results.append((yield fx.AdvanceSlots(action.advance)))
    if action.advance_logical:
        results.append((yield fx.AdvanceLogicalSlots(action.advance_logical)))
    failed = [r.message for r in results if not r.ok]
    return (yield from _outcome(action, not failed, "; ".join(failed or [r.message for r in results])))


def _copy_logical_slots(action: CopyLogicalSlots, ctx: StepContext) -> StepGen[Outcome]:
    """A replica's copies of the permanent logical slots (PostgreSQL before 16 cannot create them in
    recovery): read their state files from the leader (checked there and here first: nothing is stopped for
    a copy that cannot work), with the WAL they need that this replica no longer has (fetched while
    PostgreSQL runs: the stop does not last longer for it), stop PostgreSQL, write them, start it again as
    the same replica. One restart for all the missing slots; a failure is reported and the core backs off
    before the next attempt."""
    source = upstream(ctx.cluster, action.leader)
    if source is None:
        return (yield from _outcome(action, False, f"no address known for {action.leader}"))
    read: fx.SlotStates = yield fx.ReadSlotStates(source, action.names)
    if not read.ok:  # the failed outcome is logged (one line), and the core backs off
        return (yield from _outcome(action, False, f"{COPY_WAITING}{read.message}" if read.waiting else read.message))
    yield from _before_stop()
    stopped = yield from _stop(ctx, "fast")
    if not stopped.ok:
        if read.segments:
            yield fx.DiscardSlotWal()  # the next attempt fetches again: nothing staged may linger
        return (yield from _outcome(action, False, stopped.message))
    written: fx.Result = yield fx.WriteSlotStates(read.states, read.snapshots, read.segments)
    started: fx.Result = yield fx.StartPg()  # with the configuration written last: the same replica
    if not written.ok:
        return (yield from _outcome(action, False, written.message))
    if not started.ok:
        return (yield from _outcome(action, False, started.message))
    return (yield from _outcome(action, True, f"copied logical slots {', '.join(action.names)} from {action.leader}"))


def primary_kill_after(ctx: StepContext, standby: bool) -> float | None:
    """`primary_stop_timeout`, as Patroni applies it: in synchronous mode (on or quorum), how long a
    primary's stop may take before PostgreSQL is killed (SIGKILL). None (pg_ctl_timeout, no kill) for a
    replica (`standby`: standby.signal present), outside synchronous mode, or when it is 0."""
    limit = ctx.primary_stop_timeout
    if limit <= 0 or ctx.settings.sync.mode is SyncMode.OFF or standby:
        return None
    return float(limit)


IMMEDIATE_STOP_KILL_AFTER = 3.0
"""Seconds a primary's immediate stop may take before PostgreSQL is killed (SIGKILL), in every mode. An
immediate stop is asked for when the lease is lost or at risk, and normally ends in well under a second;
one that does not (a frozen postmaster: SIGQUIT waits while its backends keep committing) would keep a
second writer up for pg_ctl_timeout. A kill loses nothing an immediate stop keeps: both need crash
recovery at the next start. Found by the chaos suite (a postmaster SIGSTOPped while etcd was cut off)."""


def _stop(ctx: StepContext, mode: fx.StopMode) -> StepGen[fx.Result]:
    standby = yield fx.StandbySignal()
    kill_after = primary_kill_after(ctx, standby)
    if mode == "immediate" and not standby:
        kill_after = min(kill_after or IMMEDIATE_STOP_KILL_AFTER, IMMEDIATE_STOP_KILL_AFTER)
    result: fx.Result = yield fx.StopPg(mode, kill_after)
    return result


def _before_stop(timeout: float = HOOK_TIMEOUT) -> StepGen[None]:
    result: fx.Result = yield fx.RunHook("before_stop", timeout)
    if not result.ok:
        yield fx.Log("warning", f"{result.message}; stopping PostgreSQL anyway")


# -- the leader key ------------------------------------------------------------------------------------


def _renew(action: RenewLeader, ctx: StepContext) -> StepGen[Outcome]:
    sent = yield fx.Now()
    if action.retain_slots is not None:
        retain = action.retain_slots
    else:
        existing = set(ctx.cluster.status.retain_slots) if ctx.cluster else set()
        retain = tuple(sorted(set(action.create_slots) | existing))
    if not (yield fx.UpdateLeaderKey(status_document(ctx.cluster, action.optime, retain, action.slots))):
        return Outcome(action.kind, False, "the leader key is no longer ours", sent)
    refused = yield from _keep_watchdog(action.watchdog, ctx, sent)
    if refused is not None:
        return Outcome(ActionKind.WATCHDOG_FAILED, False, refused, sent)
    notes: list[str] = []
    if action.failsafe is not None:
        try:
            yield fx.SetFailsafeKey(action.failsafe.members)
        except fx.DcsFailed as exc:
            notes.append(f"/failsafe not written: {exc}")
    if action.create_slots:
        created: fx.Result = yield fx.EnsureSlots(action.create_slots)
        if not created.ok:
            notes.append(created.message)
    if action.drop_slots:
        dropped: fx.Result = yield fx.DropSlots(action.drop_slots)
        if not dropped.ok:
            notes.append(dropped.message)
    if action.create_logical:
        logical: fx.Result = yield fx.CreateLogicalSlots(action.create_logical)
        if not logical.ok:
            notes.append(logical.message)
    if action.error:
        yield fx.Log("error", action.error)
    if action.write_initialize:
        yield fx.WriteInitialize(action.write_initialize, create_new=False)
    if action.clear_failover is not None:
        yield fx.DeleteFailoverKey(action.clear_failover)
    if action.repair_history:
        notes.append((yield from _repair_history(ctx)))
    if action.sync_step is not None:
        note = yield from _sync_step(action.sync_step)
        if note:
            notes.append(note)
    return Outcome(action.kind, True, "; ".join(notes), sent)


def _keep_watchdog(on: bool, ctx: StepContext, sent: float) -> StepGen[str | None]:
    """After a renewal (or failsafe round) sent at `sent` succeeded: arm or keep alive the watchdog (`on`),
    else make sure it is disarmed. Returns why it could not be armed when the mode requires it.

    It is fed only while that renewal proves the lease for longer than the watchdog's timeout
    (`HaSettings.may_feed_watchdog`): fed on a late answer, the watchdog could reset the host only after
    the lease had lapsed and another member had promoted."""
    if not on:
        yield fx.DisarmWatchdog()
        return None
    now = yield fx.Now()
    if not ctx.settings.may_feed_watchdog(sent, now):
        yield fx.Log("warning", f"the lease renewal took {now - sent:.1f}s: too late to keep the watchdog alive on it")
        return None
    armed: fx.Result = yield fx.ArmWatchdog(ctx.settings.watchdog_timeout)
    if armed.ok or ctx.settings.watchdog.mode is not WatchdogMode.REQUIRED:
        return None
    return f"watchdog could not be activated: {armed.message}"


def _failsafe_ping(action: FailsafeRound, ctx: StepContext) -> StepGen[Outcome]:
    """Failsafe mode with the DCS unreachable: ask every listed member to accept this primary as the
    leader. Ok only if all accepted (then the watchdog is kept alive on it, as on a renewal)."""
    sent = yield fx.Now()
    answers: tuple[fx.PingAnswer, ...] = yield fx.PingFailsafe(action.targets, action.timeout)
    refused = [f"{a.name} ({a.detail})" if a.detail else a.name for a in answers if not a.accepted]
    if refused or len(answers) != len(action.targets):
        return Outcome(action.kind, False, f"not accepted by {', '.join(refused) or 'every member'}", sent)
    yield from _keep_watchdog(action.watchdog, ctx, sent)
    return Outcome(action.kind, True, f"accepted by {len(answers)} member(s)", sent)


def _repair_history(ctx: StepContext) -> StepGen[str]:
    """Make `history` say what PostgreSQL's own timeline history says (model.history_for_lineage):
    rows a lost write left out are added, rows of other branches dropped."""
    if ctx.cluster is None:
        return ""
    state: LocalPg = yield fx.Probe()
    if state.timeline is None:
        return ""
    lineage = yield fx.ReadTimelineHistory(state.timeline)
    stamp = yield fx.WallStamp()
    rows = history_for_lineage(ctx.cluster.history, lineage, ctx.me, stamp, ctx.settings.max_timelines_history)
    if rows is None:
        return ""
    yield fx.SetHistory(tuple(rows))
    return f"history repaired up to timeline {state.timeline - 1}"


def _sync_step(step: SyncStep) -> StepGen[str]:
    """One step of the synchronous-replication planner; the next decision sees its effect."""
    match step:
        case SetSsn():
            result: fx.Result = yield fx.WriteSsn(step.value)
            return "" if result.ok else result.message
        case WriteSync():
            written = yield fx.SetSyncKey(step.state, step.expected_revision)
            return "" if written else "/sync changed meanwhile (compare-and-swap failed)"
        case DeleteSync():
            yield fx.DeleteSyncKey(step.expected_revision)
            return ""
        case _:
            return ""


# -- promotion -----------------------------------------------------------------------------------------


def _promote(action: Promote, ctx: StepContext) -> StepGen[Outcome]:
    sent = yield fx.Now()
    claim, reserved = yield from _claim_timeline(action, ctx)
    if not (yield fx.UpdateLeaderKey(claim)):
        yield from _unreserve(reserved)
        return Outcome(action.kind, False, "lost leader before promote", sent)
    if action.watchdog is not WatchdogMode.OFF:
        armed: fx.Result = yield fx.ArmWatchdog(ctx.settings.watchdog_timeout)
        if not armed.ok and action.watchdog is WatchdogMode.REQUIRED:
            # Patroni's rule: with mode required, no promotion without fencing. The key goes at once, so
            # that a member whose watchdog works takes over.
            yield fx.DeleteLeaderKey()
            yield from _unreserve(reserved)
            return Outcome(ActionKind.WATCHDOG_FAILED, False, f"not promoting: watchdog could not be activated: "
                           f"{armed.message}", sent)
        if not armed.ok:
            yield fx.Log("warning", f"watchdog could not be activated ({armed.message}): promoting without it "
                         "(watchdog mode automatic)")
    hook: fx.Result = yield fx.RunHook("pre_promote", HOOK_TIMEOUT)
    if not hook.ok:
        # Fencing refused: give the lock up at once so that another member can take over.
        yield fx.DeleteLeaderKey()
        yield fx.DisarmWatchdog()
        yield from _unreserve(reserved)
        return Outcome(ActionKind.PRE_PROMOTE_REFUSED, False, hook.message, sent)
    finish_by = max(action.finish_by, ctx.settings.lock_deadline(sent))
    budget = finish_by - (yield fx.Now())
    result: fx.Result | None = (yield fx.PromotePg(budget)) if budget >= 1 else None
    if result is None or not result.ok:
        # Too slow: stop it, so that it cannot complete later, when the lease may be somebody else's.
        yield fx.StopPg("immediate")
        yield fx.DisarmWatchdog()
        yield from _unreserve(reserved)
        detail = result.message if result is not None else "no lease time left to promote"
        return Outcome(action.kind, False, f"promotion abandoned and PostgreSQL stopped: {detail}", sent)
    yield fx.WritePgConfig("primary")  # no primary_conninfo / standby.signal left behind
    # Without this checkpoint pg_rewind on the old primary would read the old timeline from our
    # control file and conclude that nothing diverged.
    yield fx.CheckpointPg()
    if action.history_entry is not None and ctx.cluster is not None:
        yield from _record_promotion(action.history_entry, ctx)
    if ctx.cluster is not None and ctx.cluster.failover is not None:
        yield fx.DeleteFailoverKey(ctx.cluster.failover.revision)
    return Outcome(action.kind, True, "promoted", sent)


def _record_promotion(decided: tuple[int, int, str], ctx: StepContext) -> StepGen[None]:
    """Write the `history` row of the timeline this promotion ended (`history_after_promotion`)."""
    assert ctx.cluster is not None
    promoted: LocalPg = yield fx.Probe()
    lineage = (yield fx.ReadTimelineHistory(promoted.timeline)) if promoted.timeline is not None else []
    if promoted.timeline is not None and not lineage:
        yield fx.Log("warning", f"timeline {promoted.timeline}: history file unreadable, recording the switch "
                     f"point decided at {decided[1]}")
    stamp = yield fx.WallStamp()
    rows = history_after_promotion(ctx.cluster.history, lineage, decided, promoted.timeline, ctx.me, stamp,
                                   ctx.settings.max_timelines_history)
    yield fx.SetHistory(tuple(rows))


def _claim_timeline(action: Promote, ctx: StepContext) -> StepGen[tuple[ClusterStatus | None, tuple[int, ...]]]:
    """Reserve the timeline number the core chose (`Promote.timeline`, one no promotion in this cluster
    has used), before promoting.

    PostgreSQL numbers a new timeline 1 + the highest N with an `N.history` file in pg_wal, and tells
    timelines apart by number only. The `history` row of a promotion is written after it; a new
    primary that loses the DCS in between leaves no trace of its timeline there, and the next
    promotion would reuse the number with different WAL. So the number is published in `/status`
    first (with the ownership-checked renewal that precedes the promotion), and when the cluster has
    used higher numbers than this server knows, comment-only history files fill the gap, so
    PostgreSQL skips them. Checked on PostgreSQL 15: a running standby ignores such a file (it is not
    a child of its timeline), the promotion takes the next number, and the new timeline's own
    history names the real parent. A standby *started* with a placeholder above its timeline would
    take it as the newest timeline and wait for its WAL for ever, so the files written are removed
    again if this promotion does not happen (`_unreserve`).

    Returns the status to publish and the timelines reserved.
    """
    if ctx.cluster is None or action.timeline is None:
        return None, ()
    local = (yield fx.Probe()).timeline
    if local is None:
        return None, ()
    target = max(action.timeline, local + 1)  # PostgreSQL never takes a lower one
    if action.ignored_timeline is not None:
        yield fx.Log("warning", f"ignoring the cluster's timeline {action.ignored_timeline} as implausible (more "
                     f"than {TIMELINE_RESERVE_MARGIN} beyond this server's timeline {local}): promoting to timeline "
                     f"{target}")
    reserved = yield fx.ReserveTimelines(tuple(range(local + 1, target)))
    status = status_document(ctx.cluster, ctx.cluster.status.optime)  # as it is
    return replace(status, timeline=target), reserved


def _unreserve(reserved: tuple[int, ...]) -> StepGen[None]:
    if reserved:
        yield fx.UnreserveTimelines(reserved)


# -- stopping ------------------------------------------------------------------------------------------------


def _demote(action: Demote, ctx: StepContext) -> StepGen[Outcome]:
    state: LocalPg = yield fx.Probe()
    note = ""
    if action.mode is DemoteMode.GRACEFUL:
        # Runs inline in the HA loop, so the lease is only as good as `finish_by`: whatever comes before
        # the stop request (which ends new commits at once) must leave it the time to get there.
        note = yield from _checkpoint_before_stop(action.finish_by)
        left = yield from _time_before_stop(action.finish_by)
        if left is None or left >= MIN_STEP_BEFORE_STOP:
            yield from _before_stop(HOOK_TIMEOUT if left is None else min(HOOK_TIMEOUT, left))
        else:
            yield fx.Log("warning", "no lease time left for the before_stop hook: stopping PostgreSQL without it")
    stop_mode: fx.StopMode = "immediate" if action.mode in (DemoteMode.IMMEDIATE,
                                                            DemoteMode.IMMEDIATE_NOLOCK) else "fast"
    result = yield from _stop(ctx, stop_mode)
    if not result.ok:
        return (yield from _outcome(action, False, result.message))  # still a writer: the watchdog stays armed
    yield fx.DisarmWatchdog()  # the safepoint: PostgreSQL accepts no writes any more
    if action.release:
        yield fx.DeleteLeaderKey(status_document(ctx.cluster, state.wal_lsn))
    return (yield from _outcome(action, True, f"stopped ({stop_mode}){note}"))


def _time_before_stop(finish_by: float | None) -> StepGen[float | None]:
    """Seconds a graceful demote may still spend before its stop request (None: no deadline known)."""
    if finish_by is None:
        return None
    now = yield fx.Now()
    return float(finish_by - now - STOP_REQUEST_RESERVE)


def _checkpoint_before_stop(finish_by: float | None) -> StepGen[str]:
    """The CHECKPOINT before a switchover's stop, which only shortens the shutdown checkpoint: bounded by
    the lease (`finish_by`), skipped when too little of it is left. A note for the outcome."""
    left = yield from _time_before_stop(finish_by)
    if left is not None and left < MIN_STEP_BEFORE_STOP:
        yield fx.Log("warning", "no lease time left for a checkpoint before the switchover's stop: stopping at once")
        return "; checkpoint skipped (no lease time left)"
    result: fx.Result = yield fx.CheckpointPg(left)
    if result.ok:
        return ""
    yield fx.Log("warning", f"checkpoint before the switchover's stop: {result.message}; stopping PostgreSQL anyway")
    return f"; checkpoint abandoned ({result.message})"


def _shutdown(action: Shutdown, ctx: StepContext) -> StepGen[Outcome]:
    if not action.stop_postgres:
        yield fx.DisarmWatchdog()  # the agent goes: nobody would keep it alive
        return (yield from _outcome(action, True, "PostgreSQL left running (maintenance mode)"))
    yield from _before_stop()
    result = yield from _stop(ctx, "fast")
    if result.ok:
        yield fx.DisarmWatchdog()
    if action.release and result.ok:
        yield fx.DeleteLeaderKey(status_document(ctx.cluster, action.optime))
    return (yield from _outcome(action, result.ok, result.message))


# -- starting ------------------------------------------------------------------------------------------------


def _start(action: StartPostgres, ctx: StepContext) -> StepGen[Outcome]:
    follow = target(ctx, action.follow)
    if action.follow is not None and follow is None:
        return (yield from _outcome(action, False, f"no address known for {action.follow}"))
    written: fx.Result = yield fx.WritePgConfig("primary" if action.role == "primary" else "replica", follow)
    if not written.ok:
        return (yield from _outcome(action, False, written.message))
    return (yield from _result(action, (yield fx.StartPg())))


def _restart(action: Restart, ctx: StepContext) -> StepGen[Outcome]:
    role: fx.PgRole = "primary" if action.role == "primary" else "replica"
    written: fx.Result = yield fx.WritePgConfig(role, target(ctx, action.follow))
    if not written.ok:
        return (yield from _outcome(action, False, written.message))
    yield from _before_stop()
    stopped = yield from _stop(ctx, "fast")
    if not stopped.ok:
        return (yield from _outcome(action, False, stopped.message))
    if role == "primary" and action.require_lock:
        # The stop may have taken long (a shutdown checkpoint) and the DCS may have gone meanwhile:
        # the lease may have lapsed and another member promoted. Only a renewal now allows a writable
        # start; otherwise PostgreSQL stays stopped and the next HA cycle decides (a replica of the new
        # leader, or a primary again once the key is proven ours).
        try:
            held = yield fx.UpdateLeaderKey()
        except fx.DcsFailed as exc:
            return (yield from _outcome(action, False, f"stopped, not started as a primary: leader key "
                                        f"unconfirmed ({exc})"))
        if not held:
            return (yield from _outcome(action, False, "stopped, not started as a primary: the leader key is no "
                                        "longer ours"))
    started: fx.Result = yield fx.StartPg()
    return (yield from _outcome(action, started.ok, "restarted successfully" if started.ok else started.message))


def _clone(action: Clone | Reinitialize, ctx: StepContext, *, replacing: bool = False) -> StepGen[Outcome]:
    """Create this replica's data directory with the configured methods, configure it, start it.

    `replacing`: an operator's reinitialize, where the data directory still holds the old data, which the
    request allows to remove. A clone without a source (`action.source` None) is one the core allowed
    because a `no_leader` method exists: only such methods run."""
    source = upstream(ctx.cluster, action.source) if action.source is not None else None
    if action.source is not None and source is None:
        return (yield from _outcome(action, False, f"no address known for {action.source}"))
    created, method = yield from create_replica(ctx.replica_methods, source, replacing=replacing)
    if not created.ok:
        return (yield from _outcome(action, False, created.short))
    if method.name != BASEBACKUP.name:
        # A backup tool restores the source's own signal files and postgresql.auto.conf (a restore_command,
        # a primary_conninfo of its own) that would override what pgwarden configures.
        sanitized: fx.Result = yield fx.SanitizeRestored()
        if not sanitized.ok:
            return (yield from _outcome(action, False, sanitized.message))
    written: fx.Result = yield fx.WritePgConfig("replica", upstream(ctx.cluster, action.follow) or source)
    if not written.ok:
        return (yield from _outcome(action, False, written.message))
    return (yield from _result(action, (yield fx.StartPg())))


def create_replica(methods: tuple[ReplicaMethod, ...], source: fx.Upstream | None, *, replacing: bool = False,
                   ) -> StepGen[tuple[fx.Result, ReplicaMethod]]:
    """Try the replica creation methods in order until one succeeds: the result, and the method it came from.

    Without a `source` only `no_leader` methods run. What a failed method left is removed before the next
    one (unless it keeps its data), and only that: the directory was empty when the clone began (the core
    clones only into an empty one), or, `replacing`, an operator asked for its data to be replaced. A
    method with `keep_data` starts from whatever is there (an incremental restore); a method after it
    starts from an empty directory again. pg_basebackup removes its own leftovers.
    """
    usable = [m for m in methods if source is not None or m.no_leader]
    if not usable:
        return fx.Result(False, "no replica creation method can run without a member to copy from "
                         "(none has no_leader)"), BASEBACKUP
    dirty = replacing  # the directory holds data this action may remove
    failures: list[str] = []
    for index, method in enumerate(usable):
        if dirty and not method.keep_data:
            emptied: fx.Result = yield fx.EmptyDataDir()
            if not emptied.ok:
                failures.append(f"emptying the data directory: {emptied.short}")
                break
            dirty = False
        if method.name == BASEBACKUP.name and source is not None:
            result: fx.Result = yield fx.Basebackup(source)
        else:
            result = yield fx.RunReplicaMethod(method.name, source)
        if result.ok:
            return result, method
        failures.append(result.short if len(usable) == 1 else f"{method.name}: {result.short}")
        following = usable[index + 1].name if index + 1 < len(usable) else None
        yield fx.Log("warning", f"replica creation method {method.name} failed: {result.short}"
                     + (f"; trying {following}" if following else ""))
        if method.keep_data:
            dirty = True  # kept, for this method's next attempt, unless a method after it needs the room
        elif method.name != BASEBACKUP.name:
            emptied = yield fx.EmptyDataDir()
            dirty = not emptied.ok
    summary = "; ".join(failures)
    return fx.Result(False, summary, summary), usable[-1]


def _reinitialize(action: Reinitialize, ctx: StepContext) -> StepGen[Outcome]:
    if upstream(ctx.cluster, action.source) is None:
        return (yield from _outcome(action, False, f"no address known for {action.source}"))
    # The operator asked for this node's data to be replaced: no copy is kept (`.failed` copies of
    # repeated reinitializations once filled a disk); the directory itself stays. It is emptied before
    # the first method unless that one keeps the data (`keep_data`: an incremental restore).
    stopped = yield from _stop(ctx, "fast")
    if not stopped.ok:
        return (yield from _outcome(action, False, stopped.message))
    return (yield from _clone(action, ctx, replacing=True))


# -- a new cluster ---------------------------------------------------------------------------------------


def _bootstrap(action: Bootstrap, ctx: StepContext) -> StepGen[Outcome]:
    """The initialize race and, if won, a whole new cluster. Undone if any step fails: what this attempt
    created is removed (no user data in it: never moved aside, never a directory that was there
    before), `initialize` deleted so another node can try. Whether and when to try again is the core's
    decision (backoff, giving up), from the outcome: a lost race is an outcome of its own kind."""
    return (yield from _new_cluster(action, ctx, lambda: _bootstrap_steps(ctx.bootstrap_method),
                                    what="bootstrap", done="initialized a new cluster"))


def _new_cluster(action: Bootstrap | BootstrapStandby, ctx: StepContext,
                 fill: Callable[[], StepGen[tuple[str, fx.Result]]], *, what: str, done: str) -> StepGen[Outcome]:
    """What every new cluster's first member does around `fill` (which makes the data directory and starts
    PostgreSQL: the step reached and its result): the initialize race first; after `fill`, the leader
    key, `/config` seeded and the system identifier in `initialize`. When a step fails, what this attempt
    created is removed and `initialize` deleted, so another member can try."""
    sent = yield fx.Now()
    try:
        won = yield fx.WriteInitialize("", create_new=True)
    except fx.DcsFailed as exc:
        return Outcome(ActionKind.LOST_INITIALIZE_RACE, False, f"DCS error: {exc}", sent)
    if not won:
        return Outcome(ActionKind.LOST_INITIALIZE_RACE, False, "failed to acquire initialize lock", sent)
    existed, refused = yield fx.InspectDataDir()  # refused: e.g. an empty directory owned by root
    if refused:
        step, output, summary = "checking the data directory", refused, refused
    else:
        step, result = yield from fill()
        if result.ok:
            sent = yield fx.Now()
            if (yield fx.AcquireLeaderKey()):
                yield fx.SeedConfig(dict(ctx.bootstrap_dcs), revision=0)
                state: LocalPg = yield fx.Probe()
                yield fx.WriteInitialize(state.sysid or "", create_new=False)
                return Outcome(action.kind, True, done, sent)
            step, result = "acquire leader", fx.Result(False, "somebody else holds the leader key")
        output, summary = result.message, result.short
    yield fx.Log("error", f"{what} failed at {step}: {output}; undoing")
    if not refused:
        yield fx.StopPg("immediate")
        undone: fx.Result = yield fx.UndoBootstrap(existed)
        if not undone.ok:
            yield fx.Log("error", f"could not undo the failed bootstrap: {undone.message}")
    try:
        yield fx.CancelInitialization()
    except fx.DcsFailed as exc:
        yield fx.Log("error", f"could not delete the initialize key after the failed bootstrap: {exc}")
    return (yield from _outcome(action, False, f"{what} failed at {step}: {summary}"))


def _bootstrap_steps(method: BootstrapMethod | None = None) -> StepGen[tuple[str, fx.Result]]:
    """initdb (or the custom method's steps), configure, start, create roles, post_bootstrap: the step
    reached and its result."""
    steps: tuple[tuple[str, fx.Effect], ...] = (
        ("initdb", fx.Initdb()),
        ("configure", fx.WritePgConfig("primary")),
        ("start", fx.StartPg()),
    ) if method is None else _custom_bootstrap(method)
    for step, effect in (*steps, ("create roles", fx.CreateRoles()), ("post_bootstrap", fx.PostBootstrap())):
        result: fx.Result = yield effect
        if not result.ok:
            return step, result
    return "done", fx.Result(True)


def _custom_bootstrap(method: BootstrapMethod) -> tuple[tuple[str, fx.Effect], ...]:
    """A custom bootstrap method: its command fills the data directory (a backup restored, typically); with
    recovery settings PostgreSQL then starts in archive recovery until it ends, which promotes it to the
    new cluster's first primary on a new timeline. It is then restarted as a plain primary, so that no
    recovery setting stays behind (a changed recovery_target would wait as a pending restart)."""
    recovery = method.recovery_conf or None
    return (
        (f"bootstrap method {method.name}", fx.RunBootstrapMethod()),
        ("preparing the restored data directory", fx.SanitizeRestored(method.keep_existing_recovery_conf)),
        ("configure", fx.WritePgConfig("primary", recovery=recovery)),
        ("start", fx.StartPg()),
        ("waiting for end of recovery after bootstrap", fx.FinishRecovery()),
        ("configure", fx.WritePgConfig("primary")),
        ("restart", fx.StopPg("fast")),
        ("start", fx.StartPg()),
    )


# -- a new standby cluster ---------------------------------------------------------------------------------


def _bootstrap_standby(action: BootstrapStandby, ctx: StepContext) -> StepGen[Outcome]:
    """The first member of a standby cluster: the initialize race and, if won, a copy of the remote primary
    configured as its standby, started, then the leader key (the standby leader), `/config` seeded and the
    copied system identifier in `initialize`. Undone as a failed bootstrap when a step fails (what the copy
    created is removed, `initialize` deleted); whether to try again is the core's decision."""

    def fill() -> StepGen[tuple[str, fx.Result]]:
        remote = remote_upstream(ctx.settings)
        if remote is None:
            return "reading standby_cluster", fx.Result(False, "standby_cluster is no longer set")
        return (yield from _standby_steps(ctx, remote))

    return (yield from _new_cluster(action, ctx, fill, what="standby leader bootstrap",
                                    done="bootstrapped a standby leader from the remote primary"))


def _standby_steps(ctx: StepContext, remote: fx.Upstream) -> StepGen[tuple[str, fx.Result]]:
    """Copy the remote, configure PostgreSQL as its standby, start: the step reached and its result."""
    copied = yield from _copy_remote(ctx, remote)
    if not copied.ok:
        return "copying the remote primary", copied
    for step, effect in (("configure", fx.WritePgConfig("replica", remote)), ("start", fx.StartPg())):
        result: fx.Result = yield effect
        if not result.ok:
            return step, result
    return "done", fx.Result(True)


def _copy_remote(ctx: StepContext, remote: fx.Upstream) -> StepGen[fx.Result]:
    """Fill the empty data directory from the remote with `standby_cluster.create_replica_methods`, in order,
    until one works (`create_replica`: basebackup copies from host:port; a custom method gets the remote
    as its `--connstring`). Without a `host` (a standby cluster fed by restore_command alone) only the
    methods with `no_leader` can run, from a backup repository."""
    if not remote.host and not any(m.no_leader for m in ctx.standby_methods):
        why = "standby_cluster has no host to copy from, and none of its create_replica_methods has no_leader"
        return fx.Result(False, why, why)
    result, method = yield from create_replica(ctx.standby_methods, remote if remote.host else None)
    if result.ok and method.name != BASEBACKUP.name:
        # As after a replica's clone: a backup tool's restore leaves its own recovery.signal and recovery
        # settings in postgresql.auto.conf (a restore_command), which would win over standby_cluster's.
        result = yield fx.SanitizeRestored()
    return result
