"""The simulation tier: determinism, the unsafe-variant (mutant) detection, the shrinker, a small campaign.

Budget: about 2-3 minutes on 2 cores. Known bugs of the core found by the simulator are kept as strict
xfail regression tests (reason "BUG: ..."), so they turn into failures the day they are fixed.
"""

from __future__ import annotations

import pytest

from pgwarden.agent.execute import BACKGROUND as REAL_BACKGROUND
from pgwarden.core.types import Decision, Reason, Snapshot, Why
from pgwarden.sim import adapters
from pgwarden.sim.campaign import campaign
from pgwarden.sim.faults import Fault
from pgwarden.sim.mutants import MUTANTS
from pgwarden.sim.run import run, schedule_for
from pgwarden.sim.shrink import fails_like, shrink
from pgwarden.sim.world import SimOptions

SHORT = SimOptions(nodes=3, fault_window=600.0, settle=180.0)


def test_same_seed_same_trace() -> None:
    first = run(11, SHORT)
    second = run(11, SHORT)
    assert first.recorder.render_trace() == second.recorder.render_trace()
    assert first.events == second.events and [str(v) for v in first.violations] == [str(v) for v in second.violations]


def test_different_seeds_differ() -> None:
    assert schedule_for(1, SHORT) != schedule_for(2, SHORT)


def test_a_quiet_cluster_converges_with_one_primary() -> None:
    result = run(3, SHORT, schedule=())
    assert result.ok, result.report(60)
    assert result.actions["bootstrap"] == 1 and result.actions["clone"] == 2


def test_background_table_matches_the_agent() -> None:
    assert dict(REAL_BACKGROUND) == adapters.BACKGROUND


class _Alien:
    kind = "alien"


def test_an_unknown_action_fails_loudly() -> None:
    def alien(s: Snapshot) -> Decision:
        return Decision(_Alien(), Reason(Why.NO_ACTION), s.now + 1, s.memory)  # type: ignore[arg-type]

    with pytest.raises(adapters.UnknownAction):
        run(1, SHORT, schedule=(), decide=alien)


def test_a_raising_core_is_reported() -> None:
    def broken(s: Snapshot) -> Decision:
        raise RuntimeError("boom")

    result = run(1, SimOptions(nodes=3, fault_window=130.0, settle=10.0), schedule=(), decide=broken)
    assert any(v.invariant == "core-exception" for v in result.violations)


# ---------------------------------------------------------------------------------------------------
# Mutants: each deliberately unsafe variant is caught within a bounded number of schedules, on a
# seed where the real core does not break that invariant.

MUTANT_BUDGET = 40


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught(name: str) -> None:
    mutant = MUTANTS[name]
    for seed in range(MUTANT_BUDGET):
        broken = run(seed, SHORT, decide=mutant.decide, keep_trace=False)
        if not any(v.invariant == mutant.breaks for v in broken.violations):
            continue
        real = run(seed, SHORT, keep_trace=False)
        if not any(v.invariant == mutant.breaks for v in real.violations):
            return
    pytest.fail(f"mutant {name} ({mutant.description}) not caught by the {mutant.breaks} invariant "
                f"within {MUTANT_BUDGET} schedules")


def test_shrinker_reduces_a_failing_schedule() -> None:
    mutant = MUTANTS["outlive-lease"]
    schedule = schedule_for(0, SHORT)
    smaller, result = shrink(0, SHORT, schedule, decide=mutant.decide, still_fails=fails_like("one-writer"))
    assert 0 < len(smaller) < len(schedule)
    assert any(v.invariant == "one-writer" for v in result.violations)
    assert run(0, SHORT, schedule=smaller, decide=mutant.decide).violations == result.violations


# ---------------------------------------------------------------------------------------------------
# Known bugs of the core (or of the agent's executor contract), as found by the simulator.


def test_bug_slow_post_promote_checkpoint_gives_two_writers() -> None:
    schedule = (
        Fault(200.0, "slow_checkpoint", "n2", value=45.0),
        Fault(300.0, "partition", duration=90.0, group=("n1",)),
    )
    result = run(6, SHORT, schedule=schedule)
    assert not any(v.invariant == "one-writer" for v in result.violations), result.report(80)


def test_bug_replica_beyond_switch_point_loops() -> None:
    result = run(1, SimOptions(nodes=4, fault_window=600.0, settle=180.0))
    assert not any(v.invariant == "liveness" for v in result.violations), result.report(80)


def test_small_campaign_runs_and_covers_the_core() -> None:
    result = campaign(60, first_seed=1000, nodes=(3, 7), opts=SHORT, workers=2, chunk=5)
    assert result.runs == 60
    reached = {a for a, n in result.actions.items() if n}
    assert {"bootstrap", "clone", "acquire leader", "renew leader", "promote", "demote", "start", "follow",
            "rewind", "wait", "shutdown"} <= reached, result.report()
    assert not [f for f in result.failures if "core-exception" in f.invariants], result.report()
