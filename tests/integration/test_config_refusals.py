"""Refused configuration keys (config/support.py) at each entry point, on real processes: `pgwarden
validate-config`, `pgwarden agent` (its own file, and the cluster's /config before its first
decision), `pgwarden edit-config`, and PATCH/PUT /config on a running agent. A running agent never
adopts a refused /config: it says so and keeps leading with what it has."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.localcluster.cluster import LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import pgwarden, rest, running_cluster
from tests.unit.test_config_support import DYNAMIC_REFUSALS, LOCAL_REFUSALS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]  # fmt: skip



@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("refusals", "refusals", size=2) as local:
        yield local


@pytest.mark.parametrize(("extra", "line"), LOCAL_REFUSALS[:6])
def test_validate_config_and_the_agent_refuse_a_local_key(cluster: LocalCluster, tmp_path: Path,
                                                          extra: dict[str, Any], line: str) -> None:
    node = cluster.nodes[0]
    config = cluster.node_config(node)
    for key, value in extra.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    tmp_path.chmod(0o755)

    checked = pgwarden("validate-config", str(path))
    assert checked.returncode == 1 and line in checked.stderr, checked.stderr
    started = pgwarden("agent", str(path))  # exits before it touches etcd or PostgreSQL
    assert started.returncode == 2 and line in started.stderr, started.stderr


def test_writers_of_config_refuse_and_agents_never_adopt(cluster: LocalCluster, tmp_path: Path) -> None:
    leader = cluster.wait_healthy(replicas=1)
    replica = next(node for node in cluster.nodes if node is not leader)
    status, text = rest(leader, "GET", "/config")
    assert status == 200
    before = json.loads(text)

    for value, line in DYNAMIC_REFUSALS:
        status, text = rest(replica, "PATCH", "/config", value)
        assert status == 400 and line in text, (status, text)
        status, text = rest(leader, "PUT", "/config", {**before, **value})
        assert status == 400 and line in text, (status, text)
        patch = tmp_path / "patch.yml"
        patch.write_text(yaml.safe_dump(value))
        edited = pgwarden("edit-config", "-c", str(leader.config_path), "--apply", str(patch), "--force")
        assert edited.returncode != 0 and line in edited.stdout + edited.stderr, edited
    assert json.loads(rest(leader, "GET", "/config")[1]) == before

    # Somebody writes a standby_cluster into /config behind the API's back (etcdctl, a Patroni node).
    cluster.stop_agent(replica)
    refused = {**before, "standby_cluster": {"host": "127.0.0.1", "port": replica.pg_port,
                                     "create_replica_methods": ["wal e"]}}
    key = f"/service/{cluster.scope}/config"
    etcdctl = ["etcdctl", f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", "put", key, json.dumps(refused)]
    subprocess.run(etcdctl, check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    try:
        # A starting agent refuses to start at all ...
        started = time.monotonic()
        cluster.start_agent(replica)
        assert replica.agent is not None
        assert replica.agent.wait(timeout=60) == 2
        assert time.monotonic() - started < 60
        log = replica.log_path.read_text()
        assert "Can't start: the cluster's /config asks for what pgwarden does not support" in log
        assert "standby_cluster: a section pgwarden cannot use" in log
        # ... and the running leader keeps leading, as a primary, with the configuration it had.
        wait_until(lambda: "keeping the current configuration" in leader.log_path.read_text(), 30,
                   "the leader saying it keeps its configuration")
        status, _ = rest(leader, "GET", "/primary")
        assert status == 200
    finally:
        subprocess.run([*etcdctl[:-1], json.dumps(before)], check=True, capture_output=True,
                       env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    cluster.start_agent(replica)
    cluster.wait_healthy(replicas=1)
