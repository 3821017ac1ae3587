"""The agent's effects on pg_wal: timeline placeholders (never over a real history file, removed again)
and reading a timeline's history file. The rows `/history` gets are the steps' (tests/engine)."""

from __future__ import annotations

from pathlib import Path

from pgwarden.agent.execute import _reserve_timelines, _unreserve
from pgwarden.postgres.controller import PgController
from pgwarden.postgres.settings import Credentials, PgSettings

REASON = "no recovery target specified"


def test_timeline_placeholders_never_overwrite_and_are_removed_again(tmp_path: Path) -> None:
    real = tmp_path / "00000003.history"
    real.write_text("1\t0/3000060\tno recovery target specified\n")
    written = _reserve_timelines(tmp_path, (2, 3, 4))
    assert written == (2, 4)
    assert real.read_text().startswith("1\t")  # a real history file is left alone
    assert (tmp_path / "00000004.history").read_text().startswith("#")  # comment only: no parent timeline
    _unreserve(tmp_path, written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000003.history"]


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
