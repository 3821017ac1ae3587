"""The routing planner, step by step through the role changes it must handle."""

from __future__ import annotations

import pytest

from pgwarden.model import ClusterView, FailoverRequest, LeaderKey
from pgwarden.routing.plan import Fence, Hold, Observation, Release, Route, Routing, observe, plan

TIMEOUT = 15.0


def step(routing: Routing, **obs: object) -> tuple[tuple[object, ...], Routing]:
    return plan(routing, Observation(**obs), hold_timeout=TIMEOUT)  # type: ignore[arg-type]


def test_first_writable_leader_is_routed() -> None:
    assert step(Routing(), leader="a", leader_writable=True) == ((Route("a"),), Routing(primary="a"))


def test_a_leader_that_does_not_accept_writes_yet_is_not_routed() -> None:
    assert step(Routing(), leader="a", leader_writable=False) == ((), Routing())


def test_no_leader_routes_nowhere() -> None:
    assert step(Routing(), leader=None) == ((), Routing())


def test_unplanned_leader_change_fences_the_old_primary_before_routing_the_new() -> None:
    actions, after = step(Routing(primary="a"), leader="b", leader_writable=True)
    assert actions == (Fence("a", planned=False), Route("b"))
    assert after == Routing(primary="b")


def test_lost_leader_fences_and_waits() -> None:
    actions, after = step(Routing(primary="a"), leader=None)
    assert actions == (Fence("a", planned=False),)
    assert after == Routing()


def test_planned_switchover_holds_then_fences_without_kill_then_routes() -> None:
    routing = Routing(primary="a")
    actions, routing = step(routing, leader="a", switchover_of="a", failover_revision=7, now=1.0)
    assert actions == (Hold(7),)
    assert routing.held_for == 7
    assert step(routing, leader="a", switchover_of="a", failover_revision=7, now=1.5) == ((), routing)
    actions, routing = step(routing, leader=None, switchover_of="a", failover_revision=7, now=2.0)
    assert actions == (Fence("a", planned=True),)
    assert routing == Routing(held_for=7, held_since=1.0)
    actions, routing = step(routing, leader="b", leader_writable=True, now=2.5)
    assert actions == (Route("b"),)
    assert routing == Routing(primary="b")


def test_switchover_of_another_member_is_no_reason_to_hold() -> None:
    assert step(Routing(primary="a"), leader="a", switchover_of="b", failover_revision=7) == ((), Routing(primary="a"))


def test_withdrawn_switchover_releases_the_hold() -> None:
    held = Routing(primary="a", held_for=7, held_since=1.0)
    assert step(held, leader="a", now=2.0) == ((Release("a"),), Routing(primary="a"))


def test_a_hold_that_lasts_too_long_is_released_and_not_taken_again() -> None:
    held = Routing(primary="a", held_for=7, held_since=1.0)
    actions, after = step(held, leader="a", switchover_of="a", failover_revision=7, now=1.0 + TIMEOUT + 0.1)
    assert actions == (Release("a"),)
    assert after == Routing(primary="a", given_up=7)
    assert step(after, leader="a", switchover_of="a", failover_revision=7, now=30.0) == ((), after)
    assert step(after, leader="a", switchover_of="a", failover_revision=9, now=31.0)[0] == (Hold(9),)


@pytest.mark.parametrize("failover, expected", [
    (None, (None, 0)),
    (FailoverRequest(leader="a", member="b", revision=12), ("a", 12)),
    (FailoverRequest(member="b", revision=13), (None, 13)),
])
def test_observe_reads_the_switchover_from_the_failover_key(failover: FailoverRequest | None,
                                                            expected: tuple[str | None, int]) -> None:
    view = ClusterView(scope="s", leader=LeaderKey("a"), failover=failover)
    obs = observe(view, leader_writable=True, now=3.0)
    assert (obs.switchover_of, obs.failover_revision) == expected
    assert obs.leader == "a" and obs.leader_writable and obs.now == 3.0
