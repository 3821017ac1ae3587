"""The safety and liveness properties checked while a run goes on.

1. one writer: never two servers accepting writes at the same instant (an agent stopped past its
   lease without a watchdog is the documented exception: recorded as *excused*, not as a violation);
2. durability (asynchronous replication): a promoted server holds every commit the last published
   leader optime vouches for, minus `maximum_lag_on_failover`;
3. history: every promotion creates a timeline number never used before, a server's timeline never
   goes back while it keeps its data, no server streams WAL that diverged from its own;
4. liveness: after the last fault heals, within the settle time, exactly one primary holds the leader
   key and every other running server streams from it;
5. no data directory is moved aside unless the configuration allows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgwarden.core.types import Why
from pgwarden.sim.postgres import Lineage, Proc, same_prefix

RUNNING = Proc.RUNNING

if TYPE_CHECKING:
    from pgwarden.core.types import HaSettings
    from pgwarden.sim.world import World

KNOWN_BUGS = {
    "stale-maintenance-mode": "a leader that last saw the cluster in maintenance mode and then lost the DCS keeps its "
    "primary running (PAUSED_DCS_DOWN) past its lease, and does not read the DCS again until a keepalive renews "
    "a new lease; if the operator resumed meanwhile, another member takes the expired lock and promotes",
    "slow-graceful-demote": "a switchover's graceful demote runs CHECKPOINT inline with no bound: a slow checkpoint "
    "blocks the HA loop, the keepalive stops after 2*loop_wait+2 s, the lease lapses and the candidate promotes "
    "while the old primary still accepts writes",
    "history-switch-lsn": "the new primary records in /history the LSN it had when it decided to promote, not "
    "PostgreSQL's switch point: after a switchover the old primary's shutdown checkpoint can lie between the two, "
    "so the core thinks it diverged and decides pg_rewind forever (pg_rewind finds nothing to do): liveness",
    "restart-without-lease": "an operator's restart of the leader starts PostgreSQL as a primary when the restart "
    "task ends, without checking that the lease still holds: if the lease lapsed meanwhile (a slow shutdown "
    "checkpoint, the DCS unreachable), another member has promoted and there are two writers until the next cycle",
    "timeline-reuse": "the open bug pinned by test_bug_lost_history_row_lets_the_next_leader_reuse_the_timeline_number",
}
"""Open bugs of the core or the agent found by the simulator, by id: a violation recognised as one of
them carries its id (`Violation.known`), so campaigns can tell them from new findings. Each has a
strict-xfail regression test in tests/sim/test_sim.py."""

# Stopped states the core deliberately stays in, waiting for an operator (not a liveness failure).
OPERATOR_NEEDED = frozenset({Why.REWIND_NOT_ALLOWED, Why.REWIND_FAILED, Why.DATA_DIR_UNUSABLE, Why.SYSID_MISMATCH})


class Checker:
    """Incremental state for the invariants that are about episodes rather than instants."""

    def __init__(self) -> None:
        self.overlap: frozenset[str] | None = None
        self.timelines: dict[str, int] = {}
        self.max_timeline = 0
        self.published: tuple[int, Lineage] | None = None
        self.lineages: dict[str, Lineage] = {}

    def after_event(self, world: World) -> None:
        if not world.pg_changed and not world.opts.check_every_event:
            return
        world.pg_changed = False
        writers = [pg.name for pg in world.pgs if pg.proc is RUNNING and not pg.in_recovery]
        if len(writers) > 1:
            group = frozenset(writers)
            if group != self.overlap:
                self.overlap = group
                self._report_overlap(world, writers)
        else:
            self.overlap = None
        lineages = self.lineages
        for pg in world.pgs:
            if lineages.get(pg.name) is not pg.lineage:
                lineages[pg.name] = pg.lineage
                self._timeline_moved(world, pg.name, pg.timeline, bool(pg.lineage))

    def _timeline_moved(self, world: World, name: str, tl: int, has_data: bool) -> None:
        seen = self.timelines.get(name, 0)
        if tl < seen and has_data:
            world.recorder.violation(world.now, "history", f"{name}'s timeline went back from {seen} to {tl}",
                                     key=("tl-back", name, seen, tl))
        self.timelines[name] = tl

    def _report_overlap(self, world: World, writers: list[str]) -> None:
        excused = [w for w in writers if world.paused_past_lease(w, _settings(world, w))]
        holder = world.etcd.leader_name
        detail = f"{' and '.join(writers)} accept writes at the same time (leader key: {holder})"
        if excused:
            detail += f"; {', '.join(excused)} was paused past its lease without a watchdog"
        known = _blind_writer(world) or _demoting_writer(world, writers)
        world.recorder.violation(world.now, "one-writer", detail, excused=bool(excused), known=known)

    def forget_data(self, name: str) -> None:
        self.timelines.pop(name, None)


def _blind_writer(world: World) -> str:
    """The stale-maintenance-mode bug: a writer keeps running on a remembered maintenance mode that the
    DCS no longer has."""
    blind = [n for n, node in world.nodes.items()
             if node.pg.writable and _last_why(world, n) is Why.PAUSED_DCS_DOWN]
    return "stale-maintenance-mode" if blind and not world.etcd.view().paused else ""


def _demoting_writer(world: World, writers: list[str]) -> str:
    for name in writers:
        agent = world.nodes[name].agent
        if agent is not None and agent.graceful_demote:
            return "slow-graceful-demote"
        if agent is not None and agent.task_label == "restart":
            return "restart-without-lease"
    return ""


def _last_why(world: World, name: str) -> Why | None:
    agent = world.nodes[name].agent
    return agent.last_why if agent is not None else None


def _settings(world: World, name: str) -> HaSettings:
    agent = world.nodes[name].agent
    return agent.settings if agent is not None else world.opts.settings


def checker(world: World) -> Checker:
    found = world.checker
    assert isinstance(found, Checker)
    return found


def on_published(world: World, name: str, optime: int | None) -> None:
    """The leader wrote `optime` to /status: remember what it vouches for."""
    if optime is not None:
        checker(world).published = (optime, world.nodes[name].pg.lineage)


def on_promoted(world: World, name: str, parent_uid: int, fork: int) -> None:
    state = checker(world)
    pg = world.nodes[name].pg
    reused = pg.timeline <= state.max_timeline
    if reused:
        world.recorder.violation(world.now, "history", f"{name} promoted to timeline {pg.timeline}, a number "
                                 f"already used (highest so far {state.max_timeline}): two histories share it")
    state.max_timeline = max(state.max_timeline, pg.timeline)
    if state.published is None:
        return
    optime, lineage = state.published
    limit = _settings(world, name).maximum_lag_on_failover
    needed = optime - limit
    if needed > 0 and (fork < needed or not same_prefix(pg.lineage[:-1] or pg.lineage, lineage, needed)):
        have = fork if same_prefix(pg.lineage[:-1] or pg.lineage, lineage, min(fork, optime)) else 0
        world.recorder.violation(
            world.now, "durability", f"{name} promoted at {fork} (uid {parent_uid}) but the last published optime "
            f"was {optime}: {optime - have} bytes lost, maximum_lag_on_failover is {limit}",
            known="timeline-reuse" if reused else _blind_writer(world))


def on_bootstrapped(world: World, name: str) -> None:
    state = checker(world)
    state.max_timeline = max(state.max_timeline, world.nodes[name].pg.timeline)


def on_data_removed(world: World, name: str) -> None:
    settings = _settings(world, name)
    checker(world).forget_data(name)
    allowed = settings.remove_data_directory_on_rewind_failure or settings.remove_data_directory_on_diverged_timelines
    world.recorder.event(world.now, name, "data directory moved aside")
    if not allowed:
        world.recorder.violation(world.now, "data-dir", f"{name}'s data directory was moved aside, but neither "
                                 "remove_data_directory_on_rewind_failure nor ..._on_diverged_timelines is set")


def on_data_replaced(world: World, name: str) -> None:
    checker(world).forget_data(name)


def check_liveness(world: World) -> None:
    """At the end of the settle time: one primary with the key, every other running server streams from it."""
    for problem in liveness_problems(world):
        world.recorder.violation(world.now, "liveness", problem)


def liveness_problems(world: World) -> list[str]:
    """What keeps the cluster from the converged state right now (empty: converged)."""
    world.refresh()
    leader = world.etcd.leader_name
    writers = [n for n, node in world.nodes.items() if node.pg.writable]
    if leader is None or writers != [leader]:
        return [f"no single primary {world.opts.settle:.0f}s after the last fault healed: leader key {leader}, "
                f"writable {writers}"]
    problems = []
    for name, node in world.nodes.items():
        if name == leader:
            continue
        agent = node.agent
        why = agent.last_why if agent is not None else None
        if node.pg.accepting and _streams_from(world, name, leader):
            continue
        if why in OPERATOR_NEEDED:
            continue
        state = f"pg {node.pg.proc.value}, following {node.pg.following}, streaming from {node.pg.streaming_from}"
        problems.append(f"{name} does not stream from leader {leader} {world.opts.settle:.0f}s after the last fault "
                        f"healed ({state}; last decision {why.name if why else None})")
    return problems


def _streams_from(world: World, name: str, leader: str) -> bool:
    """Does this server stream from the leader, directly or through cascading replicas (replicatefrom)?"""
    seen = {name}
    upstream = world.nodes[name].pg.streaming_from
    while upstream is not None and upstream != leader and upstream not in seen:
        seen.add(upstream)
        pg = world.nodes[upstream].pg
        upstream = pg.streaming_from if pg.accepting else None
    return upstream == leader
