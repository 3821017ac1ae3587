"""Failsafe mode (`failsafe_mode: true`, contract 2.8 and 4.4) on one real 3-node cluster with one etcd.

The agents read a Patroni user's YAML (`etcd3: {host: ...}`, `failsafe_mode: true` under
bootstrap.dcs). The tests run in order on the same cluster:

1. the leader publishes `/failsafe` = {member: api_url} for every member, and `GET /failsafe` serves it;
2. `POST /failsafe` by hand, with Patroni's body: a replica accepts it (200 `Accepted`, an `lsn`
   header), the primary refuses it (500);
3. etcd frozen (SIGSTOP), then killed (SIGKILL), for OUTAGE seconds while a writer inserts a numbered
   row every 50 ms through the leader: the primary keeps accepting writes throughout, every member
   reports `failsafe_mode_is_active`, and once etcd is back (same data dir) the same leader holds the
   key, `/failsafe` is served again, the replicas stream, and no PostgreSQL was restarted;
4. etcd killed while one replica's agent is frozen: that replica cannot accept the leader's ping, so
   the primary stops accepting writes within the lease; after SIGCONT and etcd's return the cluster
   converges to one primary and streaming replicas;
5. failsafe_mode switched off with `pgwarden edit-config` (GET /failsafe then answers 502): an etcd
   outage makes the primary stop accepting writes within the lease, as without failsafe mode.

A split-brain watcher polls `pg_is_in_recovery()` on every node throughout every test.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgwarden.drill.measure import Attempt, acknowledged_ids
from pgwarden.drill.workload import Writer, prepare_table, stored_ids
from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import (
    ETCDCTL,
    EtcdOutage,
    WritableWatcher,
    agent_log_tails,
    etcd_get,
    etcd_json,
    pgwarden,
    print_logs_if_failed,
    running_user_cluster,
    user_config_path,
    wait_healthy_or_fail,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(ETCDCTL).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd, etcdctl and PostgreSQL 15"),
]

SCOPE = "itfailsafe"
OUTAGE = float(os.environ.get("PGWARDEN_FAILSAFE_OUTAGE", "30"))
"""Seconds etcd stays away in the outage test (the first half frozen, the second half killed)."""
LEASE_TTL = 7
"""pgwarden's leader lease: `pgwarden.lease_ttl` (default 7 s, not set in the YAML), capped by ttl (20)."""
SLACK = 3.0
"""Seconds allowed on top of the lease for the demotion to finish and be observed."""
WRITE_INTERVAL = 0.05
LONGEST_GAP = 2.0
"""The longest pause between two acknowledged writes that still counts as "writes kept working"."""
GAP_SLACK = 0.5
ACTIVE_WITHIN = 25.0
"""Seconds after etcd stops within which every member must report failsafe_mode_is_active."""
HTTP_TIMEOUT = 10.0

PATRONI_YML = """\
# A Patroni user's configuration: one etcd endpoint under `etcd3: host`, failsafe mode switched on
# for the cluster at bootstrap, the replication/superuser/rewind trio.
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
    failsafe_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
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

# never arm a real watchdog device from a test
watchdog:
  mode: off

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"""


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_user_cluster("it-failsafe", SCOPE, PATRONI_YML) as local:
        yield local


@pytest.fixture
def watcher(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[WritableWatcher]:
    """The split-brain watcher for one test; the agents' logs are printed when the test failed."""
    with WritableWatcher(cluster) as watching:
        yield watching
    print_logs_if_failed(cluster, request)
    assert not watching.violations, "two writable nodes at once:\n" + "\n".join(watching.violations[:20])


# --------------------------------------------------------------------------------------------------
# Helpers


def fail(message: str, cluster: LocalCluster) -> None:
    raise AssertionError(f"{message}{agent_log_tails(cluster)}")


def wait(cluster: LocalCluster, predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """wait_until, failing with the agents' logs."""
    try:
        return wait_until(predicate, timeout, what, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}{agent_log_tails(cluster)}") from None


def members(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    """Every member key's JSON, by member name, as etcd holds them."""
    prefix = f"/service/{cluster.scope}/members/"
    return {key.removeprefix(prefix): json.loads(value)
            for key, value in etcd_get(cluster, "members/", prefix=True).items()}


def expected_failsafe(cluster: LocalCluster) -> dict[str, str]:
    """What `/failsafe` must hold: every member's name and the `api_url` its member key publishes."""
    return {name: str(member.get("api_url")) for name, member in members(cluster).items()}


def failsafe_key(cluster: LocalCluster) -> Any:
    try:
        return etcd_json(cluster, "failsafe")
    except Exception:  # etcd restarting: not there yet
        return None


def leader_key(cluster: LocalCluster) -> str | None:
    try:
        return etcd_get(cluster, "leader").get(f"/service/{cluster.scope}/leader")
    except Exception:
        return None


def post_failsafe(node: Node, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    """(status, headers with lower-case names, text) of `POST /failsafe`, sent as a Patroni leader sends it."""
    request = urllib.request.Request(node.api_url + "/failsafe", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def is_position(text: str) -> bool:
    """A WAL position as a header may carry it: an integer, or an LSN such as 0/3000060."""
    if text.isdigit():
        return True
    high, _, low = text.partition("/")
    try:
        int(high, 16), int(low, 16)
    except ValueError:
        return False
    return True


def writer_dsn(cluster: LocalCluster, node: Node) -> str:
    """A DSN to this node alone (the writer follows no failover: it measures this primary)."""
    return cluster.conninfo(node) + " options='-c statement_timeout=3000'"


@contextlib.contextmanager
def writing(cluster: LocalCluster, node: Node, run: str) -> Iterator[Writer]:
    """A writer inserting a numbered row every WRITE_INTERVAL into `node`, running once it has written."""
    dsn = writer_dsn(cluster, node)
    prepare_table(dsn)
    writer = Writer(dsn, run, interval=WRITE_INTERVAL)
    writer.start()
    try:
        wait(cluster, lambda: writer.counts()[0] >= 10, 30, f"the writer's first rows on {node.name}")
        yield writer
    finally:
        writer.stop()


def last_ack(attempts: Sequence[Attempt]) -> float | None:
    return max((a.finished for a in attempts if a.ok), default=None)


def longest_gap(attempts: Sequence[Attempt], start: float, end: float) -> float:
    """The longest time between two acknowledged writes over [start, end] (the acknowledgements just
    before `start` and just after `end` included); infinite when writes never came back after `end`."""
    acks = sorted(a.finished for a in attempts if a.ok)
    before = [t for t in acks if t <= start][-1:]
    inside = [t for t in acks if start < t < end]
    after = [t for t in acks if t >= end][:1]
    if not after:
        return float("inf")
    points = before + inside + after
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


@dataclass(frozen=True)
class Sample:
    at: float
    node: str
    status: int
    active: bool


class StatusSampler:
    """GET /patroni on every node about every `interval` seconds, in a thread; keeps whether each
    answer reported `failsafe_mode_is_active: true`."""

    def __init__(self, cluster: LocalCluster, interval: float = 0.5) -> None:
        self.cluster = cluster
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node in self.cluster.nodes:
                status, body = node.get("/patroni", timeout=1.5)
                active = isinstance(body, dict) and body.get("failsafe_mode_is_active") is True
                self.samples.append(Sample(time.monotonic(), node.name, status, active))
            self._stop.wait(self.interval)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in list(self.samples) if start <= s.at <= end]


def all_report_failsafe_active(cluster: LocalCluster) -> bool:
    for node in cluster.nodes:
        status, body = node.get("/patroni", timeout=1.5)
        if status != 200 or not isinstance(body, dict) or body.get("failsafe_mode_is_active") is not True:
            return False
    return True


def hold(until: float, check: Callable[[], None], interval: float = 0.2) -> None:
    """Let a fault last until the monotonic instant `until`, calling `check` (which raises on a
    violation) all along, so that a broken invariant fails the test at once."""
    while True:
        check()
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(interval, left))


def postmaster_pids(cluster: LocalCluster) -> dict[str, int | None]:
    return {n.name: n.postmaster_pid() for n in cluster.nodes}


def converged(cluster: LocalCluster, timeout: float = 120) -> Node:
    """One primary and every other node streaming (fails fast when an agent exits)."""
    leader = wait_healthy_or_fail(cluster, timeout)
    assert [n.get("/primary")[0] for n in cluster.nodes].count(200) == 1
    return leader


# --------------------------------------------------------------------------------------------------
# 1. The /failsafe key and GET /failsafe


def test_leader_publishes_every_member_in_the_failsafe_key(cluster: LocalCluster, watcher: WritableWatcher) -> None:
    leader = converged(cluster)
    expected: dict[str, str] = {}

    def published() -> bool:
        expected.clear()
        expected.update(expected_failsafe(cluster))
        return len(expected) == len(cluster.nodes) and failsafe_key(cluster) == expected

    with contextlib.suppress(AssertionError):
        wait(cluster, published, 30, "the leader to write /failsafe with every member")
    key = failsafe_key(cluster)
    assert key == expected, f"/failsafe in etcd is {key!r}, expected {expected!r}{agent_log_tails(cluster)}"
    assert set(key) == {n.name for n in cluster.nodes}
    for node in cluster.nodes:
        assert str(key[node.name]).startswith(node.api_url), (node.name, key[node.name])
    for node in cluster.nodes:  # any member serves it, the leader from its own state, the others from the DCS
        status, body = node.get("/failsafe", timeout=HTTP_TIMEOUT)
        assert (status, body) == (200, expected), f"GET /failsafe on {node.name}: {status} {body!r}"
    print(f"\n/failsafe written by {leader.name}: {key}")


# --------------------------------------------------------------------------------------------------
# 2. POST /failsafe by hand


def test_post_failsafe_is_accepted_by_a_replica_and_refused_by_the_primary(
        cluster: LocalCluster, watcher: WritableWatcher) -> None:
    leader = converged(cluster)
    replica = next(n for n in cluster.nodes if n is not leader)
    own = members(cluster)[leader.name]
    body = {"name": leader.name, "conn_url": own["conn_url"], "api_url": own["api_url"], "slots": {}}

    status, headers, text = post_failsafe(replica, body)
    assert status == 200 and text.strip() == "Accepted", f"POST /failsafe on replica {replica.name}: {status} {text!r}"
    lsn = headers.get("lsn")
    assert lsn, f"no lsn header in the replica's answer: {headers}"
    assert is_position(lsn), f"the lsn header is {lsn!r}: neither an integer nor an LSN"

    status, _, text = post_failsafe(leader, body)
    assert status == 500, f"POST /failsafe on the primary {leader.name}: {status} {text!r}"
    assert "Running as a leader" in text, text
    print(f"\nPOST /failsafe: replica {replica.name} accepted (lsn {lsn}), primary {leader.name} answered 500")


# --------------------------------------------------------------------------------------------------
# 3. A DCS outage with failsafe mode: the primary keeps writing


def test_etcd_outage_keeps_the_primary_writing(cluster: LocalCluster, watcher: WritableWatcher) -> None:
    leader = converged(cluster)
    wait(cluster, lambda: failsafe_key(cluster) == expected_failsafe(cluster), 30, "/failsafe listing every member")
    pids = postmaster_pids(cluster)
    run = f"outage-{time.time_ns()}"

    def leader_alone_writable() -> None:
        # In failsafe mode nobody else becomes writable, the primary is never restarted, and it keeps
        # acknowledging writes (checked all along, so that a demotion fails the test at once).
        assert watcher.writable() <= {leader.name}, f"writable: {sorted(watcher.writable())}"
        assert leader.postmaster_pid() == pids[leader.name], "the primary's postmaster changed"
        silent = time.monotonic() - (last_ack(writer.attempts()) or 0)
        if silent > LONGEST_GAP + GAP_SLACK:
            fail(f"no write acknowledged for {silent:.1f}s during the outage", cluster)

    with StatusSampler(cluster) as sampler, writing(cluster, leader, run) as writer, EtcdOutage(cluster) as outage:
        down = outage.freeze()

        def all_active_and_writing() -> bool:
            leader_alone_writable()
            return all_report_failsafe_active(cluster)

        wait(cluster, all_active_and_writing, ACTIVE_WITHIN, "every member to report failsafe_mode_is_active")
        all_active = time.monotonic()
        hold(down + OUTAGE / 2, leader_alone_writable)
        outage.kill()  # really gone now: connections refused instead of hanging
        hold(down + OUTAGE, leader_alone_writable)
        wait(cluster, all_active_and_writing, 10,
             "every member still reporting failsafe_mode_is_active at the end of the outage")
        back = outage.restart()

        wait(cluster, lambda: leader_key(cluster) == leader.name, 30, f"{leader.name} to hold the leader key again")
        wait(cluster, lambda: leader.get("/failsafe", timeout=HTTP_TIMEOUT) == (200, expected_failsafe(cluster)),
             30, "GET /failsafe to serve every member again")
        assert converged(cluster) is leader
        wait(cluster, lambda: not (leader.get("/patroni")[1] or {}).get("failsafe_mode_is_active"), 30,
             "the leader to leave failsafe mode once etcd is back")
        wait(cluster, lambda: (last_ack(writer.attempts()) or 0) > time.monotonic() - 1, 10,
             "writes still acknowledged after the outage")
        samples = sampler.between(all_active, back)

    attempts = writer.attempts()
    during = [a for a in attempts if down <= a.started <= back]
    failed = [a for a in during if not a.ok]
    gap = longest_gap(attempts, down, back)
    print(f"\nfailsafe outage of {back - down:.1f}s: {len(during)} writes attempted, {len(failed)} failed, "
          f"longest gap {gap:.2f}s; every member active after {all_active - down:.1f}s")
    assert not failed, f"{len(failed)} writes failed during the outage, first: {failed[0]}"
    assert gap <= LONGEST_GAP + GAP_SLACK, f"writes paused for {gap:.2f}s during the outage{agent_log_tails(cluster)}"

    inactive = [s for s in samples if s.status != 0 and not s.active]
    assert not inactive, f"members not reporting failsafe_mode_is_active during the outage: {inactive[:10]}"
    assert {s.node for s in samples if s.active} == {n.name for n in cluster.nodes}

    assert postmaster_pids(cluster) == pids, "a PostgreSQL was restarted"
    missing = set(acknowledged_ids(attempts)) - set(stored_ids(writer_dsn(cluster, leader), run))
    assert not missing, f"acknowledged rows missing on the primary: {sorted(missing)[:20]}"
    assert failsafe_key(cluster) == expected_failsafe(cluster)


# --------------------------------------------------------------------------------------------------
# 4. A DCS outage with a member that cannot answer: the primary demotes within the lease


def test_etcd_outage_with_a_frozen_replica_stops_writes_within_the_lease(
        cluster: LocalCluster, watcher: WritableWatcher) -> None:
    leader = converged(cluster)
    wait(cluster, lambda: failsafe_key(cluster) == expected_failsafe(cluster), 30, "/failsafe listing every member")
    frozen = next(n for n in cluster.nodes if n is not leader)
    assert frozen.agent is not None
    frozen_pid = frozen.agent.pid
    run = f"frozen-{time.time_ns()}"

    def old_primary_stays_down() -> None:
        assert not watcher.writable(), f"writable while etcd is down: {sorted(watcher.writable())}"

    with writing(cluster, leader, run) as writer, EtcdOutage(cluster) as outage:
        # Freeze first, then take etcd away at once: the frozen member's key is still listed in
        # /failsafe, so the leader must ping it, and it cannot answer.
        os.kill(frozen_pid, signal.SIGSTOP)
        try:
            down = outage.kill()
            deadline = down + LEASE_TTL + SLACK
            try:
                stopped = watcher.wait(lambda writers: leader.name not in writers, deadline - time.monotonic() + 1,
                                       f"{leader.name} to stop accepting writes")
            except TimeoutError:
                fail(f"{leader.name} still accepts writes {LEASE_TTL + SLACK:.0f}s after etcd went away, with "
                     f"{frozen.name} unable to answer the failsafe ping", cluster)
            hold(deadline + 3, old_primary_stays_down)
            acked = last_ack(writer.attempts())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen_pid, signal.SIGCONT)
        print(f"\nfrozen {frozen.name}, etcd gone: {leader.name} stopped accepting writes after {stopped - down:.1f}s "
              f"(last acknowledged write at {(acked or down) - down:+.1f}s)")
        assert acked is not None and acked <= deadline, (
            f"the last write was acknowledged {(acked or 0) - down:.1f}s after etcd went away (lease {LEASE_TTL}s)")
        assert not watcher.writable_between(down + LEASE_TTL + SLACK, time.monotonic())
        # The old primary is a replica or not running.
        status, body = leader.get("/patroni")
        assert not (status == 200 and isinstance(body, dict) and body.get("role") in ("primary", "master")
                    and body.get("state") == "running"), f"{leader.name} still reports itself a running primary: {body}"

    new = converged(cluster)
    print(f"after SIGCONT and etcd's return: {new.name} is the primary, the others stream")


# --------------------------------------------------------------------------------------------------
# 5. Failsafe mode switched off: the primary demotes within the lease, as without it


def test_without_failsafe_mode_an_etcd_outage_stops_writes_within_the_lease(
        cluster: LocalCluster, watcher: WritableWatcher) -> None:
    leader = converged(cluster)
    config = user_config_path(leader)
    edited = pgwarden("-c", str(config), "edit-config", "-s", "failsafe_mode=false", "--force")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    try:
        wait(cluster, lambda: all(n.get("/failsafe", timeout=HTTP_TIMEOUT)[0] == 502 for n in cluster.nodes), 30,
             "GET /failsafe to answer 502 on every member once failsafe_mode is off")
        run = f"off-{time.time_ns()}"
        with writing(cluster, leader, run) as writer, EtcdOutage(cluster) as outage:
            down = outage.freeze()
            deadline = down + LEASE_TTL + SLACK
            try:
                stopped = watcher.wait(lambda writers: leader.name not in writers, deadline - time.monotonic() + 1,
                                       f"{leader.name} to stop accepting writes")
            except TimeoutError:
                fail(f"without failsafe mode {leader.name} still accepts writes {LEASE_TTL + SLACK:.0f}s after etcd "
                     "froze", cluster)
            hold(deadline + 2, lambda: None)
            acked = last_ack(writer.attempts())
            assert not watcher.writable_between(deadline, time.monotonic()), "a node accepted writes without etcd"
            print(f"\nfailsafe off, etcd frozen: {leader.name} stopped accepting writes after {stopped - down:.1f}s")
            assert acked is not None and acked <= deadline, (
                f"the last write was acknowledged {(acked or 0) - down:.1f}s after etcd froze (lease {LEASE_TTL}s)")
        converged(cluster)
    finally:
        restored = pgwarden("-c", str(config), "edit-config", "-s", "failsafe_mode=true", "--force")
        assert restored.returncode == 0, restored.stdout + restored.stderr
