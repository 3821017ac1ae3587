"""Issue 15 on real processes, with a real backup tool: pgBackRest, its repository on the local file system.

One two-node cluster (module fixture) archives its WAL into the repository (`archive_command`) and has a
full backup taken from its primary before its second member starts. That member's configuration lists
replica creation methods as Patroni users write them: one that fails, then `pgbackrest` (a delta
restore, `keep_data` and `no_params`), then `basebackup`; it is created by the second one. Stopped until
the primary has recycled the WAL it needs, it catches up from the archive (`recovery_conf.restore_command`)
and streams again; tagged `nostream`, it replays the archive only. A new cluster is bootstrapped from the
backup with a custom bootstrap method (a small script calling `pgbackrest restore`), recovering to the end
of the backup: its rows are the backup's, not the ones written after it. Last, with no member running, the
second member's data is lost and its method, now `no_leader`, restores it alone. docs/disaster-recovery.md
shows these configurations.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.pgbackrest import PGBACKREST_BIN, PgBackRest
from pgwarden.localcluster.postgres import PG_BIN, give_to_pg_user
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import etcd_get

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()
                            and Path(PGBACKREST_BIN).exists()),
                       reason="needs etcd, PostgreSQL 15 and pgBackRest"),
]

STANZA = "itbackups"
RESTORE_SCRIPT = """\
#!/bin/sh
# A custom bootstrap method: restore the newest backup of a pgBackRest stanza into the new cluster's
# data directory. Called as `restore.sh CONFIG STANZA --scope=<scope> --datadir=<data_dir>`.
set -eu
config=$1 stanza=$2
shift 2
for arg in "$@"; do
    case "$arg" in --datadir=*) datadir=${arg#--datadir=} ;; esac
done
mkdir -p -m 0700 "$datadir"
exec pgbackrest --config="$config" --stanza="$stanza" --pg1-path="$datadir" restore
"""


@dataclass
class Backups:
    cluster: LocalCluster
    repo: PgBackRest
    workdir: Path


def _replica_methods(repo: PgBackRest, node: Node) -> dict[str, Any]:
    """node2's replica creation methods, in the YAML a Patroni user writes."""
    return yaml.safe_load(textwrap.dedent(f"""\
        postgresql:
          create_replica_methods:
            - broken
            - pgbackrest
            - basebackup
          broken:
            command: /bin/false
          pgbackrest:
            command: {repo.shell(f"--pg1-path={node.data_dir}", "--delta", "restore")}
            keep_data: true
            no_params: true
        """))


def _archive_config(repo: PgBackRest, node: Node) -> dict[str, Any]:
    config: dict[str, Any] = {"postgresql": {
        "parameters": {"archive_mode": "on", "archive_command": repo.archive_command, "max_wal_size": "64MB",
                       "unix_socket_directories": str(node.dir)},
        "recovery_conf": {"restore_command": restore_command(repo, node.data_dir)},
    }}
    if node.name == "node2":
        config["postgresql"].update(_replica_methods(repo, node)["postgresql"])
    return config


def restore_command(repo: PgBackRest, data_dir: Path) -> str:
    return repo.shell(f"--pg1-path={data_dir}", "archive-get") + ' %f "%p"'


def _sql(cluster: LocalCluster, node: Node, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(cluster.conninfo(node), autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def backups() -> Iterator[Backups]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-backups-"))
    workdir.chmod(0o755)
    repo = PgBackRest(workdir / "pgbackrest", STANZA)
    dcs = copy.deepcopy(DEMO_DCS)
    # No member slots and no wal_keep_size: the primary recycles WAL as soon as it is archived, so a
    # stopped replica falls behind it (the third test).
    dcs["postgresql"]["use_slots"] = False
    dcs["postgresql"]["parameters"]["wal_keep_size"] = "0"
    cluster = LocalCluster(workdir / "a", size=2, scope=STANZA, dcs=dcs, etcd_ports=(0, 0), pg_base_port=0,
                           api_base_port=0, extra_config=lambda node: _archive_config(repo, node))
    try:
        cluster.prepare()
        first = cluster.nodes[0]
        repo.write_config(first.data_dir, first.pg_port, first.dir)
        cluster.start_etcd()
        cluster.start_agent(first)
        cluster.wait_healthy(90, replicas=0)
        _sql(cluster, first, "CREATE TABLE rows_of_the_backup (id int)")
        _sql(cluster, first, "INSERT INTO rows_of_the_backup VALUES (1)")
        repo.create_stanza()
        repo.full_backup()
        _sql(cluster, first, "CREATE TABLE rows_after_the_backup (id int)")
        _sql(cluster, first, "INSERT INTO rows_of_the_backup VALUES (2)")
        _sql(cluster, first, "SELECT pg_switch_wal()")
        cluster.start_agent(cluster.nodes[1])
        cluster.wait_healthy(90)
        yield Backups(cluster, repo, workdir)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_replica_is_created_by_the_first_method_that_works(backups: Backups) -> None:
    cluster = backups.cluster
    replica = cluster.node("node2")
    log = replica.log_path.read_text(errors="replace")
    assert "replica creation method broken failed" in log and "trying pgbackrest" in log, log[-3000:]
    assert "running method pgbackrest" in log
    assert "replica creation method pgbackrest failed" not in log
    # pgBackRest's own restore_command and signal file were replaced by pgwarden's configuration.
    auto = (replica.data_dir / "postgresql.auto.conf").read_text()
    assert "restore_command" not in auto and not (replica.data_dir / "recovery.signal").exists()
    wait_until(lambda: _sql(cluster, replica, "SELECT count(*) FROM rows_of_the_backup") == [(2,)], 30,
               "the replica to have every row")


def _redo_segment(node: Node) -> str:
    out = subprocess.run([f"{PG_BIN}/pg_controldata", str(node.data_dir)], capture_output=True, text=True,
                         check=True, env={"LC_ALL": "C"}).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Latest checkpoint's REDO WAL file"))


def test_a_replica_behind_the_primarys_wal_catches_up_from_the_archive(backups: Backups) -> None:
    cluster = backups.cluster
    primary, replica = cluster.node("node1"), cluster.node("node2")
    assert cluster.leader() is primary
    cluster.stop_agent(replica)  # stops its PostgreSQL too
    needed = _redo_segment(replica)

    def recycled() -> bool:
        _sql(cluster, primary, "INSERT INTO rows_of_the_backup SELECT 3 FROM generate_series(1, 100)")
        _sql(cluster, primary, "SELECT pg_switch_wal()")
        _sql(cluster, primary, "CHECKPOINT")
        return not (primary.data_dir / "pg_wal" / needed).exists()

    wait_until(recycled, 60, f"the primary to recycle {needed}", interval=0.5)
    total = _sql(cluster, primary, "SELECT count(*) FROM rows_of_the_backup")
    cluster.start_agent(replica)
    wait_until(lambda: replica.get("/replica", 1.0)[0] == 200, 60, "the replica to stream again")
    wait_until(lambda: _sql(cluster, replica, "SELECT count(*) FROM rows_of_the_backup") == total, 30,
               "the replica to have every row")
    postgres_log = (replica.data_dir / "pgwarden-postgres.log").read_text(errors="replace")
    assert f'restored log file "{needed}" from archive' in postgres_log, postgres_log[-3000:]


def _query(cluster: LocalCluster, node: Node, query: str) -> list[tuple[Any, ...]] | None:
    """The rows, or None while the node does not answer (starting)."""
    try:
        return _sql(cluster, node, query)
    except psycopg.Error:
        return None


def test_a_nostream_replica_replays_the_archive_only(backups: Backups) -> None:
    cluster = backups.cluster
    primary, replica = cluster.node("node1"), cluster.node("node2")
    cluster.stop_agent(replica)
    config = yaml.safe_load(replica.config_path.read_text())
    config["tags"] = {"nostream": True}
    replica.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cluster.start_agent(replica)
    wait_until(lambda: _query(cluster, replica, "SHOW primary_conninfo") == [("",)], 60,
               "the nostream replica to run without primary_conninfo")
    _sql(cluster, primary, "INSERT INTO rows_of_the_backup VALUES (5)")
    _sql(cluster, primary, "SELECT pg_switch_wal()")
    wait_until(lambda: _query(cluster, replica, "SELECT count(*) FROM rows_of_the_backup WHERE id = 5") == [(1,)],
               60, "the nostream replica to replay the archived row")
    assert _sql(cluster, primary, "SELECT count(*) FROM pg_stat_replication") == [(0,)]


def _bootstrap_from_backup(repo: PgBackRest, script: Path, node: Node) -> dict[str, Any]:
    """The new cluster's custom bootstrap method, in the YAML a Patroni user writes."""
    return yaml.safe_load(textwrap.dedent(f"""\
        bootstrap:
          method: pgbackrest_restore
          pgbackrest_restore:
            command: {script} {repo.config_path} {repo.stanza}
            keep_existing_recovery_conf: false
            recovery_conf:
              restore_command: '{restore_command(repo, node.data_dir)}'
              recovery_target: immediate
              recovery_target_action: promote
        """))


def test_a_new_cluster_bootstrapped_from_the_backup_has_the_backups_rows(backups: Backups) -> None:
    script = backups.workdir / "restore.sh"
    script.write_text(RESTORE_SCRIPT)
    script.chmod(0o755)
    workdir = backups.workdir / "b"
    workdir.mkdir()
    give_to_pg_user(workdir)
    workdir.chmod(0o755)
    restored = LocalCluster(workdir, size=1, scope="restored", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                            extra_config=lambda node: _bootstrap_from_backup(backups.repo, script, node))
    try:
        restored.start()
        leader = restored.wait_healthy(90, replicas=0)
        source = backups.cluster.node("node1")
        sysid = "SELECT system_identifier::text FROM pg_control_system()"
        assert _sql(restored, leader, sysid) == _sql(backups.cluster, source, sysid)
        assert _sql(restored, leader, "SELECT id FROM rows_of_the_backup ORDER BY id") == [(1,)]
        assert _sql(restored, leader, "SELECT to_regclass('rows_after_the_backup')::text") == [(None,)]
        timeline = _sql(restored, leader, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
        assert timeline >= 2  # promoted at the end of recovery: a new timeline
        _sql(restored, leader, "INSERT INTO rows_of_the_backup VALUES (10)")  # a writable primary
        log = leader.log_path.read_text(errors="replace")
        assert "initialized a new cluster" in log
        assert not (leader.data_dir / "recovery.signal").exists()
    finally:
        restored.stop()


def test_a_no_leader_method_creates_a_replica_while_no_member_runs(backups: Backups) -> None:
    """Last: it leaves the first cluster without its primary. The member's data is lost while no member
    runs; its `pgbackrest` method, now with `no_leader: true`, restores it from the repository alone."""
    cluster = backups.cluster
    primary, replica = cluster.node("node1"), cluster.node("node2")
    cluster.stop_agent(replica)
    _sql(cluster, primary, "INSERT INTO rows_of_the_backup VALUES (4)")
    _sql(cluster, primary, "SELECT pg_switch_wal()")  # archived: the restored member replays it
    cluster.stop_agent(primary)  # it keeps the leader key (nobody could take over) until its lease lapses
    wait_until(lambda: not etcd_get(cluster, "leader") and not etcd_get(cluster, "members/", prefix=True), 60,
               "the stopped members' keys to lapse")
    shutil.rmtree(replica.data_dir)
    config = yaml.safe_load(replica.config_path.read_text())
    config["postgresql"]["pgbackrest"]["no_leader"] = True
    replica.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cluster.start_agent(replica)
    try:
        wait_until(lambda: "trying to bootstrap (without leader)" in replica.log_path.read_text(errors="replace"),
                   60, "the member to create itself without a leader")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{cluster.describe(40)}") from None

    def has_the_archived_row() -> bool:
        try:
            return _sql(cluster, replica, "SELECT count(*) FROM rows_of_the_backup WHERE id = 4") == [(1,)]
        except psycopg.Error:
            return False

    wait_until(has_the_archived_row, 60, "the restored member to replay the archive")
