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
        world.recorder.violation(world.now, "one-writer", detail, excused=bool(excused))

    def forget_data(self, name: str) -> None:
        self.timelines.pop(name, None)


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
    if pg.timeline <= state.max_timeline:
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
            f"was {optime}: {optime - have} bytes lost, maximum_lag_on_failover is {limit}")


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
    world.refresh()
    leader = world.etcd.leader_name
    writers = [n for n, node in world.nodes.items() if node.pg.writable]
    if leader is None or writers != [leader]:
        world.recorder.violation(world.now, "liveness", f"no single primary {world.opts.settle:.0f}s after the last "
                                 f"fault healed: leader key {leader}, writable {writers}")
        return
    for name, node in world.nodes.items():
        if name == leader:
            continue
        agent = node.agent
        why = agent.last_why if agent is not None else None
        if node.pg.accepting and node.pg.streaming_from == leader:
            continue
        if why in OPERATOR_NEEDED:
            continue
        state = f"pg {node.pg.proc.value}, following {node.pg.following}, streaming from {node.pg.streaming_from}"
        world.recorder.violation(world.now, "liveness", f"{name} does not stream from leader {leader} "
                                 f"{world.opts.settle:.0f}s after the last fault healed ({state}; last decision "
                                 f"{why.name if why else None})")
