"""What keeps an idle agent cheap: the postmaster's death seen without polling, pg_controldata run only
when pg_control changed, PostgreSQL probed for the REST API only when a request finds the probe stale,
a leader's nap not cut short by a lease its keepalives have proven, and members' keepalives slower
than the leader's."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from pgwarden.api import state as api_state
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.core import Decision, Memory, extended_wake
from pgwarden.core.actions import Wait
from pgwarden.core.decide import SHORT_NAP
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.snapshot import KEEPALIVES_PER_LEASE, keepalive_period
from pgwarden.model import DataDirState, LocalPg, Tags
from pgwarden.postgres.datadir import ControlData
from pgwarden.postgres.exitwatch import ExitWatch
from pgwarden.postgres.probe import ControlDataCache
from pgwarden.postgres.settings import PgSettings

# -- ExitWatch --------------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
async def test_exit_is_seen_at_once(sleeper: subprocess.Popen[bytes], pidfd: bool) -> None:
    watch = ExitWatch(poll_interval=0.02)
    watch._pidfd_works = pidfd and hasattr(os, "pidfd_open")
    assert await watch.wait(sleeper.pid, 0.05) is False  # alive: the timeout passes
    asyncio.get_running_loop().call_later(0.05, sleeper.kill)
    started = time.monotonic()
    assert await watch.wait(sleeper.pid, 10) is True  # a zombie (not reaped yet) counts as exited
    assert time.monotonic() - started < 2
    watch.close()


async def test_a_gone_process_and_no_process() -> None:
    watch = ExitWatch()
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert await watch.wait(proc.pid, 1) is True
    started = time.monotonic()
    assert await watch.wait(None, 0.05) is False  # nothing to watch: just the timeout
    assert time.monotonic() - started >= 0.04


# -- ControlDataCache -------------------------------------------------------------------------------


async def test_controldata_runs_again_only_when_pg_control_changed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    control = tmp_path / "global" / "pg_control"
    control.parent.mkdir()
    control.write_bytes(b"v1")
    old = time.time() - 10
    os.utime(control, (old, old))
    runs: list[int] = []

    async def fake_read(settings: PgSettings) -> ControlData:
        runs.append(1)
        return ControlData(sysid=str(len(runs)))

    probe_module = importlib.import_module("pgwarden.postgres.probe")  # the package exports a `probe` function
    monkeypatch.setattr(probe_module, "read_controldata", fake_read)
    cache = ControlDataCache()
    settings = _settings_stub(tmp_path)
    assert (await cache.read(settings)).sysid == "1"  # type: ignore[union-attr]
    assert (await cache.read(settings)).sysid == "1"  # type: ignore[union-attr]
    assert len(runs) == 1
    control.write_bytes(b"v2 longer")  # just written: read again, and again until it has settled
    assert (await cache.read(settings)).sysid == "2"  # type: ignore[union-attr]
    assert (await cache.read(settings)).sysid == "3"  # type: ignore[union-attr]
    os.utime(control, (old, old))
    assert (await cache.read(settings)).sysid == "4"  # type: ignore[union-attr]
    assert (await cache.read(settings)).sysid == "4"  # type: ignore[union-attr]


def _settings_stub(data_dir: Path) -> PgSettings:
    class Stub:
        pass

    stub = Stub()
    stub.data_dir = data_dir  # type: ignore[attr-defined]
    return stub  # type: ignore[return-value]


# -- StateHolder.fresh ------------------------------------------------------------------------------

BASE = NodeState(
    name="n1", scope="demo", version="0", api_url="", conn_url="",
    pg=LocalPg(DataDirState.VALID, running=True, accepting=True), cluster=None, dcs_last_seen=None,
    lock_deadline=None, tags=Tags(), paused=False, maximum_lag_on_failover=0, ttl=30, loop_wait=10,
    next_cycle_deadline=0.0, pg_observed_at=100.0,
)


async def test_a_stale_probe_is_refreshed_once_for_concurrent_requests() -> None:
    now = [100.5]
    holder = StateHolder(BASE, clock=lambda: now[0])
    calls: list[float] = []

    async def refresh() -> None:
        calls.append(now[0])
        await asyncio.sleep(0.01)
        holder.publish(dataclasses.replace(holder.get(), pg_observed_at=now[0]))

    holder.set_refresher(refresh)
    assert (await holder.fresh()).pg_observed_at == 100.0  # 0.5 s old: fresh enough, no probe
    now[0] = 102.0
    states = await asyncio.gather(*(holder.fresh() for _ in range(8)))
    assert calls == [102.0]
    assert {s.pg_observed_at for s in states} == {102.0}


async def test_a_hanging_refresh_is_not_waited_for_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_state, "REFRESH_BOUND", 0.05)
    holder = StateHolder(BASE, clock=lambda: 200.0)
    holder.set_refresher(lambda: asyncio.sleep(5))
    started = time.monotonic()
    assert await holder.fresh() is BASE
    assert time.monotonic() - started < 1


async def test_without_a_refresher_the_published_state_is_the_answer() -> None:
    holder = StateHolder(BASE, clock=lambda: 10_000.0)
    assert await holder.fresh() is BASE


# -- the leader's nap and the keepalive periods -----------------------------------------------------


def _decision(wake_at: float, regular: float | None) -> Decision:
    return Decision(Wait(), Reason(Why.NO_ACTION), wake_at, Memory(), regular_wake_at=regular)


def test_a_proven_lease_lets_the_nap_go_on_to_the_regular_wake() -> None:
    decision = _decision(wake_at=104.5, regular=110.0)  # brought forward to renew before a deadline of 105.5
    assert extended_wake(decision, 105.5, now=104.5) is None  # no keepalive since: run the cycle
    assert extended_wake(decision, 108.5, now=104.5) == 108.5 - SHORT_NAP  # proven further: nap on
    assert extended_wake(decision, 120.0, now=107.5) == 110.0  # never past the regular wake


def test_a_decision_not_bounded_by_the_lease_is_never_extended() -> None:
    assert extended_wake(_decision(wake_at=110.0, regular=None), 200.0, now=110.0) is None
    assert extended_wake(_decision(wake_at=104.5, regular=110.0), None, now=104.5) is None


def test_members_keep_their_lease_alive_less_often_than_the_leader() -> None:
    assert keepalive_period(None, 7, leading=True) == 7 / KEEPALIVES_PER_LEASE == 1.0
    assert keepalive_period(None, 7, leading=False) == pytest.approx(7 / 3)
    assert keepalive_period(None, 30, leading=True) == pytest.approx(30 / 7)  # the tolerant profile
    assert keepalive_period(0.5, 7, leading=True) == 0.5  # an explicit interval rules the leader
    assert keepalive_period(5.0, 7, leading=False) == 5.0
