"""CDC through failover on real processes (issue 16): a permanent logical slot that fails over.

One 3-node cluster, configured as a Patroni user writes it: `slots: {cdc: {type: logical, database:
postgres, plugin: test_decoding}}` and `wal_level: logical` under bootstrap.dcs, synchronous_mode on (so
an acknowledged write survives the loss of the primary's host). A consumer (pg_recvlogical through a
multi-host DSN with target_session_attrs=read-write, restarted whenever it exits, resuming from the
slot's own position) reads the changes of a writer inserting numbered rows from the first test to the
end of the second. The tests run in order:

1. the primary has the slot; every replica keeps a copy and says `logical_slots_ready: true` in its
   member JSON (its key in the DCS), with hot_standby_feedback on;
2. the primary's host dies, then (the old primary back as a replica, its copy ready again) a planned
   switchover; the consumer resumes on each new primary; at the end every acknowledged row was
   received at least once;
3. removing the slot from /config (`pgwarden edit-config`) drops it on the primary and every copy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.drill.measure import acknowledged_ids
from pgwarden.drill.workload import TABLE, Writer, prepare_table
from pgwarden.localcluster.cdc import PG_RECVLOGICAL, LogicalConsumer
from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
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
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()
                            and Path(PG_RECVLOGICAL).exists()),
                       reason="needs etcd, PostgreSQL 15 and pg_recvlogical"),
]

SLOT = "cdc"
RUN = "cdc-it"
CYCLE = 2 * 2 + 5  # one HA cycle (loop_wait 2), with room for a slow machine
READY = 60.0
"""Seconds for a replica's copy to become ready: a restart of the replica, then one advance."""

PATRONI_YML = """\
# A Patroni user's configuration for CDC: a permanent logical slot, wal_level logical, synchronous mode.
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
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: logical
        wal_keep_size: 128MB
        max_connections: 100
    slots:
      cdc:
        type: logical
        database: postgres
        plugin: test_decoding
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

watchdog:
  mode: off
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_user_cluster("it-cdc", "itcdc", PATRONI_YML) as local:
        yield local


@pytest.fixture(autouse=True)
def _logs(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_logs_if_failed(cluster, request)


# --------------------------------------------------------------------------------------------------
# Helpers


def wait(cluster: LocalCluster, predicate: Any, timeout: float, what: str) -> float:
    """wait_until, failing with the agents' logs."""
    try:
        return wait_until(predicate, timeout, what, interval=0.3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}{agent_log_tails(cluster)}") from None


def sql(cluster: LocalCluster, node: Node, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=3) as conn:
        return conn.execute(query, args).fetchall()


def slot_type(cluster: LocalCluster, node: Node, slot: str = SLOT) -> str | None:
    """The slot's type on `node` (None: no such slot, or the node does not answer)."""
    try:
        rows = sql(cluster, node, "SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s", slot)
    except psycopg.Error:
        return None
    return str(rows[0][0]) if rows else None


def running(cluster: LocalCluster) -> list[Node]:
    return [n for n in cluster.nodes if n.agent is not None]


def replicas(cluster: LocalCluster, primary: Node) -> list[Node]:
    return [n for n in running(cluster) if n is not primary]


def copy_ready(cluster: LocalCluster, node: Node) -> bool:
    """The replica's own word (its member JSON, in the DCS): are its copies of the logical slots ready?"""
    member = etcd_json(cluster, f"members/{node.name}") or {}
    return member.get("logical_slots_ready") is True


def healthy(cluster: LocalCluster) -> Node:
    return wait_healthy_or_fail(cluster, 120, replicas=len(running(cluster)) - 1)


def sync_standby(cluster: LocalCluster, primary: Node) -> bool:
    """Has `primary` published a synchronous standby in /sync (the only replica that may be promoted)?"""
    sync = etcd_json(cluster, "sync") or {}
    return sync.get("leader") == primary.name and bool(sync.get("sync_standby"))


class Nudge:
    """A CHECKPOINT on the primary at most every few seconds, called while waiting."""

    def __init__(self, cluster: LocalCluster, primary: Node, every: float = 3.0) -> None:
        self.cluster, self.primary, self.every = cluster, primary, every
        self.last = 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            with contextlib.suppress(psycopg.Error):
                checkpoint(self.cluster, self.primary)


def checkpoint(cluster: LocalCluster, node: Node) -> None:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=3) as conn:
        conn.execute("CHECKPOINT")


def all_copies_ready(cluster: LocalCluster, nudge: Callable[[], None] | None = None) -> Node:
    """The leader, once every running replica has a ready copy of the slot and /sync names a standby."""
    primary = healthy(cluster)
    wait(cluster, lambda: sync_standby(cluster, primary), CYCLE, "a synchronous standby in /sync")

    def ready(replica: Node) -> bool:
        if nudge is not None:
            nudge()
        return copy_ready(cluster, replica) and slot_type(cluster, replica) == "logical"

    for replica in replicas(cluster, primary):
        wait(cluster, lambda r=replica: ready(r), READY, f"a ready copy of {SLOT} on {replica.name}")
    return primary


def new_leader(cluster: LocalCluster, old: Node) -> Node:
    wait(cluster, lambda: (leader := cluster.leader()) is not None and leader is not old, 90, "a new leader")
    leader = cluster.leader()
    assert leader is not None
    return leader


def edit_config(node: Node, *settings: str) -> None:
    args = [arg for setting in settings for arg in ("-s", setting)]
    done = pgwarden("edit-config", "-c", str(user_config_path(node)), *args, "--force", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Stream:
    """The writer and the consumer, running from the first test to the end of the second."""

    writer: Writer
    consumer: LogicalConsumer

    def seen(self) -> dict[int, int]:
        """How often the consumer received each row of the writer."""
        return self.consumer.rows(TABLE, where=("run", RUN))


@pytest.fixture(scope="module")
def stream(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    dsn = cluster.multi_host_dsn()
    prepare_table(dsn)
    writing = Stream(Writer(dsn, RUN, interval=0.02), LogicalConsumer(dsn, SLOT, tmp_path_factory.mktemp("cdc")))
    with writing.consumer:
        writing.writer.start()
        try:
            yield writing
        finally:
            writing.writer.stop()


# --------------------------------------------------------------------------------------------------
# Tests


def test_the_slot_is_on_the_primary_and_every_replica_has_a_ready_copy(cluster: LocalCluster,
                                                                       stream: Stream) -> None:
    primary = healthy(cluster)
    wait(cluster, lambda: slot_type(cluster, primary) == "logical", CYCLE, f"{SLOT} on the primary")
    wait(cluster, lambda: len(stream.seen()) >= 20, 60, "the consumer receiving the first rows")
    # The slot was made at bootstrap, before the replicas were cloned: a copy needs the WAL from the slot's
    # restart_lsn, so it waits until the consumer moved the slot past the replicas' oldest WAL. A
    # checkpoint logs the running transactions from which the slot's restart_lsn moves on.
    nudge = Nudge(cluster, primary)
    all_copies_ready(cluster, nudge)
    for replica in replicas(cluster, primary):
        # The copies need the primary to keep the catalog rows their decoding reads.
        assert sql(cluster, replica, "SHOW hot_standby_feedback") == [("on",)]


def test_no_acknowledged_change_is_lost_through_host_loss_and_switchover(cluster: LocalCluster,
                                                                        stream: Stream) -> None:
    writer, consumer = stream.writer, stream.consumer
    for fault in ("host loss", "switchover"):
        old = all_copies_ready(cluster)
        if fault == "host loss":
            cluster.kill_host(old)
        else:
            done = pgwarden("switchover", "-c", str(user_config_path(old)), "--force")
            assert done.returncode == 0, done.stdout + done.stderr
        new = new_leader(cluster, old)
        # The consumer resumes on the new primary: rows written there reach it.
        after = max(acknowledged_ids(writer.attempts()), default=0)
        wait(cluster, lambda a=after: max(stream.seen(), default=0) > a + 20, 60,
             f"the consumer resuming on {new.name} after the {fault}")
        if old.agent is None:
            cluster.start_agent(old)  # back as a replica; its copy is made ready again
    writer.stop()
    acknowledged = set(acknowledged_ids(writer.attempts()))
    missing = consumer.wait_for(TABLE, acknowledged, 60, where=("run", RUN))
    received = stream.seen()
    duplicates = sum(count - 1 for count in received.values())
    print(f"{len(acknowledged)} acknowledged rows, {len(received)} received, {duplicates} duplicates, "
          f"{consumer.runs} consumer runs")
    assert not missing, (f"{len(missing)} acknowledged rows never received, e.g. {sorted(missing)[:10]}; "
                         f"consumer errors: {consumer.errors[-3:]}{agent_log_tails(cluster)}")


def test_removing_the_slot_drops_it_on_the_primary_and_the_copies(cluster: LocalCluster, stream: Stream) -> None:
    stream.consumer.stop()  # a slot in use cannot be dropped
    primary = healthy(cluster)
    edit_config(primary, f"slots.{SLOT}=null")
    for node in running(cluster):
        wait(cluster, lambda n=node: slot_type(cluster, n) is None, 2 * CYCLE, f"{SLOT} dropped on {node.name}")
