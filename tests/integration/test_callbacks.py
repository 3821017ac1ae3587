"""Callbacks, the pre_promote fencing hook and cascading replication, on one real 3-node cluster.

node1 bootstraps alone; node2 joins as a plain replica; node3 cascades from node2 (`replicatefrom`).
node2's pre_promote hook refuses, so when node1's host dies only node3 may become the leader. To be
sure node2 really tries (and is refused) rather than merely losing the race to node3, node3's agent
is frozen (SIGSTOP) until node2's refusal is logged: node2 is then the only member that may race.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

SCOPE = "itcb"
CALLBACK_SCRIPT = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/callbacks.log"
"""
REFUSING_PRE_PROMOTE = """#!/bin/sh
echo refused >> "$(dirname "$0")/pre_promote.log"
exit 1
"""
REFUSAL_LINE = "Promotion cancelled because the pre-promote script failed"


def _extra(node: Node) -> dict[str, Any]:
    script = node.dir / "callback.sh"
    config: dict[str, Any] = {"postgresql": {"callbacks": {
        action: str(script) for action in ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")}}}
    if node.name == "node2":
        config["postgresql"]["pre_promote"] = str(node.dir / "pre_promote.sh")
    if node.name == "node3":
        config["tags"] = {"replicatefrom": "node2"}
    return config


def _install_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)
    shutil.chown(path, "postgres", "postgres")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-cb-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope=SCOPE, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         extra_config=_extra)
    try:
        local.prepare()
        for node in local.nodes:
            _install_script(node.dir / "callback.sh", CALLBACK_SCRIPT)
        _install_script(local.node("node2").dir / "pre_promote.sh", REFUSING_PRE_PROMOTE)
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


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _callbacks(node: Node) -> list[str]:
    return _lines(node.dir / "callbacks.log")


def _expect_callback(node: Node, line: str, timeout: float = 60) -> None:
    """Wait, at most `timeout` seconds, for `line` ("<action> <role> <scope>") in `node`'s
    callbacks.log; fail with what the log holds instead."""
    try:
        wait_until(lambda: line in _callbacks(node), timeout, f"{node.name}'s callback {line!r}")
    except TimeoutError as exc:
        pytest.fail(f"{exc}; {node.name}'s callbacks.log holds {_callbacks(node)}")


def _expect_logged(node: Node, text: str, timeout: float) -> None:
    """Wait, at most `timeout` seconds, for `text` in `node`'s agent log; fail with the log's tail."""
    def log() -> str:
        return node.log_path.read_text(errors="replace")

    try:
        wait_until(lambda: text in log(), timeout, f"{text!r} in {node.name}'s log")
    except TimeoutError as exc:
        pytest.fail(f"{exc}; its log ends with:\n" + "\n".join(log().splitlines()[-30:]))


def _sender_port(cluster: LocalCluster, node: Node) -> int | None:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'").fetchone()
    return int(row[0]) if row else None


def _in_recovery(cluster: LocalCluster, node: Node) -> bool:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def test_callbacks_are_called_with_action_role_and_scope(cluster: LocalCluster) -> None:
    _expect_callback(cluster.node("node1"), f"on_start primary {SCOPE}")
    _expect_callback(cluster.node("node2"), f"on_start replica {SCOPE}")
    _expect_callback(cluster.node("node3"), f"on_start replica {SCOPE}")
    for node in cluster.nodes:  # every call so far has exactly the three arguments, the scope last
        calls = [line.split(" ") for line in _callbacks(node)]
        assert all(len(call) == 3 and call[2] == SCOPE for call in calls), (node.name, calls)


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
    node1, node2, node3 = cluster.node("node1"), cluster.node("node2"), cluster.node("node3")
    wait_until(lambda: node3.get("/replica")[0] == 200, 60, "node3 streaming")
    assert node3.agent is not None
    frozen = node3.agent.pid
    # node3's agent stops answering (its PostgreSQL keeps streaming): node2 sees it unreachable, so
    # node2 alone races for the free key and must be stopped by its own pre_promote hook.
    os.kill(frozen, signal.SIGSTOP)
    try:
        cluster.kill_host(node1)
        _expect_logged(node2, REFUSAL_LINE, 120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    assert _lines(node2.dir / "pre_promote.log"), "node2's pre_promote hook never ran"
    assert _in_recovery(cluster, node2), "node2 promoted although its pre_promote hook refused"
    wait_until(lambda: node3.get("/primary")[0] == 200, 90, "node3 to become the primary")
    _expect_callback(node3, f"on_role_change primary {SCOPE}")
    assert node2.get("/primary")[0] != 200
    assert _in_recovery(cluster, node2)
    assert f"on_role_change primary {SCOPE}" not in _callbacks(node2), _callbacks(node2)
    # node2 now follows node3.
    wait_until(lambda: node2.get("/replica")[0] == 200, 60, "node2 streaming from node3")
