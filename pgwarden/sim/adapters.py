"""The two seams between the simulated world and the real core, kept in one module on purpose:

- world -> Snapshot pieces: the local PostgreSQL as a probe would report it (`LocalPg`), the member
  JSON an agent publishes (built by the real `pgwarden.agent.member.member_json`), and the peers'
  statuses (the real REST status document, `pgwarden.api.health.status_json`, read back with the real
  `pgwarden.agent.peers.peer_from_json`);
- Action -> effects: one generator per action that mirrors `pgwarden.agent.execute` step by step and
  ends in one `Outcome`, with the same ordering rules (renew before slots, refresh the lease before
  promote, release only after the stop, ...).

When the core grows (new snapshot fields, new actions), this is the file to extend. An action this
module does not know raises `UnknownAction`: the simulator must never silently ignore an order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pgwarden import __version__
from pgwarden.agent.member import member_json
from pgwarden.agent.peers import peer_from_json
from pgwarden.api.health import status_json
from pgwarden.api.state import NodeState
from pgwarden.core.decide import LOST_INITIALIZE_RACE
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
    PeerStatus,
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
from pgwarden.dcs.codec import _member_from_mapping as member_from_mapping
from pgwarden.model import (
    ClusterStatus,
    ClusterView,
    HistoryEntry,
    LocalPg,
    Member,
    WalReceiver,
    history_for_lineage,
    timeline_to_claim,
)
from pgwarden.sim import pgops
from pgwarden.sim.dcs_client import SimDcsError
from pgwarden.sim.invariants import on_published
from pgwarden.sim.kernel import Step
from pgwarden.sim.world import PEER_TIMEOUT, World

if TYPE_CHECKING:
    from pgwarden.sim.agent import SimAgent

BACKGROUND: dict[type, TaskKind] = {
    Bootstrap: TaskKind.BOOTSTRAP,
    Clone: TaskKind.CLONE,
    Rewind: TaskKind.REWIND,
    StartPostgres: TaskKind.START,
    RemoveDataDirectory: TaskKind.REMOVE_DATA,
    Restart: TaskKind.RESTART,
    Reinitialize: TaskKind.REINITIALIZE,
    Promote: TaskKind.PROMOTE,
}
"""Same table as pgwarden.agent.execute.BACKGROUND (checked by a test)."""

Exec = Generator[Step, None, Outcome]

PROBE_TIME = 0.005  # one probe of the local PostgreSQL (as in pgwarden.sim.agent)
STOP_REQUEST_RESERVE = 0.5  # pgwarden.agent.execute
MIN_STEP_BEFORE_STOP = 0.2  # pgwarden.agent.execute


class UnknownAction(Exception):
    """The core returned an action the simulator cannot carry out: extend `adapters.execute`."""


# ---------------------------------------------------------------------------------------------------
# World -> snapshot


def conn_url(name: str) -> str:
    return f"postgres://{name}:5432/postgres"


def api_url(name: str) -> str:
    return f"http://{name}:8008/patroni"


def local_pg(world: World, name: str) -> LocalPg:
    """What `pgwarden.postgres.probe` would report for this node right now."""
    pg = world.nodes[name].pg
    accepting = pg.accepting
    common: dict[str, Any] = dict(
        data_dir=pg.data, sysid=pg.sysid, cluster_state=pg.control_state, controldata_timeline=pg.control_tl,
        checkpoint_lsn=pg.checkpoint_lsn, running=pg.running, accepting=accepting,
        slots=tuple(sorted(pg.slots)), standby_signal=pg.standby_signal, following=pg.following,
        server_version=150000 if accepting else None,
    )
    if not accepting:
        return LocalPg(**common)
    common["synchronous_standby_names"] = pg.ssn
    if not pg.in_recovery:
        return LocalPg(**common, in_recovery=False, timeline=pg.timeline, wal_lsn=pg.lsn,
                       postmaster_pid=1)
    receiver = None
    if pg.streaming_from is not None:
        receiver = WalReceiver(status="streaming", sender_host=pg.streaming_from, latest_end_lsn=pg.lsn,
                               received_tli=pg.timeline)
    return LocalPg(**common, in_recovery=True, timeline=pg.timeline, receive_lsn=pg.lsn, replay_lsn=pg.lsn,
                   wal_receiver=receiver, postmaster_pid=1)


def member(agent: SimAgent, pg: LocalPg) -> Member:
    """The member key value this agent publishes, as the DCS codec reads it back: the real
    `member_json` mapping through the real codec's field parser (the JSON text layer in between has
    its own tests and would cost a fifth of a run)."""
    data = member_json(pg=pg, conn_url=conn_url(agent.name), api_url=api_url(agent.name),
                       tags=agent.settings.tags, task=agent.task_label)
    return member_from_mapping(agent.name, data)


def node_state(agent: SimAgent, pg: LocalPg) -> NodeState:
    """What the agent's REST API would serve (pgwarden.agent.loop.Agent._node_state)."""
    cluster = agent.cluster
    holds = cluster is not None and cluster.led_by(agent.name)
    s = agent.settings
    return NodeState(
        name=agent.name, scope="sim", version=__version__, api_url=api_url(agent.name),
        conn_url=conn_url(agent.name), pg=pg, cluster=cluster, dcs_last_seen=None,
        lock_deadline=agent.published_lock_deadline(holds), tags=s.tags,
        paused=cluster is not None and cluster.paused,
        maximum_lag_on_failover=s.maximum_lag_on_failover, ttl=s.ttl, loop_wait=s.loop_wait,
        next_cycle_deadline=0.0, dcs_reachable=agent.dcs_error is None)


def fetch_peers(world: World, me: str, cluster: ClusterView) -> Generator[Step, None, tuple[PeerStatus, ...]]:
    """GET every other member's status in parallel: the slowest answer (or a timeout) sets the pace."""
    results: list[PeerStatus] = []
    slowest = 0.0
    for m in sorted((m for m in cluster.members if m.name != me), key=lambda m: m.name):
        peer = world.nodes.get(m.name)
        if not m.api_url or peer is None or not world.peer_answers(me, m.name):
            results.append(PeerStatus(name=m.name, reachable=False))
            slowest = PEER_TIMEOUT
            continue
        agent = peer.agent
        assert agent is not None
        agent.catch_up()
        body = status_json(node_state(agent, local_pg(world, m.name)), world.local_time(m.name))
        results.append(peer_from_json(m.name, body))
        slowest = max(slowest, 2 * world.peer_delay)
    yield slowest
    return tuple(results)


# ---------------------------------------------------------------------------------------------------
# Action -> effects (pgwarden.agent.execute, step by step)


def execute(agent: SimAgent, action: Action, cluster: ClusterView | None) -> Exec:
    """Run `action`; DCS failures become a failed outcome, as in the real executor."""
    try:
        return (yield from _dispatch(agent, action, cluster))
    except SimDcsError as exc:
        return agent.outcome(action, False, f"DCS error: {exc}")


def _dispatch(agent: SimAgent, action: Action, cluster: ClusterView | None) -> Exec:
    world, name, dcs = agent.world, agent.name, agent.dcs
    match action:
        case Wait():
            return agent.outcome(action, True)
        case Bootstrap():
            return (yield from _bootstrap(agent, action))
        case Clone():
            return (yield from _clone(agent, action, cluster))
        case AcquireLeader():
            sent, sent_global = agent.local_now(), world.now
            won = yield from dcs.acquire_leader()
            if won:
                world.nodes[name].lease_sent = sent_global
            return agent.outcome(action, won, "" if won else "somebody else holds the leader key", sent)
        case RenewLeader():
            return (yield from _renew(agent, action, cluster))
        case Promote():
            return (yield from _promote(agent, action, cluster))
        case Demote():
            return (yield from _demote(agent, action))
        case StartPostgres():
            if action.follow is not None and not _known(cluster, action.follow):
                return agent.outcome(action, False, f"no address known for {action.follow}")
            ok, message = yield from pgops.start(world, name, action.role, action.follow)
            return agent.outcome(action, ok, message)
        case Follow():
            if not _known(cluster, action.leader):
                return agent.outcome(action, False, f"no address known for {action.leader}")
            ok, message = yield from pgops.set_follow(world, name, action.leader)
            return agent.outcome(action, ok, message)
        case Rewind():
            if not _known(cluster, action.source):
                return agent.outcome(action, False, f"no address known for {action.source}")
            ok, message = yield from pgops.rewind(world, name, action.source)
            return agent.outcome(action, ok, message)
        case RemoveDataDirectory():
            ok, message = yield from pgops.move_data_aside(world, name)
            return agent.outcome(action, ok, message)
        case ReleaseLeader():
            status = _status(cluster, action.optime)
            released = yield from dcs.delete_leader(status)
            if released:
                on_published(world, name, status.optime)
            return agent.outcome(action, released)
        case Shutdown():
            if not action.stop_postgres:
                return agent.outcome(action, True, "PostgreSQL left running (maintenance mode)")
            ok, message = yield from pgops.stop(world, name, "fast")
            if action.release and ok:
                status = _status(cluster, action.optime)
                released = yield from dcs.delete_leader(status)
                if released:
                    on_published(world, name, status.optime)
            return agent.outcome(action, ok, message)
        case Restart():
            follow = action.follow if action.follow is not None and _known(cluster, action.follow) else None
            ok, message = yield from pgops.stop(world, name, "fast")
            if not ok:
                return agent.outcome(action, False, message)
            if action.role == "primary" and action.require_lock:
                # execute._restart: only a lease renewed after the stop allows a writable start.
                sent_global = world.now
                try:
                    held = yield from dcs.update_leader()
                except SimDcsError as exc:
                    return agent.outcome(action, False, f"stopped, not started as a primary: leader key "
                                         f"unconfirmed ({exc})")
                if not held:
                    return agent.outcome(action, False, "stopped, not started as a primary: the leader key is "
                                         "no longer ours")
                world.nodes[name].lease_sent = sent_global
            ok, message = yield from pgops.start(world, name, action.role, follow)
            return agent.outcome(action, ok, "restarted successfully" if ok else message)
        case EnsureSlots():
            ok, message = yield from pgops.ensure_slots(world, name, action.create)
            return agent.outcome(action, ok, message)
        case Reinitialize():
            if not _known(cluster, action.source):
                return agent.outcome(action, False, f"no address known for {action.source}")
            ok, message = yield from pgops.stop(world, name, "fast")
            if ok:
                ok, message = yield from pgops.move_data_aside(world, name, permitted=True)
            if not ok:
                return agent.outcome(action, False, message)
            cloned = yield from _clone(agent, Clone(source=action.source, follow=action.follow), cluster)
            return agent.outcome(action, cloned.ok, cloned.detail)
        case _:
            raise UnknownAction(f"the simulator does not know how to execute {action!r}")


def _known(cluster: ClusterView | None, member_name: str) -> bool:
    """execute._upstream: the member must be in the cluster view the decision was made on."""
    found = cluster.member(member_name) if cluster is not None else None
    return found is not None and found.host_port is not None


def _renew(agent: SimAgent, action: RenewLeader, cluster: ClusterView | None) -> Exec:
    world = agent.world
    sent, sent_global = agent.local_now(), world.now
    retain = tuple(sorted(set(action.create_slots) | set(cluster.status.retain_slots if cluster else ())))
    status = _status(cluster, action.optime, retain)
    ok = yield from agent.dcs.update_leader(status)
    if not ok:
        return agent.outcome(action, False, "the leader key is no longer ours", sent)
    world.nodes[agent.name].lease_sent = sent_global
    on_published(world, agent.name, status.optime)
    notes: list[str] = []
    if action.create_slots:
        created, message = yield from pgops.ensure_slots(world, agent.name, action.create_slots)
        if not created:
            notes.append(message)
    if action.drop_slots:
        dropped, message = yield from pgops.ensure_slots(world, agent.name, action.drop_slots, drop=True)
        if not dropped:
            notes.append(message)
    if action.write_initialize:
        yield from agent.dcs.initialize(action.write_initialize, create_new=False)
    if action.clear_failover is not None:
        yield from agent.dcs.delete_failover(action.clear_failover)
    if action.repair_history:
        notes.append((yield from _repair_history(agent, cluster)))
    if action.sync_step is not None:
        note = yield from _sync_step(agent, action.sync_step)
        if note:
            notes.append(note)
    return agent.outcome(action, True, "; ".join(notes), sent)


def _status(cluster: ClusterView | None, optime: int | None, retain: tuple[str, ...] = ()) -> ClusterStatus:
    """execute._status: an action without an optime keeps the one the DCS has (never erases it)."""
    if optime is None and cluster is not None:
        optime = cluster.status.optime
    return ClusterStatus(optime=optime, retain_slots=retain, timeline=cluster.status.timeline if cluster else None)


def _repair_history(agent: SimAgent, cluster: ClusterView | None) -> Generator[Step, None, str]:
    """execute._repair_history: make `history` what PostgreSQL's own timeline history says."""
    world, name = agent.world, agent.name
    if cluster is None:
        return ""
    yield PROBE_TIME
    world.refresh()
    timeline = local_pg(world, name).timeline
    if timeline is None:
        return ""
    lineage = yield from pgops.read_timeline_history(world, name)
    rows = history_for_lineage(cluster.history, lineage, name, None, agent.settings.max_timelines_history)
    if rows is None:
        return ""
    yield from agent.dcs.set_history(rows)
    world.recorder.event(world.now, name, f"history repaired up to timeline {timeline - 1}: "
                         f"{[h.timeline for h in rows]}")
    return f"history repaired up to timeline {timeline - 1}"


def _sync_step(agent: SimAgent, step: SyncStep) -> Generator[Step, None, str]:
    """execute._sync_step. The simulated PostgreSQL keeps synchronous_standby_names but does not make
    commits wait for synchronous standbys (yet): with synchronous_mode off, the default, the planner
    only restores defaults (DeleteSync, SetSsn)."""
    match step:
        case SetSsn():
            ok, message = yield from pgops.set_ssn(agent.world, agent.name, step.value)
            return "" if ok else message
        case WriteSync():
            written = yield from agent.dcs.set_sync(step.state, step.expected_revision)
            return "" if written else "/sync changed meanwhile (compare-and-swap failed)"
        case DeleteSync():
            yield from agent.dcs.delete_sync(step.expected_revision)
            return ""
        case _:
            return ""


def _promote(agent: SimAgent, action: Promote, cluster: ClusterView | None) -> Exec:
    world, name = agent.world, agent.name
    sent, sent_global = agent.local_now(), world.now
    pg = world.nodes[name].pg
    reserved_before = pg.reserved
    if not (yield from agent.dcs.update_leader((yield from _claim_timeline(agent, cluster)))):
        pg.reserved = reserved_before  # execute._unreserve
        return agent.outcome(action, False, "lost leader before promote", sent)
    world.nodes[name].lease_sent = sent_global
    # As the agent: wait at most until the lock deadline, else stop PostgreSQL so a late promotion
    # cannot complete after the lease may have passed to somebody else.
    finish_by = max(action.finish_by, agent.settings.lock_deadline(sent))
    budget = finish_by - agent.local_now()
    ok, message = (yield from pgops.promote(world, name, budget)) if budget >= 1 else (False, "no lease time left")
    if not ok:
        yield from pgops.stop(world, name, "immediate")
        pg.reserved = reserved_before  # execute._unreserve
        return agent.outcome(action, False, f"promotion abandoned and PostgreSQL stopped: {message}", sent)
    yield from pgops.checkpoint(world, name)
    if action.history_entry is not None and cluster is not None:
        yield PROBE_TIME
        world.refresh()
        promoted = local_pg(world, name)
        entry = yield from _switch_point(agent, action.history_entry, promoted.timeline)
        exact = entry is not action.history_entry  # execute._promote: it came from PostgreSQL's file
        yield from agent.dcs.set_history(_history_with(agent, cluster, entry, promoted.timeline, exact))
    if cluster is not None and cluster.failover is not None:
        yield from agent.dcs.delete_failover(cluster.failover.revision)
    return agent.outcome(action, True, "promoted", sent)


def _claim_timeline(agent: SimAgent, cluster: ClusterView | None) -> Generator[Step, None, ClusterStatus | None]:
    """execute._claim_timeline: publish the number this promotion takes in /status first, and reserve
    the numbers the cluster used that this server does not know (placeholder history files)."""
    if cluster is None:
        return None
    yield PROBE_TIME
    pg = agent.world.nodes[agent.name].pg
    if not pg.accepting:
        return None
    local = pg.timeline
    target, _ = timeline_to_claim(cluster, local)
    pg.reserved = pg.reserved | frozenset(range(local + 1, target))
    return replace(_status(cluster, None, cluster.status.retain_slots), timeline=target)


def _switch_point(agent: SimAgent, decided: tuple[int, int, str],
                  new_timeline: int | None) -> Generator[Step, None, tuple[int, int, str]]:
    """execute._switch_point: the row of the timeline just ended from PostgreSQL's own history file
    (the real switch point, where replay ended); the decision's entry only when it cannot be read."""
    if new_timeline is None:
        return decided
    rows = yield from pgops.read_timeline_history(agent.world, agent.name)
    if rows:
        ended, lsn, reason = rows[-1]
        return ended, lsn, reason or decided[2]
    return decided


def _history_with(agent: SimAgent, cluster: ClusterView, entry: tuple[int, int, str],
                  new_timeline: int | None, exact: bool = False) -> list[HistoryEntry]:
    """execute._history_with: `history` with a row for the timeline this promotion ended; with
    `exact` (the entry is PostgreSQL's own parent row) rows above the parent, other branches, go."""
    timeline, lsn, reason = entry
    if new_timeline is not None and new_timeline - 1 > timeline and not exact:
        timeline = new_timeline - 1
    rows = [h for h in cluster.history if h.timeline < timeline or (h.timeline > timeline and not exact)]
    rows.append(HistoryEntry(timeline, lsn, reason, None, agent.name))
    rows.sort(key=lambda h: h.timeline)
    limit = agent.settings.max_timelines_history
    return rows[-limit:] if limit > 0 else rows


def _demote(agent: SimAgent, action: Demote) -> Exec:
    world, name = agent.world, agent.name
    world.refresh()
    probed = local_pg(world, name)
    note = ""
    if action.mode is DemoteMode.GRACEFUL:
        # execute._checkpoint_before_stop: the CHECKPOINT may only take until the lock deadline minus
        # the stop request's reserve; skipped when too little is left. (The before_stop hook, bounded
        # the same way, is not simulated.)
        left = _time_before_stop(agent, action.finish_by)
        if left is None:
            yield from pgops.checkpoint(world, name)
        elif left < MIN_STEP_BEFORE_STOP:
            note = "; checkpoint skipped (no lease time left)"
        else:
            rate = world.nodes[name].clock.rate
            done, message = yield from pgops.checkpoint(world, name, timeout=left / rate)
            note = "" if done else f"; checkpoint abandoned ({message})"
    mode = "immediate" if action.mode in (DemoteMode.IMMEDIATE, DemoteMode.IMMEDIATE_NOLOCK) else "fast"
    ok, message = yield from pgops.stop(world, name, mode)
    if not ok:
        return agent.outcome(action, False, message)
    if action.release:
        released = yield from agent.dcs.delete_leader(ClusterStatus(optime=probed.wal_lsn))
        if released:
            on_published(world, name, probed.wal_lsn)
    return agent.outcome(action, True, f"stopped ({mode}){note}")


def _time_before_stop(agent: SimAgent, finish_by: float | None) -> float | None:
    """execute._time_before_stop: local seconds a graceful demote may still spend before its stop request."""
    return None if finish_by is None else finish_by - agent.local_now() - STOP_REQUEST_RESERVE


def _clone(agent: SimAgent, action: Clone, cluster: ClusterView | None) -> Exec:
    world, name = agent.world, agent.name
    if not _known(cluster, action.source):
        return agent.outcome(action, False, f"no address known for {action.source}")
    ok, message = yield from pgops.basebackup(world, name, action.source)
    if not ok:
        return agent.outcome(action, False, message)
    follow = action.follow if action.follow is not None and _known(cluster, action.follow) else action.source
    ok, message = yield from pgops.start(world, name, "replica", follow)
    return agent.outcome(action, ok, message)


def _bootstrap(agent: SimAgent, action: Bootstrap) -> Exec:
    world, name, dcs = agent.world, agent.name, agent.dcs
    try:
        won = yield from dcs.initialize("", create_new=True)
    except SimDcsError as exc:
        return agent.outcome_of(LOST_INITIALIZE_RACE, False, f"DCS error: {exc}")
    if not won:
        return agent.outcome_of(LOST_INITIALIZE_RACE, False, "failed to acquire initialize lock")
    ok, message = yield from pgops.initdb(world, name)
    if ok:
        ok, message = yield from pgops.start(world, name, "primary", None)
    if ok:
        sent, sent_global = agent.local_now(), world.now
        if (yield from dcs.acquire_leader()):
            world.nodes[name].lease_sent = sent_global
            yield from dcs.set_config(dict(world.config), revision=0)
            yield from dcs.initialize(world.nodes[name].pg.sysid or "", create_new=False)
            return agent.outcome(action, True, "initialized a new cluster", sent)
        message = "somebody else holds the leader key"
    yield from pgops.stop(world, name, "immediate")
    yield from pgops.move_data_aside(world, name, permitted=True)  # execute: removes what it created
    with contextlib.suppress(SimDcsError):  # execute._bootstrap: logged, the outcome is the bootstrap's
        yield from dcs.cancel_initialization()
    return agent.outcome(action, False, f"bootstrap failed: {message}")
