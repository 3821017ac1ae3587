"""Permanent slots in the simulator (SimOptions.permanent_slots): the real core and steps create the slot
on the primary and a copy on every failover-capable replica, advanced to the positions the primary
publishes in /status (a simulated consumer confirms 64 kB behind the primary), through faults and
operator actions. The campaign's own runs have no permanent slots, so its seeds keep their traces."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from pgwarden.sim.campaign import campaign
from pgwarden.sim.run import run
from pgwarden.sim.world import SimOptions, World

SLOTS = SimOptions(fault_window=420.0, settle=180.0, operations=True, stable_exit=60.0, fencing=True,
                   permanent_slots=("archiver",))
PROMOTED = re.compile(r"promoted with slot copies \[(.*)\], missing \[(.*)\]")


def test_copies_are_created_advanced_and_found_at_promotion() -> None:
    result = run(1, replace(SLOTS, nodes=3))
    assert result.ok, result.report(40)
    trace = result.recorder.render_trace()
    assert result.whys["SLOT_COPIES"] >= 2, "every replica creates its copy"
    assert any("advance=(('archiver'," in line for line in trace), "copies are advanced"
    promotions = [m for m in map(PROMOTED.search, trace) if m]
    assert promotions, "the schedule fails over"
    assert all(m.group(2) == "" for m in promotions), "every promoted replica already had its copy"


def test_a_campaign_with_permanent_slots_breaks_no_invariant() -> None:
    result = campaign(24, first_seed=500, nodes=(3, 5), opts=SLOTS, workers=2, chunk=4)
    assert result.runs == 24
    assert not result.new_findings, result.report()
    assert result.whys["SLOT_COPIES"], result.report()


LOGICAL = SimOptions(fault_window=420.0, settle=180.0, operations=True, stable_exit=60.0, fencing=True,
                     logical_slots=("cdc",))


def test_logical_copies_are_copied_advanced_and_never_ahead_of_the_consumer_at_promotion() -> None:
    result = run(1, replace(LOGICAL, nodes=3))
    assert result.ok, result.report(40)
    trace = result.recorder.render_trace()
    assert result.whys["COPY_LOGICAL_SLOTS"] >= 2, "every replica copies the slot (restarting once)"
    assert any("wrote logical slot states" in line for line in trace)
    assert any("advance_logical=(('cdc'," in line for line in trace), "copies are advanced"
    assert any("promoted with logical copy cdc" in line or "missing copy allowed" in line for line in trace), \
        "the schedule fails over"


def test_a_campaign_with_logical_slots_loses_no_confirmed_change() -> None:
    result = campaign(12, first_seed=700, nodes=(3, 4), opts=LOGICAL, workers=2, chunk=3)
    assert result.runs == 12
    assert not result.new_findings, result.report()
    assert result.whys["COPY_LOGICAL_SLOTS"], result.report()


def test_the_invariant_catches_a_copy_ahead_of_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken advance (to the replica's own position, past what the consumer confirmed) is found."""
    from pgwarden.sim import pgops

    def too_far(world: World, name: str, targets: tuple[tuple[str, str, int], ...]) -> pgops.PgOp:
        pg = world.nodes[name].pg
        yield 0.005
        for slot, _, _ in targets:
            if slot in pg.logical:
                pg.logical[slot] = pg.lsn
        return True, "advanced too far"

    monkeypatch.setattr(pgops, "advance_logical_slots", too_far)
    found = [run(seed, replace(LOGICAL, nodes=3)) for seed in (1, 2, 3)]
    assert any("logical-slots" in str(r.report(400)) for r in found), found[0].report(40)
