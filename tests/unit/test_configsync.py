"""The agent's configuration follows /config and reloads without validating inside an HA cycle: a
validation runs in the background, newer inputs replace one in flight, a failed one is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
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
    """parse_dynamic in-process, once `release` is set (it is at first); fails while `failing`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.failing = False
        self.calls: list[Any] = []

    async def parse_dynamic(self, raw: Mapping[str, Any] | None) -> tuple[DynamicConfig, list[str]]:
        self.calls.append(raw)
        await self.release.wait()
        if self.failing:
            raise CheckerError("configuration check: no answer")
        return parse_dynamic(raw)


def _sync(checker: FakeChecker, woken: list[int]) -> ConfigSync:
    return ConfigSync(cast(ConfigChecker, checker), (LOCAL, None), on_ready=lambda: woken.append(1))


async def until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Let the event loop run until `condition()` holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        await asyncio.sleep(0.001)


async def test_new_inputs_are_validated_in_the_background_and_taken_once() -> None:
    checker, woken = FakeChecker(), list[int]()
    checker.release.clear()
    sync = _sync(checker, woken)
    sync.want((LOCAL, None))  # what it runs with already: nothing to do
    assert checker.calls == []
    sync.want((LOCAL, {"loop_wait": 3}))
    await until(lambda: checker.calls, "the validation to start")
    assert sync.take() is None  # not ready yet: the cycle goes on with what it has
    checker.release.set()
    await until(lambda: woken, "the validated configuration to wake the loop")
    fresh = sync.take()
    assert fresh is not None and fresh.ha.loop_wait == 3 and woken == [1]
    assert sync.take() is None
    sync.want((LOCAL, {"loop_wait": 3}))  # the current inputs now
    assert len(checker.calls) == 1


async def test_newer_inputs_replace_a_validation_in_flight() -> None:
    checker, woken = FakeChecker(), list[int]()
    checker.release.clear()
    sync = _sync(checker, woken)
    sync.want((LOCAL, {"loop_wait": 3}))
    await until(lambda: len(checker.calls) == 1, "the first validation to start")
    sync.want((LOCAL, {"loop_wait": 4}))
    await until(lambda: len(checker.calls) == 2, "the second validation to start")
    checker.release.set()
    await until(lambda: woken, "the validated configuration to wake the loop")
    fresh = sync.take()
    assert fresh is not None and fresh.ha.loop_wait == 4
    await sync.close()
    assert woken == [1] and sync.take() is None  # the replaced validation never completed


async def test_a_failed_validation_keeps_the_configuration_and_is_retried() -> None:
    checker, woken = FakeChecker(), list[int]()
    checker.failing = True
    sync = _sync(checker, woken)
    sync.want((LOCAL, {"loop_wait": 3}))
    await until(lambda: not sync.validating, "the validation to fail")
    assert len(checker.calls) == 1 and sync.take() is None and woken == []
    checker.failing = False
    sync.want((LOCAL, {"loop_wait": 3}))  # the next cycle still sees these inputs
    await until(lambda: woken, "the retried validation to wake the loop")
    fresh = sync.take()
    assert fresh is not None and fresh.ha.loop_wait == 3 and len(checker.calls) == 2
    await sync.close()


async def test_a_refused_config_is_never_adopted_and_said_once(caplog: Any) -> None:
    """/config with a key pgwarden refuses (a standby cluster) keeps the configuration the agent runs
    with: a standby leader must not be run as a writable primary."""
    checker, woken = FakeChecker(), list[int]()
    sync = _sync(checker, woken)
    refused = (LOCAL, {"loop_wait": 3, "standby_cluster": {"host": "10.0.0.1", "create_replica_methods": ["wal e"]}})
    with caplog.at_level("ERROR", logger="pgwarden"):
        sync.want(refused)
        sync.want(refused)
    assert not sync.validating and checker.calls == []  # refused at once: no validation even started
    assert sync.take() is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "standby_cluster: a section pgwarden cannot use" in errors[0]
    sync.want((LOCAL, {"loop_wait": 3}))  # the operator removes it: adopted
    await until(lambda: woken, "the accepted configuration to wake the loop")
    fresh = sync.take()
    assert fresh is not None and fresh.ha.loop_wait == 3
