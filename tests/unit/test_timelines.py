"""pgwarden.postgres.timelines: a running standby that cannot follow the newest timeline in its pg_wal
(issue 20 item 9), from the files a real standby has in that situation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pgwarden.model import DataDirState, LocalPg, WalReceiver, lsn_from_text
from pgwarden.postgres.timelines import with_forked_timeline

SEGMENT = 16 * 1024 * 1024
# What PostgreSQL 15 wrote in the integration test: timeline 2 forked off timeline 1 at 0/40231E0, while
# this standby had replayed timeline 1 up to 0/4034C68.
FORK = "1\t0/40231E0\tno recovery target specified\n"
REPLAYED = lsn_from_text("0/4034C68")


def standby(**changes: object) -> LocalPg:
    pg = LocalPg(data_dir=DataDirState.VALID, controldata_timeline=1, running=True, accepting=True,
                 in_recovery=True, timeline=2, replay_lsn=REPLAYED, receive_lsn=REPLAYED)
    return replace(pg, **changes)  # type: ignore[arg-type]


def pg_wal(tmp_path: Path, *segments: str, **histories: str) -> Path:
    wal = tmp_path / "pg_wal"
    wal.mkdir()
    for name in segments:
        with open(wal / name, "wb") as f:
            f.truncate(SEGMENT)  # sparse: only the size matters
    for name, text in histories.items():
        (wal / f"{name}.history").write_text(text)
    return wal


def test_a_standby_past_the_fork_point_cannot_follow_the_new_timeline(tmp_path: Path) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000003", "000000010000000000000004", **{"00000002": FORK})
    pg = with_forked_timeline(standby(), wal)
    assert pg.forked_timeline == 2
    assert pg.timeline == 1  # what it replays, not the refused timeline whose history it fetched


def test_a_waiting_wal_receiver_of_the_old_timeline_changes_nothing(tmp_path: Path) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000004", **{"00000002": FORK})
    receiver = WalReceiver(status="waiting", received_tli=1)
    assert with_forked_timeline(standby(wal_receiver=receiver), wal).forked_timeline == 2


def test_a_standby_that_switched_to_the_new_timeline_is_not_forked(tmp_path: Path) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000004", "000000020000000000000004", **{"00000002": FORK})
    pg = standby()
    assert with_forked_timeline(pg, wal) is pg


def test_a_standby_before_the_fork_point_will_switch_and_is_not_forked(tmp_path: Path) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000004", **{"00000002": FORK})
    pg = standby(replay_lsn=lsn_from_text("0/40231E0"))  # exactly at the switch point: PostgreSQL switches
    assert with_forked_timeline(pg, wal) is pg


def test_a_newest_timeline_that_does_not_descend_from_ours_is_forked(tmp_path: Path) -> None:
    # This standby runs timeline 3 (its own promotion, never rewound); the leader's timeline 4 descends
    # from timeline 2 (3 was skipped there).
    lineage = "1\t0/3000000\tno recovery target specified\n2\t0/3800000\tno recovery target specified\n"
    wal = pg_wal(tmp_path, "000000030000000000000004",
                 **{"00000002": "1\t0/3000000\tx\n", "00000003": "1\t0/3000000\tx\n2\t0/3500000\tx\n",
                    "00000004": lineage})
    pg = with_forked_timeline(standby(controldata_timeline=3, timeline=4), wal)
    assert (pg.forked_timeline, pg.timeline) == (4, 3)


def test_a_comment_only_placeholder_is_not_a_timeline_to_follow(tmp_path: Path) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000004", **{"00000002": "# reserved by pgwarden\n"})
    pg = standby()
    assert with_forked_timeline(pg, wal) is pg


def test_a_receiver_on_the_newest_timeline_means_it_follows_it(tmp_path: Path) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000004", **{"00000002": FORK})
    pg = standby(wal_receiver=WalReceiver(status="waiting", received_tli=2))
    assert with_forked_timeline(pg, wal) is pg


@pytest.mark.parametrize("change", [
    {"wal_receiver": WalReceiver(status="streaming", received_tli=1)},  # it streams: nothing to repair
    {"in_recovery": False},  # a primary
    {"accepting": False},  # not answering: nothing is known
    {"replay_lsn": None},
])
def test_only_a_running_standby_that_does_not_stream_is_examined(tmp_path: Path, change: dict[str, object]) -> None:
    wal = pg_wal(tmp_path, "000000010000000000000004", **{"00000002": FORK})
    pg = standby(**change)
    assert with_forked_timeline(pg, wal) is pg


def test_no_history_or_no_pg_wal_is_not_forked(tmp_path: Path) -> None:
    pg = standby()
    assert with_forked_timeline(pg, pg_wal(tmp_path, "000000010000000000000004")) is pg
    assert with_forked_timeline(pg, tmp_path / "missing") is pg
