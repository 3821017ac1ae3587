"""The CLI's pure helpers: config edits, member choice, schedules, DCS URLs and config targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.cli.choose import ChoiceError, parse_schedule, pick_member, select_members, switchover_candidates
from pgwarden.cli.config_patch import (
    EditError,
    apply_assignments,
    config_problems,
    merge_patch,
    parse_assignment,
    set_path,
    unified_diff,
)
from pgwarden.cli.edit_config_command import diff_markup
from pgwarden.cli.progress import amount_text, reinit_snapshot
from pgwarden.cli.target import TargetError, parse_dcs_url, resolve_target
from pgwarden.model import ClusterView, LeaderKey, Member, Tags

# -- edit-config ---------------------------------------------------------------------------------------


def test_assignment_values_are_yaml() -> None:
    assert parse_assignment("ttl=30") == ("ttl", 30)
    assert parse_assignment("postgresql.use_slots=false") == ("postgresql.use_slots", False)
    assert parse_assignment("x=null") == ("x", None)
    assert parse_assignment("x=") == ("x", None)
    assert parse_assignment("wal_keep_size=128MB") == ("wal_keep_size", "128MB")
    with pytest.raises(EditError, match="key=value"):
        parse_assignment("ttl")


def test_set_path_creates_replaces_and_deletes_without_touching_the_input() -> None:
    config: dict[str, Any] = {"postgresql": {"parameters": {"a": 1}}, "ttl": 30}
    changed = set_path(config, "postgresql.parameters.b", 2)
    assert changed["postgresql"]["parameters"] == {"a": 1, "b": 2}
    assert config["postgresql"]["parameters"] == {"a": 1}
    assert "ttl" not in set_path(config, "ttl", None)
    assert set_path(config, "missing.key", None) == config
    with pytest.raises(EditError, match="ttl is a int"):
        set_path(config, "ttl.x", 1)


def test_apply_assignments_settings_then_parameters() -> None:
    out = apply_assignments({"loop_wait": 10}, ["loop_wait=5", "synchronous_mode=on"], ["work_mem=8MB"])
    assert out == {"loop_wait": 5, "synchronous_mode": True, "postgresql": {"parameters": {"work_mem": "8MB"}}}


def test_merge_patch_is_rfc7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}}
    assert merge_patch(target, {"a": None, "b": {"c": None, "e": 4}}) == {"b": {"d": 3, "e": 4}}
    assert merge_patch(target, {"b": [1]}) == {"a": 1, "b": [1]}


def test_diff_and_its_colours() -> None:
    assert unified_diff({"ttl": 30}, {"ttl": 30}, "demo") == []
    lines = unified_diff({"ttl": 30}, {"ttl": 40}, "demo")
    assert "-ttl: 30" in lines and "+ttl: 40" in lines
    marked = diff_markup(lines)
    assert "[red]-ttl: 30[/red]" in marked and "[green]+ttl: 40[/green]" in marked


def test_config_problems_refuse_what_the_agents_would_repair() -> None:
    assert config_problems({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"x": 1}}}) == []
    assert config_problems({"ttl": "abc"}) == ["ttl: expected an integer, found 'abc' (string)"]
    assert any("below the minimum" in p for p in config_problems({"ttl": 5}))
    assert any("per-member" in p for p in config_problems({"postgresql": {"data_dir": "/x"}}))


# -- choosing members and times ------------------------------------------------------------------------


def _cluster() -> ClusterView:
    return ClusterView(scope="demo", leader=LeaderKey("a"), members=(
        Member("a", conn_url="postgres://h1:5432/postgres"), Member("b"), Member("c", tags=Tags(nofailover=True))))


def test_select_members_by_name_and_role() -> None:
    cluster = _cluster()
    assert [m.name for m in select_members(cluster, (), "replica")] == ["b", "c"]
    assert [m.name for m in select_members(cluster, ("a", "b"), "leader")] == ["a"]
    assert [m.name for m in select_members(cluster, (), "primary")] == ["a"]
    with pytest.raises(ChoiceError, match="zz: not a member"):
        select_members(cluster, ("zz",))
    with pytest.raises(ChoiceError, match="no member"):
        select_members(cluster, ("b",), "leader")
    assert pick_member(cluster, None, None).name == "a"
    with pytest.raises(ChoiceError, match="either"):
        pick_member(cluster, "a", "leader")


def test_nofailover_members_are_no_switchover_candidates() -> None:
    assert switchover_candidates(_cluster(), "a") == ["b"]


def test_parse_schedule() -> None:
    now = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    assert parse_schedule("now", now) is None and parse_schedule(None, now) is None
    assert parse_schedule("2030-01-01T11:00+00:00", now) == now + timedelta(hours=1)
    assert parse_schedule("2031-01-01T11:00", now).tzinfo is not None  # type: ignore[union-attr]
    with pytest.raises(ChoiceError, match="in the past"):
        parse_schedule("2029-01-01T11:00+00:00", now)
    with pytest.raises(ChoiceError, match="ISO 8601"):
        parse_schedule("tomorrow", now)


# -- reinit progress ---------------------------------------------------------------------------------


def test_reinit_snapshot() -> None:
    copying = reinit_snapshot({"state": "creating replica", "progress": {"done_kb": 1024, "total": 4 * 2**20}},
                              "t0", False)
    assert (copying.done, copying.total, copying.finished) == (2**20, 4 * 2**20, False)
    assert amount_text(copying) == "1.0/4.0 MB"
    assert reinit_snapshot({"state": "running", "postmaster_start_time": "t0"}, "t0", True).finished
    assert not reinit_snapshot({"state": "running", "postmaster_start_time": "t0"}, "t0", False).finished
    assert reinit_snapshot({"state": "running", "postmaster_start_time": "t1"}, "t0", False).finished
    assert reinit_snapshot({"state": "start failed"}, None, True).failed


# -- targets ----------------------------------------------------------------------------------------


def test_parse_dcs_url() -> None:
    assert parse_dcs_url("etcd3://10.0.0.1:2380/ns") == ("etcd3", {"hosts": ["10.0.0.1:2380"]}, "/ns")
    assert parse_dcs_url("localhost") == ("etcd3", {"hosts": ["localhost:2379"]}, None)
    assert parse_dcs_url("etcd://h") == ("etcd", {"hosts": ["h:2379"]}, None)
    assert parse_dcs_url("zookeeper://z1/ns") == ("zookeeper", {"hosts": ["z1:2181"]}, "/ns")
    _, section, _ = parse_dcs_url("etcd3://u:p@h:1")
    assert (section["username"], section["password"]) == ("u", "p")
    with pytest.raises(TargetError, match="unsupported scheme"):
        parse_dcs_url("consul://h:8500")


def test_resolve_target_from_a_ctl_only_file(tmp_path: Path) -> None:
    path = tmp_path / "ctl.yaml"
    path.write_text(yaml.safe_dump({
        "scope": "demo", "etcd3": {"hosts": "127.0.0.1:2379"},
        "restapi": {"authentication": {"username": "r", "password": "rp"}},
        "ctl": {"insecure": True},
    }))
    target = resolve_target(path, None, False, {})
    assert (target.scope, target.namespace) == ("demo", "/service")
    assert (target.rest.username, target.rest.insecure) == ("r", True)
    with_url = resolve_target(path, "etcd3://h:1/other", False, {})
    assert with_url.dcs == {"hosts": ["h:1"]} and with_url.namespace == "/other"


def test_ctl_credentials_win_and_env_works(tmp_path: Path) -> None:
    env = {"PATRONI_SCOPE": "envscope", "PATRONI_ETCD3_HOSTS": "'127.0.0.1:2379'",
           "PATRONI_RESTAPI_USERNAME": "r", "PATRONI_RESTAPI_PASSWORD": "rp",
           "PATRONI_CTL_USERNAME": "c", "PATRONI_CTL_PASSWORD": "cp"}
    target = resolve_target(None, None, False, env)
    assert target.scope == "envscope" and (target.rest.username, target.rest.password) == ("c", "cp")


def test_no_dcs_is_a_clear_error() -> None:
    with pytest.raises(TargetError, match="no DCS to read"):
        resolve_target(None, None, False, {})


def test_the_cli_reads_each_dcs_section_as_the_agent_does() -> None:
    """`etcd:` is etcd's v2 API in Patroni and `zookeeper:` ZooKeeper: the CLI reads the cluster from the
    backend the agents use, and refuses a file naming two of them (the agent does too)."""
    from pgwarden.cli.target import _dcs_section as dcs_section

    assert dcs_section({"etcd": {"host": "127.0.0.1:2379"}}, None)[:2] == ("etcd", {"host": "127.0.0.1:2379"})
    assert dcs_section({"etcd3": {"host": "127.0.0.1:2379"}}, None)[:2] == ("etcd3", {"host": "127.0.0.1:2379"})
    assert dcs_section({"zookeeper": {"hosts": "z:2181"}}, None)[0] == "zookeeper"
    with pytest.raises(TargetError, match="expected one DCS section"):
        dcs_section({"etcd": {"host": "a"}, "etcd3": {"host": "a"}}, None)
    with pytest.raises(TargetError, match="zookeeper"):
        dcs_section({"zookeeper": {}}, None)
