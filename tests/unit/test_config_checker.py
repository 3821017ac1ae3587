"""The agent validates configuration in a child process (config.checker) and holds frozen dataclasses
without pydantic: the child's answer must rebuild exactly what in-process validation gives, report
the same problems, and fail as a clean CheckerError when no answer comes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pgwarden.config import ConfigError, DynamicConfig, LocalConfig, load_local, parse_dynamic
from pgwarden.config.checker import CheckerError, ConfigChecker
from pgwarden.config.plain import from_plain, to_plain
from pgwarden.config.validation import config_problems
from tests.unit.test_config import POSTGRES0_YML

DYNAMIC = {
    "ttl": 30, "loop_wait": 10, "master_start_timeout": 60, "synchronous_mode": True,
    "slots": {"logical1": {"type": "logical", "database": "postgres", "plugin": "pgoutput"}, "phys": None},
    "standby_cluster": {"host": "10.0.0.1", "port": 5432},
    "postgresql": {"parameters": {"work_mem": "8MB"}, "parameters_replica": {"hot_standby_feedback": "on"}},
    "pgwarden": {"lease_ttl": 9},
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "patroni.yml"
    path.write_text(POSTGRES0_YML)
    return path


def test_plain_round_trip_rebuilds_the_same_configuration(config_file: Path) -> None:
    local = load_local(config_file, {})
    assert from_plain(LocalConfig, json.loads(json.dumps(to_plain(local)))) == local
    dynamic, _ = parse_dynamic(DYNAMIC)
    assert from_plain(DynamicConfig, json.loads(json.dumps(to_plain(dynamic)))) == dynamic
    assert dynamic.slots["logical1"].plugin == "pgoutput" and dynamic.primary_start_timeout == 60


def test_the_child_gives_what_in_process_validation_gives(config_file: Path) -> None:
    environ = {"PATRONI_NAME": "from-env"}
    local, bootstrap, warnings = ConfigChecker().load_local(config_file, environ)
    assert local == load_local(config_file, environ) and local.name == "from-env"
    expected, expected_warnings = parse_dynamic(local.bootstrap.dcs)
    assert (bootstrap, warnings) == (expected, expected_warnings)


def test_the_child_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("scope: s\nname: n\nrestapi: {listen: nowhere}\n")
    with pytest.raises(ConfigError) as in_child:
        ConfigChecker().load_local(path, {})
    with pytest.raises(ConfigError) as in_process:
        load_local(path, {})
    assert in_child.value.problems == in_process.value.problems and len(in_child.value.problems) >= 3


async def test_dynamic_config_and_config_problems_in_the_child() -> None:
    checker = ConfigChecker()
    assert await checker.parse_dynamic(DYNAMIC) == parse_dynamic(DYNAMIC)
    assert await checker.parse_dynamic({"ttl": "soon"}) == parse_dynamic({"ttl": "soon"})  # repaired, warned
    values = [DYNAMIC, {"ttl": 5}, {"loop_wait": "x"}]
    assert await checker.config_problems(values) == [config_problems(v) for v in values]


async def test_no_answer_is_a_checker_error(tmp_path: Path) -> None:
    with pytest.raises(CheckerError):
        ConfigChecker(python="/bin/false").load_local(None, {})
    with pytest.raises(CheckerError):
        await ConfigChecker(python=str(tmp_path / "missing-python")).parse_dynamic({})
    sleeper = tmp_path / "slow.sh"
    sleeper.write_text("#!/bin/sh\nexec sleep 30\n")
    sleeper.chmod(0o755)
    with pytest.raises(CheckerError, match="no answer"):
        await ConfigChecker(python=str(sleeper), timeout=0.3).parse_dynamic({})


def test_the_agents_modules_load_no_pydantic_and_no_yaml() -> None:
    code = ("import sys, pgwarden.cli.main, pgwarden.agent.loop; "
            "print(sorted(m for m in ('pydantic', 'pydantic_core', 'yaml', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
