"""Synchronous mode on a real 3-node cluster: the primary manages synchronous_standby_names and /sync,
only the synchronous standby may take over, and no acknowledged commit is lost on host loss."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.localcluster import DEMO_DCS, ETCD_BIN, PG_BIN, LocalCluster, Node, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-sync-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope="itsync", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         dcs={**DEMO_DCS, "synchronous_mode": "on"})
    try:
        local.start()
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _sync_key(cluster: LocalCluster) -> dict[str, object]:
    leader = cluster.leader()
    assert leader is not None
    with psycopg.connect(cluster.conninfo(leader), autocommit=True, connect_timeout=2) as conn:
        ssn = conn.execute("SHOW synchronous_standby_names").fetchone()
    body = cluster.cluster_json() or {}
    sync = [m["name"] for m in body.get("members", []) if m.get("role") == "sync_standby"]
    return {"ssn": ssn[0] if ssn else "", "sync": sync}


def _synchronous(cluster: LocalCluster) -> str | None:
    try:
        state = _sync_key(cluster)
    except (psycopg.Error, AssertionError):
        return None
    names = state["sync"]
    assert isinstance(names, list)
    return names[0] if len(names) == 1 and names[0] in str(state["ssn"]) else None


def _post(node: Node, path: str, body: dict[str, object]) -> tuple[int, str]:
    request = urllib.request.Request(node.api_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_one_synchronous_standby_is_listed_and_published(cluster: LocalCluster) -> None:
    cluster.wait_healthy(120)
    wait_until(lambda: _synchronous(cluster) is not None, 60, "a synchronous standby in ssn and /sync")


def test_switchover_to_an_asynchronous_replica_is_refused(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(120)
    sync = _synchronous(cluster)
    assert sync is not None
    other = next(n for n in cluster.nodes if n is not leader and n.name != sync)
    status, text = _post(leader, "/switchover", {"leader": leader.name, "candidate": other.name})
    assert status == 412, text


def test_host_loss_promotes_the_synchronous_standby_without_losing_commits(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(120)
    wait_until(lambda: _synchronous(cluster) is not None, 60, "a synchronous standby")
    sync = _synchronous(cluster)
    acknowledged = []
    with psycopg.connect(cluster.conninfo(leader), autocommit=True, connect_timeout=2) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS acked (id int PRIMARY KEY)")
        for i in range(200):
            conn.execute("INSERT INTO acked VALUES (%s)", (i,))
            acknowledged.append(i)
    cluster.kill_host(leader)
    wait_until(lambda: cluster.leader() is not None, 90, "a new primary")
    new = cluster.leader()
    assert new is not None and new.name == sync, "only the synchronous standby may take over"
    with psycopg.connect(cluster.conninfo(new), autocommit=True, connect_timeout=2) as conn:
        present = {row[0] for row in conn.execute("SELECT id FROM acked").fetchall()}
    assert set(acknowledged) <= present
