"""Permanent slots in the simulator (SimOptions.permanent_slots): the real core and steps create the slot
on the primary and a copy on every failover-capable replica, advanced to the positions the primary
publishes in /status (a simulated consumer confirms 64 kB behind the primary), through faults and
operator actions. The campaign's own runs have no permanent slots, so its seeds keep their traces."""

from __future__ import annotations

import re
from dataclasses import replace

from pgwarden.sim.campaign import campaign
from pgwarden.sim.run import run
from pgwarden.sim.world import SimOptions

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
