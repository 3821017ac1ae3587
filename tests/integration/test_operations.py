"""Operations on one real cluster: a /config change reaches every node, a restart-only parameter shows up
as pending_restart, and a scheduled switchover fires at its time."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-ops-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope="itops", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    try:
        local.start()
        local.wait_healthy(120)
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _request(node: Node, method: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(node.api_url + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _setting(cluster: LocalCluster, node: Node, name: str) -> str | None:
    try:
        with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
            return str(row[0]) if row else None
    except psycopg.Error:
        return None


def test_a_config_change_reaches_every_node(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(60)
    status, text = _request(leader, "PATCH", "/config", {"postgresql": {"parameters": {"work_mem": "8MB"}}})
    assert status == 200, text
    wait_until(lambda: all(_setting(cluster, n, "work_mem") == "8MB" for n in cluster.nodes), 30,
               "work_mem reloaded on every node")


def test_a_switchover_leaves_no_false_pending_restart_and_reads_the_history_file(cluster: LocalCluster) -> None:
    """Issue 11: after a promotion the new primary rewrites postgresql.conf for its role and reloads it;
    that must not show `pending_restart` (nothing changed that needs a restart), and the promotion must
    have read the new timeline's history file (no 'history file unreadable' warning)."""
    leader = cluster.wait_healthy(60)
    candidate = next(n for n in cluster.nodes if n is not leader)
    # A just-cloned replica may still be catching up: a switchover to it is refused until it has.
    wait_until(lambda: candidate.get("/replica?lag=1MB")[0] == 200, 30, "the candidate to catch up")
    log_start = candidate.log_path.stat().st_size
    status, text = _request(leader, "POST", "/switchover", {"leader": leader.name, "candidate": candidate.name})
    assert status == 200, text
    wait_until(lambda: cluster.leader() is candidate, 60, "the switchover to take place")

    def new_log() -> str:
        with candidate.log_path.open("rb") as f:
            f.seek(log_start)
            return f.read().decode(errors="replace")

    wait_until(lambda: "applied changed PostgreSQL configuration" in new_log(), 30,
               "the new primary to reload its rewritten configuration")
    time.sleep(4.5)  # two HA cycles (loop_wait 2) after the reload: the member key is republished each cycle
    assert "pending_restart" not in (candidate.get("/patroni")[1] or {}), candidate.get("/patroni")
    members = {m["name"]: m for m in (cluster.cluster_json() or {}).get("members", [])}
    assert "pending_restart" not in members[candidate.name], members[candidate.name]
    assert _setting(cluster, candidate, "transaction_read_only") == "off"
    assert "history file unreadable" not in new_log()
    cluster.wait_healthy(60)


def test_a_restart_only_parameter_is_reported_as_pending_restart(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(60)
    patch = {"postgresql": {"parameters": {"max_prepared_transactions": 7}}}
    status, text = _request(leader, "PATCH", "/config", patch)
    assert status == 200, text
    wait_until(lambda: all((n.get("/patroni")[1] or {}).get("pending_restart") for n in cluster.nodes), 30,
               "pending_restart on every node")


def test_a_scheduled_switchover_fires_at_its_time(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(60)
    candidate = next(n for n in cluster.nodes if n is not leader)
    at = datetime.now(UTC) + timedelta(seconds=6)
    status, text = _request(leader, "POST", "/switchover", {"leader": leader.name, "candidate": candidate.name,
                                                            "scheduled_at": at.isoformat()})
    assert status == 202, text
    assert cluster.leader() is leader, "nothing happens before the scheduled time"
    wait_until(lambda: cluster.leader() is candidate, 60, "the scheduled switchover to take place")
    assert datetime.now(UTC) >= at
