"""Carry out one decided action through the adapters and report how it went.

Deliberately dumb (style-anchors: "the executor reports; the core decides"): each action is one fixed
sequence of adapter calls ending in one `Outcome`. No retries, no fallbacks: if something fails the
next decision sees the failure and chooses what to do. Expected failures come back as values; an
exception escaping from here is a bug and is turned into a failed outcome by the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden.aio import bounded
from pgwarden.config import EffectiveConfig
from pgwarden.core.decide import LOST_INITIALIZE_RACE
from pgwarden.core.render import TAKEN_BY_ANOTHER
from pgwarden.core.sync import DeleteSync, SetSsn, SyncStep, WriteSync
from pgwarden.core.types import (
    AcquireLeader,
    Action,
    Bootstrap,
    Clone,
    Demote,
    DemoteMode,
    EnsureSlots,
    Follow,
    Outcome,
    Promote,
    Reinitialize,
    ReleaseLeader,
    RemoveDataDirectory,
    RenewLeader,
    Restart,
    Rewind,
    Shutdown,
    StartPostgres,
    TaskKind,
    Wait,
)
from pgwarden.dcs.base import Dcs, DcsError
from pgwarden.model import (
    TIMELINE_RESERVE_MARGIN,
    ClusterStatus,
    ClusterView,
    DataDirState,
    HistoryEntry,
    history_for_lineage,
    timeline_to_claim,
)
from pgwarden.postgres.controller import PgController
from pgwarden.postgres.datadir import directory_state, replace_problem
from pgwarden.postgres.probe import probe
from pgwarden.postgres.process import PgResult, error_summary
from pgwarden.postgres.settings import Upstream

from .callbacks import HOOK_TIMEOUT, run_hook
from .wiring import ha_settings, pg_settings

log = logging.getLogger(__name__)

STOP_REQUEST_RESERVE = 0.5
"""Seconds of the lease a graceful demote keeps, after its CHECKPOINT and before_stop hook, to get the
stop request (which ends new commits) to PostgreSQL before the lock deadline."""
MIN_STEP_BEFORE_STOP = 0.2
"""Below this many seconds left, the step before the stop is skipped rather than started."""

# Actions that may run for a long time: they run in the background while the loop keeps deciding
# (and, on a leader, renewing its lock).
BACKGROUND: Mapping[type, TaskKind] = {
    Bootstrap: TaskKind.BOOTSTRAP,
    Clone: TaskKind.CLONE,
    Rewind: TaskKind.REWIND,
    StartPostgres: TaskKind.START,
    Promote: TaskKind.PROMOTE,
    RemoveDataDirectory: TaskKind.REMOVE_DATA,
    Restart: TaskKind.RESTART,
    Reinitialize: TaskKind.REINITIALIZE,
}


@dataclass(frozen=True, slots=True)
class ExecContext:
    dcs: Dcs
    config: EffectiveConfig
    cluster: ClusterView | None


def _outcome(action: Action, ok: bool, detail: str = "", sent_at: float | None = None) -> Outcome:
    return Outcome(action=action.kind, ok=ok, detail=detail, sent_at=time.monotonic() if sent_at is None else sent_at)


def _controller(ctx: ExecContext, role: str) -> PgController:
    return PgController(pg_settings(ctx.config, role))


def _upstream(ctx: ExecContext, member_name: str | None) -> Upstream | None:
    if member_name is None or ctx.cluster is None:
        return None
    member = ctx.cluster.member(member_name)
    address = member.host_port if member else None
    if address is None:
        return None
    return Upstream(member_name, address[0], address[1])


async def execute(action: Action, ctx: ExecContext) -> Outcome:
    """Run `action`; never raises for expected failures (DCS down, a command failing)."""
    try:
        return await _dispatch(action, ctx)
    except DcsError as exc:
        return _outcome(action, False, f"DCS error: {exc}")


async def _dispatch(action: Action, ctx: ExecContext) -> Outcome:
    match action:
        case Wait():
            return _outcome(action, True)
        case Bootstrap():
            return await _bootstrap(action, ctx)
        case Clone():
            return await _clone(action, ctx)
        case AcquireLeader():
            sent = time.monotonic()
            won = await ctx.dcs.acquire_leader()
            return _outcome(action, won, "" if won else TAKEN_BY_ANOTHER, sent)
        case RenewLeader():
            return await _renew(action, ctx)
        case Promote():
            return await _promote(action, ctx)
        case Demote():
            return await _demote(action, ctx)
        case StartPostgres():
            return await _start(action, ctx)
        case Follow():
            upstream = _upstream(ctx, action.leader)
            if upstream is None:
                return _outcome(action, False, f"no address known for {action.leader}")
            result = await _controller(ctx, "replica").set_follow(*upstream)
            return _outcome(action, result.ok, result.message)
        case Rewind():
            upstream = _upstream(ctx, action.source)
            if upstream is None:
                return _outcome(action, False, f"no address known for {action.source}")
            result = await _controller(ctx, "replica").rewind(upstream.host, upstream.port, upstream.member)
            return _outcome(action, result.ok, result.message)
        case RemoveDataDirectory():
            result = await _controller(ctx, "replica").move_data_dir_aside()
            return _outcome(action, result.ok, result.message)
        case ReleaseLeader():
            released = await ctx.dcs.delete_leader(_status(ctx, action.optime))
            return _outcome(action, released)
        case Shutdown():
            return await _shutdown(action, ctx)
        case Restart():
            return await _restart(action, ctx)
        case EnsureSlots():
            result = await _controller(ctx, "replica").ensure_slots(action.create)
            return _outcome(action, result.ok, result.message)
        case Reinitialize():
            return await _reinitialize(action, ctx)
        case _:
            raise AssertionError(f"unhandled action {action!r}")


async def _renew(action: RenewLeader, ctx: ExecContext) -> Outcome:
    sent = time.monotonic()
    retain = tuple(sorted(set(action.create_slots) | _existing_retained(ctx)))
    ok = await ctx.dcs.update_leader(_status(ctx, action.optime, retain))
    if not ok:
        return _outcome(action, False, "the leader key is no longer ours", sent)
    notes: list[str] = []
    pg = _controller(ctx, "primary")
    if action.create_slots:
        result = await pg.ensure_slots(action.create_slots)
        if not result.ok:
            notes.append(result.message)
    if action.drop_slots:
        result = await pg.drop_slots(action.drop_slots)
        if not result.ok:
            notes.append(result.message)
    if action.write_initialize:
        await ctx.dcs.initialize(action.write_initialize, create_new=False)
    if action.clear_failover is not None:
        await ctx.dcs.delete_failover(action.clear_failover)
    if action.repair_history:
        notes.append(await _repair_history(ctx))
    if action.sync_step is not None:
        note = await _sync_step(action.sync_step, ctx)
        if note:
            notes.append(note)
    return _outcome(action, True, "; ".join(notes), sent)


def _status(ctx: ExecContext, optime: int | None, retain: tuple[str, ...] = ()) -> ClusterStatus:
    """The `status` value to write with a renewal or a release.

    An action without an optime (PostgreSQL not running as a primary right now: a restart, a
    promotion in progress, a crash in maintenance mode) keeps the optime the DCS has: writing none
    would erase the only record of how far the cluster's WAL went, and the next race, which checks
    maximum_lag_on_failover against it, would let any replica, however far behind, promote.
    """
    if optime is None and ctx.cluster is not None:
        optime = ctx.cluster.status.optime
    timeline = ctx.cluster.status.timeline if ctx.cluster is not None else None  # never dropped either
    return ClusterStatus(optime=optime, retain_slots=retain, timeline=timeline)


async def _repair_history(ctx: ExecContext) -> str:
    """Make `history` say what PostgreSQL's own timeline history says (model.history_for_lineage):
    rows a lost write left out are added, rows of other branches dropped."""
    if ctx.cluster is None:
        return ""
    pg = _controller(ctx, "primary")
    state = await probe(pg.settings)
    if state.timeline is None:
        return ""
    rows = history_for_lineage(ctx.cluster.history, await pg.timeline_history(state.timeline), ctx.config.name,
                               datetime.now(UTC).isoformat(), ctx.config.max_timelines_history)
    if rows is None:
        return ""
    await ctx.dcs.set_history(rows)
    return f"history repaired up to timeline {state.timeline - 1}"


async def _sync_step(step: SyncStep, ctx: ExecContext) -> str:
    """One step of the synchronous-replication planner; the next decision sees its effect."""
    match step:
        case SetSsn():
            result = await _controller(ctx, "primary").set_synchronous_standby_names(step.value)
            return "" if result.ok else result.message
        case WriteSync():
            written = await ctx.dcs.set_sync(step.state, step.expected_revision)
            return "" if written else "/sync changed meanwhile (compare-and-swap failed)"
        case DeleteSync():
            await ctx.dcs.delete_sync(step.expected_revision)
            return ""
        case _:
            return ""


def _existing_retained(ctx: ExecContext) -> set[str]:
    return set(ctx.cluster.status.retain_slots) if ctx.cluster else set()


async def _promote(action: Promote, ctx: ExecContext) -> Outcome:
    sent = time.monotonic()
    claim, placeholders = await _claim_timeline(ctx)
    if not await ctx.dcs.update_leader(claim):
        _unreserve(placeholders)
        return _outcome(action, False, "lost leader before promote", sent)
    hook_ok, hook_detail = await run_hook(ctx.config.local.postgresql.pre_promote, "pre_promote")
    if not hook_ok:
        # Fencing refused: give the lock up at once so that another member can take over.
        await ctx.dcs.delete_leader()
        _unreserve(placeholders)
        return Outcome(action="pre_promote", ok=False, detail=hook_detail, sent_at=sent)
    pg = _controller(ctx, "primary")
    finish_by = max(action.finish_by, ha_settings(ctx.config).lock_deadline(sent))
    budget = finish_by - time.monotonic()
    result = await pg.promote(timeout=budget) if budget >= 1 else None
    if result is None or not result.ok:
        # Too slow: stop it, so that it cannot complete later, when the lease may be somebody else's.
        await pg.stop("immediate")
        _unreserve(placeholders)
        detail = result.message if result is not None else "no lease time left to promote"
        return _outcome(action, False, f"promotion abandoned and PostgreSQL stopped: {detail}", sent)
    await pg.write_config("primary")  # no primary_conninfo / standby.signal left behind
    # Without this checkpoint pg_rewind on the old primary would read the old timeline from our
    # control file and conclude that nothing diverged.
    await pg.checkpoint()
    if action.history_entry is not None and ctx.cluster is not None:
        promoted = await probe(pg.settings)
        entry = await _switch_point(pg, action.history_entry, promoted.timeline)
        exact = entry is not action.history_entry  # it came from PostgreSQL's own history file
        await ctx.dcs.set_history(_history_with(ctx, entry, promoted.timeline, exact))
    if ctx.cluster is not None and ctx.cluster.failover is not None:
        await ctx.dcs.delete_failover(ctx.cluster.failover.revision)
    return _outcome(action, True, "promoted", sent)


async def _claim_timeline(ctx: ExecContext) -> tuple[ClusterStatus | None, list[Path]]:
    """Reserve a timeline number no promotion in this cluster has used, before promoting.

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

    Returns the status to publish and the placeholder files written.
    """
    if ctx.cluster is None:
        return None, []
    pg_settings_ = pg_settings(ctx.config, "primary")
    local = (await probe(pg_settings_)).timeline
    if local is None:
        return None, []
    target, ignored = timeline_to_claim(ctx.cluster, local)
    if ignored is not None:
        log.warning("ignoring the cluster's timeline %d as implausible (more than %d beyond this server's "
                    "timeline %d): promoting to timeline %d", ignored, TIMELINE_RESERVE_MARGIN, local, target)
    written = _reserve_timelines(pg_settings_.data_dir / "pg_wal", range(local + 1, target))
    return replace(_status(ctx, None, ctx.cluster.status.retain_slots), timeline=target), written


def _reserve_timelines(pg_wal: Path, timelines: range) -> list[Path]:
    written = []
    for timeline in timelines:
        path = pg_wal / f"{timeline:08X}.history"
        try:
            with path.open("x") as placeholder:  # never overwrite a real history file
                placeholder.write(f"# pgwarden: timeline {timeline} was used by another member of this cluster\n")
            written.append(path)
            log.info("reserved timeline %d (used elsewhere in the cluster): wrote %s", timeline, path.name)
        except FileExistsError:
            pass
        except OSError as exc:
            log.warning("cannot reserve timeline %d in %s: %s", timeline, pg_wal, exc)
    return written


def _unreserve(placeholders: list[Path]) -> None:
    for path in placeholders:
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot remove the placeholder %s: %s", path, exc)


async def _switch_point(
    pg: PgController, decided: tuple[int, int, str], new_timeline: int | None
) -> tuple[int, int, str]:
    """The `history` row of the timeline a promotion just ended, as PostgreSQL itself recorded it.

    The decision's LSN is where this server had replayed when it decided to promote; PostgreSQL
    switches timeline only where its replay ends, later (e.g. past the old primary's shutdown
    checkpoint after a switchover). A row with the earlier LSN makes the core believe that the old
    primary diverged, and it would rewind it forever. So the switch point comes from the new
    timeline's history file (its last line: parent timeline, switch LSN, reason); only when that
    cannot be read does the decision's own entry stand. The parent is not always new_timeline - 1:
    a promotion skips numbers reserved elsewhere in the cluster (`_claim_timeline`).
    """
    if new_timeline is None:
        return decided
    rows = await pg.timeline_history(new_timeline)
    if rows:
        ended, lsn, reason = rows[-1]
        return ended, lsn, reason or decided[2]
    log.warning("timeline %s: history file unreadable, recording the switch point decided at %s", new_timeline,
                decided[1])
    return decided


def _history_with(ctx: ExecContext, entry: tuple[int, int, str], new_timeline: int | None,
                  exact: bool = False) -> list[HistoryEntry]:
    """`history` with a row for the timeline this promotion ended.

    With `exact`, `entry` is the parent timeline and switch point from PostgreSQL's own history file
    (then rows of timelines above the parent are dropped: they belong to other branches,
    e.g. a timeline number reserved because another member used it, and a node on such a timeline
    must not find a switch point for it in this lineage). Otherwise it is the decision's entry, and
    the ended timeline is taken as the one before the timeline PostgreSQL reports (the decision's
    idea may lag). Otherwise rows are only ever added, except a row for the same timeline.
    """
    assert ctx.cluster is not None
    timeline, lsn, reason = entry
    if new_timeline is not None and new_timeline - 1 > timeline and not exact:
        timeline = new_timeline - 1
    rows = [h for h in ctx.cluster.history if h.timeline < timeline or (h.timeline > timeline and not exact)]
    stamp = datetime.now(UTC).isoformat()
    rows.append(HistoryEntry(timeline, lsn, reason, stamp, ctx.config.name))
    rows.sort(key=lambda h: h.timeline)
    limit = ctx.config.max_timelines_history
    return rows[-limit:] if limit > 0 else rows


async def _demote(action: Demote, ctx: ExecContext) -> Outcome:
    pg = _controller(ctx, "replica")
    pg_state = await probe(pg.settings)
    note = ""
    if action.mode is DemoteMode.GRACEFUL:
        # Runs inline in the HA loop, so the lease is only as good as `finish_by`: whatever comes before
        # the stop request (which ends new commits at once) must leave it the time to get there.
        note = await _checkpoint_before_stop(pg, action.finish_by)
        left = _time_before_stop(action.finish_by)
        if left is None or left >= MIN_STEP_BEFORE_STOP:
            await _before_stop(ctx, HOOK_TIMEOUT if left is None else min(HOOK_TIMEOUT, left))
        else:
            log.warning("no lease time left for the before_stop hook: stopping PostgreSQL without it")
    stop_mode = "immediate" if action.mode in (DemoteMode.IMMEDIATE, DemoteMode.IMMEDIATE_NOLOCK) else "fast"
    result = await pg.stop(stop_mode, kill_after=_primary_kill_after(ctx, pg))
    if not result.ok:
        return _outcome(action, False, result.message)
    if action.release:
        await ctx.dcs.delete_leader(ClusterStatus(optime=pg_state.wal_lsn))
    return _outcome(action, True, f"stopped ({stop_mode}){note}")


def _primary_kill_after(ctx: ExecContext, pg: PgController) -> float | None:
    """`primary_stop_timeout`, as Patroni applies it: in synchronous mode (on or quorum), how long a
    primary's stop may take before PostgreSQL is killed (SIGKILL). None (pg_ctl_timeout, no kill) for a
    replica, outside synchronous mode, or when it is 0."""
    limit = ctx.config.primary_stop_timeout
    if limit <= 0 or ctx.config.synchronous_mode == "off" or (pg.data_dir / "standby.signal").exists():
        return None
    return float(limit)


def _time_before_stop(finish_by: float | None) -> float | None:
    """Seconds a graceful demote may still spend before its stop request (None: no deadline known)."""
    return None if finish_by is None else finish_by - time.monotonic() - STOP_REQUEST_RESERVE


async def _checkpoint_before_stop(pg: PgController, finish_by: float | None) -> str:
    """The CHECKPOINT before a switchover's stop, which only shortens the shutdown checkpoint: bounded by
    the lease (`finish_by`), skipped when too little of it is left. A note for the outcome."""
    left = _time_before_stop(finish_by)
    if left is None:
        result = await pg.checkpoint()
    elif left < MIN_STEP_BEFORE_STOP:
        log.warning("no lease time left for a checkpoint before the switchover's stop: stopping at once")
        return "; checkpoint skipped (no lease time left)"
    else:
        try:
            result = await bounded(pg.checkpoint(timeout=left), left)
        except TimeoutError:
            result = PgResult.failed(f"checkpoint timed out after {left:.1f}s")
    if result.ok:
        return ""
    log.warning("checkpoint before the switchover's stop: %s; stopping PostgreSQL anyway", result.message)
    return f"; checkpoint abandoned ({result.message})"


async def _start(action: StartPostgres, ctx: ExecContext) -> Outcome:
    pg = _controller(ctx, action.role)
    upstream = _upstream(ctx, action.follow)
    written = await pg.write_config("primary" if action.role == "primary" else "replica", upstream)
    if not written.ok:
        return _outcome(action, False, written.message)
    result = await pg.start()
    return _outcome(action, result.ok, result.message)


async def _clone(action: Clone, ctx: ExecContext) -> Outcome:
    source = _upstream(ctx, action.source)
    if source is None:
        return _outcome(action, False, f"no address known for {action.source}")
    pg = _controller(ctx, "replica")
    result = await pg.basebackup(source.host, source.port, source.member)
    if not result.ok:
        return _outcome(action, False, error_summary(result.message))
    follow = _upstream(ctx, action.follow) or source
    written = await pg.write_config("replica", follow)
    if not written.ok:
        return _outcome(action, False, written.message)
    started = await pg.start()
    return _outcome(action, started.ok, started.message)


async def _shutdown(action: Shutdown, ctx: ExecContext) -> Outcome:
    if not action.stop_postgres:
        return _outcome(action, True, "PostgreSQL left running (maintenance mode)")
    pg = _controller(ctx, "replica")
    await _before_stop(ctx)
    result = await pg.stop("fast", kill_after=_primary_kill_after(ctx, pg))
    if action.release and result.ok:
        await ctx.dcs.delete_leader(_status(ctx, action.optime))
    return _outcome(action, result.ok, result.message)


async def _before_stop(ctx: ExecContext, timeout: float = HOOK_TIMEOUT) -> None:
    ok, detail = await run_hook(ctx.config.local.postgresql.before_stop, "before_stop", timeout)
    if not ok:
        log.warning("%s; stopping PostgreSQL anyway", detail)


async def _restart(action: Restart, ctx: ExecContext) -> Outcome:
    pg = _controller(ctx, action.role)
    written = await pg.write_config("primary" if action.role == "primary" else "replica",
                                    _upstream(ctx, action.follow))
    if not written.ok:
        return _outcome(action, False, written.message)
    await _before_stop(ctx)
    stopped = await pg.stop("fast", kill_after=_primary_kill_after(ctx, pg))
    if not stopped.ok:
        return _outcome(action, False, stopped.message)
    if action.role == "primary" and action.require_lock:
        # The stop may have taken long (a shutdown checkpoint) and the DCS may have gone meanwhile:
        # the lease may have lapsed and another member promoted. Only a renewal now allows a writable
        # start; otherwise PostgreSQL stays stopped and the next HA cycle decides (a replica of the new
        # leader, or a primary again once the key is proven ours).
        try:
            held = await ctx.dcs.update_leader()
        except DcsError as exc:
            return _outcome(action, False, f"stopped, not started as a primary: leader key unconfirmed ({exc})")
        if not held:
            return _outcome(action, False, "stopped, not started as a primary: the leader key is no longer ours")
    started = await pg.start()
    return _outcome(action, started.ok, "restarted successfully" if started.ok else started.message)


async def _reinitialize(action: Reinitialize, ctx: ExecContext) -> Outcome:
    source = _upstream(ctx, action.source)
    if source is None:
        return _outcome(action, False, f"no address known for {action.source}")
    pg = _controller(ctx, "replica")
    # The operator asked for this node's data to be replaced: no copy is kept (`.failed` copies of
    # repeated reinitializations once filled a disk); the directory itself stays.
    for step in (pg.stop, pg.empty_data_dir):
        result = await step()
        if not result.ok:
            return _outcome(action, False, result.message)
    cloned = await _clone(Clone(source=action.source, follow=action.follow), ctx)
    return replace(cloned, action=action.kind)


async def _bootstrap(action: Bootstrap, ctx: ExecContext) -> Outcome:
    """The initialize race and, if won, a whole new cluster. Undone if any step fails: what this attempt
    created is removed (no user data in it: never moved aside, never a directory that was there
    before), `initialize` deleted so another node can try. Whether and when to try again is the core's
    decision (backoff, giving up), from the outcome: a lost race is an outcome of its own kind."""
    sent = time.monotonic()
    try:
        won = await ctx.dcs.initialize("", create_new=True)
    except DcsError as exc:
        return Outcome(action=LOST_INITIALIZE_RACE, ok=False, detail=f"DCS error: {exc}", sent_at=sent)
    if not won:
        return Outcome(action=LOST_INITIALIZE_RACE, ok=False, detail="failed to acquire initialize lock",
                       sent_at=sent)
    pg = _controller(ctx, "primary")
    existed = directory_state(pg.data_dir) is not DataDirState.MISSING
    refused = replace_problem(pg.data_dir)  # e.g. an empty directory owned by root: never taken over
    step, ok, output = ("checking the data directory", False, refused) if refused else \
        await _bootstrap_steps(pg, ctx)
    if ok:
        sent = time.monotonic()
        if await ctx.dcs.acquire_leader():
            await ctx.dcs.set_config(_bootstrap_dcs(ctx), revision=0)
            state = await probe(pg.settings)
            await ctx.dcs.initialize(state.sysid or "", create_new=False)
            return _outcome(action, True, "initialized a new cluster", sent)
        step, output = "acquire leader", "somebody else holds the leader key"
    cause = error_summary(output)
    log.error("bootstrap failed at %s: %s; undoing", step, output)
    if not refused:
        await pg.stop("immediate")
        undone = await pg.undo_bootstrap(existed)
        if not undone.ok:
            log.error("could not undo the failed bootstrap: %s", undone.message)
    try:
        await ctx.dcs.cancel_initialization()
    except DcsError as exc:
        log.error("could not delete the initialize key after the failed bootstrap: %s", exc)
    return _outcome(action, False, f"bootstrap failed at {step}: {cause}")


async def _bootstrap_steps(pg: PgController, ctx: ExecContext) -> tuple[str, bool, str]:
    """initdb, configure, start, create roles, post_bootstrap: (the step reached, ok, its output).
    Each step's coroutine is made only when it runs, so none is left un-awaited by a failure."""
    script = ctx.config.local.bootstrap.post_bootstrap
    steps: list[tuple[str, Callable[[], Awaitable[PgResult]]]] = [
        ("initdb", lambda: pg.initdb(pg.settings.initdb_options)),
        ("configure", lambda: pg.write_config("primary")),
        ("start", pg.start),
        ("create roles", pg.create_roles),
    ]
    if script:
        steps.append(("post_bootstrap", lambda: pg.run_post_bootstrap(script)))
    for step, run in steps:
        result = await run()
        if not result.ok:
            return step, False, result.message
    return "done", True, ""


def _bootstrap_dcs(ctx: ExecContext) -> dict[str, Any]:
    return dict(ctx.config.local.bootstrap.dcs)
