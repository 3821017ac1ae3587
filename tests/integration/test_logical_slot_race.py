"""The failover race prefers a replica whose copies of the permanent logical slots are ready (issue 16).

One 3-node cluster in asynchronous mode (there the new primary is the race's choice, not synchronous
mode's), configured as a Patroni user writes it (`wal_level: logical` under bootstrap.dcs), to which the
user adds the slot in the running cluster (`edit-config -s 'slots.cdc={"type": "logical", ...}'`).

node3 cannot make its copy: its `pg_replslot` directory is not writable for the postgres user (as after a
restore or a manual repair done as root), so each copy attempt fails to write the slot's state file and
backs off, and node3 says `logical_slots_ready: false` while node2's copy is ready. node3 is also the
replica the race would prefer without the slot rule: both replicas replayed the same WAL (no writes at the
host loss) and node3 has the higher `failover_priority` tag, the race's tie-break at equal positions
(`core.race._compare_with_peer`). The slot rule (`core.race._slot_order`) comes first: node2 must win the
race after the primary's host dies, and node3 must follow it. Once the directory is repaired and node3's
service restarted, node3 copies the slot from its new leader. The tests run in order.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.model import lsn_from_text
from tests.integration.test_logical_slots import CYCLE, READY, SLOT, copy_ready, edit_config, slot_type, sql, wait
from tests.support.cluster import (
    agent_log_tails,
    etcd_json,
    pgwarden,
    print_logs_if_failed,
    running_user_cluster,
    user_config_path,
    wait_healthy_or_fail,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

PRIORITY = {"node1": 1, "node2": 1, "node3": 2}
"""node3, the replica without ready copies, wins a tie of WAL positions by its failover_priority."""

SLOT_SPEC = '{"type": "logical", "database": "postgres", "plugin": "test_decoding"}'
COPY_FAILED = "writing slot state files failed"
"""What node3's agent logs when a copy cannot be written (`postgres.controller.write_slot_states`)."""
RACE_LINE = "my copies of the logical slots are not ready, node2's are"
"""node3's verdict in the race (`core.render`, Why.RACE_SLOTS_NOT_READY)."""
RETRY_MARGIN = 15.0
"""A failed copy is retried 30 s later at the earliest (`core.slots.COPY_BACKOFF`); the host loss comes
within this many seconds of node3's last failure, so that no retry restarts node3 around the race."""

PATRONI_YML = """\
# A Patroni user's configuration ready for CDC (wal_level logical), asynchronous; the slot comes later.
scope: ${scope}
namespace: /service/
name: ${name}

restapi:
  listen: 127.0.0.1:${api_port}
  connect_address: 127.0.0.1:${api_port}

etcd3:
  host: ${etcd}

bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: logical
        wal_keep_size: 128MB
        max_connections: 100
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256

postgresql:
  listen: 127.0.0.1:${pg_port}
  connect_address: 127.0.0.1:${pg_port}
  data_dir: ${node_dir}/data
  bin_dir: ${pg_bin}
  pgpass: ${node_dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: demo-superuser-secret
    replication:
      username: replicator
      password: demo-replication-secret
    rewind:
      username: rewind_user
      password: demo-rewind-secret
  parameters:
    unix_socket_directories: '${node_dir}'
  use_pg_rewind: true
  remove_data_directory_on_rewind_failure: true

tags:
  failover_priority: ${priority}

watchdog:
  mode: off
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Prepared only: the first test starts node1 first, so that it is the primary."""
    with running_user_cluster("it-cdc-race", "itcdcrace", PATRONI_YML, start=False,
                              values=lambda node: {"priority": PRIORITY[node.name]}) as local:
        yield local


@pytest.fixture(scope="module")
def replslot(cluster: LocalCluster) -> Iterator[ReplslotLock]:
    """node3's pg_replslot, made writable again at the end whatever happened."""
    lock = ReplslotLock(cluster.node("node3"))
    try:
        yield lock
    finally:
        lock.release()


@pytest.fixture(autouse=True)
def _logs(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_logs_if_failed(cluster, request)


# --------------------------------------------------------------------------------------------------
# Helpers


class ReplslotLock:
    """A node's `pg_replslot` made read-only for its owner (this test runs as root, or as the owner):
    PostgreSQL still starts, reads and updates the slots in it, but no new slot directory can be made."""

    def __init__(self, node: Node) -> None:
        self.path = node.data_dir / "pg_replslot"
        self.locked = False

    def lock(self) -> None:
        self.path.chmod(0o500)
        self.locked = True

    def release(self) -> None:
        if self.locked and self.path.exists():
            self.path.chmod(0o700)
        self.locked = False


def ready_copy(cluster: LocalCluster, node: Node) -> bool:
    """The member JSON says the copies are ready, and the copy is there."""
    return copy_ready(cluster, node) and slot_type(cluster, node) == "logical"


def member_says_ready(cluster: LocalCluster, node: Node) -> object:
    return (etcd_json(cluster, f"members/{node.name}") or {}).get("logical_slots_ready")


def log_lines(node: Node, text: str) -> list[str]:
    return [line for line in node.log_path.read_text(errors="replace").splitlines() if text in line]


def since_last_failed_copy(node: Node) -> float | None:
    """Seconds from `node`'s last failed copy to its agent's last log line (about now: it logs every cycle),
    both read in the agent's own clock; None before any failure."""
    stamps = [(COPY_FAILED in line, _stamp(line)) for line in node.log_path.read_text(errors="replace").splitlines()]
    times = [(failed, at) for failed, at in stamps if at is not None]
    failures = [at for failed, at in times if failed]
    return (times[-1][1] - failures[-1]).total_seconds() if failures else None


def _stamp(line: str) -> datetime | None:
    match = re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line)
    return datetime.strptime(match[0], "%Y-%m-%d %H:%M:%S,%f") if match else None


def physical_slots(cluster: LocalCluster, node: Node) -> int:
    with contextlib.suppress(psycopg.Error):
        return int(sql(cluster, node, "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'physical'")[0][0])
    return 0


def common_position(cluster: LocalCluster, primary: Node, replicas: list[Node]) -> int | None:
    """The primary's WAL position when every replica is exactly that far, as the race measures a replica
    (`LocalPg.lsn`: the further of received and replayed; the received position alone may lag behind at a
    segment's start after a restart, until the next record)."""
    try:
        ((mine,),) = sql(cluster, primary, "SELECT pg_current_wal_lsn()::text")
        seen = {str(sql(cluster, node, _POSITION)[0][0]) for node in replicas}
    except psycopg.Error:
        return None
    return lsn_from_text(str(mine)) if seen == {str(mine)} else None


_POSITION = "SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"


def wait_for_common_position(cluster: LocalCluster, primary: Node, replicas: list[Node]) -> int:
    found: list[int] = []

    def check() -> bool:
        lsn = common_position(cluster, primary, replicas)
        if lsn is not None:
            found.append(lsn)
        return lsn is not None

    wait(cluster, check, 60, "every replica at the primary's position")
    return found[-1]


def kill_between_copies(cluster: LocalCluster, primary: Node, replicas: list[Node], failing: Node) -> int:
    """The primary's host killed while every replica is at its position (returned) and `failing`'s last
    failed copy is recent: its next attempt, which restarts its PostgreSQL, comes well after the race."""
    for _ in range(3):
        since = since_last_failed_copy(failing)
        if since is None or since >= RETRY_MARGIN:
            count = len(log_lines(failing, COPY_FAILED))
            wait(cluster, lambda c=count: len(log_lines(failing, COPY_FAILED)) > c, 150,
                 f"{failing.name}'s next failed copy")
        tied = wait_for_common_position(cluster, primary, replicas)
        since = since_last_failed_copy(failing)
        if since is not None and since < RETRY_MARGIN:
            cluster.kill_host(primary)
            return tied
    raise AssertionError(f"no quiet moment between {failing.name}'s copy attempts{agent_log_tails(cluster)}")


def switch_point(cluster: LocalCluster, node: Node) -> int:
    """Where `node`'s promotion ended timeline 1: the WAL it had when it won the race."""
    ((history,),) = sql(cluster, node, "SELECT pg_read_file('pg_wal/00000002.history')")
    first = str(history).splitlines()[0].split()
    assert first[0] == "1", history
    return lsn_from_text(first[1])


def upstream_port(cluster: LocalCluster, node: Node) -> int | None:
    with contextlib.suppress(psycopg.Error):
        rows = sql(cluster, node, "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
        return int(rows[0][0]) if rows else None
    return None


def listed(node: Node) -> str:
    done = pgwarden("list", "-c", str(user_config_path(node)))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --------------------------------------------------------------------------------------------------
# Tests


def test_a_replica_whose_copies_are_not_ready_is_not_promoted_when_a_ready_one_exists(
        cluster: LocalCluster, replslot: ReplslotLock) -> None:
    node1, node2, node3 = cluster.nodes
    cluster.start_etcd()
    cluster.start_agent(node1)
    wait(cluster, lambda: cluster.leader() is node1, 120, "node1 bootstrapping as the primary")
    cluster.start_agent(node2)
    cluster.start_agent(node3)
    wait_healthy_or_fail(cluster, 120)
    # node3 has made its copies of the other members' physical slots (node1's, node2's) before its directory
    # is locked: only the new logical slot's directory is refused.
    wait(cluster, lambda: physical_slots(cluster, node3) == 2, 2 * CYCLE, "node3's copies of the member slots")
    replslot.lock()

    edit_config(node1, f"slots.{SLOT}={SLOT_SPEC}")
    wait(cluster, lambda: ready_copy(cluster, node2), READY, f"a ready copy of {SLOT} on node2")
    wait(cluster, lambda: bool(log_lines(node3, COPY_FAILED)), READY, "node3's copy failing")
    assert member_says_ready(cluster, node1) is True and member_says_ready(cluster, node3) is False
    assert "Logical slot copies ready: node1 yes, node2 yes, node3 no" in listed(node1)

    # No writes: both replicas have replayed the primary's last record, so the race's position rule
    # ties and node3's failover_priority (2 against 1) would make it the winner.
    tied = kill_between_copies(cluster, node1, [node2, node3], node3)

    wait(cluster, lambda: cluster.leader() is not None, 90, "a new leader")
    leader = cluster.leader()
    assert leader is node2, f"{leader.name if leader else 'nobody'} won the race{agent_log_tails(cluster)}"
    # Why node2 won: it was promoted with exactly the WAL both replicas had (so without the slot rule the
    # tie-break would have chosen node3), or node3 said it stood back for its copies. Either one shows the
    # slot rule decided; either is accepted because neither is certain on its own: a record the primary
    # wrote at the instant of its death (a periodic running-transactions record) can reach node2, and
    # node2 may take the key before node3's cycle sees it free.
    promoted_at, stood_back = switch_point(cluster, node2), log_lines(node3, RACE_LINE)
    assert promoted_at == tied or stood_back, f"node2 promoted at {promoted_at}, not {tied}; {stood_back=}"
    wait(cluster, lambda: upstream_port(cluster, node3) == node2.pg_port, 60, "node3 following node2")
    assert member_says_ready(cluster, node3) is False


def test_the_replica_copies_the_slot_from_the_new_leader_once_repaired(cluster: LocalCluster,
                                                                       replslot: ReplslotLock) -> None:
    _, node2, node3 = cluster.nodes
    assert cluster.leader() is node2
    replslot.release()
    # The operator repairs the directory and restarts the service: its copy is retried at once rather
    # than after the failed copies' backoff (30 s, doubling).
    cluster.stop_agent(node3)
    cluster.start_agent(node3)
    wait(cluster, lambda: ready_copy(cluster, node3), READY, f"a ready copy of {SLOT} on node3")
    assert log_lines(node3, f"copied logical slots {SLOT} from node2")
    assert "node2 yes, node3 yes" in listed(node2)
