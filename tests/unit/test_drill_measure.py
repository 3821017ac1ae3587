"""The drill's measurement logic: outage windows, failed transactions and lost writes from a write log."""

from __future__ import annotations

import pytest

from pgwarden.drill.measure import (
    Attempt,
    Window,
    acknowledged_ids,
    measure,
    missing_ids,
    outage_windows,
    spread,
)

FAULT = 100.0


def log(*rows: tuple[float, float, bool]) -> list[Attempt]:
    """Attempts from (start, end, ok) rows; ids in order."""
    return [Attempt(i + 1, start, end, ok) for i, (start, end, ok) in enumerate(rows)]


def steady(start: float, end: float, step: float = 0.01, ok: bool = True) -> list[tuple[float, float, bool]]:
    count = round((end - start) / step)
    return [(start + k * step, start + k * step + 0.001, ok) for k in range(count)]


def test_no_failure_means_no_outage() -> None:
    m = measure(log(*steady(99.0, 102.0)), FAULT)
    assert m.writes_impossible == 0.0
    assert m.windows == ()
    assert m.failed_transactions == 0
    assert m.recovered
    assert m.first_ack_after_fault is None


def test_outage_runs_from_first_failure_to_first_acknowledgement_after_it() -> None:
    rows = steady(99.0, 100.5) + steady(100.5, 102.5, ok=False) + steady(102.5, 103.0)
    m = measure(log(*rows), FAULT)
    assert m.writes_impossible == pytest.approx(2.001, abs=1e-6)  # 100.5 -> end of the write at 102.5
    assert m.windows[0].start == pytest.approx(0.5)
    assert m.first_ack_after_fault == pytest.approx(2.501)
    assert m.failed_transactions == 200
    assert m.recovered


def test_a_blocked_write_counts_as_an_outage_without_failing() -> None:
    # The write started at 100.2 hangs for 1.5 s during a switchover, then commits.
    rows = [*steady(99.5, 100.2), (100.2, 101.7, True), *steady(101.71, 102.0)]
    m = measure(log(*rows), FAULT, blocked_after=0.5)
    assert m.writes_impossible == pytest.approx(1.5)
    assert m.failed_transactions == 0
    assert m.recovered


def test_a_slow_write_under_the_threshold_is_not_an_outage() -> None:
    m = measure(log((100.1, 100.4, True), (100.41, 100.42, True)), FAULT, blocked_after=0.5)
    assert m.windows == ()


def test_a_write_in_flight_at_the_fault_starts_the_window_before_it() -> None:
    rows = [(99.995, 100.3, False), *steady(100.3, 101.0, ok=False), (101.0, 101.002, True)]
    m = measure(log(*rows), FAULT)
    assert m.windows[0].start == pytest.approx(-0.005)
    assert m.writes_impossible == pytest.approx(1.007)


def test_failures_before_the_fault_are_ignored() -> None:
    rows = [(98.0, 98.1, False), (98.2, 98.21, True), *steady(99.0, 101.0)]
    m = measure(log(*rows), FAULT)
    assert m.windows == ()
    assert m.failed_transactions == 0
    assert m.acknowledged == 201


def test_two_outages_report_the_first_and_sum_both() -> None:
    rows = (steady(100.0, 101.0, ok=False) + steady(101.0, 105.0)
            + steady(105.0, 105.5, ok=False) + steady(105.5, 106.0))
    m = measure(log(*rows), FAULT)
    assert len(m.windows) == 2
    assert m.writes_impossible == pytest.approx(1.001)
    assert m.total_outage == pytest.approx(1.001 + 0.501)
    assert m.failed_transactions == 150


def test_a_log_that_ends_in_an_outage_is_not_recovered() -> None:
    rows = steady(99.0, 100.0) + steady(100.0, 130.0, ok=False)
    m = measure(log(*rows), FAULT)
    assert not m.recovered
    assert m.windows[-1].end == pytest.approx(29.991)


def test_outage_windows_on_absolute_times() -> None:
    windows, recovered = outage_windows(log((1.0, 1.1, False), (1.2, 1.3, True)), since=0.0, blocked_after=0.5)
    assert windows == [Window(1.0, 1.3)]
    assert recovered


def test_missing_writes_are_acknowledged_ids_the_primary_lacks() -> None:
    attempts = log((1, 2, True), (2, 3, False), (3, 4, True), (4, 5, True))
    acked = acknowledged_ids(attempts)
    assert acked == [1, 3, 4]
    # id 2 failed: present or not, it is not a lost write; 4 was acknowledged and is gone.
    assert missing_ids(acked, present=[1, 2, 3]) == [4]
    assert missing_ids(acked, present=[1, 3, 4]) == []


def test_spread_gives_median_min_max_of_the_values_present() -> None:
    s = spread([3.0, None, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3)
    assert spread([None]).n == 0
