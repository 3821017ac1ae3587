"""A real 3-node cluster: etcd, three pgwarden agents (as the postgres user), three PostgreSQL 15.

Every test runs a `WritableWatcher` (tests/support/cluster.py) that polls every node's PostgreSQL
throughout and fails the test if two of them accept writes at the same time. Measured times are printed
(run with -s to see them).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import WritableWatcher

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope="it", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    try:
        local.start()
        yield local
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            _dump_logs(local)
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def watched(cluster: LocalCluster) -> Iterator[tuple[LocalCluster, WritableWatcher]]:
    with WritableWatcher(cluster) as watcher:
        yield cluster, watcher
    assert not watcher.violations, "\n".join(watcher.violations)


def _dump_logs(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            print(f"==== {node.name} agent log (tail)")
            print("\n".join(node.log_path.read_text(errors="replace").splitlines()[-40:]))


def _sql(cluster: LocalCluster, node: Node, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        return conn.execute(query).fetchall()


def _member_copies(cluster: LocalCluster, node: Node) -> set[str]:
    """The physical slots on `node` that reserve WAL."""
    return {str(row[0]) for row in _sql(cluster, node, "SELECT slot_name FROM pg_replication_slots "
                                                       "WHERE slot_type = 'physical' AND restart_lsn IS NOT NULL")}


def _insert(cluster: LocalCluster, node: Node, value: str) -> None:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pgwarden_it (v text)")
        conn.execute("INSERT INTO pgwarden_it VALUES (%s)", (value,))


def _wait_replicated(cluster: LocalCluster, value: str, nodes: list[Node]) -> None:
    def everywhere() -> bool:
        try:
            return all(_sql(cluster, n, f"SELECT count(*) FROM pgwarden_it WHERE v = '{value}'")[0][0] == 1
                       for n in nodes)
        except psycopg.Error:
            return False

    wait_until(everywhere, 30, f"row {value!r} on {[n.name for n in nodes]}")


def test_bootstrap_one_primary_two_streaming_replicas_with_slots(
        watched: tuple[LocalCluster, WritableWatcher]) -> None:
    cluster, _ = watched
    started = time.monotonic()
    leader = cluster.wait_healthy(120)
    print(f"\nbootstrap: healthy after {time.monotonic() - started:.1f}s, leader {leader.name}")
    replicas = [n for n in cluster.nodes if n is not leader]
    slots = {row[0]: row[1] for row in _sql(cluster, leader, "SELECT slot_name, active FROM pg_replication_slots")}
    assert slots == {n.name: True for n in replicas}
    wait_until(lambda: all(m.get("state") in ("streaming", "running")
                           for m in (cluster.cluster_json() or {}).get("members", [])), 20,
               "members reported running/streaming in /cluster")
    body = cluster.cluster_json()
    assert body is not None
    roles = {m["name"]: (m["role"], m["state"]) for m in body["members"]}
    assert roles == {n.name: ("leader", "running") if n is leader else ("replica", "streaming")
                     for n in cluster.nodes}
    _insert(cluster, leader, "bootstrap")
    _wait_replicated(cluster, "bootstrap", replicas)
    # The REST contract the load balancers use: exactly one /primary, replicas on /replica.
    assert [n.get("/primary")[0] for n in cluster.nodes].count(200) == 1
    assert all(n.get("/replica")[0] == 200 for n in replicas)
    assert leader.get("/replica")[0] == 503


def test_host_loss_of_the_primary_fails_over_and_the_old_node_rejoins(
        watched: tuple[LocalCluster, WritableWatcher]) -> None:
    cluster, _ = watched
    old = cluster.wait_healthy(120)
    _insert(cluster, old, "before-failover")
    _wait_replicated(cluster, "before-failover", [n for n in cluster.nodes if n is not old])
    # Each replica keeps copies of the other members' slots (the leader's included), holding WAL.
    wait_until(lambda: all(_member_copies(cluster, n) == {m.name for m in cluster.nodes if m is not n}
                           for n in cluster.nodes if n is not old), 30, "the replicas' copies of the member slots")
    killed = time.monotonic()
    cluster.kill_host(old)
    wait_until(lambda: cluster.leader() is not None, 60, "a new primary")
    new = cluster.leader()
    assert new is not None and new is not old
    print(f"\nhost loss: new primary {new.name} after {time.monotonic() - killed:.1f}s")
    _insert(cluster, new, "after-failover")
    # The history row is written after the post-promote checkpoint, a moment after writes are possible.
    wait_until(lambda: bool(new.get("/history")[1]), 20, "the history row of the promotion")
    history = new.get("/history")[1]
    assert history and history[-1][0] == 1 and history[-1][4] == new.name
    # The new primary had its slots before the promotion: the old primary's keeps the WAL from at or before
    # the switch point, for its return.
    positions = dict(_sql(cluster, new, "SELECT slot_name, restart_lsn - '0/0' FROM pg_replication_slots"))
    assert set(positions) == {n.name for n in cluster.nodes if n is not new}
    assert positions[old.name] is not None and int(positions[old.name]) <= history[-1][1]  # type: ignore[call-overload]

    cluster.start_agent(old)
    restarted = time.monotonic()
    cluster.wait_healthy(120)
    print(f"host loss: old primary {old.name} streaming again after {time.monotonic() - restarted:.1f}s")
    assert cluster.leader() is new
    _wait_replicated(cluster, "after-failover", [n for n in cluster.nodes if n is not new])
    assert old.get("/patroni")[1]["timeline"] == 2  # type: ignore[index]

    # A lost `history` write is repaired by the leader from PostgreSQL's own timeline history.
    subprocess.run(["/usr/bin/etcdctl", f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", "del",
                    f"/service/{cluster.scope}/history"], check=True, capture_output=True,
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    wait_until(lambda: (new.get("/history")[1] or [[0]])[-1][0] == 1, 30, "history repaired by the leader")
    # The repair reads PostgreSQL's own history file: the promotion recorded that same switch point.
    assert new.get("/history")[1][-1][1] == history[-1][1]  # type: ignore[index]
    # ... which the promotion could read, too (issue 11: it could not on PostgreSQL 15).
    assert "history file unreadable" not in new.log_path.read_text(errors="replace")


def test_postmaster_crash_on_the_primary_restarts_in_place(watched: tuple[LocalCluster, WritableWatcher]) -> None:
    cluster, _ = watched
    leader = cluster.wait_healthy(120)
    old_pid = leader.postmaster_pid()
    crashed = time.monotonic()
    cluster.kill_postmaster(leader)
    # Either /primary is seen to stop answering 200, or the restart in place was quicker than this poll
    # (seen in CI: PostgreSQL was back within 0.12 s).
    wait_until(lambda: leader.get("/primary", 0.5)[0] != 200 or leader.postmaster_pid() not in (None, old_pid), 5,
               "/primary to stop answering 200, or a new postmaster")
    print(f"\npostmaster crash: /primary not 200, or restarted, after {time.monotonic() - crashed:.2f}s")
    wait_until(lambda: leader.postmaster_pid() not in (None, old_pid) and leader.get("/primary")[0] == 200, 60,
               "the primary back in place")
    print(f"postmaster crash: primary {leader.name} writable again after {time.monotonic() - crashed:.1f}s")
    assert cluster.leader() is leader
    assert leader.get("/patroni")[1]["timeline"] == 1  # type: ignore[index]  # no failover happened
    cluster.wait_healthy(60)


def test_sigterm_of_the_primary_agent_hands_over_cleanly(watched: tuple[LocalCluster, WritableWatcher]) -> None:
    cluster, _ = watched
    old = cluster.wait_healthy(120)
    cluster.wait_healthy(30)  # replicas caught up, so a handover is possible
    stopped = time.monotonic()
    assert old.agent is not None
    old.agent.send_signal(signal.SIGTERM)
    old.agent.wait(60)
    old.agent = None
    assert old.postmaster_pid() is None, "the agent stops its PostgreSQL on SIGTERM"
    wait_until(lambda: cluster.leader() is not None, 30, "a new primary after the handover")
    new = cluster.leader()
    assert new is not None and new is not old
    elapsed = time.monotonic() - stopped
    print(f"\nSIGTERM handover: new primary {new.name} after {elapsed:.1f}s")
    # A clean handover releases the key instead of letting the lease expire (no timing assertion).
    assert "handing the leader key over" in old.log_path.read_text(errors="replace")
    cluster.start_agent(old)
    cluster.wait_healthy(120)


def test_etcd_down_at_agent_start_waits_and_touches_no_data() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-"))  # not tmp_path: postgres must reach it
    workdir.chmod(0o755)
    cluster = LocalCluster(workdir, scope="it-nodcs", size=1, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    try:
        cluster.prepare()
        node = cluster.nodes[0]
        cluster.start_agent(node)
        wait_until(lambda: "DCS is not accessible" in node.log_path.read_text(errors="replace"), 30,
                   "the agent to say the DCS is not accessible")
        time.sleep(2)
        assert node.agent is not None and node.agent.poll() is None, "the agent keeps waiting"
        assert not node.data_dir.exists() or not any(node.data_dir.iterdir()), "no data touched"
        assert node.get("/health")[0] == 503
        cluster.start_etcd()
        cluster.wait_healthy(120)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
