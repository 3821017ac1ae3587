"""`pgwarden` cluster commands against one real 3-node LocalCluster (started once for the module).

The commands run in-process through click's runner, exactly as a shell would run them, with the
cluster found from a node's own configuration file (`-c`), as an operator on that host would.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from pgwarden.cli.main import main
from pgwarden.localcluster.cluster import LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

SUPERUSER_ENV = {"PGPASSWORD": "demo-superuser-secret"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-cli-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, size=3, pg_base_port=0, api_base_port=0)
    try:
        local.start()
        local.wait_healthy(timeout=120)
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pgwarden(cluster: LocalCluster, *args: str, stdin: str | None = None,
             env: dict[str, str] | None = None) -> Result:
    config = str(cluster.nodes[0].config_path)
    return CliRunner().invoke(main, ["-c", config, *args], input=stdin, env=env, catch_exceptions=False)


def members(cluster: LocalCluster) -> list[dict[str, Any]]:
    result = pgwarden(cluster, "list", "-f", "json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def leader_name(cluster: LocalCluster) -> str:
    return str(next(r["Member"] for r in members(cluster) if r["Role"] == "Leader"))


def wait_streaming(cluster: LocalCluster, timeout: float = 60) -> None:
    def all_stream() -> bool:
        rows = members(cluster)
        return sum(r["State"] == "streaming" for r in rows) == 2 and any(r["Role"] == "Leader" for r in rows)

    wait_until(all_stream, timeout, "two streaming replicas in `pgwarden list`")


def test_list_pretty_and_json(cluster: LocalCluster) -> None:
    wait_streaming(cluster)
    result = pgwarden(cluster, "list")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Cluster: demo (")
    assert "Leader" in result.output and result.output.count("streaming") == 2
    rows = members(cluster)
    assert sorted(r["Member"] for r in rows) == ["node1", "node2", "node3"]
    # Lag is computed from positions the members publish every loop_wait: it reaches 0 once the
    # replicas' last positions catch up with the leader's (a checkpoint may have moved it meanwhile).
    deadline = time.monotonic() + 30
    while not all(r["Receive Lag"] == 0 for r in rows if r["Role"] != "Leader") and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = members(cluster)
    assert all(r["Receive Lag"] == 0 for r in rows if r["Role"] != "Leader"), rows


def test_topology_history_show_config_dsn_version(cluster: LocalCluster) -> None:
    topology = pgwarden(cluster, "topology", "-f", "tsv")
    assert topology.exit_code == 0 and topology.output.count("+ node") == 2
    assert pgwarden(cluster, "history").exit_code == 0
    shown = yaml.safe_load(pgwarden(cluster, "show-config").output)
    assert shown["ttl"] == 20 and shown["loop_wait"] == 2
    leader = cluster.node(leader_name(cluster))
    assert pgwarden(cluster, "dsn").output.strip() == f"host=127.0.0.1 port={leader.pg_port}"
    version = pgwarden(cluster, "version", "demo")
    assert version.exit_code == 0 and version.output.count("PostgreSQL 15.") == 3


def test_query_on_leader_and_replica(cluster: LocalCluster) -> None:
    result = pgwarden(cluster, "query", "-U", "postgres", "-c", "SELECT pg_is_in_recovery() AS r", env=SUPERUSER_ENV)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["r", "False"]
    result = pgwarden(cluster, "query", "-r", "replica", "-U", "postgres", "--format", "json",
                      "-c", "SELECT pg_is_in_recovery() AS r", env=SUPERUSER_ENV)
    assert json.loads(result.output) == [{"r": True}]


def test_edit_config_reaches_the_dcs(cluster: LocalCluster) -> None:
    result = pgwarden(cluster, "edit-config", "-p", "work_mem=8MB", "--force")
    assert result.exit_code == 0, result.output
    assert "+    work_mem: 8MB" in result.output
    assert yaml.safe_load(pgwarden(cluster, "show-config").output)["postgresql"]["parameters"]["work_mem"] == "8MB"
    refused = pgwarden(cluster, "edit-config", "-s", "loop_wait=0", "--force")
    assert refused.exit_code == 1 and "loop_wait" in refused.output


def test_pause_and_resume_with_wait(cluster: LocalCluster) -> None:
    result = pgwarden(cluster, "pause", "--wait")
    assert result.exit_code == 0, result.output
    assert "Maintenance mode: on" in pgwarden(cluster, "list").output
    assert "already paused" in pgwarden(cluster, "pause").output
    result = pgwarden(cluster, "resume", "--wait")
    assert result.exit_code == 0, result.output
    assert "Maintenance mode" not in pgwarden(cluster, "list").output


def test_switchover_to_a_named_candidate(cluster: LocalCluster) -> None:
    wait_streaming(cluster)
    old = leader_name(cluster)
    candidate = next(r["Member"] for r in members(cluster) if r["Role"] != "Leader")
    result = pgwarden(cluster, "switchover", "--candidate", candidate, "--force")
    assert result.exit_code == 0, result.output
    assert f'Successfully switched over to "{candidate}"' in result.output
    wait_until(lambda: leader_name(cluster) == candidate, 30, f"{candidate} to lead")
    assert old != candidate
    wait_streaming(cluster)


def test_scheduled_switchover_is_shown_and_flushed(cluster: LocalCluster) -> None:
    candidate = next(r["Member"] for r in members(cluster) if r["Role"] != "Leader")
    result = pgwarden(cluster, "switchover", "--candidate", candidate, "--scheduled", "2099-01-01T00:00+00:00",
                      "--force")
    assert result.exit_code == 0 and "Switchover scheduled" in result.output
    assert "Switchover scheduled at: 2099-01-01T00:00:00+00:00" in pgwarden(cluster, "list").output
    result = pgwarden(cluster, "flush", "demo", "switchover", "--force")
    assert result.exit_code == 0 and "scheduled switchover deleted" in result.output
    assert "Switchover scheduled" not in pgwarden(cluster, "list").output


def test_restart_and_reload_a_replica(cluster: LocalCluster) -> None:
    replica = next(r["Member"] for r in members(cluster) if r["Role"] != "Leader")
    result = pgwarden(cluster, "restart", "demo", replica, "--force")
    assert result.exit_code == 0, result.output
    assert f"Success: restart on member {replica}" in result.output
    result = pgwarden(cluster, "reload", "demo", replica, "--force")
    assert result.exit_code == 0 and "reload request received" in result.output
    wait_streaming(cluster)


def test_reinit_a_replica_and_wait(cluster: LocalCluster) -> None:
    replica = next(r["Member"] for r in members(cluster) if r["Role"] != "Leader")
    result = pgwarden(cluster, "reinit", "demo", replica, "--wait", "--force")
    assert result.exit_code == 0, result.output
    assert f"Success: reinitialize for member {replica}" in result.output
    assert f"{replica} runs again after the reinitialize" in result.output
    wait_streaming(cluster)
    node = cluster.node(replica)
    # The operator asked for the data to be replaced: no `.failed` copy is left behind (issue 20).
    assert not list(node.data_dir.parent.glob(node.data_dir.name + ".failed.*"))


def test_remove_after_typed_confirmations(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        cluster.stop_agent(node)
    # The last leader may keep its key (no replica was left to hand it to): then remove asks for its name.
    leaders = [r["Member"] for r in members(cluster) if r["Role"] == "Leader"]
    answers = "demo\nYes I am aware\n" + "".join(f"{name}\n" for name in leaders)
    result = pgwarden(cluster, "remove", "demo", stdin=answers)
    assert result.exit_code == 0, result.output
    assert members(cluster) == []  # `list` shows an empty scope as no member, not as an error
