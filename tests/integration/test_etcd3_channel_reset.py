"""Concurrent calls while etcd is frozen each fail as a DcsError; cancelling the caller still cancels.

Found by benchmarks/soak.py with the former gRPC client: while etcd was frozen (SIGSTOP), one call timed
out and closed the shared channel, gRPC cancelled the other call in flight on it, and its
asyncio.CancelledError killed the agent's HA loop, leaving PostgreSQL running as an orphaned primary.
Kept for the HTTP client: a failure of one request must never surface as a cancellation of another.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pgwarden.dcs.base import DcsError
from pgwarden.dcs.etcd3 import Etcd3Dcs
from tests.support.etcd import EtcdServer

pytestmark = pytest.mark.integration


async def test_a_call_cancelled_by_a_channel_reset_raises_dcs_error(etcd: EtcdServer) -> None:
    dcs = Etcd3Dcs(hosts=[etcd.host], namespace="/service", scope="reset", name="n1", ttl=10, timeout=1.0)
    await dcs.keepalive()
    os.kill(etcd.process.pid, signal.SIGSTOP)
    try:
        first = asyncio.create_task(dcs.get_cluster())  # times out first, and closes the channel
        await asyncio.sleep(0.3)
        second = asyncio.create_task(dcs.keepalive())  # in flight on that channel when it closes
        results = await asyncio.gather(first, second, return_exceptions=True)
    finally:
        os.kill(etcd.process.pid, signal.SIGCONT)
    assert all(isinstance(r, DcsError) for r in results), results
    assert (await dcs.get_cluster()) is not None  # and the next call reconnects
    await dcs.close()


async def test_cancelling_the_caller_still_cancels(etcd: EtcdServer) -> None:
    dcs = Etcd3Dcs(hosts=[etcd.host], namespace="/service", scope="reset", name="n1", ttl=10, timeout=5.0)
    await dcs.keepalive()
    os.kill(etcd.process.pid, signal.SIGSTOP)
    try:
        task = asyncio.create_task(dcs.get_cluster())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        os.kill(etcd.process.pid, signal.SIGCONT)
    await dcs.close()
