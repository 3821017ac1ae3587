"""The agent's configuration follows /config and reloads without validating inside an HA cycle: a
validation runs in the background, newer inputs replace one in flight, a failed one is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from pgwarden.agent.configsync import ConfigSync
from pgwarden.config import DynamicConfig, LocalConfig, parse_dynamic
from pgwarden.config.checker import CheckerError, ConfigChecker
from pgwarden.config.validation import validate_model

LOCAL = validate_model(LocalConfig, {
    "scope": "s", "name": "n1",
    "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
    "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/tmp/d",
                   "authentication": {"superuser": {"username": "p"}, "replication": {"username": "r"}}},
    "bootstrap": {"dcs": {"loop_wait": 5}},
})  # fmt: skip


class FakeChecker:
    """parse_dynamic in-process, after `delay` seconds; fails while `failing`."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.failing = False
        self.calls: list[Any] = []

    async def parse_dynamic(self, raw: Mapping[str, Any] | None) -> tuple[DynamicConfig, list[str]]:
        self.calls.append(raw)
        await asyncio.sleep(self.delay)
        if self.failing:
            raise CheckerError("configuration check: no answer")
        return parse_dynamic(raw)


def _sync(checker: FakeChecker, woken: list[int]) -> ConfigSync:
    return ConfigSync(cast(ConfigChecker, checker), (LOCAL, None), on_ready=lambda: woken.append(1))


async def test_new_inputs_are_validated_in_the_background_and_taken_once() -> None:
    checker, woken = FakeChecker(delay=0.01), []
    sync = _sync(checker, woken)
    sync.want((LOCAL, None))  # what it runs with already: nothing to do
    assert checker.calls == []
    sync.want((LOCAL, {"loop_wait": 3}))
    assert sync.take() is None  # not ready yet: the cycle goes on with what it has
    await asyncio.sleep(0.05)
    fresh = sync.take()
    assert fresh is not None and fresh.loop_wait == 3 and woken == [1]
    assert sync.take() is None
    sync.want((LOCAL, {"loop_wait": 3}))  # the current inputs now
    assert len(checker.calls) == 1


async def test_newer_inputs_replace_a_validation_in_flight() -> None:
    checker, woken = FakeChecker(delay=0.05), []
    sync = _sync(checker, woken)
    sync.want((LOCAL, {"loop_wait": 3}))
    await asyncio.sleep(0.01)
    sync.want((LOCAL, {"loop_wait": 4}))
    await asyncio.sleep(0.1)
    fresh = sync.take()
    assert fresh is not None and fresh.loop_wait == 4 and woken == [1]


async def test_a_failed_validation_keeps_the_configuration_and_is_retried() -> None:
    checker, woken = FakeChecker(), []
    checker.failing = True
    sync = _sync(checker, woken)
    sync.want((LOCAL, {"loop_wait": 3}))
    await asyncio.sleep(0.01)
    assert sync.take() is None and woken == []
    checker.failing = False
    sync.want((LOCAL, {"loop_wait": 3}))  # the next cycle still sees these inputs
    await asyncio.sleep(0.01)
    fresh = sync.take()
    assert fresh is not None and fresh.loop_wait == 3
    await sync.close()


async def test_a_refused_config_is_never_adopted_and_said_once(caplog: Any) -> None:
    """/config with a key pgwarden refuses (a standby cluster) keeps the configuration the agent runs
    with: a standby leader must not be run as a writable primary."""
    checker, woken = FakeChecker(), []
    sync = _sync(checker, woken)
    refused = (LOCAL, {"loop_wait": 3, "standby_cluster": {"host": "10.0.0.1", "port": 5432}})
    with caplog.at_level("ERROR", logger="pgwarden"):
        sync.want(refused)
        sync.want(refused)
        await asyncio.sleep(0.02)
    assert sync.take() is None and checker.calls == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "standby_cluster: standby clusters are not supported yet" in errors[0]
    sync.want((LOCAL, {"loop_wait": 3}))  # the operator removes it: adopted
    await asyncio.sleep(0.02)
    fresh = sync.take()
    assert fresh is not None and fresh.loop_wait == 3
