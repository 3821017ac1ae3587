"""The HA cycle's log line (`agent.loop.decision_line`): a leader race is logged with its outcome."""

from __future__ import annotations

from pgwarden.agent.loop import decision_line
from pgwarden.core import Decision, Memory, Outcome
from pgwarden.core.actions import AcquireLeader, Wait
from pgwarden.core.reasons import Reason, Why

RACE = Decision(AcquireLeader(), Reason(Why.RACE_HEALTHIEST, (("lsn", "100"),)), 0.0, Memory())


def test_a_race_is_not_logged_before_its_outcome() -> None:
    assert decision_line(RACE, None) is None


def test_a_lost_race_says_another_member_got_the_lock_not_that_it_promoted() -> None:
    lost = Outcome(action="acquire leader", ok=False, detail="somebody else holds the leader key", sent_at=0.0)
    line = decision_line(RACE, lost)
    assert line == "following new leader after trying and failing to obtain lock"  # Patroni's words


def test_a_won_race_keeps_patronis_line() -> None:
    won = Outcome(action="acquire leader", ok=True, detail="", sent_at=0.0)
    assert decision_line(RACE, won) == "promoted self to leader by acquiring session lock"


def test_other_decisions_are_logged_at_once() -> None:
    waiting = Decision(Wait(), Reason(Why.FOLLOWING, (("leader", "n1"), ("name", "n2"))), 0.0, Memory())
    assert decision_line(waiting, None) == "no action. I am (n2), a secondary, and following a leader (n1)"
