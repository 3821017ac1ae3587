"""Callbacks, the pre_promote fencing hook and cascading replication, on one real 3-node cluster.

node1 bootstraps alone; node2 joins as a plain replica; node3 cascades from node2 (`replicatefrom`).
node2's pre_promote hook refuses, so when node1's host dies only node3 may become the leader.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster import ETCD_BIN, PG_BIN, LocalCluster, Node, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

CALLBACK_SCRIPT = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/callbacks.log"
"""


def _extra(node: Node) -> dict[str, Any]:
    script = node.dir / "callback.sh"
    config: dict[str, Any] = {"postgresql": {"callbacks": {
        action: str(script) for action in ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")}}}
    if node.name == "node2":
        config["postgresql"]["pre_promote"] = "/bin/false"
    if node.name == "node3":
        config["tags"] = {"replicatefrom": "node2"}
    return config


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-cb-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope="itcb", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         extra_config=_extra)
    try:
        local.prepare()
        for node in local.nodes:
            script = node.dir / "callback.sh"
            script.write_text(CALLBACK_SCRIPT)
            script.chmod(0o755)
            shutil.chown(script, "postgres", "postgres")
        local.start_etcd()
        local.start_agent(local.node("node1"))
        wait_until(lambda: local.node("node1").get("/primary")[0] == 200, 60, "node1 to bootstrap")
        local.start_agent(local.node("node2"))
        wait_until(lambda: local.node("node2").get("/replica")[0] == 200, 60, "node2 streaming")
        local.start_agent(local.node("node3"))
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _callbacks(node: Node) -> list[str]:
    try:
        return (node.dir / "callbacks.log").read_text().splitlines()
    except OSError:
        return []


def _sender_port(cluster: LocalCluster, node: Node) -> int | None:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'").fetchone()
    return int(row[0]) if row else None


def test_callbacks_are_called_with_action_role_and_scope(cluster: LocalCluster) -> None:
    wait_until(lambda: "on_start primary itcb" in _callbacks(cluster.node("node1")), 20, "node1's on_start")
    wait_until(lambda: "on_start replica itcb" in _callbacks(cluster.node("node2")), 20, "node2's on_start")


def test_cascading_replica_streams_from_its_named_upstream(cluster: LocalCluster) -> None:
    node2, node3 = cluster.node("node2"), cluster.node("node3")

    def cascades() -> bool:
        try:
            return _sender_port(cluster, node3) == node2.pg_port
        except psycopg.Error:
            return False

    wait_until(cascades, 60, "node3 streaming from node2")
    wait_until(lambda: node3.get("/replica")[0] == 200, 10, "node3 healthy on /replica")
    slots = {row[0] for row in psycopg.connect(cluster.conninfo(node2), autocommit=True).execute(
        "SELECT slot_name FROM pg_replication_slots").fetchall()}
    assert "node3" in slots, "the upstream keeps a slot for its cascading replica"


def test_pre_promote_refusal_keeps_a_node_from_promoting(cluster: LocalCluster) -> None:
    wait_until(lambda: cluster.node("node3").get("/replica")[0] == 200, 60, "node3 streaming")
    cluster.kill_host(cluster.node("node1"))
    wait_until(lambda: cluster.node("node3").get("/primary")[0] == 200, 90, "node3 to become the primary")
    assert cluster.node("node2").get("/primary")[0] != 200
    wait_until(lambda: "on_role_change primary itcb" in _callbacks(cluster.node("node3")), 20,
               "node3's on_role_change")
    log = cluster.node("node2").log_path.read_text(errors="replace")
    if "pre-promote" in log or "pre_promote" in log:
        assert "Promotion cancelled because the pre-promote script failed" in log
    # node2 now follows node3 again.
    wait_until(lambda: cluster.node("node2").get("/replica")[0] == 200, 60, "node2 streaming from node3")
    time.sleep(0.1)
