"""The chaos checker and schedules on synthetic histories: no processes, no root."""

from __future__ import annotations

from pgwarden.chaos.checker import (
    double_writers,
    incidents,
    longest_gap,
    loss_window,
    lost_commits,
    unavailability,
)
from pgwarden.chaos.faults import KINDS, covering_schedule, make_schedule
from pgwarden.chaos.workload import Attempt


def ack(id: int, host: str, session: str, start: float, writer: str = "multi") -> Attempt:
    return Attempt(writer, id, start, start + 0.01, True, host, session)


def test_a_session_that_stays_up_on_a_host_proves_it_writable_and_another_hosts_ack_inside_is_a_double_writer() -> None:
    history = [ack(1, "a", "s1", 0.0), ack(2, "a", "s1", 1.0), ack(3, "b", "s2", 0.5, writer="b")]
    found = double_writers(history)
    assert [(d.first.host, d.second_host) for d in found] == [("a", "b")]


def test_two_overlapping_spans_of_two_hosts_are_a_double_writer() -> None:
    history = [ack(1, "a", "s1", 0.0), ack(2, "a", "s1", 2.0), ack(3, "b", "s2", 1.0), ack(4, "b", "s2", 3.0)]
    assert {frozenset((d.first.host, d.second_host)) for d in double_writers(history)} == {frozenset("ab")}


def test_a_failover_between_sessions_is_no_double_writer() -> None:
    # a's session ends (an error closes it), then b takes writes: sequential, not overlapping.
    history = [ack(1, "a", "s1", 0.0), ack(2, "a", "s1", 1.0),
               Attempt("multi", 3, 1.1, 3.0, False, "a", "s1", "terminated"),
               ack(4, "b", "s2", 3.1), ack(5, "b", "s2", 4.0)]
    assert double_writers(history) == []


def test_an_ack_whose_interval_only_overlaps_a_span_proves_nothing() -> None:
    history = [ack(1, "a", "s1", 0.0), ack(2, "a", "s1", 1.0),
               Attempt("b", 3, 0.5, 1.5, True, "b", "s2")]  # b may have committed after a's last ack began
    assert double_writers(history) == []


def test_lost_commits_and_their_window() -> None:
    history = [ack(1, "a", "s", 0.0), ack(2, "a", "s", 1.0), ack(3, "a", "s", 2.0),
               Attempt("multi", 4, 3.0, None, None, "a", "s")]  # in flight: never counted
    lost = lost_commits(history, {1})
    assert [a.id for a in lost] == [2, 3]
    assert loss_window(lost) == (1.0, 2.01)
    assert loss_window([]) is None


def test_unavailability_is_the_longest_gap_without_an_application_ack_in_the_window() -> None:
    history = [ack(1, "a", "s", 0.0), ack(2, "a", "s", 1.0), ack(3, "b", "t", 5.0), ack(4, "b", "t", 9.5, writer="b")]
    assert unavailability(history, [("loss", 0.5, 6.0)]) == [("loss", 5.01 - 1.01)]
    assert longest_gap([], 1.0, 3.0) == 2.0


def test_a_seed_always_gives_the_same_schedule() -> None:
    assert make_schedule(7, 5) == make_schedule(7, 5)
    assert make_schedule(7, 5) != make_schedule(8, 5)
    assert {s.kind for s in make_schedule(3, 200)} == set(KINDS)
    covering = covering_schedule(5, ["loss", "minority", "stop-agent"], (5, 8), (1, 2))
    assert sorted(s.kind for s in covering) == ["loss", "minority", "stop-agent"]
    assert covering == covering_schedule(5, ["loss", "minority", "stop-agent"], (5, 8), (1, 2))


def test_findings_close_in_time_merge_into_one_incident_per_pair() -> None:
    history = [ack(i, "a", "s1", float(i)) for i in range(5)]
    history += [ack(10 + i, "b", "s2", 1.2 + i * 0.5) for i in range(4)]
    merged = incidents(double_writers(history))
    assert len(merged) == 1 and merged[0].hosts == ("a", "b") and merged[0].findings > 1
