"""Rolling migration from Patroni to pgwarden and back, on one real 3-node cluster (etcd v3).

Patroni 4.1 is a black box (`pgwarden.localcluster.patroni`): it runs from the very YAML file each
pgwarden node uses, on the same data directory, and is observed only through its REST API, its log,
`patronictl` and the keys it writes. The tests run in order on one cluster bootstrapped by Patroni:

1. the migration under ~100 writes/s: `pgwarden migrate` checks the cluster and prints the plan; Patroni
   stopped and pgwarden started on one replica by hand and on the other by `pgwarden migrate --execute`
   (each must stream again); `patronictl list`, `pgwarden list` and `pgwarden edit-config` on the mixed
   cluster; a switchover to a pgwarden node requested through pgwarden's REST API; then the old Patroni
   leader becomes pgwarden. No acknowledged write lost, writes impossible only around the switchover;
2. the way back begins: both replicas return to Patroni under a pgwarden leader; `patronictl pause` and
   `resume --wait`; synchronous mode switched on with `patronictl edit-config`: `/sync` written by the
   pgwarden leader, then by the Patroni leader after a `patronictl switchover` to the sync standby;
3. manual failovers and a switchover from either CLI across kinds: `patronictl failover` from a Patroni
   leader to a pgwarden member, `pgwarden failover` from that pgwarden leader to a Patroni member,
   `pgwarden switchover` and `pgwarden failover` against Patroni leaders;
4. a Patroni leader with pgwarden replicas, `failsafe_mode: true`: etcd frozen, the leader keeps writing
   on the pgwarden replicas' `POST /failsafe` answers; then its host dies (agent and postmaster
   SIGKILLed) with WAL its replicas lack, a pgwarden replica takes over, and the old host rejoins under
   Patroni, which pg_rewinds it from the pgwarden leader;
5. the same with a pgwarden leader and Patroni replicas (the old host rejoins under pgwarden, which
   pg_rewinds it from the Patroni leader, then moves to Patroni): every member runs Patroni again (the
   reverse migration is complete);
6. with PGWARDEN_MIGRATION_FULL=1 (CI's time budget leaves it out): forward again, the leader's host
   step done by `pgwarden migrate --execute` (switchover included).

A split-brain watcher polls `pg_is_in_recovery()` on every node during every test.
Budget: one cluster for the module, about three minutes (tests 1-5) on a loaded machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.drill.measure import acknowledged_ids, missing_ids, outage_windows
from pgwarden.drill.workload import Writer, prepare_table, stored_ids
from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.patroni import is_patroni, patroni_available, patroni_command, patronictl
from pgwarden.localcluster.postgres import PG_BIN, PG_USER
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import (
    ETCDCTL,
    PGWARDEN,
    EtcdOutage,
    WritableWatcher,
    agent_log_tails,
    etcd_get,
    etcd_json,
    pgwarden,
    rest,
    wait_healthy_or_fail,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(ETCDCTL).exists() and Path(PG_BIN, "postgres").exists()
                            and patroni_available()),
                       reason="needs etcd, etcdctl, PostgreSQL 15 and Patroni (scripts/setup.sh)"),
]

SCOPE = "itmigrate"
WRITE_INTERVAL = 0.01
"""~100 writes per second."""
BLOCKED_AFTER = 1.0
"""A write that takes longer than this counts as writes being impossible."""
SLACK = 3.0
"""Seconds around a switchover within which an outage still counts as the switchover's."""


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Three Patroni members on one etcd, bootstrapped by Patroni from pgwarden's own node YAML."""
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-migrate-"))
    workdir.chmod(0o755)  # the agents run as postgres (pytest's own temp dir is private to root)
    local = LocalCluster(workdir, size=3, scope=SCOPE, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    try:
        local.prepare()
        for node in local.nodes:
            node.command = patroni_command()
        local.start_etcd()
        for node in local.nodes:
            local.start_agent(node)
        wait_healthy_or_fail(local, 120)
        prepare_table(local.multi_host_dsn())
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- helpers -----------------------------------------------------------------------------------------


def runs_patroni(node: Node) -> bool:
    return is_patroni(node.command)


def streams(node: Node) -> bool:
    """The member answers /replica with 200: PostgreSQL runs and streams from the leader."""
    return node.get("/replica", 1.0)[0] == 200


def fail(cluster: LocalCluster, message: str) -> None:
    pytest.fail(f"{message}{agent_log_tails(cluster, 25)}")


def wait(cluster: LocalCluster, predicate: object, timeout: float, what: str) -> float:
    try:
        return wait_until(predicate, timeout, what)  # type: ignore[arg-type]
    except TimeoutError as exc:
        fail(cluster, str(exc))
        raise


def switch_agent(cluster: LocalCluster, node: Node, *, patroni: bool) -> None:
    """Stop the node's agent cleanly (SIGTERM) and start the other one on the same file and data dir."""
    cluster.stop_agent(node)
    node.command = patroni_command() if patroni else None
    cluster.start_agent(node)


def migrate_replica(cluster: LocalCluster, node: Node, *, patroni: bool) -> None:
    assert cluster.leader() is not node, f"{node.name} is the leader"
    switch_agent(cluster, node, patroni=patroni)
    wait(cluster, lambda: streams(node), 90, f"{node.name} streaming under {'Patroni' if patroni else 'pgwarden'}")


def pgwarden_migrate(cluster: LocalCluster, node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    """`pgwarden migrate -c <node's file> ARGS` run on the node's "host": as the postgres user, which
    runs Patroni there (so it may signal it) and which the agent it starts must run as."""
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run([*PGWARDEN, "migrate", "-c", str(node.config_path), *args], capture_output=True,
                          text=True, timeout=180, check=False, env=env, cwd="/tmp", **kwargs)


def migrate_with_the_cli(cluster: LocalCluster, node: Node) -> None:
    """This replica's step done by `pgwarden migrate --execute`: it stops Patroni by PID, starts
    pgwarden with a shell command (detached, its PID in a file), and checks the member streams again.
    The test then restarts that agent as one of its own, so that the cluster stops it by PID."""
    assert node.agent is not None
    pidfile, log = node.dir / "cli-agent.pid", node.dir / "cli-agent.log"  # the node's own directory is postgres's
    start = (f"setsid {shlex.quote(PGWARDEN[0])} -m pgwarden.cli.entry agent {shlex.quote(str(node.config_path))}"
             f" >>{shlex.quote(str(log))} 2>&1 </dev/null & echo $! >{shlex.quote(str(pidfile))}")
    done = pgwarden_migrate(cluster, node, "--execute", "--patroni-pid", str(node.agent.pid),
                            "--start-command", start, "--timeout", "90")
    node.agent.wait(10)
    node.agent = None
    started = int(pidfile.read_text()) if pidfile.exists() else None
    try:
        assert done.returncode == 0, done.stdout + done.stderr + log_tail(log)
        assert f"{node.name} runs pgwarden" in done.stdout, done.stdout
        assert "Next, on the other hosts" in done.stdout or "The whole cluster runs pgwarden" in done.stdout
    finally:
        if started is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(started, signal.SIGTERM)
            wait(cluster, lambda: not pid_alive(started), 60, "the CLI-started agent to stop")
    node.command = None
    cluster.start_agent(node)
    wait(cluster, lambda: streams(node), 90, f"{node.name} streaming under pgwarden")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def leader_name(cluster: LocalCluster) -> str | None:
    value = etcd_get(cluster, "leader").get(f"/service/{SCOPE}/leader")
    return value


def members(cluster: LocalCluster) -> dict[str, dict[str, object]]:
    keys = etcd_get(cluster, "members/", prefix=True)
    return {key.rsplit("/", 1)[1]: json.loads(value) for key, value in keys.items()}


def ctl(cluster: LocalCluster, *args: str) -> str:
    done = patronictl(cluster.nodes[0].config_path, *args)
    assert done.returncode == 0, f"patronictl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def ctl_list(cluster: LocalCluster) -> dict[str, dict[str, object]]:
    """`patronictl list -f json`, by member name."""
    return {row["Member"]: row for row in json.loads(ctl(cluster, "list", "-f", "json"))}


def check_writes(cluster: LocalCluster, writer: Writer, since: float, allowed: list[tuple[float, float]]) -> None:
    """No acknowledged write lost; every outage of writes overlaps one of the `allowed` intervals."""
    attempts = writer.attempts()
    acked = acknowledged_ids(attempts)
    assert acked, "no write was acknowledged"
    lost = missing_ids(acked, stored_ids(cluster.multi_host_dsn(), writer.run))
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    windows, recovered = outage_windows(attempts, since, BLOCKED_AFTER)
    assert recovered, "writes did not come back"
    for window in windows:
        inside = any(window.end >= start - SLACK and window.start <= end + SLACK for start, end in allowed)
        assert inside, (f"writes impossible for {window.duration:.1f}s at +{window.start - since:.1f}s, outside "
                        f"the switchovers {[(round(s - since, 1), round(e - since, 1)) for s, e in allowed]}")


# -- the tests ---------------------------------------------------------------------------------------


def test_patroni_cluster_migrates_to_pgwarden_under_writes(cluster: LocalCluster) -> None:
    """Replicas first, a switchover to a pgwarden node through pgwarden's REST API, the old leader last."""
    old = cluster.wait_healthy(60)
    assert all(runs_patroni(n) for n in cluster.nodes)
    replicas = [n for n in cluster.nodes if n is not old]
    writer = Writer(cluster.multi_host_dsn(), "forward", WRITE_INTERVAL)
    with WritableWatcher(cluster) as watch:
        writer.start()
        since = time.monotonic()
        try:
            checked = pgwarden_migrate(cluster, old)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert f"3. (todo) switch over from {old.name} to {replicas[0].name}" in checked.stdout, checked.stdout
            migrate_replica(cluster, replicas[0], patroni=False)  # by hand: stop Patroni, start pgwarden
            migrate_with_the_cli(cluster, replicas[1])
            # A mixed cluster as Patroni's own tools see it: pgwarden members are replicas that stream.
            listed = ctl_list(cluster)
            assert listed[old.name]["Role"] == "Leader", listed
            assert all(listed[r.name]["Role"] == "Replica" and listed[r.name]["State"] == "streaming"
                       for r in replicas), listed
            # The member keys pgwarden writes claim the Patroni contract they keep (not pgwarden's
            # own version), so the Patroni leader writes no legacy `optime/leader` for them.
            assert all(members(cluster)[r.name]["version"] == "4.1.5" for r in replicas)
            # ... and as pgwarden's: `list`, and `edit-config` that the Patroni leader serves back.
            listed_by_us = pgwarden("list", "-c", str(old.config_path), "-f", "json")
            assert listed_by_us.returncode == 0, listed_by_us.stderr
            assert {row["Member"] for row in json.loads(listed_by_us.stdout)} == {n.name for n in cluster.nodes}
            edited = pgwarden("edit-config", "-c", str(old.config_path), "-s", "maximum_lag_on_failover=2097152",
                              "--force")
            assert edited.returncode == 0, edited.stdout + edited.stderr
            status, text = rest(old, "GET", "/config")
            assert status == 200 and json.loads(text)["maximum_lag_on_failover"] == 2097152, (status, text)
            target = replicas[0]
            requested = time.monotonic()
            status, text = rest(target, "POST", "/switchover", {"leader": old.name, "candidate": target.name})
            assert status == 200, (status, text)
            wait(cluster, lambda: cluster.leader() is target, 60, f"{target.name} to lead")
            done = watch.wait(lambda w: w == {target.name}, 30, f"{target.name} writable")
            wait(cluster, lambda: streams(old), 90, f"{old.name} (Patroni) to follow {target.name}")
            migrate_replica(cluster, old, patroni=False)
            assert not any(runs_patroni(n) for n in cluster.nodes)
            time.sleep(1)  # writes after the last step, on the final topology
        finally:
            writer.stop()
    assert not watch.violations, watch.violations
    check_writes(cluster, writer, since, [(requested, done)])
    assert leader_name(cluster) == target.name


def test_patronictl_switchover_against_a_pgwarden_leader_with_patroni_replicas(cluster: LocalCluster) -> None:
    """The way back begins: both replicas return to Patroni (a pgwarden leader with Patroni replicas);
    `patronictl pause`/`resume --wait` see every member; synchronous_mode switched on with
    `patronictl edit-config` makes the pgwarden leader write `/sync`; `patronictl switchover` hands the
    lead to that sync standby (a Patroni member), which writes `/sync` in turn, naming a standby."""
    leader = cluster.wait_healthy(60)
    replicas = [n for n in cluster.nodes if n is not leader]
    with WritableWatcher(cluster) as watch:
        for replica in replicas:
            migrate_replica(cluster, replica, patroni=True)
        listed = ctl_list(cluster)
        assert listed[leader.name]["Role"] == "Leader", listed
        assert "paused" in ctl(cluster, "pause", SCOPE, "--wait")
        assert "resumed" in ctl(cluster, "resume", SCOPE, "--wait")
        ctl(cluster, "edit-config", SCOPE, "-s", "synchronous_mode=on", "--force")
        sync = wait_sync(cluster, leader.name)
        target = cluster.node(str(sync["sync_standby"]).split(",")[0])
        assert runs_patroni(target)
        out = ctl(cluster, "switchover", SCOPE, "--leader", leader.name, "--candidate", target.name, "--force")
        assert f'Successfully switched over to "{target.name}"' in out, out
        wait(cluster, lambda: cluster.leader() is target, 60, f"{target.name} to lead")
        wait(cluster, lambda: streams(leader), 90, f"{leader.name} (pgwarden) to follow {target.name}")
        wait_sync(cluster, target.name)
        ctl(cluster, "edit-config", SCOPE, "-s", "synchronous_mode=off", "--force")
        wait(cluster, lambda: not (etcd_json(cluster, "sync") or {}).get("sync_standby"), 30, "/sync emptied")
    assert not watch.violations, watch.violations


def wait_sync(cluster: LocalCluster, leader: str) -> dict[str, object]:
    """The `/sync` key once `leader` has written it with a sync standby; that standby's /sync is 200."""
    found: list[dict[str, object]] = []

    def written() -> bool:
        value = etcd_json(cluster, "sync")
        if not (isinstance(value, dict) and value.get("leader") == leader and value.get("sync_standby")):
            return False
        standby = cluster.node(str(value["sync_standby"]).split(",")[0])
        found.append(value)
        return standby.get("/sync", 1.0)[0] == 200

    wait(cluster, written, 60, f"/sync written by {leader} with a synchronous standby")
    return found[-1]


def test_failover_and_switchover_from_either_cli(cluster: LocalCluster) -> None:
    """Manual failovers and a switchover requested from each CLI across the two kinds (a Patroni leader,
    one pgwarden replica, one Patroni replica): `patronictl failover` to the pgwarden member, `pgwarden
    failover` from that pgwarden leader to a Patroni member, `pgwarden switchover` against that Patroni
    leader, and `pgwarden failover` against the next one. After each: the named member leads, every
    other member streams, one writer only."""
    leader = cluster.wait_healthy(60)
    assert runs_patroni(leader)
    ours = next(n for n in cluster.nodes if not runs_patroni(n))
    third = next(n for n in cluster.nodes if n not in (leader, ours))
    with WritableWatcher(cluster) as watch:
        out = ctl(cluster, "failover", SCOPE, "--candidate", ours.name, "--force")
        assert f'Successfully failed over to "{ours.name}"' in out, out
        hand_over(cluster, ours)
        done = pgwarden("failover", "-c", str(ours.config_path), "--candidate", leader.name, "--force")
        assert done.returncode == 0 and "Success" in done.stdout, done.stdout + done.stderr
        hand_over(cluster, leader)
        done = pgwarden("switchover", "-c", str(ours.config_path), "--leader", leader.name,
                        "--candidate", third.name, "--force")
        assert done.returncode == 0 and "Success" in done.stdout, done.stdout + done.stderr
        hand_over(cluster, third)
        done = pgwarden("failover", "-c", str(ours.config_path), "--candidate", leader.name, "--force")
        assert done.returncode == 0 and "Success" in done.stdout, done.stdout + done.stderr
        hand_over(cluster, leader)
    assert not watch.violations, watch.violations


def hand_over(cluster: LocalCluster, to: Node) -> None:
    """Wait until `to` leads (the leader key and /primary) and every other member streams from it."""
    wait(cluster, lambda: cluster.leader() is to and leader_name(cluster) == to.name, 60, f"{to.name} to lead")
    for node in cluster.nodes:
        if node is not to:
            wait(cluster, lambda node=node: streams(node), 90, f"{node.name} to follow {to.name}")  # type: ignore[misc]


def test_host_loss_of_a_patroni_leader_with_pgwarden_replicas(cluster: LocalCluster) -> None:
    """A Patroni leader with pgwarden replicas, failsafe_mode on: etcd frozen, the leader keeps writing
    (the pgwarden replicas accept its POST /failsafe). Then its host dies under writes, its WAL senders
    held first, so that it has WAL no replica received: a pgwarden replica takes over once the Patroni
    lease expires, and the old host comes back under Patroni, which pg_rewinds it from the pgwarden
    leader."""
    leader = cluster.wait_healthy(60)
    assert runs_patroni(leader)
    for replica in (n for n in cluster.nodes if n is not leader and runs_patroni(n)):
        migrate_replica(cluster, replica, patroni=False)
    ctl(cluster, "edit-config", SCOPE, "-s", "failsafe_mode=true", "--force")
    with WritableWatcher(cluster) as watch:
        ride_out_a_dcs_outage(cluster, leader, watch)
        lose_a_diverged_leader(cluster, leader)
        rejoin_with_rewind(cluster, leader, patroni=True)
    assert not watch.violations, watch.violations


def test_host_loss_of_a_pgwarden_leader_with_patroni_replicas(cluster: LocalCluster) -> None:
    """The same the other way round: a pgwarden leader with Patroni replicas rides out an etcd outage
    (the Patroni replicas accept its POST /failsafe past its own 7 s lease); its host dies diverged; a
    Patroni replica takes over once the pgwarden lease expires; the old host comes back under pgwarden,
    which pg_rewinds it from the Patroni leader, and then moves to Patroni: every member runs Patroni
    again (the reverse migration is complete)."""
    leader = cluster.wait_healthy(60)
    assert not runs_patroni(leader)
    for replica in (n for n in cluster.nodes if n is not leader and not runs_patroni(n)):
        migrate_replica(cluster, replica, patroni=True)
    with WritableWatcher(cluster) as watch:
        ride_out_a_dcs_outage(cluster, leader, watch)
        lose_a_diverged_leader(cluster, leader)
        rejoin_with_rewind(cluster, leader, patroni=False)
        migrate_replica(cluster, leader, patroni=True)
    assert not watch.violations, watch.violations
    assert all(runs_patroni(n) for n in cluster.nodes)
    listed = ctl_list(cluster)
    assert sorted(r["Role"] for r in listed.values()) == ["Leader", "Replica", "Replica"], listed
    assert etcd_json(cluster, "history"), "no history row after the failovers"
    ctl(cluster, "edit-config", SCOPE, "-s", "failsafe_mode=false", "--force")


FAILSAFE_HOLD = 15.0
"""Seconds etcd stays frozen: past Patroni's retry_timeout (5 s) and pgwarden's lease (7 s), after
which either leader would have demoted without failsafe mode."""
HELD_WAL = 1.0
"""Seconds the doomed leader's WAL senders are held while it commits: WAL no replica receives."""


def ride_out_a_dcs_outage(cluster: LocalCluster, leader: Node, watch: WritableWatcher) -> None:
    """etcd frozen for FAILSAFE_HOLD seconds in failsafe mode: the leader reports
    failsafe_mode_is_active and keeps acknowledging writes, no other member becomes writable, no
    PostgreSQL restarts; once etcd is back, the same leader holds the key and the replicas stream."""
    wait(cluster, lambda: failsafe_lists_everyone(cluster), 30, "/failsafe listing every member")
    pids = {n.name: n.postmaster_pid() for n in cluster.nodes}
    writer = Writer(cluster.conninfo(leader) + " options='-c statement_timeout=3000'",
                    f"failsafe-{time.time_ns()}", 0.05)
    writer.start()
    try:
        with EtcdOutage(cluster) as outage:
            down = outage.freeze()
            wait(cluster, lambda: (leader.get("/patroni", 1.5)[1] or {}).get("failsafe_mode_is_active") is True,
                 30, f"{leader.name} to report failsafe_mode_is_active")
            while time.monotonic() < down + FAILSAFE_HOLD:
                assert watch.writable() <= {leader.name}, f"writable during the outage: {sorted(watch.writable())}"
                time.sleep(0.2)
            back = outage.restart()
        wait(cluster, lambda: leader_key_holder(cluster) == leader.name, 30, f"{leader.name} to hold the key again")
        hand_over(cluster, leader)
    finally:
        writer.stop()
    during = [a for a in writer.attempts() if down <= a.started <= back]
    failed = [a for a in during if not a.ok]
    assert during and not failed, f"{len(failed)} of {len(during)} writes failed during the outage: {failed[:3]}"
    assert watch.writable_between(down, back) == {leader.name}, watch.history[-5:]
    assert {n.name: n.postmaster_pid() for n in cluster.nodes} == pids, "a PostgreSQL was restarted"


def failsafe_lists_everyone(cluster: LocalCluster) -> bool:
    """`/failsafe` names every member with the api_url of its member key, and every member serves it
    on `GET /failsafe`: each has read a /config with failsafe mode on since `edit-config`, or it would
    refuse the leader's POST /failsafe once the DCS is gone (502, "not enabled": Patroni and pgwarden
    alike answer from their last DCS read)."""
    expected = {name: member.get("api_url") for name, member in members(cluster).items()}
    return (len(expected) == len(cluster.nodes) and etcd_json(cluster, "failsafe") == expected
            and all(node.get("/failsafe", 1.5) == (200, expected) for node in cluster.nodes))


def leader_key_holder(cluster: LocalCluster) -> str | None:
    """The leader key's value; None while etcd cannot answer (restarting)."""
    try:
        return leader_name(cluster)
    except subprocess.SubprocessError:
        return None


def lose_a_diverged_leader(cluster: LocalCluster, leader: Node) -> None:
    """The leader's host dies under writes, its WAL senders held (SIGSTOP) for HELD_WAL seconds first:
    it acknowledged commits no replica has. Returns once another member leads; checks that some
    acknowledged writes are indeed missing there (async replication: they die with the host)."""
    writer = Writer(cluster.multi_host_dsn(), f"diverge-{time.time_ns()}", WRITE_INTERVAL)
    writer.start()
    try:
        wait(cluster, lambda: bool(acknowledged_ids(writer.attempts())), 30, "writes on the leader")
        for pid in wal_sender_pids(cluster, leader):
            os.kill(pid, signal.SIGSTOP)  # killed with the whole instance below
        time.sleep(HELD_WAL)
        cluster.kill_host(leader)
        wait(cluster, lambda: cluster.leader() not in (None, leader), 90, "a new primary")
        wait(cluster, lambda: bool(writer.attempts()) and writer.attempts()[-1].ok, 30, "writes on the new primary")
    finally:
        writer.stop()
    lost = missing_ids(acknowledged_ids(writer.attempts()), stored_ids(cluster.multi_host_dsn(), writer.run))
    assert lost, f"{leader.name} had no WAL the new primary lacks: nothing would need pg_rewind"


def wal_sender_pids(cluster: LocalCluster, node: Node) -> list[int]:
    with psycopg.connect(cluster.conninfo(node), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_replication").fetchall()
    assert rows, f"{node.name} has no WAL sender"
    return [int(row[0]) for row in rows]


def rejoin_with_rewind(cluster: LocalCluster, node: Node, *, patroni: bool) -> None:
    """Start the dead host's agent (Patroni or pgwarden) on its diverged data directory: it must
    pg_rewind (its log says so) and stream from the new leader."""
    offset = node.log_path.stat().st_size
    node.command = patroni_command() if patroni else None
    cluster.start_agent(node)
    kind = "Patroni" if patroni else "pgwarden"
    wait(cluster, lambda: streams(node), 120, f"{node.name} to rejoin under {kind}")
    with node.log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    # Both agents log "running pg_rewind from <leader>" and pg_rewind's own output, which ends "Done!".
    assert "running pg_rewind from" in text and "pg_rewind: Done!" in text, \
        f"{node.name} rejoined under {kind} without a pg_rewind:\n{text[-3000:]}"


@pytest.mark.skipif(not os.environ.get("PGWARDEN_MIGRATION_FULL"),
                    reason="the long variant (about 50 s): set PGWARDEN_MIGRATION_FULL=1")
def test_the_leaders_host_step_with_pgwarden_migrate(cluster: LocalCluster) -> None:
    """Every member on Patroni again (the previous tests went back); both replicas move to pgwarden,
    then `pgwarden migrate --execute` on the leader's host switches over to a pgwarden replica, waits
    until the old leader follows it under Patroni, and replaces Patroni there too."""
    leader = cluster.wait_healthy(60)
    assert all(runs_patroni(n) for n in cluster.nodes)
    early = pgwarden_migrate(cluster, leader, "--execute", "--stop-command", "false", "--start-command", "false")
    assert early.returncode == 1 and f"{leader.name} must wait: first" in early.stderr, early.stdout + early.stderr
    for replica in (n for n in cluster.nodes if n is not leader):
        migrate_replica(cluster, replica, patroni=False)
    with WritableWatcher(cluster) as watch:
        migrate_with_the_cli(cluster, leader)
    assert not watch.violations, watch.violations
    assert cluster.leader() not in (None, leader)
    assert not any(runs_patroni(n) for n in cluster.nodes)
