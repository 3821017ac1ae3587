"""Properties of decide() over any valid snapshot (hypothesis).

Derandomized so that a run is a function of the code alone (the core's own rule: determinism is tested,
not hoped for). To hunt for new counterexamples, run with HYPOTHESIS_EXPLORE=1.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.core import decide, render
from pgwarden.core.actions import Demote, Promote, Shutdown, StartPostgres
from pgwarden.core.classify import Lock, PgClass, lock_state
from pgwarden.core.decide import RULES, remember
from pgwarden.core.snapshot import Snapshot
from pgwarden.model import DataDirState
from tests.core.strategies import snapshots

EXAMPLES = settings(max_examples=150, deadline=None, derandomize=os.environ.get("HYPOTHESIS_EXPLORE") != "1")


@EXAMPLES
@given(snapshots())
def test_decide_never_raises_and_answers_with_a_renderable_reason(s: Snapshot) -> None:
    decision = decide(s)
    assert render(decision.reason)


@EXAMPLES
@given(snapshots())
def test_writes_are_only_enabled_under_a_valid_lease(s: Snapshot) -> None:
    """Promote and a start as primary happen only while the key is ours and the lease (after folding the
    reported outcomes) has time left."""
    decision = decide(s)
    action = decision.action
    if isinstance(action, Promote) or (isinstance(action, StartPostgres) and action.role == "primary"):
        deadline = remember(s).lock_deadline
        assert lock_state(s) is Lock.MINE
        assert deadline is not None and s.now < deadline


@EXAMPLES
@given(snapshots(with_task=False))
def test_a_primary_that_cannot_prove_its_lease_is_stopped(s: Snapshot) -> None:
    """DCS unreadable, PostgreSQL accepting writes and no lease time left: the only answers are stopping it.
    (Without a task in flight; with one, the row "task running on a primary, DCS down, lease over" in
    cases/shutdown_tasks_slots.txt. Not in maintenance mode, last seen: the operator owns PostgreSQL
    then, PAUSED_DCS_DOWN leaves it running.)"""
    deadline = remember(s).lock_deadline
    paused = s.memory.paused_when_last_seen
    if s.dcs is None and s.pg.is_primary and not paused and (deadline is None or s.now >= deadline):
        assert isinstance(decide(s).action, Demote | Shutdown)


@EXAMPLES
@given(snapshots(with_task=False))
def test_a_primary_never_keeps_running_under_another_nodes_key(s: Snapshot) -> None:
    """(With a readable data directory; a running primary whose data directory the probe cannot read is
    covered by rows in cases/bootstrap.txt.)"""
    if s.dcs is None or lock_state(s) is not Lock.OTHER or not s.pg.is_primary or s.shutting_down:
        return
    if s.paused:
        return  # maintenance mode: "continue to run as primary without lock" (contract 2.9), by design
    same_database = s.pg.sysid in (None, s.dcs.initialize) or not s.dcs.initialize
    if s.pg.data_dir is DataDirState.VALID and same_database:
        assert isinstance(decide(s).action, Demote)


@EXAMPLES
@given(snapshots())
def test_wake_at_is_never_in_the_past(s: Snapshot) -> None:
    assert decide(s).wake_at >= s.now


@EXAMPLES
@given(snapshots())
def test_same_input_same_output(s: Snapshot) -> None:
    assert decide(s) == decide(copy.deepcopy(s)) == decide(s)


@EXAMPLES
@given(snapshots(), st.data())
def test_memory_fed_back_does_not_break_the_next_decision(s: Snapshot, data: st.DataObject) -> None:
    """The loop feeds Decision.memory into the next snapshot; any later instant must still decide."""
    first = decide(s)
    later = data.draw(st.floats(min_value=0.0, max_value=120.0))
    second = decide(dataclasses.replace(s, memory=first.memory, last=(), now=s.now + later))
    assert second.wake_at >= s.now + later


def test_every_lock_and_pg_pair_has_a_rule() -> None:
    assert set(RULES) == set(itertools.product(Lock, PgClass))
