"""The accumulated results: records, the per-mode table, and schedules that replay across sessions."""

from __future__ import annotations

from typing import Any

from pgwarden.chaos.faults import KINDS, FaultRecord, FaultSpec, make_schedule
from pgwarden.chaos.runner import RunResult, summary_table

SESSION_1_KINDS = [k for k in KINDS if k != "disk-full"]
"""The kinds before disk-full existed: the first session's seeds replay with `--kinds` set to these."""


def record(mode: str, seed: int, **changes: Any) -> dict[str, Any]:
    result = RunResult(seed, mode, [], recovery=4.0, acknowledged=100)
    spec = FaultSpec("disk-full", 8.0, 2.0, 7)
    result.records = [FaultRecord(spec, ["h1"], 0.0, 8.0)]
    result.unavailable = [("disk-full", 3.5)]
    return {**result.record(watchdog=False, hosts=3), **changes}


def test_a_record_carries_the_verdict_the_numbers_and_each_faults_unavailability() -> None:
    line = record("on", 5)
    assert line["seed"] == 5 and line["mode"] == "on" and line["violations"] == []
    assert line["faults"] == [
        {"kind": "disk-full", "duration": 8.0, "targets": ["h1"], "detail": "", "unavailable": 3.5}]
    assert line["reclones"] == [] and line["recovery"] == 4.0 and line["footprint"] == {}


def test_the_table_shows_the_largest_pg_wal_and_the_least_free_space_after_a_schedule() -> None:
    records = [record("on", 1, footprint={"h1": {"wal_mb": 80.0, "aside_mb": 0, "free_mb": 700.0},
                                          "h2": {"wal_mb": 410.5, "aside_mb": 0, "free_mb": 300.0}}),
               record("on", 2)]
    assert "pg_wal at most 410 MiB, free space at least 300 MiB" in summary_table(records)


def test_the_table_has_one_block_per_mode_and_counts_what_went_wrong() -> None:
    records = [record("on", 1), record("on", 2, violations=["not converged 120s after ..."], recovery=None),
               record("async", 1, watchdog=True, lost=3, loss_window=1.5, reclones=["h2"]),
               record("quorum", 1, reclones=None)]
    table = summary_table(records)
    assert "mode on: 2 schedules, 2 faults injected, 1 schedules with violations (1 not converged)" in table
    assert "mode async+watchdog: 1 schedules" in table and "1 re-clones" in table
    assert "3 acknowledged commits lost of 100 (longest loss window 1.5s)" in table
    assert "0 re-clones (not counted in 1 older schedules)" in table
    assert summary_table([]) == "(no schedules recorded)"


def test_adding_a_fault_kind_leaves_the_first_sessions_seeds_replayable() -> None:
    # seed 104 of session 1 (docs/chaos.md): a finding's schedule, drawn before disk-full existed
    specs = make_schedule(104, 4, SESSION_1_KINDS, (5, 20))
    assert [(s.kind, s.duration) for s in specs] == [
        ("partition-primary", 18.1), ("stop-agent", 10.0), ("replicas-pg", 6.6), ("loss", 14.7)]


def test_a_full_disk_hits_the_primary_or_a_replica_as_the_seed_says() -> None:
    params = {s.param for seed in range(30) for s in make_schedule(seed, 4, ["disk-full"])}
    assert params == {0, 1}
    assert make_schedule(3, 4, ["disk-full"]) == make_schedule(3, 4, ["disk-full"])


def test_an_excused_schedule_is_listed_apart_from_the_violations() -> None:
    records = [record("on", 1, violations=["could not read the rows back: ..."], excused="the checker, not pgwarden")]
    table = summary_table(records)
    assert "0 schedules with violations (0 not converged), 1 excused" in table
