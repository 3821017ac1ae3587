"""The safety and liveness properties checked while a run goes on.

1. one writer: never two servers accepting writes at the same instant (an agent stopped past its
   lease without a watchdog is the documented exception: recorded as *excused*, not as a violation;
   so is a primary kept in maintenance mode while cut off from the DCS when the operator resumed or
   failed over meanwhile, which also only a watchdog could fence);
2. durability (asynchronous replication): a promoted server holds every commit the last published
   leader optime vouches for, minus `maximum_lag_on_failover` (unless an operator's manual failover
   named it: see `on_promoted`);
3. history: every promotion creates a timeline number never used before, a server's timeline never
   goes back while it keeps its data, no server streams WAL that diverged from its own;
4. liveness: after the last fault heals, within the settle time, exactly one primary holds the leader
   key and every other server streams from it, unless a named rule (`MEMBER_WAITS`, `CLUSTER_WAITS`)
   recognises the state as one in which the core waits for an operator by design;
5. no data directory is moved aside unless the configuration allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgwarden.core.reasons import Why
from pgwarden.sim.etcd import member_key
from pgwarden.sim.postgres import Lineage, Proc, same_prefix

RUNNING = Proc.RUNNING

if TYPE_CHECKING:
    from pgwarden.core.snapshot import HaSettings
    from pgwarden.sim.world import World

KNOWN_BUGS: dict[str, str] = {
    "rewind-loop-at-switch-point": "a stopped replica whose control file's checkpoint is exactly the switch "
    "point of its (older) timeline counts as diverged (decide._may_have_diverged: checkpoint >= ended_at); "
    "pg_rewind answers 'no rewind required' and changes nothing, so the core decides the rewind again for ever "
    "(CI seed 15364, 4 nodes). A rewind that found nothing to do should end the suspicion of divergence.",
    "replica-ahead-of-leader": "after an excused no-watchdog overlap (a primary kept in maintenance mode while cut "
    "off) and with check_timeline off, the old primary reclaims the free key on an older timeline; a member that "
    "promoted meanwhile comes back as a replica on a newer timeline, which PostgreSQL cannot stream from the "
    "leader, and the core decides FOLLOWING forever instead of rewinding it or waiting for the operator (CI seed "
    "18719, 5 nodes)",
}
"""Open bugs of the core or the agent found by the simulator, by id: a violation recognised as one of
them carries its id (`Violation.known`), so campaigns can tell them from new findings. Each has a
strict-xfail regression test (tests/sim/test_sim.py, tests/sim/test_liveness.py)."""


STANDBY_GRACE = 60.0
"""Seconds a primary may go on writing after `standby_cluster` appears in `/config`: its agent reads it at
its next cycle (at most a loop_wait, 10 s in the campaign, plus a stalled DCS read) and demotes at once."""


class Checker:
    """Incremental state for the invariants that are about episodes rather than instants."""

    def __init__(self) -> None:
        self.overlap: frozenset[str] | None = None
        self.timelines: dict[str, int] = {}
        self.used_timelines: set[int] = set()  # every timeline number some server has had
        self.published: tuple[int, Lineage] | None = None
        self.lineages: dict[str, Lineage] = {}
        self.replaced_lag_limits: list[tuple[float, int]] = []  # (when, the maximum_lag_on_failover replaced)
        self.last_rewind: dict[str, str] = {}  # node -> what its last pg_rewind said
        self.rewind_failures: dict[str, str] = {}  # node -> how its last pg_rewind failed (none since: absent)
        self.standby_since: float | None = None  # since when /config has had standby_cluster (None: not now)

    def after_event(self, world: World) -> None:
        self.standby_writers(world)
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

    def standby_writers(self, world: World) -> None:
        """A standby cluster never has a writable member: once `/config` has had `standby_cluster` for
        STANDBY_GRACE (every agent has read it and its primary has had a cycle to stop), none may write."""
        if not world.etcd.config_value.get("standby_cluster"):
            self.standby_since = None
            return
        if self.standby_since is None:
            self.standby_since = world.now
        if world.now - self.standby_since <= STANDBY_GRACE:
            return
        writers = [pg.name for pg in world.pgs if pg.proc is RUNNING and not pg.in_recovery]
        if writers:
            world.recorder.violation(world.now, "standby-writer", f"{', '.join(writers)} accept writes in a standby "
                                     f"cluster ({world.now - self.standby_since:.0f}s after standby_cluster was set)",
                                     key=("standby-writer", *writers))

    def _timeline_moved(self, world: World, name: str, tl: int, has_data: bool) -> None:
        seen = self.timelines.get(name, 0)
        if tl < seen and has_data:
            world.recorder.violation(world.now, "history", f"{name}'s timeline went back from {seen} to {tl}",
                                     key=("tl-back", name, seen, tl))
        self.timelines[name] = tl

    def _report_overlap(self, world: World, writers: list[str]) -> None:
        # An armed watchdog fences an agent frozen past its lease (its host resets first): no excuse then. It
        # is disarmed in maintenance mode (as in Patroni), and a frozen agent cannot change that state, so
        # the device's state now is the one it froze with.
        excused = [w for w in writers if world.nodes[w].watchdog_timeout is None
                   and world.paused_past_lease(w, _settings(world, w))]
        holder = world.etcd.leader_name
        detail = f"{' and '.join(writers)} accept writes at the same time (leader key: {holder})"
        if excused:
            detail += f"; {', '.join(excused)} was paused past its lease without an armed watchdog"
        blind = [w for w in _blind_writers(world, writers) if w not in excused]
        if blind:
            detail += (f"; {', '.join(blind)} kept its primary in maintenance mode while cut off from the DCS, and "
                       "the operator resumed or failed over meanwhile: no watchdog")
        world.recorder.violation(world.now, "one-writer", detail, excused=bool(excused or blind))

    def forget_data(self, name: str) -> None:
        self.timelines.pop(name, None)


BLIND = (Why.PAUSED_DCS_DOWN, Why.PAUSED_SHUTDOWN, Why.PAUSED_PRIMARY_WITHOUT_LOCK)
"""Decisions that leave a primary running without knowing whether another member took over."""


def _blind_writers(world: World, writers: list[str]) -> list[str]:
    """Writers kept running in maintenance mode while cut off from the DCS (their last read failed:
    PAUSED_DCS_DOWN) when another member promoted: only possible after an operator's action taken
    meanwhile, a resume (then the others race for the expired key) or a manual failover to a named
    candidate.

    The same class as an agent paused past its lease: by design maintenance mode means "do not touch
    PostgreSQL", even with the DCS unreachable, so nothing but a watchdog (disabled in maintenance
    mode, as in Patroni) fences such a primary until it can read the DCS again; then it demotes at
    once (the agent reads again as soon as the DCS answers, lease or not, and a primary under the key
    of another running primary stops even in maintenance mode). Excused, not a violation
    (docs/ARCHITECTURE.md, "Maintenance mode").

    Also a primary whose agent was stopped in maintenance mode (PAUSED_SHUTDOWN leaves PostgreSQL
    running, as Patroni does): with no agent at all, nothing fences it once the operator resumes or
    fails over, and its member key has expired, so no racer even sees it (found in seed 3194).

    And one that just came back from such a cut-off to find maintenance mode on again and another
    member holding the key (PAUSED_PRIMARY_WITHOUT_LOCK, kept running as the contract says; seed
    17058): it demotes as soon as that member runs as a primary, one cycle later.

    Such a writer's first decision after it sees the DCS again is to stop: if the other member's
    promotion completes in the instant of that decision, before the stop request (seed 3552), the
    overlap is still the blind one's."""
    return [n for n in writers if _last_why(world, n) in BLIND or _blind_stop(world, n)]


def _blind_stop(world: World, name: str) -> bool:
    agent = world.nodes[name].agent
    return agent is not None and agent.blind_stop


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


LAG_LIMIT_GRACE = 60.0
"""Seconds an older maximum_lag_on_failover still counts after /config changed it (a race, then the
promotion, take at most about a ttl)."""


def on_lag_limit_replaced(world: World, old_limit: int) -> None:
    checker(world).replaced_lag_limits.append((world.now, old_limit))


def on_config_written(world: World) -> None:
    """`/config` was written: with `standby_cluster` in it, look for writers again once the grace is over (a
    primary that goes on writing changes nothing that would make the checks run)."""
    if world.etcd.config_value.get("standby_cluster"):
        state = checker(world)
        state.standby_writers(world)  # starts the grace
        world.kernel.at(world.now + STANDBY_GRACE + 0.001, lambda: state.standby_writers(world))


def on_promoted(world: World, name: str, parent_uid: int, fork: int) -> None:
    state = checker(world)
    if _settings(world, name).standby_cluster is not None:
        world.recorder.violation(world.now, "standby-writer", f"{name} promoted in a standby cluster",
                                 key=("standby-promote", name))
    pg = world.nodes[name].pg
    # A number above one in use is fine (a reservation skipped it); one some server had already is not.
    reused = pg.timeline in state.used_timelines
    if reused:
        world.recorder.violation(world.now, "history", f"{name} promoted to timeline {pg.timeline}, a number "
                                 f"already used (used so far {sorted(state.used_timelines)}): two histories share it")
    state.used_timelines.add(pg.timeline)
    _slot_copies_at_promotion(world, name, fork)
    _logical_copies_at_promotion(world, name)
    if state.published is None:
        return
    optime, lineage = state.published
    # A promotion decided under a larger limit that an operator lowered meanwhile (seed 14505) is judged
    # by the limit the candidate decided with: any limit in force during the last LAG_LIMIT_GRACE seconds.
    recent = [old for when, old in state.replaced_lag_limits if world.now - when <= LAG_LIMIT_GRACE]
    limit = max([_settings(world, name).maximum_lag_on_failover, *recent])
    needed = optime - limit
    if needed > 0 and (fork < needed or not same_prefix(pg.lineage[:-1] or pg.lineage, lineage, needed)):
        have = fork if same_prefix(pg.lineage[:-1] or pg.lineage, lineage, min(fork, optime)) else 0
        if _appointed_by_operator(world, name):
            world.recorder.event(world.now, name, f"promoted as the candidate of a manual failover: {optime - have} "
                                 "bytes behind the last published optime (the operator's choice)")
            return
        world.recorder.violation(
            world.now, "durability", f"{name} promoted at {fork} (uid {parent_uid}) but the last published optime "
            f"was {optime}: {optime - have} bytes lost, maximum_lag_on_failover is {limit}")


def _slot_copies_at_promotion(world: World, name: str, fork: int) -> None:
    """The promoted server's copies of the permanent slots (SimOptions.permanent_slots): recorded, and never
    beyond the WAL it has (a copy ahead of its own position would claim WAL a consumer never got from it)."""
    if not world.opts.permanent_slots:
        return
    pg = world.nodes[name].pg
    copies = {slot: pg.slot_pos.get(slot) for slot in world.opts.permanent_slots if slot in pg.slots}
    missing = sorted(set(world.opts.permanent_slots) - set(copies))
    world.recorder.event(world.now, name, f"promoted with slot copies {sorted(copies.items())}, missing {missing}")
    for slot, lsn in copies.items():
        if lsn is not None and lsn > fork:
            world.recorder.violation(world.now, "slots", f"{name} promoted at {fork} with its copy of {slot} at "
                                     f"{lsn}, beyond its own WAL")


def _logical_copies_at_promotion(world: World, name: str) -> None:
    """No consumer-confirmed change is lost across a promotion: each consumer resumes on the promoted server
    from what it confirmed, so the slot must be there, at or before that position (duplicates are allowed, a
    skipped change is not). A missing copy is allowed only when no other failover candidate had ready
    copies (its member key said so): the race prefers ready ones, but never leaves the cluster leaderless
    for slots. Such promotions are counted apart (the event says "missing copy allowed")."""
    if not world.opts.logical_slots:
        return
    pg = world.nodes[name].pg
    for slot in world.opts.logical_slots:
        confirmed = world.consumed.get(slot)
        if confirmed is None:
            continue  # no consumer has confirmed anything yet: nothing to lose
        copy = pg.logical.get(slot)
        if copy is not None:
            world.recorder.event(world.now, name,
                                 f"promoted with logical copy {slot} at {copy}, consumer at {confirmed}")
            if copy > confirmed:
                world.recorder.violation(world.now, "logical-slots", f"{name} promoted with its copy of {slot} at "
                                         f"{copy}, beyond the consumer's confirmed {confirmed}: changes skipped")
            continue
        ready = _ready_candidates(world, name)
        if ready:
            world.recorder.violation(world.now, "logical-slots", f"{name} promoted without a copy of {slot} while "
                                     f"{', '.join(ready)} had ready copies")
        else:
            world.recorder.event(world.now, name, f"promoted without a copy of {slot}: missing copy allowed (no "
                                 "candidate had ready copies)")


def _ready_candidates(world: World, promoted: str) -> list[str]:
    """Other running replicas that may fail over and whose published member key says their copies are ready."""
    out = []
    for other, node in sorted(world.nodes.items()):
        key = world.etcd.get(member_key(other))
        ready = getattr(key.value, "logical_slots_ready", None) if key is not None else None
        if other != promoted and node.pg.accepting and node.pg.in_recovery and ready is True:
            out.append(other)
    return out


def _appointed_by_operator(world: World, name: str) -> bool:
    """Did an operator's manual failover (POST /failover, `patronictl failover --candidate`: a
    `failover` key naming a member and no leader) name this server?

    `maximum_lag_on_failover` bounds the loss of the *leader race*, where the replicas elect one of
    themselves. A manual failover is not a race: the operator appoints the candidate, which takes the
    free lock whatever its lag (`core.decide._race_with_failover_key`), as Patroni's failover does;
    the loss is the operator's decision, so it is not a violation of what the product promises. A
    switchover (a `failover` key naming the leader too) gets no such excuse: the leader only demotes
    for a candidate within the limit. The key is still there when the promotion completes: the new
    leader clears it only at the end of its promote task."""
    request = world.etcd.view().failover
    return request is not None and request.member == name and not request.leader


def on_bootstrapped(world: World, name: str) -> None:
    state = checker(world)
    state.used_timelines.update(range(1, world.nodes[name].pg.timeline + 1))


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


REWIND_UNREACHABLE = "pg_rewind: source unreachable"
"""How the simulated pg_rewind reports a source it could not reach (or lost): a transient failure."""


def on_rewound(world: World, name: str, ok: bool, message: str) -> None:
    checker(world).last_rewind[name] = message
    failures = checker(world).rewind_failures
    if ok:
        failures.pop(name, None)
    else:
        failures[name] = message


# ---------------------------------------------------------------------------------------------------
# Liveness, and the unconverged states that are intended: the core waits for an operator.


@dataclass(frozen=True, slots=True)
class MemberWait:
    """A named rule: a member that does not stream from the leader because the core waits, by design,
    for an operator to act on it. `holds(world, member)` checks the member's last decision *and* the
    configuration that makes waiting the documented behaviour (the same decision under a
    configuration that allows the core to act is a liveness failure)."""

    name: str
    holds: Callable[[World, str], bool]


@dataclass(frozen=True, slots=True)
class ClusterWait:
    """A named rule: no single primary, because no member may become one without an operator."""

    name: str
    holds: Callable[[World], bool]


def _rewind_not_allowed(world: World, name: str) -> bool:
    """A former primary that may have diverged, with use_pg_rewind off and
    remove_data_directory_on_diverged_timelines off: the core neither rewinds nor discards its data,
    it waits for the operator (Why.REWIND_NOT_ALLOWED)."""
    s = _settings(world, name)
    return (_last_why(world, name) is Why.REWIND_NOT_ALLOWED and not s.use_pg_rewind
            and not s.remove_data_directory_on_diverged_timelines)


def _rewind_failed(world: World, name: str) -> bool:
    """pg_rewind ran against the leader and failed (not for want of reaching it: that is no failed
    rewind, ActionKind.REWIND_SOURCE_UNREACHABLE, and the core tries again), and neither
    remove_data_directory_on_rewind_failure nor ..._on_diverged_timelines allows the core to start over
    from a base backup: it stays stopped for the operator (Why.REWIND_FAILED)."""
    s = _settings(world, name)
    failure = checker(world).rewind_failures.get(name, "")
    return (_last_why(world, name) is Why.REWIND_FAILED and not failure.startswith(REWIND_UNREACHABLE)
            and not s.remove_data_directory_on_rewind_failure and not s.remove_data_directory_on_diverged_timelines)


# With no leader, what every member may say when none can promote without losing more than the
# configuration allows (the only up-to-date one is tagged nofailover, the others lag past
# maximum_lag_on_failover): the cluster waits for the operator, as Patroni's does (seed 3129).
NO_SAFE_CANDIDATE = frozenset({Why.RACE_LAGGING, Why.RACE_NOFAILOVER})


def _no_safe_candidate(world: World) -> bool:
    """No leader key, no writer, and every member's agent runs and declines the race because it is
    tagged nofailover or lags past maximum_lag_on_failover (Why.RACE_NOFAILOVER, Why.RACE_LAGGING):
    promoting any of them would lose more than the configuration allows."""
    return (world.etcd.leader_name is None and not any(node.pg.writable for node in world.nodes.values())
            and all(_last_why(world, n) in NO_SAFE_CANDIDATE for n in world.nodes))


MEMBER_WAITS = (
    MemberWait("rewind-not-allowed", _rewind_not_allowed),
    MemberWait("rewind-failed", _rewind_failed),
)
CLUSTER_WAITS = (
    ClusterWait("no-safe-candidate", _no_safe_candidate),
)


def _rewind_loop_at_switch_point(world: World, name: str) -> str:
    """The known bug rewind-loop-at-switch-point: a stopped replica whose last checkpoint lies exactly at
    the point where its timeline ended is taken for diverged (`decide._may_have_diverged`), and pg_rewind,
    which finds nothing to do, cannot change that."""
    looping = _last_why(world, name) is Why.REWIND and "no rewind required" in checker(world).last_rewind.get(name, "")
    return "rewind-loop-at-switch-point" if looping else ""


def _replica_ahead_of_leader(world: World, name: str, leader: str) -> str:
    """The known bug replica-ahead-of-leader: a running replica on a newer timeline than the leader's
    primary, which the core takes for a healthy follower."""
    pg, primary = world.nodes[name].pg, world.nodes[leader].pg
    ahead = pg.accepting and pg.in_recovery and pg.timeline > primary.timeline
    return "replica-ahead-of-leader" if ahead and _last_why(world, name) is Why.FOLLOWING else ""


@dataclass(frozen=True, slots=True)
class Liveness:
    problems: tuple[tuple[str, str], ...]
    """What keeps the cluster from converging that no rule explains, with the id of the known open bug
    it is a symptom of ("" for a new finding). Empty: converged, or waiting for the operator."""
    waits: tuple[str, ...]
    """The intended waits found, as "rule" (cluster-wide) or "rule: member"."""


def check_liveness(world: World) -> None:
    """At the end of the settle time: one primary with the key, every other server streams from it, or
    the core waits for the operator as a named rule says (recorded as a wait, not a violation)."""
    found = liveness(world)
    for problem, known in found.problems:
        world.recorder.violation(world.now, "liveness", problem, known=known)
    for wait in found.waits:
        world.recorder.operator_wait(world.now, wait)


def liveness_problems(world: World) -> tuple[str, ...]:
    """What keeps the cluster from the converged state right now (empty: converged, or waiting for the
    operator by design)."""
    return tuple(problem for problem, _ in liveness(world).problems)


def liveness(world: World) -> Liveness:
    world.refresh()
    leader = world.etcd.leader_name
    writers = [n for n, node in world.nodes.items() if node.pg.writable]
    if leader is None or writers != [leader]:
        for cluster_wait in CLUSTER_WAITS:
            if cluster_wait.holds(world):
                return Liveness((), (cluster_wait.name,))
        return Liveness(((f"no single primary {world.opts.settle:.0f}s after the last fault healed: leader key "
                          f"{leader}, writable {writers}", ""),), ())
    problems: list[tuple[str, str]] = []
    waits: list[str] = []
    for name, node in world.nodes.items():
        if name == leader or (node.pg.accepting and _streams_from(world, name, leader)):
            continue
        rule = next((r.name for r in MEMBER_WAITS if r.holds(world, name)), None)
        if rule is not None:
            waits.append(f"{rule}: {name}")
            continue
        why = _last_why(world, name)
        state = f"pg {node.pg.proc.value}, following {node.pg.following}, streaming from {node.pg.streaming_from}"
        known = _replica_ahead_of_leader(world, name, leader) or _rewind_loop_at_switch_point(world, name)
        problems.append((f"{name} does not stream from leader {leader} {world.opts.settle:.0f}s after the last "
                         f"fault healed ({state}; last decision {why.name if why else None})", known))
    return Liveness(tuple(problems), tuple(waits))


def _streams_from(world: World, name: str, leader: str) -> bool:
    """Does this server stream from the leader, directly or through cascading replicas (replicatefrom)?"""
    seen = {name}
    upstream = world.nodes[name].pg.streaming_from
    while upstream is not None and upstream != leader and upstream not in seen:
        seen.add(upstream)
        pg = world.nodes[upstream].pg
        upstream = pg.streaming_from if pg.accepting else None
    return upstream == leader
