"""What the executor publishes: the promote task's `/history` row (PostgreSQL's own switch point, not
the decision's LSN) and the `status` optime (never erased by an action that has none)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

from pgwarden.agent.execute import (
    ExecContext,
    _history_with,
    _reserve_timelines,
    _status,
    _switch_point,
    _unreserve,
)
from pgwarden.model import ClusterStatus, ClusterView, HistoryEntry, history_for_lineage
from pgwarden.postgres.controller import PgController
from pgwarden.postgres.settings import Credentials, PgSettings

REASON = "no recovery target specified"


class FakePg:
    """PgController.timeline_history only: the rows of the history file of the asked timeline."""

    def __init__(self, rows: list[tuple[int, int, str]]) -> None:
        self.rows = rows
        self.asked: list[int] = []

    async def timeline_history(self, timeline: int, timeout: float = 5.0) -> list[tuple[int, int, str]]:
        self.asked.append(timeline)
        return self.rows


async def test_the_switch_point_comes_from_the_new_timelines_history_file() -> None:
    # Decided at 0x5000000; replay went on to the old primary's shutdown checkpoint and switched at 0x5000028.
    pg = FakePg([(1, 0x3000060, REASON), (2, 0x5000028, "after the switchover")])
    entry = await _switch_point(cast(PgController, pg), (2, 0x5000000, REASON), 3)
    assert entry == (2, 0x5000028, "after the switchover")
    assert pg.asked == [3]


async def test_the_row_is_for_the_timeline_before_the_new_one_even_if_the_decision_lagged() -> None:
    pg = FakePg([(1, 0x3000060, REASON), (2, 0x5000028, "")])
    entry = await _switch_point(cast(PgController, pg), (1, 0x2000000, REASON), 3)
    assert entry == (2, 0x5000028, REASON)


async def test_the_parent_is_the_files_last_row_even_across_reserved_numbers() -> None:
    # Timeline 2 was reserved (used by another member): PostgreSQL went from 1 straight to 3.
    pg = FakePg([(1, 0x3000060, REASON)])
    assert await _switch_point(cast(PgController, pg), (2, 0x5000000, REASON), 3) == (1, 0x3000060, REASON)


async def test_an_unreadable_history_file_keeps_the_decisions_entry() -> None:
    decided = (2, 0x5000000, REASON)
    assert await _switch_point(cast(PgController, FakePg([])), decided, 3) == decided
    unknown = FakePg([(2, 0x5000028, REASON)])
    assert await _switch_point(cast(PgController, unknown), decided, None) == decided
    assert unknown.asked == []


def _ctx(status: ClusterStatus) -> ExecContext:
    return cast(ExecContext, SimpleNamespace(cluster=ClusterView(scope="s", status=status)))


def test_a_status_without_an_optime_keeps_the_published_one() -> None:
    """A renewal during a task or a release after a crash has no optime: writing `status` without one
    would erase the value the next race checks maximum_lag_on_failover against."""
    ctx = _ctx(ClusterStatus(optime=0x5000000, retain_slots=("n2",)))
    assert _status(ctx, None, ("n2", "n3")) == ClusterStatus(optime=0x5000000, retain_slots=("n2", "n3"))
    assert _status(ctx, 0x6000000) == ClusterStatus(optime=0x6000000)
    assert _status(cast(ExecContext, SimpleNamespace(cluster=None)), None) == ClusterStatus()


def test_timeline_placeholders_never_overwrite_and_are_removed_again(tmp_path: Path) -> None:
    real = tmp_path / "00000003.history"
    real.write_text("1\t0/3000060\tno recovery target specified\n")
    written = _reserve_timelines(tmp_path, range(2, 5))
    assert sorted(p.name for p in written) == ["00000002.history", "00000004.history"]
    assert real.read_text().startswith("1\t")  # a real history file is left alone
    assert (tmp_path / "00000004.history").read_text().startswith("#")  # comment only: no parent timeline
    _unreserve(written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000003.history"]


def test_the_status_keeps_the_reserved_timeline() -> None:
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=9, timeline=5))
    ctx = cast(ExecContext, SimpleNamespace(cluster=cluster))
    assert _status(ctx, 10) == ClusterStatus(optime=10, timeline=5)


def test_an_exact_parent_row_drops_rows_of_other_branches() -> None:
    # Timeline 2 belonged to another branch (reserved); this promotion went from 1 to 3.
    history = (HistoryEntry(1, 0x100, REASON, None, "n1"), HistoryEntry(2, 0x300, REASON, None, "n3"))
    cluster = ClusterView(scope="s", history=history)
    config = SimpleNamespace(name="n2", max_timelines_history=0)
    ctx = cast(ExecContext, SimpleNamespace(cluster=cluster, config=config))
    rows = _history_with(ctx, (1, 0x200, REASON), 3, exact=True)
    assert [(h.timeline, h.lsn, h.new_leader) for h in rows] == [(1, 0x200, "n2")]
    kept = _history_with(ctx, (1, 0x200, REASON), 2)
    assert [(h.timeline, h.lsn) for h in kept] == [(1, 0x200), (2, 0x300)]


def test_history_follows_postgresqls_own_lineage() -> None:
    current = (HistoryEntry(1, 0x100, REASON, "t0", "n3"), HistoryEntry(2, 0x300, REASON, "t1", "n4"))
    # This primary forked from timeline 1 at 0x200 and skipped 2 (another branch): 1 is replaced, 2 goes.
    rows = history_for_lineage(current, [(1, 0x200, REASON)], "n2", "now")
    assert rows is not None and [(h.timeline, h.lsn, h.new_leader) for h in rows] == [(1, 0x200, "n2")]
    # Matching rows keep their timestamp and leader; nothing to write when all match.
    same = history_for_lineage(current, [(1, 0x100, ""), (2, 0x300, "")], "n2", "now")
    assert same is None
    grown = history_for_lineage(current[:1], [(1, 0x100, ""), (2, 0x300, "")], "n2", "now")
    assert grown is not None and grown[0] == current[0] and (grown[1].new_leader, grown[1].timestamp) == ("n2", "now")


async def test_the_controller_reads_the_history_file_of_a_promotion(tmp_path: Path) -> None:
    """Issue 11: every promotion on PostgreSQL 15 logged 'history file unreadable' (the SQL it used,
    pg_read_file(text, boolean), only exists from PostgreSQL 16). The file is read from pg_wal."""
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "00000003.history").write_text(
        "1\t0/3000060\tno recovery target specified\n\n2\t0/5000028\tno recovery target specified\n")
    (tmp_path / "pg_wal" / "00000004.history").write_text(
        "# pgwarden: timeline 4 was used by another member of this cluster\n")
    pg = PgController(PgSettings(data_dir=tmp_path, name="n1", scope="s", superuser=Credentials("postgres", None),
                                 replication=Credentials("replicator", None)))
    assert await pg.timeline_history(3) == [(1, 0x3000060, REASON), (2, 0x5000028, REASON)]
    assert await pg.timeline_history(4) == []  # a placeholder has no rows
    assert await pg.timeline_history(5) == []  # no file
