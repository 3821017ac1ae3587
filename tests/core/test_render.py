"""The operator's log line: one golden table of rendered reasons, and every Why renders."""

from __future__ import annotations

import string

import pytest

from pgwarden.core import decide, render
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.render import _TEMPLATES, render_race
from tests.core.test_tables import all_cases


def reason(why: Why, **facts: str) -> Reason:
    return Reason(why, tuple(sorted(facts.items())))


# Where Patroni has a line for the situation (contract 2.3) the text must stay word for word.
GOLDEN = [
    (reason(Why.LOCK_HELD, name="n1"), "no action. I am (n1), the leader with the lock"),
    (reason(Why.FOLLOWING, name="n2", leader="n1"),
     "no action. I am (n2), a secondary, and following a leader (n1)"),
    (reason(Why.PROMOTE_WITH_LOCK, name="n2"), "promoted self to leader because I had the session lock"),
    (reason(Why.RACE_HEALTHIEST, lsn="100"), "promoted self to leader by acquiring session lock"),
    (reason(Why.RACE_PRIMARY_ALIVE, member="n1"), "not racing for the lock: Primary (n1) is still alive"),
    (reason(Why.LEASE_AT_RISK), "demoted self because DCS is not accessible and I was a leader"),
    (reason(Why.NOT_LEADER_PRIMARY, leader="n2"),
     "demoting self because I do not have the lock and I was a leader"),
    (reason(Why.DCS_DOWN_LEADER_WAITING, left="9.0"),
     "DCS is not accessible; continuing as leader while the lease is safe (9.0s left)"),
    (reason(Why.CLONE_FROM_LEADER, member="n1"), "trying to bootstrap from leader 'n1'"),
    (reason(Why.WAIT_FOR_BOOTSTRAP), "waiting for leader to bootstrap"),
    (reason(Why.START_PRIMARY_AFTER_CRASH), "starting primary after failure"),
    (reason(Why.START_FAILED_RELEASE, failures="3"),
     "removed leader key after trying and failing to start postgres"),
    (reason(Why.REWIND, leader="n2"), "running pg_rewind from n2"),
    (reason(Why.REWIND, leader="n2", waiting="leader checkpoint"),
     "running pg_rewind from n2 (waiting for leader checkpoint)"),
    (reason(Why.DIVERGED_REMOVE), "reinitializing due to diverged timelines"),
    (reason(Why.TASK_IN_PROGRESS, task="clone"), "clone in progress"),
    (reason(Why.SYSID_RESTORED, mine="1", cluster="2"),
     "initialize held system identifier 2, not this leader's 1: writing the leader's back"),
    # A fact the template needs but the reason lacks renders empty, never raises.
    (reason(Why.LOCK_HELD), "no action. I am (), the leader with the lock"),
]


GOLDEN_IDS = [f"{i}-{r.why.name}" for i, (r, _) in enumerate(GOLDEN)]


@pytest.mark.parametrize(("given", "text"), GOLDEN, ids=GOLDEN_IDS)
def test_golden_lines(given: Reason, text: str) -> None:
    assert render(given) == text


@pytest.mark.parametrize("why", list(Why), ids=lambda w: w.name)
def test_every_why_renders(why: Why) -> None:
    bare = render(Reason(why))
    full = render(Reason(why, tuple((name, "x") for name in _placeholders(why))))
    assert bare.strip() and full.strip()
    assert "{" not in full and "}" not in full


def _placeholders(why: Why) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(_TEMPLATES[why]) if name}


def test_decisions_supply_every_fact_their_line_needs() -> None:
    """No log line from a real decision shows an empty '()' where a name belongs."""
    missing = []
    for case in all_cases():
        reason_ = decide(case.snapshot).reason
        lacking = _placeholders(reason_.why) - {k for k, _ in reason_.facts}
        if lacking:
            missing.append(f"{case.where} {reason_.why.name} lacks {sorted(lacking)}")
    assert not missing, "\n".join(missing)


# A race is logged once its acquisition is done (issue 11: a replica that lost the race logged
# 'promoted self to leader by acquiring session lock' and then 'acquire leader failed').
RACE_LINES = [
    (reason(Why.RACE_HEALTHIEST, lsn="100"), True, "", "promoted self to leader by acquiring session lock"),
    (reason(Why.RACE_PRIMARY_RECLAIM), True, "", "acquired session lock as a leader"),
    (reason(Why.RACE_HEALTHIEST, lsn="100"), False, "somebody else holds the leader key",
     "following new leader after trying and failing to obtain lock"),
    (reason(Why.RACE_PRIMARY_RECLAIM), False, "somebody else holds the leader key",
     "did not acquire session lock: another member got it first"),
    (reason(Why.RACE_HEALTHIEST, candidate="n2"), False, "DCS error: etcd timed out",
     "did not acquire session lock: DCS error: etcd timed out"),
]


@pytest.mark.parametrize(("given", "won", "detail", "text"), RACE_LINES)
def test_golden_race_lines(given: Reason, won: bool, detail: str, text: str) -> None:
    assert render_race(given, won, detail) == text
