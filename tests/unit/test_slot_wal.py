"""The WAL a replica's copy of a logical slot fetches from the leader (`pgwarden.postgres.slotwal`): which
segments and under which timeline's names (pure), the bounds, the staging and the installation (a tmp
directory), the chunked transfer (a fake connection)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pgwarden.model import lsn_from_text
from pgwarden.postgres import slotwal, walfiles

MB16 = 16 * 1024 * 1024
GIB = 1024 ** 3


def names(*pairs: tuple[int, int]) -> list[str]:
    """Segment file names of (timeline, segment number) pairs, 16 MB segments."""
    return [walfiles.segment_file(tli, n, MB16) for tli, n in pairs]


# -- names and timelines ------------------------------------------------------------------------------------


def test_segment_names_and_numbers() -> None:
    assert walfiles.segment_file(1, 3, MB16) == "000000010000000000000003"
    assert walfiles.segment_file(2, 0x1FF, MB16) == "0000000200000001000000FF"  # 256 segments per xlogid
    assert walfiles.segment_file(1, 0x41, 64 * 1024 * 1024) == "000000010000000100000001"  # 64 per xlogid
    for size in (1024 * 1024, MB16, GIB):
        assert walfiles.segment_number(walfiles.segment_file(7, 1234, size), size) == 1234


def test_valid_segment_sizes() -> None:
    assert all(walfiles.valid_segment_size(1 << bits) for bits in range(20, 31))
    assert not any(walfiles.valid_segment_size(size) for size in (0, 512 * 1024, 2 * GIB, 3 * MB16, -MB16))


def test_the_timeline_of_a_position_is_the_first_whose_switch_point_is_after_it() -> None:
    history = [(1, lsn_from_text("0/5800000")), (2, lsn_from_text("0/9000000"))]
    assert slotwal.timeline_at(lsn_from_text("0/57FFFFF"), history, 3) == 1
    assert slotwal.timeline_at(lsn_from_text("0/5800000"), history, 3) == 2  # the switch point is the child's
    assert slotwal.timeline_at(lsn_from_text("0/9000000"), history, 3) == 3
    assert slotwal.timeline_at(0, [], 4) == 4  # no history: every position is the current timeline's


# -- which segments -----------------------------------------------------------------------------------------


def test_the_missing_numbers_run_from_the_restart_segment_to_the_oldest_one_here() -> None:
    here = names((1, 8), (1, 9), (1, 10), (1, 11), (1, 12))
    replay = lsn_from_text("0/C000100")
    assert slotwal.missing_numbers(lsn_from_text("0/3000028"), here, replay, MB16) == range(3, 8)
    assert not slotwal.missing_numbers(lsn_from_text("0/8000028"), here, replay, MB16)  # has it all
    assert not slotwal.missing_numbers(lsn_from_text("0/A000000"), here, replay, MB16)
    assert not slotwal.missing_numbers(lsn_from_text("0/3000028"), [], replay, MB16)  # nothing to compare


def test_the_oldest_segment_is_that_of_the_unbroken_run_ending_at_the_replay_position() -> None:
    # A stale segment far behind a gap does not count as "has it": decoding would stop at the gap.
    here = names((1, 2), (1, 8), (1, 9), (1, 10), (1, 11), (1, 12), (1, 13))  # 13: recycled ahead
    replay = lsn_from_text("0/B000010")
    assert slotwal.missing_numbers(lsn_from_text("0/1000000"), here, replay, MB16) == range(1, 8)
    # The replay position's segment unknown (or not here): the run ending at the newest file.
    assert slotwal.missing_numbers(lsn_from_text("0/1000000"), here, None, MB16) == range(1, 8)
    # A replay position exactly at a segment's start is still in the previous segment.
    at_start = lsn_from_text("0/9000000")
    assert slotwal.missing_numbers(lsn_from_text("0/6000000"), here, at_start, MB16) == range(6, 8)


def test_segments_are_named_by_the_timeline_of_their_last_byte() -> None:
    # Promoted to timeline 2 in the middle of segment 5: PostgreSQL copied segment 5 to timeline 2 (the old
    # one became .partial) and decoding on a standby reads it there; segments 3 and 4 stay timeline 1's.
    history = [(1, lsn_from_text("0/5800000"))]
    expected = names((1, 3), (1, 4), (2, 5), (2, 6), (2, 7))
    assert slotwal.missing_files(range(3, 8), MB16, history, 2, []) == tuple(expected)
    # A switch exactly at a segment boundary: the segment before it is entirely the parent's.
    at_boundary = [(1, lsn_from_text("0/6000000"))]
    assert slotwal.missing_files(range(5, 7), MB16, at_boundary, 2, []) == tuple(names((1, 5), (2, 6)))
    # Two promotions, and a file already present is never fetched (never overwritten).
    twice = [(1, lsn_from_text("0/4000000")), (2, lsn_from_text("0/6800000"))]
    present = names((2, 4))
    assert slotwal.missing_files(range(3, 8), MB16, twice, 3, present) == tuple(names((1, 3), (2, 5), (3, 6), (3, 7)))


def test_the_fetch_is_bounded_by_a_cap_and_by_half_the_free_space() -> None:
    assert slotwal.fetch_refusal(100 * MB16, 10 * GIB) == ""
    assert "cap" in slotwal.fetch_refusal(3 * GIB, 100 * GIB)
    assert "cap" in slotwal.fetch_refusal(2 * GIB + MB16, 100 * GIB)
    refused = slotwal.fetch_refusal(4 * MB16, 7 * MB16)
    assert "half the free space" in refused and "112 MiB free" in refused
    assert slotwal.fetch_refusal(4 * MB16, 8 * MB16) == ""
    assert slotwal.fetch_refusal(MB16, 0) != ""


# -- staging and installation -------------------------------------------------------------------------------


def _pg_wal(tmp_path: Path) -> Path:
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    return pg_wal


def _stage(pg_wal: Path, name: str, data: bytes) -> None:
    fd = slotwal.open_staged(pg_wal, name)
    slotwal.write_all(fd, data)
    slotwal.seal(pg_wal, name, fd)


def test_staged_segments_are_linked_into_pg_wal_never_over_an_existing_file(tmp_path: Path) -> None:
    pg_wal = _pg_wal(tmp_path)
    old, other = names((1, 3), (1, 4))
    (pg_wal / other).write_bytes(b"the replica's own")
    _stage(pg_wal, old, b"a" * 64)
    _stage(pg_wal, other, b"b" * 64)
    assert not (pg_wal / old).exists()  # staged, not in pg_wal yet: a restartpoint cannot recycle it
    assert (pg_wal / slotwal.STAGING / old).stat().st_mode & 0o777 == 0o600
    installed, kept = slotwal.install(pg_wal, [old, other])
    assert (installed, kept) == ([old], [other])
    assert (pg_wal / old).read_bytes() == b"a" * 64
    assert (pg_wal / other).read_bytes() == b"the replica's own"
    assert (pg_wal / "archive_status" / f"{old}.done").exists()  # the leader archives its own WAL
    assert not (pg_wal / "archive_status" / f"{other}.done").exists()
    assert not (pg_wal / slotwal.STAGING).exists()


@pytest.mark.parametrize("hostile", ["../../global/pg_control", "00000001000000000000000",
                                     "0000000100000000000000zz", "000000010000000000000003.partial",
                                     "00000002.history", ""])
def test_a_name_that_is_no_segment_is_refused(tmp_path: Path, hostile: str) -> None:
    pg_wal = _pg_wal(tmp_path)
    with pytest.raises(ValueError):
        slotwal.open_staged(pg_wal, hostile)
    with pytest.raises(OSError):
        slotwal.install(pg_wal, [hostile])
    assert sorted(os.listdir(pg_wal)) == ["archive_status"]


def test_clearing_the_staging_removes_an_interrupted_copy(tmp_path: Path) -> None:
    pg_wal = _pg_wal(tmp_path)
    fd = slotwal.open_staged(pg_wal, names((1, 3))[0])
    os.close(fd)
    slotwal.clear_staging(pg_wal)
    slotwal.clear_staging(pg_wal)  # nothing there: no error
    assert sorted(os.listdir(pg_wal)) == ["archive_status"]


# -- the transfer (a fake leader) ---------------------------------------------------------------------------


class _Leader:
    """A connection whose pg_read_binary_file serves `files`, recording each (name, offset, length)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.reads: list[tuple[str, int, int]] = []
        self._row: tuple[Any] | None = None

    def cursor(self, binary: bool = False) -> _Leader:
        assert binary
        return self

    async def __aenter__(self) -> _Leader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, query: str, params: tuple[str, int, int]) -> None:
        assert "pg_read_binary_file" in query and query.rstrip().endswith("true)")  # missing_ok
        path, offset, length = params
        name = path.removeprefix("pg_wal/")
        self.reads.append((name, offset, length))
        data = self.files.get(name)
        self._row = (None if data is None else data[offset:offset + length],)

    async def fetchone(self) -> tuple[Any] | None:
        return self._row


async def test_segments_are_read_in_bounded_chunks_and_staged(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slotwal, "CHUNK", 256 * 1024)
    size = 1024 * 1024
    first, second = (walfiles.segment_file(1, n, size) for n in (3, 4))
    leader = _Leader({first: os.urandom(size), second: os.urandom(size)})
    pg_wal = _pg_wal(tmp_path)
    assert await slotwal.fetch(leader, pg_wal, [first, second], size, 5.0) == ""  # type: ignore[arg-type]
    assert len(leader.reads) == 8 and {length for _, _, length in leader.reads} == {256 * 1024}
    assert [offset for name, offset, _ in leader.reads if name == first] == [0, 262144, 524288, 786432]
    for name in (first, second):
        assert (pg_wal / slotwal.STAGING / name).read_bytes() == leader.files[name]


async def test_a_segment_the_leader_lost_or_cut_short_is_not_staged(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slotwal, "CHUNK", 512 * 1024)
    size = 1024 * 1024
    name = walfiles.segment_file(1, 3, size)
    pg_wal = _pg_wal(tmp_path)
    gone = await slotwal.fetch(_Leader({}), pg_wal, [name], size, 5.0)  # type: ignore[arg-type]
    assert gone == f"the leader no longer has WAL file {name}"
    cut = _Leader({name: b"x" * (size - 1)})
    short = await slotwal.fetch(cut, pg_wal, [name], size, 5.0)  # type: ignore[arg-type]
    assert "shorter than a segment" in short
    assert not (pg_wal / slotwal.STAGING / name).exists()


async def test_a_fetch_out_of_time_keeps_what_it_staged_for_the_next_attempt(tmp_path: Path) -> None:
    size = 1024 * 1024
    first, second = (walfiles.segment_file(1, n, size) for n in (3, 4))
    leader = _Leader({first: os.urandom(size), second: os.urandom(size)})
    pg_wal = _pg_wal(tmp_path)
    assert await slotwal.fetch(leader, pg_wal, [first], size, 5.0) == ""  # type: ignore[arg-type]
    # No time left: nothing more is read, and the next attempt keeps the sealed segment it still needs.
    out = await slotwal.fetch(leader, pg_wal, [second], size, 5.0, budget=0.0)  # type: ignore[arg-type]
    assert out == slotwal.OUT_OF_TIME and {name for name, _, _ in leader.reads} == {first}
    os.close(slotwal.open_staged(pg_wal, second))  # a half-written segment of an interrupted attempt
    (pg_wal / slotwal.STAGING / "000000010000000000000001").write_bytes(b"")  # one no longer needed
    assert slotwal.keep_staged(pg_wal, [first, second]) == {first}
    assert sorted(os.listdir(pg_wal / slotwal.STAGING)) == [first]
    assert slotwal.keep_staged(tmp_path / "nowhere", [first]) == set()
