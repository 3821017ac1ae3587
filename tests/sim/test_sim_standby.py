"""Standby clusters in the simulator: the operator adds `standby_cluster` to /config (demote-cluster), the
real core and steps stop the primary and bring it back as the standby leader (following a remote primary
the simulated world does not have: it streams from nobody), a host crash moves the standby leader, then
the operator removes the section (promote-cluster) and the standby leader promotes. The invariants hold
throughout: no member of the standby cluster writes once its agents had time to read the section
(`invariants.STANDBY_GRACE`), none ever promotes there, and the cluster ends with one primary."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgwarden.core.actions import Decision
from pgwarden.core.decide import decide
from pgwarden.core.snapshot import Snapshot
from pgwarden.sim.faults import Fault, Schedule
from pgwarden.sim.run import run
from pgwarden.sim.world import SimOptions

STANDBY = {"host": "10.9.9.9", "port": 5432}
OPTS = SimOptions(nodes=3, fault_window=700.0, settle=240.0, stable_exit=60.0)


SCHEDULE: Schedule = (
    Fault(150.0, "config", config=(("standby_cluster", STANDBY),)),
    Fault(320.0, "host_crash", node="n3", duration=40.0),  # seed 7: n3 is the standby leader by then
    Fault(330.0, "host_crash", node="n2", duration=40.0),
    Fault(550.0, "config", config=(("standby_cluster", None),)),
)


def test_demote_cluster_failover_inside_and_promote_cluster() -> None:
    result = run(7, OPTS, schedule=SCHEDULE)
    assert result.ok, result.report(60)
    assert result.whys["STANDBY_DEMOTE"] >= 1, result.report(60)
    assert result.whys["STANDBY_LEADER_HELD"] >= 1, result.report(60)
    assert result.whys["START_STANDBY_LEADER"] + result.whys["STANDBY_LEADER_FOLLOW"] >= 2, result.report(60)
    assert result.whys["FOLLOWING_STANDBY_LEADER"] >= 1, result.report(60)
    assert result.whys["PROMOTE_WITH_LOCK"] >= 1, result.report(60)


def _blind_primary(s: Snapshot) -> Decision:
    """A core whose primary ignores standby_cluster (never demotes)."""
    if s.settings.standby_cluster is not None and s.pg.is_primary:
        s = replace(s, settings=replace(s.settings, standby_cluster=None))
    return decide(s)


def _promoting_standby_leader(s: Snapshot) -> Decision:
    """A core whose standby leader promotes as in a primary cluster."""
    if s.settings.standby_cluster is not None and s.pg.is_replica:
        s = replace(s, settings=replace(s.settings, standby_cluster=None))
    return decide(s)


@pytest.mark.parametrize("mutant", [_blind_primary, _promoting_standby_leader])
def test_the_invariant_catches_a_writer_in_a_standby_cluster(mutant: object) -> None:
    result = run(7, OPTS, schedule=SCHEDULE, decide=mutant)  # type: ignore[arg-type]
    assert any(v.invariant == "standby-writer" for v in result.violations), result.report(20)
