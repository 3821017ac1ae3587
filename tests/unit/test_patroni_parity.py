"""Issue 12, "Patroni parity in the details": the pure pieces (the processes are in
tests/integration/test_patroni_parity.py)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import cast

import pytest

from pgwarden.agent.configsync import ConfigSync
from pgwarden.agent.dyncache import CACHE_NAME, read_cache, write_cache
from pgwarden.agent.uniqueness import answers_as
from pgwarden.cli.config_patch import config_problems as edit_config_problems
from pgwarden.cli.config_patch import timing_warnings
from pgwarden.config import adjust_timing
from pgwarden.config.checker import ConfigChecker
from pgwarden.config.validation import config_problems
from tests.unit.test_configsync import LOCAL, FakeChecker

# -- item 1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "twin"),
    [
        ({"state": "running", "patroni": {"name": "node1", "scope": "demo", "version": "1"}}, True),
        ({"patroni": {"name": "node1"}}, True),
        ({"patroni": {"name": "node2", "scope": "demo"}}, False),  # the port went to another member
        ({"patroni": {"name": "node1", "scope": "other"}}, False),  # the same name in another cluster
        ({"state": "running"}, False),
        ("not json", False),
    ],
)
def test_only_an_agent_answering_with_this_name_and_scope_is_a_twin(body: object, twin: bool) -> None:
    assert answers_as(body, "demo", "node1") is twin


# -- item 3 ------------------------------------------------------------------------------------------

RULE_BROKEN = {"ttl": 20, "loop_wait": 2, "retry_timeout": 10}


def test_a_triple_breaking_the_rule_is_accepted_and_adjusted_loop_wait_first() -> None:
    assert config_problems(RULE_BROKEN) == []  # PATCH/PUT /config
    assert edit_config_problems(RULE_BROKEN) == []  # edit-config
    assert timing_warnings(RULE_BROKEN) == [
        "loop_wait (2) + 2*retry_timeout (10) exceeds ttl (20); using loop_wait=1, retry_timeout=9"]
    assert adjust_timing(20, 2, 10)[:3] == (20, 1, 9)
    assert adjust_timing(30, 20, 10)[:3] == (30, 10, 10)  # loop_wait alone is enough


@pytest.mark.parametrize(("value", "key"), [({"ttl": 19}, "ttl"), ({"loop_wait": 0}, "loop_wait"),
                                            ({"retry_timeout": 2}, "retry_timeout")])
def test_values_under_the_minimums_stay_refused(value: dict[str, int], key: str) -> None:
    assert any(p.startswith(key) for p in config_problems(value))
    assert any(p.startswith(key) for p in edit_config_problems(value))


# -- item 6 ------------------------------------------------------------------------------------------


def test_a_cycle_can_wait_for_the_validation_of_a_changed_config() -> None:
    async def run() -> None:
        checker = FakeChecker()
        checker.release.clear()  # the validation is in flight until released
        sync = ConfigSync(cast(ConfigChecker, checker), (LOCAL, None), on_ready=lambda: None)
        sync.want((LOCAL, {"primary_start_timeout": 0}))
        assert sync.validating and sync.take() is None
        asyncio.get_running_loop().call_later(0.3, checker.release.set)
        await sync.settle(5)
        fresh = sync.take()
        assert fresh is not None and fresh.ha.primary_start_timeout == 0
        assert sync.adopted_dynamic == {"primary_start_timeout": 0} and not sync.validating

    asyncio.run(run())


# -- item 7 ------------------------------------------------------------------------------------------


def test_the_dynamic_copy_is_written_atomically_0600_only_into_a_data_directory(tmp_path: Path) -> None:
    assert not write_cache(tmp_path, {"ttl": 30})  # not (yet) a data directory: initdb needs it empty
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "PG_VERSION").write_text("15\n")
    assert write_cache(tmp_path, {"ttl": 30, "postgresql": {"parameters": {"work_mem": "5MB"}}})
    path = tmp_path / CACHE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_cache(tmp_path) == {"ttl": 30, "postgresql": {"parameters": {"work_mem": "5MB"}}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PG_VERSION", CACHE_NAME]  # no temporary left
    path.write_text("{not json")
    assert read_cache(tmp_path) is None
    path.unlink()
    assert read_cache(tmp_path) is None
