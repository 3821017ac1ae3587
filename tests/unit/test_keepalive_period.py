"""The lease keepalive follows a new lease at once (issue 20 item 5).

After `{"ttl": 600, "pgwarden": {"lease_ttl": 600}}` and back to `{"ttl": 20}`, the keepalive kept
sleeping the old period (a third of 600 s) while the member key sat on a new 7 s lease: the key expired
and came back every few seconds. Here the agent's keepalive task runs against a counting DCS and its
configuration changes the way `_refresh_config` takes a validated one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from pgwarden.agent.loop import Agent
from pgwarden.config import parse_dynamic
from pgwarden.config.checker import ConfigChecker
from pgwarden.config.layering import layer
from tests.unit.test_configsync import LOCAL


class CountingDcs:
    def __init__(self) -> None:
        self.keepalives: list[float] = []
        self.ttl: int | None = None

    async def keepalive(self) -> bool:
        self.keepalives.append(time.monotonic())
        return True

    async def set_ttl(self, ttl: int) -> None:
        self.ttl = ttl

    def leads_on_lease(self) -> bool:
        return False


def _agent(dynamic: dict[str, Any]) -> tuple[Agent, CountingDcs]:
    agent = Agent(LOCAL, checker=cast(ConfigChecker, object()), bootstrap_dcs=parse_dynamic(dynamic))
    dcs = CountingDcs()
    agent._dcs = cast(Any, dcs)
    return agent, dcs


async def test_a_shorter_lease_wakes_the_sleeping_keepalive() -> None:
    agent, dcs = _agent({"ttl": 600, "loop_wait": 10, "pgwarden": {"lease_ttl": 600}})
    assert agent.config.ha.lease_ttl == 600
    agent.state.book.last_cycle_end = time.monotonic() + 3600  # the HA loop counts as alive throughout
    task = asyncio.create_task(agent._keepalive())
    try:
        await asyncio.sleep(1.5)
        assert dcs.keepalives == []  # sleeping a third of the 600 s lease
        short = {"ttl": 20, "loop_wait": 10, "retry_timeout": 5, "pgwarden": {"lease_ttl": 4}}
        fresh = layer(LOCAL, *parse_dynamic(short))
        agent.config_sync.take = lambda: fresh  # type: ignore[method-assign]
        agent._apply_pg_config = _nothing  # type: ignore[method-assign]
        changed = time.monotonic()
        await agent._refresh_config(cast(Any, dcs), None)
        assert dcs.ttl == 4 and agent.config.ha.lease_ttl == 4
        await asyncio.sleep(1.6)  # a member refreshes a 4 s lease every 4/3 s
        assert dcs.keepalives, "the keepalive still sleeps the period of the old lease"
        assert dcs.keepalives[0] - changed < 0.2  # 1.5 s after the last one: overdue by the new period
        assert len(dcs.keepalives) == 2
    finally:
        agent.state.finished = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_longer_lease_does_not_delay_a_due_keepalive_more_than_its_period() -> None:
    agent, dcs = _agent({"ttl": 20, "loop_wait": 10, "retry_timeout": 5, "pgwarden": {"lease_ttl": 4}})
    agent.state.book.last_cycle_end = time.monotonic() + 3600
    task = asyncio.create_task(agent._keepalive())
    try:
        await asyncio.sleep(1.5)
        assert len(dcs.keepalives) == 1  # every 4/3 s
    finally:
        agent.state.finished = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _nothing() -> None:
    return None
