"""The loop's fencing rules, shared by the agent and the simulator: when a member accepts a failsafe
ping, when a keepalive may feed the watchdog, and the watchdog's timeout arithmetic."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgwarden.core.actions import AcquireLeader, Decision, Promote, Wait
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.snapshot import (
    FailsafePingSeen,
    HaSettings,
    Memory,
    TaskInFlight,
    TaskKind,
    WatchdogMode,
    WatchdogSettings,
    keepalive_period,
)
from pgwarden.engine.loop import FAILSAFE_ROUND_RESERVE, READ_STOP_BUDGET, LoopBook

FAILSAFE = HaSettings(lease_ttl=7, failsafe_mode=True)


def _accept(book: LoopBook, *, leader: str = "n1", enabled: bool = True, primary: bool = False,
            task: TaskInFlight | None = None) -> bool:
    return book.accept_failsafe_ping(leader, "n2", 100.0, enabled=enabled, primary=primary, task=task)


def test_a_replica_accepts_and_remembers_the_ping() -> None:
    book = LoopBook()
    assert _accept(book)
    assert book.failsafe_ping == FailsafePingSeen("n1", 100.0)
    assert book.failsafe_active(FAILSAFE, 106.9) and not book.failsafe_active(FAILSAFE, 107.0)


@pytest.mark.parametrize(("why", "book", "kwargs"), [
    ("failsafe mode off here", LoopBook(), {"enabled": False}),
    ("a running primary", LoopBook(), {"primary": True}),
    ("its own ping", LoopBook(), {"leader": "n2"}),
    ("it holds the lock", LoopBook(memory=Memory(lock_deadline=200.0)), {}),
    ("a promotion in flight", LoopBook(), {"task": TaskInFlight(TaskKind.PROMOTE, 90.0)}),
])  # fmt: skip
def test_a_member_that_is_or_may_become_a_primary_refuses(why: str, book: LoopBook, kwargs: dict[str, object]) -> None:
    assert not _accept(book, **kwargs), why  # type: ignore[arg-type]
    assert book.failsafe_ping is None


@pytest.mark.parametrize("action", [AcquireLeader(), Promote(history_entry=None)])
def test_no_ping_is_accepted_while_a_race_or_promotion_is_carried_out(action: object) -> None:
    book = LoopBook()
    book.adopt(Decision(action, Reason(Why.RACE_HEALTHIEST), 0.0, Memory()))  # type: ignore[arg-type]
    assert not _accept(book)
    book.adopt(Decision(Wait(), Reason(Why.FOLLOWING), 0.0, Memory()))
    assert _accept(book)


def test_the_leader_reports_failsafe_active_from_its_memory() -> None:
    book = LoopBook(memory=Memory(lock_deadline=200.0, failsafe_active=True))
    assert book.failsafe_active(FAILSAFE, 100.0)
    assert not book.failsafe_active(replace(FAILSAFE, failsafe_mode=False), 100.0)


@pytest.mark.parametrize(("lease", "margin", "timeout"), [
    (7, 5, 6),     # Patroni's default margin would give 2 s: the orderly demotion (5.5 s) must come first
    (7, 1, 6),
    (7, -1, 6),    # -1: half the lease
    (30, 5, 25),   # Patroni's own numbers (lease_ttl = ttl = 30)
    (30, -1, 24),
    (4, 5, 3),     # the shortest lease
    (60, 0, 59),   # never the whole lease
])  # fmt: skip
def test_the_watchdog_timeout(lease: int, margin: int, timeout: int) -> None:
    settings = HaSettings(lease_ttl=lease, watchdog=WatchdogSettings(WatchdogMode.REQUIRED, margin))
    assert settings.watchdog_timeout == timeout
    assert settings.watchdog_timeout >= settings.lock_deadline(0.0)  # the lease's own deadline comes first
    assert settings.watchdog_timeout < lease


def test_a_late_renewal_does_not_feed_the_watchdog() -> None:
    settings = HaSettings(lease_ttl=7, watchdog=WatchdogSettings(WatchdogMode.REQUIRED))
    assert settings.may_feed_watchdog(100.0, 101.0)  # reset by 107 at the latest: the lease holds until 107
    assert not settings.may_feed_watchdog(100.0, 101.1)
    book = LoopBook(memory=Memory(lock_deadline=105.5))
    assert book.may_feed_watchdog(settings, 100.0, 100.2)
    assert not LoopBook().may_feed_watchdog(settings, 100.0, 100.2)  # not the leader: nothing to feed
    assert not book.may_feed_watchdog(HaSettings(lease_ttl=7), 100.0, 100.2)  # watchdog off


def test_failsafe_mode_leaves_a_leader_time_for_a_round_of_pings() -> None:
    book = LoopBook(memory=Memory(lock_deadline=105.5))
    plain = book.read_budget(HaSettings(lease_ttl=7), 100.0)
    assert plain == pytest.approx(5.5 - READ_STOP_BUDGET)
    assert book.read_budget(FAILSAFE, 100.0) == pytest.approx(5.5 - READ_STOP_BUDGET - FAILSAFE_ROUND_RESERVE)
    assert book.wake_after_keepalive(FAILSAFE, ok=False)
    assert not book.wake_after_keepalive(FAILSAFE, ok=True)
    assert not book.wake_after_keepalive(HaSettings(lease_ttl=7), ok=False)


def test_a_leader_with_a_watchdog_keeps_it_fed_whatever_the_keepalive_interval() -> None:
    assert keepalive_period(10.0, 7, leading=True, watchdog_timeout=6) == 2.0  # three feeds per timeout
    assert keepalive_period(None, 7, leading=True, watchdog_timeout=6) == 1.0  # the default is more often already
    assert keepalive_period(10.0, 7, leading=False, watchdog_timeout=6) == pytest.approx(7 / 3)


def test_a_keepalive_counts_on_a_leader_only_on_the_lease_of_its_key() -> None:
    leader = LoopBook(memory=Memory(lock_deadline=105.5))
    assert not leader.keepalive_done(True, 100.0, leads_on_lease=False).ok
    assert leader.keepalive_sent_at is None
    assert leader.keepalive_done(True, 100.0, leads_on_lease=True).ok and leader.keepalive_sent_at == 100.0
    assert LoopBook().keepalive_done(True, 100.0, leads_on_lease=False).ok  # a member's lease: nothing to prove
