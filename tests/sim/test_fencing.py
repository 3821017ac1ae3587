"""Fencing in the simulator: the watchdog resets a frozen leader's host before its lease lapses, and
failsafe mode keeps a leader running through a DCS outage while every member accepts its pings.

The runs draw their fencing from the seed (`sim.run.fencing_for`); each test picks seeds that drew what
it needs, so the schedules are the classic ones with a fault placed on the leader."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgwarden.core.snapshot import WatchdogMode
from pgwarden.sim.faults import Fault
from pgwarden.sim.run import fencing_for, run
from pgwarden.sim.world import SimOptions

FENCED = SimOptions(nodes=3, fault_window=300.0, settle=120.0, fencing=True)
FAULT_AT = 150.0


def _seeds(*, watchdog: bool, failsafe: bool, count: int = 3) -> list[int]:
    found = []
    for seed in range(1000):
        dog, safe = fencing_for(seed)
        if (dog.mode is WatchdogMode.REQUIRED) == watchdog and safe == failsafe:
            found.append(seed)
        if len(found) == count:
            return found
    raise AssertionError("no such seed")


def _leader_at(seed: int, at: float) -> str:
    """Who leads at `at` in a fault-free run of this seed (the faults below come at `at`)."""
    quiet = run(seed, FENCED, schedule=())
    leaders = [line.split()[1] for line in quiet.recorder.render_trace()
               if float(line.split()[0]) < at and "decide renew leader" in line]
    return leaders[-1]


@pytest.mark.parametrize("seed", _seeds(watchdog=True, failsafe=False))
def test_the_watchdog_resets_a_frozen_leader_before_another_member_promotes(seed: int) -> None:
    leader = _leader_at(seed, FAULT_AT)
    result = run(seed, FENCED, schedule=(Fault(FAULT_AT, "agent_pause", leader, 40.0),))
    trace = result.recorder.render_trace()
    assert result.ok and not result.excused, result.report(80)
    reset = next(float(line.split()[0]) for line in trace if f"{leader} watchdog reset the host" in line)
    taken = next(float(line.split()[0]) for line in trace
                 if float(line.split()[0]) > FAULT_AT and "decide acquire leader" in line)
    assert FAULT_AT < reset < taken < FAULT_AT + 10  # reset within the lease, before the new leader's race


@pytest.mark.parametrize("seed", _seeds(watchdog=False, failsafe=False))
def test_without_a_watchdog_the_frozen_leader_is_the_excused_overlap(seed: int) -> None:
    leader = _leader_at(seed, FAULT_AT)
    result = run(seed, FENCED, schedule=(Fault(FAULT_AT, "agent_pause", leader, 40.0),))
    assert not result.violations and result.excused, result.report(80)


@pytest.mark.parametrize("seed", _seeds(watchdog=True, failsafe=True) + _seeds(watchdog=False, failsafe=True))
def test_failsafe_keeps_the_leader_through_a_dcs_outage(seed: int) -> None:
    leader = _leader_at(seed, FAULT_AT)
    result = run(seed, FENCED, schedule=(Fault(FAULT_AT, "dcs_outage", duration=60.0),))
    trace = result.recorder.render_trace()
    assert result.ok and not result.excused, result.report(80)
    during = [line for line in trace if FAULT_AT < float(line.split()[0]) < FAULT_AT + 60]
    assert any(f"{leader} decide failsafe ping" in line and "FAILSAFE_ACTIVE" in line for line in during)
    assert not any("demote" in line or "pg stopping" in line for line in during), "\n".join(during)
    after = [line.split()[1] for line in trace if float(line.split()[0]) > FAULT_AT + 60
             and "decide renew leader" in line]
    assert after and set(after) == {leader}


@pytest.mark.parametrize("seed", _seeds(watchdog=False, failsafe=True, count=2))
def test_failsafe_stops_the_leader_when_a_member_does_not_answer(seed: int) -> None:
    leader = _leader_at(seed, FAULT_AT)
    other = next(n for n in ("n1", "n2", "n3") if n != leader)
    result = run(seed, FENCED, schedule=(Fault(FAULT_AT - 1, "agent_pause", other, 70.0),
                                         Fault(FAULT_AT, "dcs_outage", duration=60.0)))
    trace = result.recorder.render_trace()
    assert not result.violations, result.report(80)
    stopped = next(float(line.split()[0]) for line in trace
                   if float(line.split()[0]) > FAULT_AT and f"{leader} decide demote" in line)
    assert stopped < FAULT_AT + 7  # within the lease, as without failsafe mode


@pytest.mark.parametrize("seed", _seeds(watchdog=False, failsafe=False, count=2))
def test_without_failsafe_a_dcs_outage_stops_the_leader_within_its_lease(seed: int) -> None:
    leader = _leader_at(seed, FAULT_AT)
    result = run(seed, FENCED, schedule=(Fault(FAULT_AT, "dcs_outage", duration=60.0),))
    stopped = next(float(line.split()[0]) for line in result.recorder.render_trace()
                   if float(line.split()[0]) > FAULT_AT and f"{leader} decide demote" in line)
    assert stopped < FAULT_AT + 7 and not result.violations, result.report(80)


# Found by the CI campaign once it drew fencing (test_sim.CI_CAMPAIGN), fixed in the core.

def test_a_failsafe_leader_pings_every_member_its_own_renewal_listed() -> None:
    """Seed 625: /failsafe was rewritten after the members came back from a DCS outage, but the leader,
    cut off right after, pinged only the members of the key it had read; a member it had just listed
    raced and promoted beside it. It now pings the union of the key it read and the members it writes."""
    from tests.sim.test_sim import CI_CAMPAIGN

    result = run(625, replace(CI_CAMPAIGN, nodes=4))
    assert not result.violations, result.report(60)


def test_a_stale_failsafe_key_does_not_bar_every_candidate() -> None:
    """Seed 51: /failsafe listed only a member that deferred to a failover candidate it did not list, so
    nobody raced, for ever. A member not listed may race once a listed running replica answers that it
    accepted no ping for a lease (so no leader runs on failsafe pings)."""
    from tests.sim.test_sim import CI_CAMPAIGN

    result = run(51, replace(CI_CAMPAIGN, nodes=3))
    assert result.ok, result.report(60)


def test_a_keepalive_of_a_new_lease_does_not_extend_a_failsafe_leaders_lock() -> None:
    """Seed 19883: a leader rode out a DCS outage on failsafe pings; its leader key expired with its lease.
    When the DCS came back, its keepalive granted a new lease and the next one succeeded, extending the
    lock although the key was gone; meanwhile its pings failed (a partition) and a member raced and
    promoted. A keepalive now counts on a leader only if the leader key is on the lease it refreshed."""
    from tests.sim.test_sim import CI_CAMPAIGN

    result = run(19883, replace(CI_CAMPAIGN, nodes=5))
    assert not result.violations, result.report(60)
