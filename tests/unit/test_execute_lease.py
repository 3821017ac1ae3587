"""The agent's effects against the lease: a CHECKPOINT the steps bound by the lock deadline is really
given up at that bound (the steps' order and deadlines are tested in tests/engine), and a leader in
maintenance mode reads the DCS again once its deadline has passed."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

from pgwarden.agent.execute import _checkpoint
from pgwarden.engine.loop import READ_STOP_BUDGET, read_budget
from pgwarden.postgres.controller import PgController, rewind_failure, rewind_unreachable
from pgwarden.postgres.process import PgResult


class SlowCheckpoint:
    async def checkpoint(self, timeout: float = 300.0) -> PgResult:
        await asyncio.sleep(30)
        return PgResult(True, "checkpoint done")


async def test_a_slow_checkpoint_is_given_up_at_its_bound() -> None:
    started = time.monotonic()
    result = await _checkpoint(cast(PgController, SlowCheckpoint()), 0.3)
    assert not result.ok and result.message == "checkpoint timed out after 0.3s"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("left", "paused", "expected"), [
    (10.0, False, 10.0 - READ_STOP_BUDGET),  # a bounded read, leaving time to stop
    (10.0, True, 10.0 - READ_STOP_BUDGET),
    (0.3, False, 0.0),  # too close to the deadline: no read
    (0.3, True, 0.0),
    (-0.1, False, 0.0),  # past it, unpaused: no read, the core stops a primary at once
    (-60.0, True, None),  # past it in maintenance mode: a normal read (was: never again)
    (0.0, True, None),
])
def test_read_budget(left: float, paused: bool, expected: float | None) -> None:
    assert read_budget(left, paused) == expected


PROGRESS = ("pg_rewind: connected to server\npg_rewind: servers diverged at WAL location 0/3637180 on timeline 1\n"
            "pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n"
            "pg_rewind: reading source file list\n")
"""pg_rewind --progress's first lines (PostgreSQL 15)."""


@pytest.mark.parametrize(("output", "unreachable"), [
    ('pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: Connection refused', True),
    ("pg_rewind: fatal: could not connect to server: Connection timed out", True),
    ('pg_rewind: error: connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file', True),
    ("pg_rewind: fatal: could not find common ancestor of the source and target cluster's timelines", False),
    # The source went away after the connection opened, before the rewind began (chaos `on` seed 2002):
    # the target is untouched.
    ('LOG:  checkpoint complete: wrote 21 buffers (1.0%)\npg_rewind: error: could not fetch remote file '
     '"global/pg_control": server closed the connection unexpectedly', True),
    # With --progress (as pgwarden runs it): lost while reading the source's file list, before the point of
    # no return (chaos async seed 825), then while copying, after it: the target is half rewound.
    (PROGRESS + "pg_rewind: error: could not fetch file list: server closed the connection unexpectedly", True),
    (PROGRESS + "pg_rewind: reading target file list\npg_rewind: reading WAL in target\npg_rewind: need to copy "
     "55 MB (total source directory size is 73 MB)\n    0/56625 kB (0%) copied\npg_rewind: error: could not "
     'fetch remote file "base/5/1259": server closed the connection unexpectedly', False),
    # Without the progress lines, a failure after pg_rewind said where it rewinds from counts as one after it.
    ("pg_rewind: servers diverged at WAL location 0/5000000 on timeline 2\npg_rewind: rewinding from last "
     "common checkpoint at 0/4000060 on timeline 2\npg_rewind: error: could not fetch file list: server closed "
     "the connection unexpectedly", False),
    ("pg_rewind: error: could not write file: No space left on device", False),
])
def test_a_rewind_that_could_not_reach_its_source_is_told_apart(output: str, unreachable: bool) -> None:
    assert rewind_unreachable(rewind_failure(output)) is unreachable


def test_a_failed_rewinds_message_leaves_out_the_progress_counters() -> None:
    output = PROGRESS + "    0/56625 kB (0%) copied\r28331/56625 kB (50%) copied\rpg_rewind: error: disk trouble"
    assert rewind_failure(output, lines=2) == ("pg_rewind failed: pg_rewind: reading source file list\n"
                                               "pg_rewind: error: disk trouble")
