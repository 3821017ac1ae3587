"""Issue 15 on real processes, with a real backup tool: pgBackRest, its repository on the local file system.

One two-node cluster (module fixture) archives its WAL into the repository (`archive_command`) and has a
full backup taken from its primary before its second member starts. That member's configuration lists
replica creation methods as Patroni users write them: one that fails, then `pgbackrest` (a delta
restore, `keep_data` and `no_params`), then `basebackup`; it is created by the second one. Stopped until
the primary has recycled the WAL it needs, it catches up from the archive (`recovery_conf.restore_command`)
and streams again; tagged `nostream`, it replays the archive only. A new cluster is bootstrapped from the
backup with a custom bootstrap method (a small script calling `pgbackrest restore`), recovering to the end
of the backup: its rows are the backup's, not the ones written after it. A standby cluster (scope
`archive-standby`, on the same etcd) is fed by the archive alone (`standby_cluster.restore_command`, no
`host`): its standby leader is restored from the backup by a `no_leader` method, and a changed
`restore_command` reaches it by a reload. The second member is created again with the `pgbackrest` method
while the primary is under write load. Last, with no member running, the second member's data is lost and
its method, now `no_leader`, restores it alone. docs/disaster-recovery.md shows these configurations.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
import textwrap
import threading
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
from tests.support.cluster import etcd_get, pgwarden

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


def archive_standby_restore_command(repo: PgBackRest) -> str:
    """A standby cluster's `restore_command`, one for every member: PostgreSQL runs it through the shell in
    the data directory, and pgBackRest wants that directory (`$PWD`) as its `pg1-path`."""
    return f'{repo.shell()} --pg1-path="$PWD" archive-get %f "%p"'


def _archive_standby_node(repo: PgBackRest, etcd_port: int, node: Node) -> dict[str, Any]:
    """A member of the archive-fed standby cluster: the primary cluster's etcd; its first member restores
    the newest backup with a `no_leader` method (no remote `host` to copy from)."""
    return {"etcd3": {"hosts": f"127.0.0.1:{etcd_port}"},
            "postgresql": {"pgbackrest": {"command": repo.shell(f"--pg1-path={node.data_dir}", "restore"),
                                          "no_leader": True, "no_params": True}}}


@pytest.fixture(scope="class")
def archive_standby(backups: Backups) -> Iterator[LocalCluster]:
    """A second cluster (scope `archive-standby`, 2 members) that is a standby cluster of the first, fed
    only by its pgBackRest archive: `standby_cluster` with `restore_command` and no `host`."""
    dcs = copy.deepcopy(DEMO_DCS)
    dcs["standby_cluster"] = {"restore_command": archive_standby_restore_command(backups.repo),
                              "create_replica_methods": ["pgbackrest"]}
    # The standby leader retries its restore_command at the end of the archive every second, not every 5 s.
    dcs["postgresql"]["parameters"]["wal_retrieve_retry_interval"] = "1s"
    etcd_port = backups.cluster.etcd_ports[0]
    standby = LocalCluster(backups.workdir / "c", size=2, scope="archive-standby", dcs=dcs, etcd_ports=(0, 0),
                           pg_base_port=0, api_base_port=0,
                           extra_config=lambda node: _archive_standby_node(backups.repo, etcd_port, node))
    try:
        standby.prepare()
        for node in standby.nodes:
            standby.start_agent(node)
        try:
            wait_until(lambda: _standby_roles(standby) is not None, 90, "a standby leader and a streaming replica")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{standby.describe(40)}") from None
        yield standby
    finally:
        standby.stop()


def _standby_roles(standby: LocalCluster) -> tuple[Node, Node] | None:
    """(standby leader, streaming replica), once each answers its health check."""
    leaders = [n for n in standby.nodes if n.get("/standby-leader", 1.0)[0] == 200]
    replicas = standby.streaming_replicas()
    return (leaders[0], replicas[0]) if len(leaders) == 1 and len(replicas) == 1 else None


class TestArchiveFedStandbyCluster:
    """The archive-fed standby cluster's tests: its fixture lives as long as this class, so that it no longer
    polls the archive while the tests after it run."""

    def test_it_follows_the_archive_and_never_writes(self, backups: Backups, archive_standby: LocalCluster) -> None:
        cluster, standby = backups.cluster, archive_standby
        roles = _standby_roles(standby)
        assert roles is not None, standby.describe()
        leader, replica = roles
        log = leader.log_path.read_text(errors="replace")
        assert "trying to bootstrap a new standby leader" in log and "running method pgbackrest" in log, log[-3000:]
        # pgBackRest's own recovery settings were replaced by standby_cluster's; nothing streams from site A.
        assert "restore_command" not in (leader.data_dir / "postgresql.auto.conf").read_text()
        assert _sql(standby, leader, "SHOW primary_conninfo") == [("",)]
        assert _sql(standby, leader, "SHOW restore_command") == [(archive_standby_restore_command(backups.repo),)]
        assert leader.get("/primary")[0] == 503
        assert (leader.get("/patroni")[1] or {}).get("role") == "standby_leader"
        members = {m["name"]: m["role"] for m in (leader.get("/cluster")[1] or {}).get("members", [])}
        assert members == {leader.name: "standby_leader", replica.name: "replica"}, members
        primary = cluster.node("node1")
        _sql(cluster, primary, "INSERT INTO rows_of_the_backup VALUES (6)")
        _sql(cluster, primary, "SELECT pg_switch_wal()")  # archived: the standby leader restores it
        for node in standby.nodes:
            wait_until(lambda node=node: _query(standby, node, "SELECT count(*) FROM rows_of_the_backup WHERE id = 6")
                       == [(1,)], 60, f"{node.name} of the standby cluster to have the archived row")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                _sql(standby, node, "INSERT INTO rows_of_the_backup VALUES (66)")

    def test_a_changed_restore_command_is_reloaded(self, backups: Backups, archive_standby: LocalCluster) -> None:
        """PostgreSQL 15 reloads restore_command: editing `standby_cluster.restore_command` alone in `/config`
        reaches the standby leader without a restart, and the new command restores the next segment."""
        cluster, standby = backups.cluster, archive_standby
        roles = _standby_roles(standby)
        assert roles is not None, standby.describe()
        leader = roles[0]
        postmaster = leader.postmaster_pid()
        changed = archive_standby_restore_command(backups.repo).replace(" archive-get", " --log-level-stderr=error "
                                                                                         "archive-get")
        edited = pgwarden("-c", str(leader.config_path), "edit-config", "-q", "--force", "-s",
                          f"standby_cluster.restore_command={changed}")
        assert edited.returncode == 0, edited
        wait_until(lambda: _query(standby, leader, "SHOW restore_command") == [(changed,)], 30,
                   "the standby leader to reload the changed restore_command")
        assert leader.postmaster_pid() == postmaster
        primary = cluster.node("node1")
        _sql(cluster, primary, "INSERT INTO rows_of_the_backup VALUES (7)")
        _sql(cluster, primary, "SELECT pg_switch_wal()")
        wait_until(lambda: _query(standby, leader, "SELECT count(*) FROM rows_of_the_backup WHERE id = 7") == [(1,)],
                   60, "the standby leader to restore with the changed command")

    def test_its_standby_leader_fails_over(self, backups: Backups, archive_standby: LocalCluster) -> None:
        """Its standby leader dies: the other member takes over as standby leader, restoring from the archive
        alone as well (no primary_conninfo), with the restore_command in force."""
        cluster, standby = backups.cluster, archive_standby
        roles = _standby_roles(standby)
        assert roles is not None, standby.describe()
        dead, survivor = roles
        command = _sql(standby, dead, "SHOW restore_command")
        standby.kill_host(dead)
        try:
            wait_until(lambda: survivor.get("/standby-leader", 1.0)[0] == 200, 60, f"{survivor.name} as standby leader")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{standby.describe(40)}") from None
        assert _sql(standby, survivor, "SHOW primary_conninfo") == [("",)]
        assert _sql(standby, survivor, "SHOW restore_command") == command
        primary = cluster.node("node1")
        _sql(cluster, primary, "INSERT INTO rows_of_the_backup VALUES (8)")
        _sql(cluster, primary, "SELECT pg_switch_wal()")
        wait_until(lambda: _query(standby, survivor, "SELECT count(*) FROM rows_of_the_backup WHERE id = 8") == [(1,)],
                   60, "the new standby leader to restore the archived row")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            _sql(standby, survivor, "INSERT INTO rows_of_the_backup VALUES (88)")


class Writer:
    """Inserts batches of rows on the primary, one transaction each, until stopped; `acked` holds the batch
    numbers whose commit was acknowledged."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo, self.acked, self.errors = conninfo, list[int](), list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            batch = 0
            while not self._stop.wait(0.02):
                batch += 1
                try:
                    conn.execute("INSERT INTO under_load SELECT %s, g FROM generate_series(1, 100) g", (batch,))
                    self.acked.append(batch)
                except psycopg.Error as exc:  # not expected on a healthy primary: the test reports it
                    self.errors.append(str(exc))
                    return


def test_a_replica_is_created_from_the_repository_under_write_load(backups: Backups) -> None:
    """The member is created again by the `pgbackrest` method (a restore of the backup, then the archive)
    while the primary commits a batch of rows every few milliseconds; it then streams and has every batch."""
    cluster = backups.cluster
    primary, replica = cluster.node("node1"), cluster.node("node2")
    cluster.stop_agent(replica)
    shutil.rmtree(replica.data_dir)
    config = yaml.safe_load(replica.config_path.read_text())
    config["tags"] = {}  # streams again (the nostream test tagged it)
    replica.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _sql(cluster, primary, "CREATE TABLE under_load (batch int, n int)")
    log_start = replica.log_path.stat().st_size
    with Writer(cluster.conninfo(primary)) as writer:
        wait_until(lambda: len(writer.acked) >= 10, 30, "the writer to commit")
        cluster.start_agent(replica)
        wait_until(lambda: "running method pgbackrest" in _log_since(replica, log_start), 60,
                   "the member to run the pgbackrest method")
        during = len(writer.acked)
        wait_until(lambda: replica.get("/replica", 1.0)[0] == 200, 90, "the new replica to stream")
        wait_until(lambda: _sql(cluster, primary, "SELECT count(*) FROM pg_stat_replication WHERE "
                                f"application_name = '{replica.name}' AND state = 'streaming'") == [(1,)], 30,
                   "the primary to stream to the new replica")  # 'catchup' first, under load
        wait_until(lambda: len(writer.acked) >= during + 20, 30, "more commits while the replica streams")
    assert not writer.errors, writer.errors
    assert len(writer.acked) > during  # the primary kept committing while the replica was being created
    acked = set(writer.acked)

    def has_every_acknowledged_batch() -> bool:
        rows = _query(cluster, replica, "SELECT batch, count(*) FROM under_load GROUP BY batch")
        return rows is not None and acked <= {batch for batch, count in rows if count == 100}

    wait_until(has_every_acknowledged_batch, 30, f"the replica to have all {len(acked)} acknowledged batches")
    log = _log_since(replica, log_start)
    assert "replica creation method broken failed" in log and "replica creation method pgbackrest failed" not in log


def _log_since(node: Node, offset: int) -> str:
    with node.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


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
