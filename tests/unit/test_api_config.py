"""The pure parts of /config (merge patch, strict validation) and of the restart/reinitialize bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pgwarden.api.control import RestartRequest
from pgwarden.api.dynamic_config import in_process_config_problems, merge_patch, problems_introduced
from pgwarden.api.operations import parse_reinitialize, parse_restart
from pgwarden.api.requests import Refusal
from pgwarden.config.validation import config_problems

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
GOOD = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "postgresql": {"parameters": {"max_connections": 100}}}


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None, "z": 3}}, {"a": {"x": 1, "z": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
        ({}, {"missing": None}, {}),
    ],
)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == expected
    assert repr(target) == before  # the input is not modified


def test_a_good_config_has_no_problems() -> None:
    assert config_problems(GOOD) == []
    assert config_problems({}) == []
    assert config_problems({"custom_key": {"anything": 1}}) == []  # unknown keys stay allowed


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"ttl": "abc"}, "ttl: expected an integer, found 'abc'"),
        ({"ttl": 5}, "ttl: expected a number >= 20, found 5"),
        ({"synchronous_mode": "sometimes"}, "synchronous_mode: expected off, on or quorum"),
        ({"postgresql": {"parameters": "max_connections=5"}}, "postgresql.parameters: expected a mapping"),
        ({"maximum_lag_on_failover": "lots"}, "maximum_lag_on_failover: expected an integer"),
    ],
)
def test_problems_name_the_key(config: dict[str, Any], fragment: str) -> None:
    problems = config_problems(config)
    assert any(fragment in p for p in problems), problems


async def test_a_patch_is_judged_only_by_the_problems_it_introduces() -> None:
    already_bad = {"ttl": "abc"}
    check = in_process_config_problems
    assert await problems_introduced(already_bad, {**already_bad, "pause": True}, check) == []
    assert await problems_introduced(already_bad, {**already_bad, "loop_wait": "x"}, check) == [
        "loop_wait: expected an integer, found 'x' (string)"
    ]


def test_restart_body_with_every_filter() -> None:
    body = {"role": "master", "postgres_version": "15.4", "restart_pending": True, "timeout": "2min",
            "schedule": "2030-01-01T13:00:00+00:00"}  # fmt: skip
    assert parse_restart(body, NOW, paused=False) == RestartRequest(
        role="primary", postgres_version="15.4", restart_pending=True, timeout=120.0,
        schedule="2030-01-01T13:00:00+00:00",
    )  # fmt: skip
    assert parse_restart({}, NOW, paused=True) == RestartRequest()


@pytest.mark.parametrize(
    ("body", "paused", "status", "fragment"),
    [
        ({"rol": "primary"}, False, 400, "unknown filter for the restart: rol"),
        ({"role": "boss"}, False, 400, "PostgreSQL role should be either primary, standby_leader or replica"),
        ({"postgres_version": "fifteen"}, False, 400, "postgres_version: expected a PostgreSQL version"),
        ({"postgres_version": True}, False, 400, "postgres_version"),
        ({"restart_pending": "maybe"}, False, 400, "restart_pending: expected a boolean"),
        ({"timeout": "soon"}, False, 400, "timeout: expected a positive number of seconds"),
        ({"timeout": -1}, False, 400, "timeout"),
        ({"schedule": "2030-01-01T13:00:00"}, False, 400, "Timezone information is mandatory"),
        ({"schedule": "noon"}, False, 422, "Unable to parse scheduled timestamp"),
        ({"schedule": "2020-01-01T13:00:00+00:00"}, False, 422, "Cannot schedule restart in the past"),
        ({"schedule": "2030-01-01T13:00:00+00:00"}, True, 500, "Can't schedule restart in the paused state"),
    ],
)
def test_restart_refusals(body: dict[str, Any], paused: bool, status: int, fragment: str) -> None:
    with pytest.raises(Refusal) as caught:
        parse_restart(body, NOW, paused=paused)
    assert (caught.value.status, fragment in caught.value.text) == (status, True), caught.value.text


def test_reinitialize_body() -> None:
    assert parse_reinitialize({}) == (False, False)
    assert parse_reinitialize({"force": True, "from_leader": "true"}) == (True, True)
    with pytest.raises(Refusal, match="force: expected a boolean"):
        parse_reinitialize({"force": [1]})
