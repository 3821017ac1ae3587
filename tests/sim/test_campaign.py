"""Campaigns: results independent of the worker count, and the gate (exit status, `new_findings`)."""

from __future__ import annotations

from dataclasses import replace

from pgwarden.sim import cli
from pgwarden.sim.campaign import CampaignResult, RunSummary, campaign, default_workers
from pgwarden.sim.world import SimOptions

QUICK = SimOptions(fault_window=300.0, settle=120.0, operations=True, stable_exit=60.0)


def test_the_worker_count_does_not_change_a_campaign() -> None:
    one = campaign(8, first_seed=40, nodes=(3, 4), opts=QUICK, workers=1, chunk=3)
    two = campaign(8, first_seed=40, nodes=(3, 4), opts=QUICK, workers=2, chunk=3)
    assert (one.events, one.decisions, one.actions, one.whys) == (two.events, two.decisions, two.actions, two.whys)
    assert [f.violations for f in one.failures] == [f.violations for f in two.failures]
    assert default_workers() >= 1


def _summary(seed: int, invariants: tuple[str, ...] = (), known: tuple[str, ...] = (),
             waits: tuple[str, ...] = ()) -> RunSummary:
    return RunSummary(seed, 3, tuple(f"violation {i}" for i in invariants), invariants, (), known, waits, {}, {}, 0, 0)


def test_the_gate_counts_only_violations_no_known_bug_explains() -> None:
    result = CampaignResult(failures=[_summary(1, ("liveness",), ("stale-switchover-bars-former-leader",)),
                                      _summary(2, ("liveness",), ("",))],
                            waiting=[_summary(3, waits=("rewind-not-allowed: n2",))])
    assert [f.seed for f in result.new_findings] == [2]
    report = result.report()
    assert "runs ending unconverged by design (the core waits for the operator): 1" in report
    assert "rewind-not-allowed: 1 run(s), e.g. seeds [3]" in report


def test_the_command_exits_zero_on_a_clean_campaign() -> None:
    assert cli.main(["--runs", "2", "--minutes", "5", "--settle", "120", "--workers", "1"]) == 0


def test_waits_are_reported_with_their_runs() -> None:
    result = campaign(1, first_seed=3129, nodes=3, opts=replace(QUICK, fault_window=420.0, settle=180.0),
                      workers=1)
    assert [f.waits for f in result.waiting] == [("no-safe-candidate",)], result.report()
