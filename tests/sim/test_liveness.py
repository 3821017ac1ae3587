"""The liveness check and its named rules for intended waits (sim.invariants.MEMBER_WAITS, CLUSTER_WAITS).

A schedule that ends unconverged fails the campaign's gate unless a rule recognises the state as one
in which the core waits for an operator by design. Each rule is tested both ways: it holds under the
configuration that makes waiting the documented behaviour, and not under one that lets the core act.
"""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace

import pytest

from pgwarden.core.reasons import Why
from pgwarden.model import DataDirState
from pgwarden.sim.etcd import LEADER, EtcdStore
from pgwarden.sim.invariants import (
    CLUSTER_WAITS,
    MEMBER_WAITS,
    REWIND_UNREACHABLE,
    Checker,
    Liveness,
    liveness,
    on_rewound,
)
from pgwarden.sim.kernel import Clock, Kernel
from pgwarden.sim.postgres import Proc, SimPg
from pgwarden.sim.recorder import Recorder
from pgwarden.sim.run import run
from pgwarden.sim.world import SimNode, SimOptions, World
from tests.sim.test_sim import CI_OPTIONS

OPTIONS = SimOptions(nodes=3)
NAMES = ("n1", "n2", "n3")


def _world() -> World:
    """n1 a primary holding the leader key, n2 and n3 stopped replicas on its timeline."""
    world = World(opts=OPTIONS, rng=random.Random(0), kernel=Kernel(), recorder=Recorder(keep_trace=False))
    world.checker = Checker()
    world.etcd = EtcdStore(scope="sim", schedule_expiry=lambda t, lease: None,
                           on_leader_change=lambda revision, writer: None)
    for name in NAMES:
        pg = SimPg(name, data=DataDirState.VALID, sysid="1", lineage=((1, 1, 0),), lsn=100)
        world.nodes[name] = SimNode(name, Clock(0.0, 1.0), pg)
        world.pgs.append(pg)
    return world


def _primary(world: World, name: str) -> None:
    pg = world.nodes[name].pg
    pg.proc, pg.in_recovery = Proc.RUNNING, False
    world.etcd.put(LEADER, name, writer=name)


def _streaming(world: World, name: str, leader: str) -> None:
    pg = world.nodes[name].pg
    pg.proc, pg.following = Proc.RUNNING, leader


def _decided(world: World, name: str, why: Why, **settings: object) -> None:
    """The member's agent last decided `why` under these dynamic settings (a stand-in for SimAgent)."""
    world.nodes[name].agent = SimpleNamespace(last_why=why, settings=replace(OPTIONS.settings, **settings))


def test_a_converged_cluster_has_no_problem_and_no_wait() -> None:
    world = _world()
    _primary(world, "n1")
    for name in ("n2", "n3"):
        _streaming(world, name, "n1")
        _decided(world, name, Why.FOLLOWING)
    assert liveness(world) == Liveness((), ())


def test_every_rule_has_a_distinct_name() -> None:
    names = [r.name for r in MEMBER_WAITS] + [r.name for r in CLUSTER_WAITS]
    assert len(names) == len(set(names))


FORBIDDEN = {"use_pg_rewind": False, "remove_data_directory_on_rewind_failure": False,
             "remove_data_directory_on_diverged_timelines": False}


@pytest.mark.parametrize(("why", "rule", "permits"), [
    (Why.REWIND_NOT_ALLOWED, "rewind-not-allowed", {"use_pg_rewind": True}),
    (Why.REWIND_NOT_ALLOWED, "rewind-not-allowed", {"remove_data_directory_on_diverged_timelines": True}),
    (Why.REWIND_FAILED, "rewind-failed", {"remove_data_directory_on_rewind_failure": True}),
    (Why.REWIND_FAILED, "rewind-failed", {"remove_data_directory_on_diverged_timelines": True}),
])
def test_a_stopped_former_primary_waits_only_when_the_configuration_forbids_acting(
        why: Why, rule: str, permits: dict[str, bool]) -> None:
    world = _world()
    _primary(world, "n1")
    _streaming(world, "n2", "n1")
    _decided(world, "n2", Why.FOLLOWING)
    _decided(world, "n3", why, **FORBIDDEN)
    on_rewound(world, "n3", False, "pg_rewind: could not find common ancestor of the source and target cluster's "
               "timelines")
    found = liveness(world)
    assert found.problems == () and found.waits == (f"{rule}: n3",)
    _decided(world, "n3", why, **{**FORBIDDEN, **permits})
    found = liveness(world)
    assert found.waits == () and len(found.problems) == 1 and "n3 does not stream" in found.problems[0][0]


def test_a_rewind_failure_for_want_of_its_source_is_no_wait() -> None:
    world = _world()
    _primary(world, "n1")
    _streaming(world, "n2", "n1")
    _decided(world, "n2", Why.FOLLOWING)
    _decided(world, "n3", Why.REWIND_FAILED, **FORBIDDEN)
    on_rewound(world, "n3", False, f"{REWIND_UNREACHABLE}: could not connect to n1")
    found = liveness(world)
    assert found.waits == () and [known for _, known in found.problems] == [""]


def test_any_other_member_that_does_not_stream_is_a_problem() -> None:
    world = _world()
    _primary(world, "n1")
    _streaming(world, "n2", "n1")
    _decided(world, "n2", Why.FOLLOWING)
    _decided(world, "n3", Why.REWIND, **FORBIDDEN)
    assert len(liveness(world).problems) == 1


def test_no_safe_candidate_is_a_wait_only_when_every_member_declines_the_race() -> None:
    world = _world()
    for name in ("n1", "n2"):
        _streaming(world, name, "n3")
        _decided(world, name, Why.RACE_LAGGING)
    _streaming(world, "n3", "n1")
    _decided(world, "n3", Why.RACE_NOFAILOVER)
    assert liveness(world).waits == ("no-safe-candidate",) and liveness(world).problems == ()
    _decided(world, "n2", Why.RACE_NOT_HEALTHIEST)  # somebody may still promote: not a wait
    found = liveness(world)
    assert found.waits == () and "no single primary" in found.problems[0][0]
    _decided(world, "n2", Why.RACE_LAGGING)
    world.nodes["n2"].agent = None  # an agent that does not run declines nothing
    assert liveness(world).waits == ()


def test_two_writers_are_never_a_wait() -> None:
    world = _world()
    _primary(world, "n1")
    pg = world.nodes["n2"].pg
    pg.proc, pg.in_recovery = Proc.RUNNING, False
    for name in NAMES:
        _decided(world, name, Why.RACE_LAGGING)
    found = liveness(world)
    assert found.waits == () and "no single primary" in found.problems[0][0]


# ---------------------------------------------------------------------------------------------------
# Seeds of the CI campaign (test_sim.CI_OPTIONS) that end unconverged, each explained.


def test_a_stop_whose_task_is_cancelled_still_completes() -> None:
    """Seed 13914 (a simulator bug): a reinitialize task was cancelled (agent stopped) while its fast stop
    waited for a 23 s shutdown checkpoint; the stop's completion lived in the cancelled task, so n3's
    PostgreSQL stayed "stopping" for good and the core saw it starting up forever. The postmaster now
    finishes on its own (pgops._server_side), as a real one does without its pg_ctl."""
    result = run(13914, replace(CI_OPTIONS, nodes=3))
    assert result.ok, result.report(40)
    assert any("n3 pg stopped" in line for line in result.recorder.render_trace()), result.report(80)


@pytest.mark.parametrize(("seed", "nodes", "waits"), [
    (3129, 3, ["no-safe-candidate"]),
    (23, 5, ["rewind-not-allowed: n5"]),  # use_pg_rewind off, remove_data_directory_on_* off
])
def test_seeds_that_end_waiting_for_the_operator_by_design(seed: int, nodes: int, waits: list[str]) -> None:
    result = run(seed, replace(CI_OPTIONS, nodes=nodes))
    assert result.ok and result.waits == waits, result.report(40)


KNOWN_LIVENESS_BUGS = [("replica-ahead-of-leader", 18719, 5), ("rewind-loop-at-switch-point", 15364, 4)]


@pytest.mark.parametrize(("bug", "seed", "nodes"), KNOWN_LIVENESS_BUGS)
def test_known_liveness_bugs_are_recognised(bug: str, seed: int, nodes: int) -> None:
    """What keeps the campaign's gate green while the bugs are open: their runs' violations carry the id."""
    result = run(seed, replace(CI_OPTIONS, nodes=nodes), keep_trace=False)
    assert all(v.invariant == "liveness" and v.known == bug for v in result.violations), result.violations


@pytest.mark.parametrize("seed", [4245, 6105, 13947])
def test_a_stale_switchover_key_does_not_bar_the_only_safe_candidate(seed: int) -> None:
    """Was bug stale-switchover-bars-former-leader. Seed 4245: a switchover from n2 to n1 is requested
    while n2 is still in its promote task; n2 is then frozen 13 s, loses its lease and stops. The
    `failover` key (leader n2, candidate n1) stays; n1 (6 MB behind) and n3 (13 MB behind) lag past
    maximum_lag_on_failover (1 MB). n2, with every acknowledged commit, never raced as the former leader
    of a switchover: no leader, for good. It now races once every member it hands over to answered and
    none can take over (decide._nobody_can_take_over)."""
    result = run(seed, replace(CI_OPTIONS, nodes=3))
    assert result.ok, result.report(40)


@pytest.mark.xfail(strict=True, reason="BUG replica-ahead-of-leader (sim.invariants.KNOWN_BUGS)")
def test_a_replica_on_a_newer_timeline_than_the_leader_is_not_left_following() -> None:
    """Seed 18719 (5 nodes): n1 keeps its primary in maintenance mode while cut off; the operator fails
    over to n2 (timeline 3): the excused no-watchdog overlap. With check_timeline off, n1 later reclaims
    the free key on timeline 2; n2's PostgreSQL crashes and comes back as n1's replica on timeline 3,
    which cannot stream from timeline 2, and n2 decides FOLLOWING until the end (with use_pg_rewind on as
    well): neither a rewind nor a wait for the operator (REWIND_NOT_ALLOWED)."""
    result = run(18719, replace(CI_OPTIONS, nodes=5))
    assert result.ok, result.report(40)


@pytest.mark.parametrize(("seed", "nodes"), [(6, 3), (39, 3), (40, 4), (73, 4), (77, 5)])
def test_a_rewind_that_could_not_reach_its_source_is_tried_again(seed: int, nodes: int) -> None:
    """Was bug rewind-failure-latched-when-unreachable (about 5% of CI schedules): a pg_rewind that could
    not connect to the leader (a fault of the schedule) counted as a failed rewind (Memory.rewind_failed)
    and, with remove_data_directory_on_* off, left the member stopped for the operator, although nothing
    had been tried. It is now an outcome of its own (ActionKind.REWIND_SOURCE_UNREACHABLE) and the core
    rewinds again."""
    result = run(seed, replace(CI_OPTIONS, nodes=nodes))
    assert result.ok, result.report(40)


@pytest.mark.xfail(strict=True, reason="BUG rewind-loop-at-switch-point (sim.invariants.KNOWN_BUGS)")
def test_a_rewind_with_nothing_to_do_is_not_decided_again() -> None:
    """Seed 15364 (4 nodes): n4, stopped on timeline 2 with its last checkpoint exactly at the point where
    timeline 2 ended, is taken for diverged; pg_rewind answers "no rewind required" every time and n4 is
    never started again."""
    result = run(15364, replace(CI_OPTIONS, nodes=4))
    assert result.ok, result.report(40)
