"""Permanent physical slots on real processes (issue 16, first part): a 3-node cluster with
`slots: {barman: {type: physical}}` in bootstrap.dcs.

The slot exists on the primary and keeps WAL while nobody consumes it; every replica keeps a copy,
advanced to the position the primary publishes in `/status`; through three host losses of the primary
while the consumer is offline (so that the last new primary is a node rewound after the first, whose copy
survived its rewind), each new primary has it, never NULL, at or before the consumer's position, and still
holds the WAL from there; adding and removing a
slot with `pgwarden edit-config` creates and drops it within a cycle; a slot made by hand and matched by
`ignore_slots` is never dropped. The tests run in order on one cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from pgwarden.model import lsn_from_text, lsn_to_text
from tests.support.cluster import etcd_json, pgwarden, print_logs_if_failed, running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

# No wal_keep_size: only the slots keep WAL, so the test sees what the slot alone keeps.
DCS: dict[str, Any] = {
    **DEMO_DCS,
    "postgresql": {**DEMO_DCS["postgresql"], "parameters": {"max_connections": 100, "wal_keep_size": 0}},
    "slots": {"barman": {"type": "physical"}},
}
CYCLE = 2 * DEMO_DCS["loop_wait"] + 5  # one HA cycle, with room for a slow machine
ABSENT = "absent"
FAILOVERS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("slots", "slots", dcs=DCS) as local:
        yield local


@pytest.fixture(autouse=True)
def _logs(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_logs_if_failed(cluster, request)


def sql(cluster: LocalCluster, node: Node, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=3) as conn:
        return conn.execute(query, args).fetchall()


def restart_lsn(cluster: LocalCluster, node: Node, slot: str) -> int | str | None:
    """The slot's restart_lsn on `node`, None when it reserves no WAL, ABSENT when there is no such slot."""
    rows = sql(cluster, node, "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", slot)
    if not rows:
        return ABSENT
    return None if rows[0][0] is None else lsn_from_text(rows[0][0])


def leader(cluster: LocalCluster) -> Node:
    return cluster.wait_healthy(60, replicas=len([n for n in cluster.nodes if n.agent is not None]) - 1)


def replicas(cluster: LocalCluster, primary: Node) -> list[Node]:
    return [n for n in cluster.nodes if n is not primary and n.agent is not None]


def published(cluster: LocalCluster) -> dict[str, int]:
    status = etcd_json(cluster, "status") or {}
    return dict(status.get("slots") or {})


def has_slot(cluster: LocalCluster, node: Node, slot: str, *, reserved: bool = True) -> bool:
    """Does `node` have `slot` (and, if `reserved`, with a restart_lsn)?"""
    lsn = restart_lsn(cluster, node, slot)
    return isinstance(lsn, int) if reserved else lsn != ABSENT


def copy_at(cluster: LocalCluster, node: Node, lsn: int) -> bool:
    """Does the replica `node` answer, with its copy of barman at `lsn`?"""
    try:
        return restart_lsn(cluster, node, "barman") == lsn
    except psycopg.Error:
        return False  # still starting (or rewinding) after a failover


def fill_wal(cluster: LocalCluster, node: Node, segments: int) -> None:
    """Write `segments` WAL segments' worth of switches on the primary `node`."""
    with psycopg.connect(cluster.conninfo(node), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS slot_filler (x int)")
        for i in range(segments):
            conn.execute("INSERT INTO slot_filler VALUES (%s)", (i,))
            conn.execute("SELECT pg_switch_wal()")


def positions(cluster: LocalCluster, confirmed: int) -> str:
    """Every node's barman position, for a failure's message."""
    out = [f"confirmed {lsn_to_text(confirmed)}"]
    for node in cluster.nodes:
        try:
            lsn = restart_lsn(cluster, node, "barman")
        except psycopg.Error as exc:
            lsn = type(exc).__name__
        out.append(f"{node.name}: {lsn_to_text(lsn) if isinstance(lsn, int) else lsn}")
    return ", ".join(out)


def checkpoint(cluster: LocalCluster, node: Node) -> None:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=3) as conn:
        conn.execute("CHECKPOINT")


def holds_wal_from(cluster: LocalCluster, node: Node, lsn: int) -> bool:
    """Does `node`'s pg_wal still have the segment holding `lsn`? (On any timeline: after a promotion
    the file of an older segment keeps the timeline it was written on.)"""
    (row,) = sql(cluster, node, "SELECT pg_walfile_name(%s::pg_lsn)", lsn_to_text(lsn))
    files = {name for (name,) in sql(cluster, node, "SELECT name FROM pg_ls_waldir()")}
    return any(len(name) == 24 and name[8:] == str(row[0])[8:] for name in files)


def edit_config(node: Node, *settings: str) -> None:
    args = [arg for setting in settings for arg in ("-s", setting)]
    done = pgwarden("edit-config", "-c", str(node.config_path), *args, "--force", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_slot_is_on_the_primary_and_copied_to_the_replicas(cluster: LocalCluster) -> None:
    primary = leader(cluster)
    wait_until(lambda: isinstance(restart_lsn(cluster, primary, "barman"), int), CYCLE, "barman on the primary")
    for replica in replicas(cluster, primary):
        wait_until(lambda r=replica: has_slot(cluster, r, "barman"), CYCLE,  # type: ignore[misc]
                   f"a copy of barman on {replica.name}")
    # /status: the slot, the replicas' member slots and the leader's own name, as Patroni publishes them.
    wait_until(lambda: {"barman", primary.name} <= set(published(cluster)), CYCLE, "the positions in /status")
    assert published(cluster)["barman"] == restart_lsn(cluster, primary, "barman")


def test_a_slot_without_consumer_keeps_wal(cluster: LocalCluster) -> None:
    primary = leader(cluster)
    kept = restart_lsn(cluster, primary, "barman")
    assert isinstance(kept, int)
    with psycopg.connect(cluster.conninfo(primary), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS slot_filler (x int)")
        for i in range(6):
            conn.execute("INSERT INTO slot_filler VALUES (%s)", (i,))
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        (segment,) = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", (lsn_to_text(kept),)).fetchone()  # type: ignore[misc]
        files = {row[0] for row in conn.execute("SELECT name FROM pg_ls_waldir()").fetchall()}
    assert restart_lsn(cluster, primary, "barman") == kept
    assert segment in files, f"{segment} was removed although barman needs it"


def test_copies_follow_the_consumer_and_survive_three_failovers(cluster: LocalCluster) -> None:
    primary = leader(cluster)
    # A consumer confirms everything up to now: the primary publishes it, the replicas advance to it.
    (row,) = sql(cluster, primary, "SELECT pg_current_wal_lsn()::text")
    sql(cluster, primary, "SELECT pg_replication_slot_advance('barman', %s::pg_lsn)", row[0])
    confirmed = restart_lsn(cluster, primary, "barman")
    assert isinstance(confirmed, int)
    wait_until(lambda: published(cluster).get("barman") == confirmed, CYCLE, "the new position in /status")

    # Then the consumer goes offline. Three host losses of the primary: on 3 nodes the third new primary
    # is a node that came back after a host loss and was rewound, and pg_rewind keeps its copy (recreated,
    # it would start at that node's own position, past the consumer's). After each failover the new
    # primary has the slot there, never NULL, and still holds the WAL from it.
    for failover in range(1, FAILOVERS + 1):
        fill_wal(cluster, primary, 2)  # WAL the offline consumer has not read
        cluster.wait_healthy(90, replicas=2)
        for replica in replicas(cluster, primary):
            try:
                wait_until(lambda r=replica: copy_at(cluster, r, confirmed), CYCLE,  # type: ignore[misc]
                           f"{replica.name}'s copy at the published position (failover {failover})")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}: {positions(cluster, confirmed)}") from None
        cluster.kill_host(primary)
        wait_until(lambda old=primary: cluster.leader() not in (None, old), 60,  # type: ignore[misc]
                   f"a new primary (failover {failover})")
        new = cluster.wait_healthy(60, replicas=1)
        assert new is not primary
        after = restart_lsn(cluster, new, "barman")
        assert isinstance(after, int), f"barman on the new primary after failover {failover}: {after}"  # never NULL
        assert after <= confirmed  # the consumer resumes from its own position: nothing it needs is missing
        checkpoint(cluster, new)  # removes every WAL file that no slot keeps
        assert holds_wal_from(cluster, new, confirmed), f"failover {failover}: the WAL from barman's position is gone"
        if primary.agent is None:
            cluster.start_agent(primary)  # back as a replica
        primary = new
    cluster.wait_healthy(90, replicas=2)


def test_adding_and_removing_a_slot_with_edit_config(cluster: LocalCluster) -> None:
    primary = leader(cluster)
    edit_config(primary, "slots.extra=0")  # `name: 0`: a physical slot with the defaults
    wait_until(lambda: isinstance(restart_lsn(cluster, primary, "extra"), int), CYCLE, "extra created")
    for replica in replicas(cluster, primary):
        wait_until(lambda r=replica: has_slot(cluster, r, "extra", reserved=False), CYCLE,  # type: ignore[misc]
                   f"extra on {replica.name}")
    edit_config(primary, "slots.extra=null")
    wait_until(lambda: restart_lsn(cluster, primary, "extra") == ABSENT, CYCLE, "extra dropped")
    for replica in replicas(cluster, primary):
        wait_until(lambda r=replica: not has_slot(cluster, r, "extra", reserved=False), CYCLE,  # type: ignore[misc]
                   f"extra dropped on {replica.name}")
    assert isinstance(restart_lsn(cluster, primary, "barman"), int)


def test_a_slot_matched_by_ignore_slots_is_never_dropped(cluster: LocalCluster) -> None:
    primary = leader(cluster)
    edit_config(primary, 'ignore_slots=[{"name": "handmade"}]')
    sql(cluster, primary, "SELECT pg_create_physical_replication_slot('handmade', true)")
    # Configured, then removed: without the matcher pgwarden would now manage it and drop it.
    edit_config(primary, "slots.handmade=0")
    time.sleep(2 * DEMO_DCS["loop_wait"] + 1)  # every agent sees it configured
    edit_config(primary, "slots.handmade=null")
    time.sleep(3 * DEMO_DCS["loop_wait"] + 1)  # a few cycles: nothing may drop it
    assert restart_lsn(cluster, primary, "handmade") != ABSENT
    assert "handmade" not in published(cluster)
    for replica in replicas(cluster, primary):
        assert restart_lsn(cluster, replica, "handmade") == ABSENT  # never copied either
    assert etcd_json(cluster, "config")["ignore_slots"] == [{"name": "handmade"}]
