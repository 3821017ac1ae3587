"""A rewind on a full disk (issue 19, the chaos suite's `disk-full`): pg_rewind is not started while the
target's file system lacks room for it (a rewind that runs out of space midway can only be re-cloned); the
step waits for room with a backoff, then reports `REWIND_NO_SPACE`, which the core answers with another
rewind (`tests/core/cases/rewind.txt`). Here: the estimate, the step on a scripted interpreter, and how the
agent reads the free space and names a pg_rewind that failed for want of it. No process is started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgwarden.agent.execute import _rewind_space
from pgwarden.core.actions import Rewind
from pgwarden.core.snapshot import ActionKind, HaSettings
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import (
    REWIND_SPACE_MAX_PAUSE,
    rewind_space_needed,
    rewind_space_shortfall,
)
from pgwarden.model import ClusterStatus, ClusterView, Member
from pgwarden.postgres.controller import PgController, free_room, rewind_failure
from pgwarden.postgres.settings import Credentials, PgSettings
from pgwarden.postgres.walfiles import DEFAULT_SEGMENT_SIZE

from .script import Script, context

MIB = 1024 * 1024
SEGMENT = 16 * MIB
NEED = rewind_space_needed(SEGMENT)
N2 = Member("n2", conn_url="postgres://127.0.0.2:5432/postgres")
CLUSTER = ClusterView(scope="s", members=(N2,), status=ClusterStatus(optime=90, timeline=2))


# -- the estimate -------------------------------------------------------------------------------------


def test_the_floor_is_a_few_segments_and_a_margin() -> None:
    assert NEED == 64 * MIB
    assert rewind_space_needed(64 * MIB) == 3 * 64 * MIB + 16 * MIB  # scales with --wal-segsize


@pytest.mark.parametrize(("space", "short"), [
    (None, None),  # unknown: never held back for it
    (fx.DiskSpace(NEED, segment_size=SEGMENT), None),
    (fx.DiskSpace(10 * 1024 * MIB, wal_free=10 * 1024 * MIB), None),
    (fx.DiskSpace(0), "the data directory's file system has 0.0 MiB free, less than the 64.0 MiB a rewind needs"),
    (fx.DiskSpace(NEED - 1), "the data directory's file system has 64.0 MiB free, less than the 64.0 MiB a "
                             "rewind needs"),
    (fx.DiskSpace(10 * 1024 * MIB, wal_free=MIB), "pg_wal's file system has 1.0 MiB free, less than the 64.0 "
                                                  "MiB a rewind needs"),
    (fx.DiskSpace(0, wal_free=0), "the data directory's file system has 0.0 MiB free and pg_wal's file system "
                                  "has 0.0 MiB free, less than the 64.0 MiB a rewind needs"),
    (fx.DiskSpace(100 * MIB, segment_size=64 * MIB), "the data directory's file system has 100.0 MiB free, less "
                                                     "than the 208.0 MiB a rewind needs"),
])
def test_shortfall(space: fx.DiskSpace | None, short: str | None) -> None:
    assert rewind_space_shortfall(space) == short


# -- the step ------------------------------------------------------------------------------------------


def _spaces(*frees: int) -> Script:
    """A script whose RewindSpace answers are `frees` in turn (the last one repeated)."""
    answers = list(frees)

    def answer(_: fx.RewindSpace) -> fx.DiskSpace:
        return fx.DiskSpace(answers.pop(0) if len(answers) > 1 else answers[0])

    return Script(answers={fx.RewindSpace: answer})


def test_enough_room_rewinds_at_once() -> None:
    script = _spaces(NEED)
    outcome = script.run(Rewind("n2"), context(CLUSTER))
    assert script.kinds() == ["RewindSpace", "RewindPg"]
    assert outcome.ok and outcome.action is ActionKind.REWIND


def test_a_full_disk_never_starts_pg_rewind() -> None:
    script = _spaces(0)
    outcome = script.run(Rewind("n2"), context(CLUSTER, settings=HaSettings(loop_wait=10)))
    assert not script.of(fx.RewindPg)
    assert [p.seconds for p in script.of(fx.Pause)] == [1.0, 2.0, 4.0, 3.0]  # backoff, within loop_wait
    assert len(script.of(fx.RewindSpace)) == 5
    assert not outcome.ok and outcome.action is ActionKind.REWIND_NO_SPACE
    assert outcome.detail == ("pg_rewind not started: the data directory's file system has 0.0 MiB free, less "
                              "than the 64.0 MiB a rewind needs")
    warnings = [e.text for e in script.of(fx.Log) if e.level == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("not starting pg_rewind: ")  # one line per attempt


def test_the_wait_grows_to_its_cap_and_is_never_shorter_than_it() -> None:
    long = _spaces(0)
    long.run(Rewind("n2"), context(CLUSTER, settings=HaSettings(loop_wait=30)))
    assert [p.seconds for p in long.of(fx.Pause)] == [1.0, 2.0, 4.0, 8.0, 8.0, 7.0]
    short = _spaces(0)
    short.run(Rewind("n2"), context(CLUSTER, settings=HaSettings(loop_wait=1)))
    assert sum(p.seconds for p in short.of(fx.Pause)) == REWIND_SPACE_MAX_PAUSE  # no busy loop of decisions


def test_room_that_comes_back_while_waiting_starts_the_rewind() -> None:
    script = _spaces(0, 0, NEED)
    outcome = script.run(Rewind("n2"), context(CLUSTER))
    assert script.kinds() == ["RewindSpace", "Pause", "RewindSpace", "Pause", "RewindSpace", "RewindPg"]
    assert outcome.ok and outcome.action is ActionKind.REWIND


def test_running_out_of_space_midway_is_a_failed_rewind() -> None:
    failed = fx.Result(False, rewind_failure("could not write file: No space left on device"))
    script = Script(answers={fx.RewindPg: failed})
    outcome = script.run(Rewind("n2"), context(CLUSTER))
    assert not outcome.ok and outcome.action is ActionKind.REWIND  # the core marks it failed, as configured
    assert "the target's file system is full" in outcome.detail


# -- the agent's side ----------------------------------------------------------------------------------


def test_rewind_failure_names_a_full_disk() -> None:
    output = 'pg_rewind: error: could not write lock file "postmaster.pid": No space left on device'
    assert rewind_failure(output) == ("pg_rewind failed: the target's file system is full (No space left on "
                                      f"device): {output}")
    assert rewind_failure("could not find common ancestor") == "pg_rewind failed: could not find common ancestor"


def test_free_room_of_a_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "pg_wal").mkdir(parents=True)
    room = free_room(data)
    assert room is not None and room.data_free > 0 and room.wal_free is None
    assert room.segment_size == DEFAULT_SEGMENT_SIZE
    with (data / "pg_wal" / "000000010000000000000003").open("wb") as segment:
        segment.truncate(MIB)  # initdb --wal-segsize=1
    (data / "pg_wal" / "000000010000000000000004.partial").write_bytes(b"x")
    room = free_room(data)
    assert room is not None and room.segment_size == MIB


def test_free_room_of_a_missing_directory(tmp_path: Path) -> None:
    assert free_room(tmp_path / "nothing") is None


def test_the_agent_answers_rewind_space_from_the_data_directory(tmp_path: Path) -> None:
    def controller(data_dir: Path) -> PgController:
        return PgController(PgSettings(data_dir=data_dir, name="n1", scope="s", superuser=Credentials("postgres", None),
                                       replication=Credentials("replicator", None)))

    space = _rewind_space(controller(tmp_path))
    assert space is not None and space.data_free > 0 and space.wal_free is None
    assert space.segment_size == DEFAULT_SEGMENT_SIZE
    assert _rewind_space(controller(tmp_path / "nothing")) is None  # unknown: the rewind is not held back


def test_pg_wal_elsewhere_is_measured_apart(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev or not os.access(other, os.W_OK):
        pytest.skip("no writable second file system")
    data = tmp_path / "data"
    data.mkdir()
    wal = other / f"pgwarden-test-wal-{os.getpid()}"
    wal.mkdir()
    try:
        (data / "pg_wal").symlink_to(wal)
        room = free_room(data)
        statvfs = os.statvfs(other)
        assert room is not None and room.wal_free is not None
        assert abs(room.wal_free - statvfs.f_bavail * statvfs.f_frsize) < 64 * MIB
    finally:
        wal.rmdir()
