"""The executor and the loop against the lease: a graceful demote's CHECKPOINT is bounded by the lock
deadline, an operator's restart starts a primary only after proving the key is still ours, and a
leader in maintenance mode reads the DCS again once its deadline has passed."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pgwarden.agent import execute
from pgwarden.agent.execute import STOP_REQUEST_RESERVE, ExecContext
from pgwarden.agent.loop import READ_STOP_BUDGET, read_budget
from pgwarden.core.types import Demote, DemoteMode, Restart
from pgwarden.dcs import DcsError
from pgwarden.model import DataDirState, LocalPg
from pgwarden.postgres.process import PgResult
from pgwarden.sim import agent as sim_agent


class FakePg:
    """The PgController calls of _demote and _restart, recording when each was made."""

    def __init__(self, checkpoint_seconds: float = 0.0) -> None:
        self.checkpoint_seconds = checkpoint_seconds
        self.calls: list[tuple[str, Any, float]] = []
        self.settings = SimpleNamespace()

    async def checkpoint(self, timeout: float = 300.0) -> PgResult:
        self.calls.append(("checkpoint", timeout, time.monotonic()))
        await asyncio.sleep(self.checkpoint_seconds)
        return PgResult(True, "checkpoint done")

    async def stop(self, mode: str = "fast", timeout: float | None = None, kill_after: float | None = None
                   ) -> PgResult:
        self.calls.append(("stop", mode, time.monotonic()))
        return PgResult(True, f"stopped ({mode})")

    async def start(self, wait: bool = True, timeout: float | None = None) -> PgResult:
        self.calls.append(("start", None, time.monotonic()))
        return PgResult(True, "started")

    async def write_config(self, role: str, upstream: object = None) -> PgResult:
        self.calls.append(("write_config", role, time.monotonic()))
        return PgResult(True, "")

    def called(self) -> list[str]:
        return [name for name, _, _ in self.calls]


class FakeDcs:
    def __init__(self, leader: bool | Exception = True) -> None:
        self.leader = leader
        self.updates = 0
        self.released = 0

    async def update_leader(self, status: object = None) -> bool:
        self.updates += 1
        if isinstance(self.leader, Exception):
            raise self.leader
        return self.leader

    async def delete_leader(self, status: object = None) -> bool:
        self.released += 1
        return True


@pytest.fixture
def fake_pg(monkeypatch: pytest.MonkeyPatch) -> FakePg:
    pg = FakePg()
    monkeypatch.setattr(execute, "_controller", lambda ctx, role: pg)

    async def probe(settings: object) -> LocalPg:
        return LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=False, wal_lsn=100)

    monkeypatch.setattr(execute, "probe", probe)
    return pg


def _ctx(dcs: FakeDcs) -> ExecContext:
    config = SimpleNamespace(local=SimpleNamespace(postgresql=SimpleNamespace(before_stop=None)),
                             primary_stop_timeout=0, synchronous_mode="off")
    return cast(ExecContext, SimpleNamespace(dcs=dcs, config=config, cluster=None))


# -- slow-graceful-demote ------------------------------------------------------------------------------


async def test_a_slow_checkpoint_before_a_switchover_stop_is_cut_short_by_the_lease(fake_pg: FakePg) -> None:
    fake_pg.checkpoint_seconds = 30.0
    dcs = FakeDcs()
    finish_by = time.monotonic() + 1.5
    outcome = await execute._demote(Demote(DemoteMode.GRACEFUL, finish_by=finish_by), _ctx(dcs))
    assert fake_pg.called() == ["checkpoint", "stop"]
    _, timeout, _ = fake_pg.calls[0]
    assert 0 < timeout <= 1.5 - STOP_REQUEST_RESERVE
    _, mode, stopped_at = fake_pg.calls[1]
    assert mode == "fast"
    assert stopped_at <= finish_by - STOP_REQUEST_RESERVE + 0.2  # the stop request comes before the deadline
    assert outcome.ok and "checkpoint abandoned" in outcome.detail
    assert dcs.released == 1


async def test_no_checkpoint_when_the_lease_is_almost_gone(fake_pg: FakePg) -> None:
    outcome = await execute._demote(Demote(DemoteMode.GRACEFUL, finish_by=time.monotonic() + 0.3),
                                    _ctx(FakeDcs()))
    assert fake_pg.called() == ["stop"]
    assert outcome.ok and "checkpoint skipped" in outcome.detail


async def test_a_quick_checkpoint_runs_before_the_stop(fake_pg: FakePg) -> None:
    outcome = await execute._demote(Demote(DemoteMode.GRACEFUL, finish_by=time.monotonic() + 5.0),
                                    _ctx(FakeDcs()))
    assert fake_pg.called() == ["checkpoint", "stop"]
    assert outcome.ok and outcome.detail == "stopped (fast)"


async def test_immediate_demotes_never_checkpoint(fake_pg: FakePg) -> None:
    await execute._demote(Demote(DemoteMode.IMMEDIATE_NOLOCK), _ctx(FakeDcs()))
    assert fake_pg.called() == ["stop"]
    assert fake_pg.calls[0][1] == "immediate"


# -- restart-without-lease -----------------------------------------------------------------------------


async def test_a_restart_starts_a_primary_only_with_the_key_still_ours(fake_pg: FakePg) -> None:
    dcs = FakeDcs(leader=True)
    outcome = await execute._restart(Restart(role="primary", follow=None), _ctx(dcs))
    assert outcome.ok
    assert fake_pg.called() == ["write_config", "stop", "start"]
    assert dcs.updates == 1


@pytest.mark.parametrize("leader", [False, DcsError("etcd unreachable")])
async def test_a_restart_that_lost_the_key_leaves_postgres_stopped(fake_pg: FakePg, leader: bool | Exception) -> None:
    outcome = await execute._restart(Restart(role="primary", follow=None), _ctx(FakeDcs(leader=leader)))
    assert not outcome.ok and "not started as a primary" in outcome.detail
    assert fake_pg.called() == ["write_config", "stop"]


async def test_a_replica_restart_does_not_touch_the_key(fake_pg: FakePg) -> None:
    dcs = FakeDcs(leader=False)
    outcome = await execute._restart(Restart(role="replica", follow=None), _ctx(dcs))
    assert outcome.ok and dcs.updates == 0
    assert fake_pg.called() == ["write_config", "stop", "start"]


# -- stale-maintenance-mode ----------------------------------------------------------------------------


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
    assert sim_agent.read_budget(left, paused) == expected  # the simulator models the same rule
