"""A replica that runs but does not stream publishes `replication_state: in archive recovery` when it has
a restore_command (issue 12 item 8), in its member JSON (seen through /cluster) and its /patroni status,
as Patroni does; without one it publishes none. Streaming again, it says "streaming" again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]


def _restore_command(node: Node) -> dict[str, Any]:
    # node3 has none; 'false' finds nothing in the archive, but PostgreSQL tries it: archive recovery all the same
    return {} if node.name == "node3" else {"postgresql": {"recovery_conf": {"restore_command": "false"}}}


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("it-archive", "itarchive", extra_config=_restore_command) as local:
        yield local


def _sql(cluster: LocalCluster, node: Node, query: str) -> None:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        conn.execute(query)


def _cut_off(cluster: LocalCluster, node: Node, cut: bool) -> None:
    """Point the WAL receiver at nothing (postgresql.auto.conf wins over pgwarden's file), or back."""
    if cut:
        _sql(cluster, node, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 connect_timeout=1'")
    else:
        _sql(cluster, node, "ALTER SYSTEM RESET primary_conninfo")
    _sql(cluster, node, "SELECT pg_reload_conf()")


def _published(cluster: LocalCluster, node: Node) -> tuple[str | None, str | None]:
    """(replication_state in /patroni, the member's state in /cluster: its replication_state if any)."""
    own = node.get("/patroni")[1] or {}
    members = (cluster.cluster_json() or {}).get("members", [])
    listed = next((m.get("state") for m in members if m.get("name") == node.name), None)
    return own.get("replication_state"), listed


def _wait_published(cluster: LocalCluster, node: Node, expected: tuple[str | None, str | None]) -> None:
    wait_until(lambda: _published(cluster, node) == expected, 30, f"{node.name} to publish {expected}")


def test_a_replica_that_does_not_stream_is_in_archive_recovery_only_with_a_restore_command(
        cluster: LocalCluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    replicas = [n for n in cluster.nodes if n is not leader]
    for node in replicas:
        _cut_off(cluster, node, True)
    try:
        for node in replicas:
            expected = (None, "running") if node.name == "node3" else ("in archive recovery",) * 2
            _wait_published(cluster, node, expected)
            assert node.get("/replica")[0] == 503  # pgwarden's deliberate difference: healthy only while streaming
    finally:
        for node in replicas:
            _cut_off(cluster, node, False)
    for node in replicas:
        _wait_published(cluster, node, ("streaming", "streaming"))
