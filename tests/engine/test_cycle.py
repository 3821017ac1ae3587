"""One HA cycle (`engine.loop.cycle`), the loop both the agent and the simulator drive, against a
scripted driver: the order of its effects, the outcomes shown to the core once, the fallback when
`decide` raises, the operator request desk, and the loop's rules in `LoopBook`."""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.core import decide as real_decide
from pgwarden.core.actions import Decision, Demote, DemoteMode, Restart, Wait
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.snapshot import ActionKind, HaSettings, Memory, Outcome, RestartRequested, Snapshot
from pgwarden.engine.drive import resume
from pgwarden.engine.loop import (
    MIN_NAP,
    MIN_NAP_AFTER_FAILURE,
    Act,
    CycleEnded,
    Decided,
    DecideFailed,
    FetchPeers,
    LoopBook,
    Moment,
    MomentSample,
    ProbeLocal,
    ReadCluster,
    RefreshSettings,
    Stopping,
    TaskRunning,
    cycle,
    keepalive_stall_limit,
)
from pgwarden.model import ClusterView, DataDirState, LeaderKey, LocalPg

REPLICA = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=True, timeline=1)
PRIMARY = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=False, wal_lsn=5,
                  timeline=1)
LED = ClusterView(scope="s", leader=LeaderKey(name="n2", revision=1), initialize="7000")
NO_LEADER = ClusterView(scope="s", initialize="7000")


def drive(book: LoopBook, decide: Any = real_decide, *, cluster: ClusterView | None = LED,
          pg: LocalPg = REPLICA, now: float = 100.0) -> tuple[Decision, list[Any]]:
    answers: dict[type, Any] = {
        ReadCluster: cluster, ProbeLocal: pg, RefreshSettings: HaSettings(), Stopping: False, FetchPeers: (),
        Moment: MomentSample(now, 1_700_000_000.0, None, False), CycleEnded: now + 0.01,
    }
    steps = cycle(book, "n1", decide)
    effects: list[Any] = []
    answer: Any = None
    while True:
        pending, value = resume(steps, answer, None)
        if not pending:
            return value, effects
        effects.append(value)
        answer = answers.get(type(value))


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def test_the_order_of_a_cycle() -> None:
    decision, effects = drive(LoopBook())
    assert kinds(effects) == ["ReadCluster", "TaskRunning", "ProbeLocal", "RefreshSettings", "Stopping", "Moment",
                              "Decided", "Act", "PublishMember", "CycleEnded"]
    assert isinstance(effects[-3], Act) and effects[-3].decision is decision


def test_a_task_that_ended_after_the_probe_has_its_result_probed_again() -> None:
    """A clone that finishes between the probe and the moment: the core must see the cloned directory with
    the clone's outcome, not the empty one (it would ask for another clone)."""
    empty = LocalPg(data_dir=DataDirState.EMPTY)
    probes = iter([empty, REPLICA])
    seen: list[Snapshot] = []

    def decide(s: Snapshot) -> Decision:
        seen.append(s)
        return Decision(Wait(), Reason(Why.NO_ACTION), s.now + 1, s.memory)

    steps = cycle(LoopBook(), "n1", decide)
    answer: Any = None
    effects: list[str] = []
    while True:
        pending, value = resume(steps, answer, None)
        if not pending:
            break
        effects.append(type(value).__name__)
        answer = {TaskRunning: True, ProbeLocal: None, ReadCluster: LED, RefreshSettings: HaSettings(),
                  Stopping: False, FetchPeers: (), Moment: MomentSample(100.0, 1_700_000_000.0, None, False),
                  CycleEnded: 100.01}.get(type(value))
        if isinstance(value, ProbeLocal):
            answer = next(probes)
    assert effects.count("ProbeLocal") == 2 and seen[0].pg is REPLICA


def test_peers_are_asked_only_for_a_race() -> None:
    _, effects = drive(LoopBook(), cluster=NO_LEADER)
    assert "FetchPeers" in kinds(effects)


def test_no_dcs_no_member_key() -> None:
    _, effects = drive(LoopBook(), cluster=None)
    assert "PublishMember" not in kinds(effects) and "Stopping" not in kinds(effects)


def test_outcomes_are_shown_to_the_core_once() -> None:
    book = LoopBook(outcomes=[Outcome(ActionKind.KEEPALIVE, True, sent_at=99.0)])
    _, effects = drive(book)
    decided = next(e for e in effects if isinstance(e, Decided))
    assert decided.snapshot.last == (Outcome(ActionKind.KEEPALIVE, True, sent_at=99.0),)
    assert book.outcomes == [] and book.last_cycle_end == pytest.approx(100.01)


def test_a_raising_core_falls_back_and_stops_a_primary_without_a_proven_lease() -> None:
    def broken(s: Snapshot) -> Decision:
        raise RuntimeError("boom")

    decision, effects = drive(LoopBook(), broken, pg=PRIMARY)
    assert any(isinstance(e, DecideFailed) for e in effects)
    assert decision.action == Demote(DemoteMode.IMMEDIATE_NOLOCK)
    calm, _ = drive(LoopBook(), broken, pg=REPLICA)
    assert isinstance(calm.action, Wait)


def test_an_operator_request_is_started_or_refused_by_the_decision() -> None:
    book = LoopBook()
    assert book.requests.submit(RestartRequested())
    assert not book.requests.submit(RestartRequested())  # one at a time (409)
    _, effects = drive(book)
    decided = next(e for e in effects if isinstance(e, Decided))
    assert decided.request == RestartRequested() and decided.started is True
    assert isinstance(decided.decision.action, Restart)
    assert book.requests.due_request(1e12) is None  # started: not shown again
    assert book.requests.finished(Outcome(ActionKind.RESTART, True)) == RestartRequested()
    assert book.requests.request is None

    def refuse(s: Snapshot) -> Decision:
        return Decision(Wait(), Reason(Why.RESTART_REFUSED), s.now + 1, s.memory)

    book.requests.submit(RestartRequested())
    _, effects = drive(book, refuse)
    decided = next(e for e in effects if isinstance(e, Decided))
    assert decided.started is False and book.requests.request is None


def test_a_scheduled_request_waits_for_its_time() -> None:
    book = LoopBook()
    book.requests.submit(RestartRequested(), due=2_000_000_000.0)
    _, effects = drive(book)
    assert next(e for e in effects if isinstance(e, Decided)).snapshot.request is None


def test_the_published_lock_deadline_moves_with_keepalives() -> None:
    settings = HaSettings(lease_ttl=7, ttl=30)
    book = LoopBook(memory=Memory(lock_deadline=105.0))
    assert book.published_lock_deadline(settings, holds_lock=False) is None
    assert book.published_lock_deadline(settings, holds_lock=True) == 105.0
    book.keepalive_done(True, 103.0)
    assert book.published_lock_deadline(settings, holds_lock=True) == settings.lock_deadline(103.0)
    book.keepalive_done(False, 104.0)  # a failed keepalive proves nothing
    assert book.published_lock_deadline(settings, holds_lock=True) == settings.lock_deadline(103.0)


def test_the_keepalive_runs_only_while_cycles_complete() -> None:
    book = LoopBook()
    assert not book.keepalive_allowed(100.0, 10, stopping=False)  # before the first cycle
    book.last_cycle_end = 100.0
    assert book.keepalive_allowed(100.0 + keepalive_stall_limit(10), 10, stopping=False)
    assert not book.keepalive_allowed(100.1 + keepalive_stall_limit(10), 10, stopping=False)
    assert not book.keepalive_allowed(100.0, 10, stopping=True)


def test_the_nap_after_a_cycle() -> None:
    decision = Decision(Wait(), Reason(Why.NO_ACTION), 110.0, Memory())
    book = LoopBook()
    assert book.nap(decision, started=99.0, now=100.0) == pytest.approx(10.0)
    soon = Decision(Wait(), Reason(Why.NO_ACTION), 100.0, Memory())
    assert book.nap(soon, started=100.0, now=100.0) == pytest.approx(MIN_NAP)
    book.outcomes.append(Outcome(ActionKind.START, False))
    assert book.nap(soon, started=100.0, now=100.0) == pytest.approx(MIN_NAP_AFTER_FAILURE)


def test_a_leaders_read_is_bounded_by_its_lock_deadline() -> None:
    settings = HaSettings(lease_ttl=7, ttl=30)
    assert LoopBook().read_budget(settings, 100.0) is None  # no lock: the client's own timeout
    book = LoopBook(memory=Memory(lock_deadline=104.0))
    assert book.read_budget(settings, 100.0) == pytest.approx(3.5)
    assert book.read_budget(settings, 103.8) == 0.0  # too close: no read
