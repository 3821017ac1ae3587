"""Hostile and careless settings (issue 20 items 5 and 6).

Numbers have sane bounds (a `ttl` of 1e18 reached etcd's int64 lease grant); PostgreSQL parameter
names and values can never add a line to postgresql.conf; values are checked against the server's
own rules (its pg_settings) before a /config is accepted; what PostgreSQL refuses at a reload is said.
"""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.config import parse_dynamic
from pgwarden.config.gucs import GucCatalog, catalog_problems, parse_bool, refused_settings
from pgwarden.config.validation import config_problems, local_problems
from pgwarden.core.decide import start_backoff
from pgwarden.postgres import conf
from tests.unit.test_pgconf import make_settings

# -- item 5: bounds -------------------------------------------------------------------------------

OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    ({"ttl": 1e18}, "ttl"),
    ({"ttl": 3601}, "ttl"),
    ({"loop_wait": 10**9}, "loop_wait"),
    ({"retry_timeout": 7200}, "retry_timeout"),
    ({"maximum_lag_on_failover": 2**63}, "maximum_lag_on_failover"),
    ({"maximum_lag_on_failover": -1}, "maximum_lag_on_failover"),
    ({"maximum_lag_on_syncnode": 2**64}, "maximum_lag_on_syncnode"),
    ({"primary_start_timeout": 86401}, "primary_start_timeout"),
    ({"primary_stop_timeout": 1e12}, "primary_stop_timeout"),
    ({"primary_race_backoff": float("inf")}, "primary_race_backoff"),
    ({"max_timelines_history": 2**40}, "max_timelines_history"),
    ({"synchronous_node_count": 65}, "synchronous_node_count"),
    ({"member_slots_ttl": "1000d"}, "member_slots_ttl"),
    ({"pgwarden": {"lease_ttl": 1e18}}, "pgwarden.lease_ttl"),
    ({"postgresql": {"pg_ctl_timeout": 10**7}}, "postgresql.pg_ctl_timeout"),
    ({"standby_cluster": {"port": 70000}}, "standby_cluster.port"),
]


@pytest.mark.parametrize(("value", "key"), OUT_OF_RANGE, ids=[key for _, key in OUT_OF_RANGE])
def test_out_of_range_dynamic_settings_are_refused_and_repaired(value: dict[str, Any], key: str) -> None:
    problems = config_problems(value)
    assert any(problem.startswith(f"{key}:") for problem in problems), problems
    _, warnings = parse_dynamic(value)
    assert any(key in warning and ("default" in warning or "ignoring" in warning) for warning in warnings), warnings


def test_the_reproduced_ttl_is_repaired_to_the_default() -> None:
    config, warnings = parse_dynamic({"ttl": 1e18, "loop_wait": 10, "retry_timeout": 10})
    assert config.ttl == 30 and config.lease_ttl == 7
    assert "ttl: expected a number <= 3600" in warnings[0]


def test_sane_large_values_are_accepted() -> None:
    value = {"ttl": 3600, "loop_wait": 600, "retry_timeout": 600, "maximum_lag_on_failover": 2**63 - 1,
             "primary_start_timeout": 86400, "synchronous_node_count": 64, "pgwarden": {"lease_ttl": 600}}
    assert config_problems(value) == []


def _local(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "scope": "s", "name": "n1",
        "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
        "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/tmp/d",
                       "authentication": {"superuser": {"username": "p"}, "replication": {"username": "r"}}},
    }  # fmt: skip
    for path, value in changes.items():
        node = raw
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.mark.parametrize(("path", "value"), [
    ("ttl", 1e18), ("loop_wait", 3601), ("postgresql__pg_ctl_timeout", 10**9), ("log__file_size", 2**41),
    ("log__file_num", 10**6), ("restapi__request_queue_size", 10**6), ("tags__failover_priority", 2**40),
    ("watchdog__safety_margin", 10**6), ("log__max_queue_size", 10**9),
])  # fmt: skip
def test_out_of_range_local_settings_are_problems(path: str, value: Any) -> None:
    config, problems = local_problems(_local(**{path: value}))
    assert config is None and any(path.replace("__", ".") in problem for problem in problems), problems


# -- item 6: parameter names and values ------------------------------------------------------------


@pytest.mark.parametrize("name", ["work_mem = '8MB'\nlog_min_messages", "a b", "1abc", "", "x.y.z", "a-b", "x.",
                                  "work_mem\x00"])
def test_parameter_names_must_be_identifiers(name: str) -> None:
    problems = config_problems({"postgresql": {"parameters": {name: "1"}}})
    assert len(problems) == 1 and "expected a parameter name" in problems[0]
    assert "\n" not in problems[0]  # the message itself stays one line
    _, problems = local_problems(_local(postgresql__parameters={name: "1"}))
    assert any("expected a parameter name" in problem for problem in problems)


@pytest.mark.parametrize("name", ["work_mem", "_x", "pg_stat_statements.max", "auto_explain.log_min_duration"])
def test_identifiers_and_dotted_custom_names_are_accepted(name: str) -> None:
    assert config_problems({"postgresql": {"parameters": {name: "1"}}}) == []


@pytest.mark.parametrize("value", ["8MB\nlog_min_messages = debug5", "a\rb", "x\x00y", None, {"a": 1}, [1],
                                   float("nan")])
def test_parameter_values_cannot_hold_newlines_or_non_scalars(value: Any) -> None:
    problems = config_problems({"postgresql": {"parameters": {"work_mem": value}}})
    assert len(problems) == 1 and problems[0].startswith("postgresql.parameters.work_mem: expected"), problems


def test_repairing_config_drops_only_the_bad_parameter() -> None:
    config, warnings = parse_dynamic({"postgresql": {"parameters": {
        "work_mem": "8MB\nlog_min_messages", "bad name": 1, "shared_buffers": "256MB"}}})
    assert config.postgresql.parameters == {"shared_buffers": "256MB"}
    assert len(warnings) == 2 and all("ignoring postgresql.parameters." in warning for warning in warnings)


def test_a_value_can_never_end_its_line() -> None:
    for text in ("a\nb", "a\r\nb", "x\x00", "\x1b[1m", "it's \\n"):
        rendered = conf.format_guc(text)
        assert "\n" not in rendered and "\r" not in rendered and "\x00" not in rendered
        assert rendered.startswith("'") and rendered.endswith("'")
    assert conf.format_guc("a\nb") == "'a\\012b'"  # GUC_scanstr reads an octal escape back
    assert conf.format_guc("it's a\\b") == "'it''s a\\\\b'"
    assert conf.format_guc("tab\there") == "'tab\there'"


def test_a_bad_name_that_slipped_through_is_not_written() -> None:
    settings = make_settings(parameters={"work_mem = '8MB'\nlog_min_messages": "debug5", "work_mem": "8MB",
                                         "recovery_min_apply_delay": "1s\nevil = 1"})
    text = conf.render_postgresql_conf(settings, "primary", None)
    assert "log_min_messages" not in text and "evil = 1" not in text.splitlines()
    assert "work_mem = '8MB'" in text.splitlines()
    _, notes = conf.versioned_parameters(settings, "primary", None, None)
    assert any("not a valid parameter name" in note for note in notes)


# -- item 6: the server's rules (pg_settings of PostgreSQL 15) --------------------------------------

CATALOG = GucCatalog.from_rows([
    ("shared_buffers", "integer", "8kB", "16", "1073741823", None, "postmaster"),
    ("work_mem", "integer", "kB", "64", "2147483647", None, "user"),
    ("statement_timeout", "integer", "ms", "0", "2147483647", None, "user"),
    ("checkpoint_completion_target", "real", None, "0", "1", None, "sighup"),
    ("wal_level", "enum", None, None, None, ["minimal", "replica", "logical"], "postmaster"),
    ("synchronous_commit", "enum", None, None, None, ["local", "remote_write", "remote_apply", "on", "off"], "user"),
    ("hot_standby", "bool", None, None, None, None, "postmaster"),
    ("log_file_mode", "integer", None, "0", "511", None, "sighup"),
    ("block_size", "integer", None, "8192", "8192", None, "internal"),
    ("application_name", "string", None, None, None, None, "user"),
])  # fmt: skip


@pytest.mark.parametrize(("name", "value"), [
    ("shared_buffers", "128MB"), ("shared_buffers", 16384), ("shared_buffers", "1TB"), ("work_mem", "8MB"),
    ("work_mem", "1.5GB"), ("work_mem", " 64 kB "), ("statement_timeout", "5min"), ("statement_timeout", "250ms"),
    ("statement_timeout", "1h"), ("checkpoint_completion_target", 0.9), ("wal_level", "REPLICA"),
    ("wal_level", "hot_standby"), ("synchronous_commit", "true"), ("synchronous_commit", True), ("hot_standby", "yes"),
    ("hot_standby", "of"), ("hot_standby", False), ("log_file_mode", "0600"), ("application_name", "anything"),
    ("my_ext.setting", "x"), ("wal_keep_segments", 8),
])  # fmt: skip
def test_values_postgresql_accepts(name: str, value: Any) -> None:
    assert catalog_problems(CATALOG, {"postgresql": {"parameters": {name: value}}}, skip=["wal_keep_segments"]) == []


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("shared_buffers", "1PB", "'1PB' is not a valid value: expected an integer with a unit among B, kB, MB, GB, TB "
                              "(range 16 .. 1073741823, in units of 8kB)"),
    ("shared_buffers", "16TB", "16TB is outside the range 16 .. 1073741823, in units of 8kB"),
    ("shared_buffers", "100kB", "100kB is outside the range"),
    ("work_mem", "8 mb", "not a valid value"),  # units are case-sensitive, as in PostgreSQL
    ("work_mem", "5min", "not a valid value"),
    ("statement_timeout", "-1", "outside the range 0 .. 2147483647, in units of ms"),
    ("checkpoint_completion_target", "1.5", "outside the range 0 .. 1"),
    ("wal_level", "bogus", "expected one of minimal, replica, logical"),
    ("hot_standby", "maybe", "expected a boolean"),
    ("log_file_mode", "0800", "not a valid value"),
    ("block_size", "16384", "read-only"),
    ("no_such_parameter", "1", "unknown parameter"),
])  # fmt: skip
def test_values_postgresql_refuses(name: str, value: Any, reason: str) -> None:
    problems = catalog_problems(CATALOG, {"postgresql": {"parameters_replica": {name: value}}})
    assert len(problems) == 1 and problems[0].startswith(f"postgresql.parameters_replica.{name}: "), problems
    assert reason in problems[0]


def test_the_static_checks_are_left_to_validation() -> None:
    assert catalog_problems(CATALOG, {"postgresql": {"parameters": {"a\nb": 1, "work_mem": "1\n"}}}) == []


def test_parse_bool_is_postgresqls() -> None:
    assert [parse_bool(w) for w in ("on", "OFF", "t", "tr", "y", "n", "1", "0", "of")] == [
        True, False, True, True, True, False, True, False, False]
    assert [parse_bool(w) for w in ("o", "", "2", "yess", "onn")] == [None] * 5


def test_a_refused_reload_is_reported_but_a_pending_restart_is_not() -> None:
    rows = [
        ("shared_buffers", "1PB", "setting could not be applied", "postmaster"),
        ("shared_buffers", "256MB", "setting could not be applied", "postmaster"),  # waits for a restart
        ("work_mem", "1PB", "setting could not be applied", "user"),
        ("bogus", "3", "unrecognized configuration parameter", None),
        (None, None, "syntax error", None),
    ]
    refused = refused_settings(rows, CATALOG)
    assert len(refused) == 4
    assert refused[0].startswith("shared_buffers = '1PB': '1PB' is not a valid value")
    assert refused[1].startswith("work_mem = '1PB': '1PB' is not a valid value")
    assert refused[2] == "bogus = '3': unrecognized configuration parameter" and refused[3] == "syntax error"


def test_failed_starts_back_off() -> None:
    assert [start_backoff(n) for n in (1, 2, 3, 4, 5, 6, 7, 100)] == [1, 2, 4, 8, 16, 30, 30, 30]
    # 40 s of a PostgreSQL that never starts: a handful of attempts, not hundreds.
    elapsed, attempts = 0.0, 0
    while elapsed < 40:
        attempts += 1
        elapsed += start_backoff(attempts)
    assert attempts <= 7
