"""A running replica whose timeline forked off the new leader's before its replay position is rewound
and streams again, without a restart of its agent (issue 20 item 9).

Recipe: replica B (tag nofailover) receives writes of the primary L that replica A does not (L's WAL
sender for A is frozen with SIGSTOP), then L's host dies. A wins the race and promotes: timeline 2 forks
off timeline 1 before B's replay position. B follows A and fetches `00000002.history` (the test puts it
there while B's agent is frozen, see below), and PostgreSQL refuses the new timeline for ever ("new
timeline 2 forked off current database system timeline 1 before current recovery point"). Before the
fix the agent then said "following a leader" until it was restarted; now it sees the fork, stops B
cleanly and rewinds it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
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


def _tags(node: Node) -> dict[str, Any]:
    return {"tags": {"nofailover": True}} if node.name == "node3" else {}


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-fork-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope="itfork", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         extra_config=_tags)
    try:
        local.prepare()
        local.start_etcd()
        local.start_agent(local.node("node1"))  # node1 bootstraps: node3 (nofailover) is a replica
        wait_until(lambda: local.leader() is local.node("node1"), 60, "node1 to bootstrap")
        local.start_agent(local.node("node2"))
        local.start_agent(local.node("node3"))
        local.wait_healthy(120)
        yield local
    finally:
        local.stop()
        if not os.environ.get("PGWARDEN_KEEP_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)


def _sql(cluster: LocalCluster, node: Node, query: str) -> Any:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        cur = conn.execute(query)
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


def _try_sql(cluster: LocalCluster, node: Node, query: str) -> Any:
    try:
        return _sql(cluster, node, query)
    except psycopg.Error:
        return None


@pytest.mark.parametrize("history_first", [True, False], ids=["history-file-first", "as-it-comes"])
def test_a_running_replica_on_a_forked_timeline_is_rewound_and_streams_again(cluster: LocalCluster,
                                                                             history_first: bool) -> None:
    """history_first: the forked replica has the new timeline's history file before the DCS has the
    leader's `history` row (the reported case). Otherwise whichever comes first: either way the replica
    is rewound, never re-cloned (an immediate stop used to leave it unrewindable)."""
    old, new, forked = cluster.node("node1"), cluster.node("node2"), cluster.node("node3")
    agent_pid = forked.agent.pid if forked.agent else None
    _sql(cluster, old, "CREATE TABLE fork_probe (id int, origin text)")
    _sql(cluster, old, "INSERT INTO fork_probe VALUES (1, 'common')")
    wait_until(lambda: _try_sql(cluster, new, "SELECT count(*) FROM fork_probe") == 1
               and _try_sql(cluster, forked, "SELECT count(*) FROM fork_probe") == 1, 30, "the common row everywhere")

    sender = _sql(cluster, old, "SELECT pid FROM pg_stat_replication WHERE application_name = 'node2'")
    assert sender
    os.kill(sender, signal.SIGSTOP)  # the old primary sends `new` nothing more
    try:
        _sql(cluster, old, "INSERT INTO fork_probe SELECT g, 'old timeline' FROM generate_series(100, 1100) g")
        old_end = _sql(cluster, old, "SELECT pg_current_wal_lsn()::text")
        wait_until(lambda: _try_sql(cluster, forked, f"SELECT pg_last_wal_replay_lsn() >= '{old_end}'") is True,
                   30, "the nofailover replica to replay the old primary's last writes")
        assert forked.agent is not None
        if history_first:
            os.kill(forked.agent.pid, signal.SIGSTOP)  # see below
        cluster.kill_host(old)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sender, signal.SIGKILL)  # never resumed: it would send `new` the rest before it dies
    started = time.monotonic()
    try:
        wait_until(lambda: cluster.leader() is new, 60, "the lagging replica to win the race (the other is nofailover)")
        if history_first:
            # Fetched from its new upstream, the new timeline's history file reaches the forked replica's
            # pg_wal before the leader's `history` row reaches the DCS (written after the post-promote
            # checkpoint) whenever that replica follows the new leader at once. Put it there while its agent
            # is frozen, so that this case does not depend on who wins that race.
            history = new.data_dir / "pg_wal" / "00000002.history"
            wait_until(history.exists, 30, "the new timeline's history file")
            copy = forked.data_dir / "pg_wal" / "00000002.history"
            shutil.copyfile(history, copy)
            shutil.copystat(history, copy)
            stat = history.stat()
            os.chown(copy, stat.st_uid, stat.st_gid)
    finally:
        if history_first:
            os.kill(forked.agent.pid, signal.SIGCONT)
    _sql(cluster, new, "INSERT INTO fork_probe VALUES (2, 'new timeline')")

    def streams_from_new() -> bool:
        port = _try_sql(cluster, forked, "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
        return port == new.pg_port and forked.get("/replica")[0] == 200

    wait_until(streams_from_new, 90, "the forked replica to stream from the new leader")
    print(f"forked replica streaming from the new leader {time.monotonic() - started:.1f}s after the host loss")
    assert forked.agent is not None and forked.agent.pid == agent_pid, "the agent was not restarted"
    wait_until(lambda: _try_sql(cluster, forked, "SELECT string_agg(origin, ',' ORDER BY id) FROM fork_probe "
                                                 "WHERE id < 100") == "common,new timeline"
               and _try_sql(cluster, forked, "SELECT count(*) FROM fork_probe WHERE id >= 100") == 0,
               30, "the new timeline's rows, and none of the old timeline's, on the rewound replica")
    log = forked.log_path.read_text(errors="replace")
    assert "running pg_rewind from node2" in log
    assert "moving the data directory aside" not in log, "rewound, not re-cloned"
