"""A standby cluster in another site, on real processes (issue 15): two pgwarden clusters on one etcd.

Site A (scope site-a, 2 nodes) is a primary cluster; site B (scope site-b, 2 nodes) is a standby cluster of
A, started from Patroni-style YAML with `standby_cluster` under `bootstrap.dcs`. Each site's members listen
on their own loopback addresses and one port, so the other site reaches it at one stable multi-host entry
(`host: 127.0.15.1,127.0.15.2`, libpq tries them in turn): what an operator writes with a DNS name or a
proxy per site. libpq's target_session_attrs cannot be set there, so B's standby leader may stream from
A's replica (cascading): it follows A's timeline either way.

In order, on one pair of clusters: rows written on A reach both members of B; A's primary dies and B
follows A's new primary; B's standby leader dies and B's other member takes over as standby leader, still
following A; then the site switchover: `pgwarden
demote-cluster` on A, `pgwarden promote-cluster` on B, and A follows B. A watcher tries to write on every
member of B every half second until the promotion starts: none may ever succeed.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import agent_log_tails, pgwarden, user_config_path, user_yaml_writer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

SITE_A_IPS = ("127.0.15.1", "127.0.15.2")
SITE_B_IPS = ("127.0.15.11", "127.0.15.12")
SUPERUSER_PASSWORD = "demo-superuser-secret"

PATRONI_YML = """\
# A Patroni user's configuration for one member of one site: the site's members share a port, each on
# its own address, so the other site reaches this one at one multi-host entry.
scope: ${scope}
namespace: /service/
name: ${name}

restapi:
  listen: 127.0.0.1:${api_port}
  connect_address: 127.0.0.1:${api_port}

etcd3:
  host: ${shared_etcd}

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
        wal_keep_size: 128MB
        max_connections: 100
${standby}
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.0/8 scram-sha-256
  - host all all 127.0.0.0/8 scram-sha-256

postgresql:
  listen: ${ip}:${site_port}
  connect_address: ${ip}:${site_port}
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

STANDBY_OF_A = """\
    standby_cluster:
      host: ${remote_hosts}
      port: ${remote_port}"""


class Site:
    """One site: a LocalCluster whose members listen on `ips` at one port."""

    def __init__(self, workdir: Path, scope: str, ips: tuple[str, ...], etcd: LocalCluster | None,
                 standby_of: Site | None = None) -> None:
        self.ips, self.port = ips, free_port()
        template = PATRONI_YML.replace("${standby}", STANDBY_OF_A if standby_of is not None else "")

        def values(node: Node) -> dict[str, object]:
            shared = etcd if etcd is not None else self.cluster
            out: dict[str, object] = {"ip": self.ip(node), "site_port": self.port,
                                      "shared_etcd": f"127.0.0.1:{shared.etcd_ports[0]}"}
            if standby_of is not None:
                out.update(remote_hosts=standby_of.hosts, remote_port=standby_of.port)
            return out

        self.cluster = LocalCluster(workdir, size=len(ips), scope=scope, etcd_ports=(0, 0), pg_base_port=0,
                                    api_base_port=0, write_config=user_yaml_writer(template, values))

    @property
    def hosts(self) -> str:
        return ",".join(self.ips)

    @property
    def nodes(self) -> list[Node]:
        return self.cluster.nodes

    def ip(self, node: Node) -> str:
        return self.ips[self.cluster.nodes.index(node)]

    def conninfo(self, node: Node) -> str:
        return (f"host={self.ip(node)} port={self.port} user=postgres dbname=postgres "
                f"password={SUPERUSER_PASSWORD} connect_timeout=2")

    def sql(self, node: Node, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo(node), autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def start_agents(self) -> None:
        for node in self.nodes:
            self.cluster.start_agent(node)

    def with_status(self, path: str) -> list[Node]:
        return [n for n in self.nodes if n.agent is not None and n.get(path, 1.0)[0] == 200]

    def wait_roles(self, leader_path: str, timeout: float, what: str) -> Node:
        """The one member answering `leader_path` with 200 once every other running member streams."""
        def ready() -> bool:
            running = [n for n in self.nodes if n.agent is not None]
            return len(self.with_status(leader_path)) == 1 and len(self.with_status("/replica")) == len(running) - 1

        try:
            wait_until(ready, timeout, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}{agent_log_tails(self.cluster)}") from None
        return self.with_status(leader_path)[0]

    def wait_rows(self, count: int, timeout: float = 30) -> None:
        """Every running member has replayed `count` rows of the test table."""
        def seen() -> bool:
            try:
                return all(self.sql(n, "SELECT count(*) FROM sites")[0][0] >= count
                           for n in self.nodes if n.agent is not None)
            except psycopg.Error:
                return False

        wait_until(seen, timeout, f"{count} rows on every member of {self.cluster.scope}")


class WriteWatcher:
    """Tries an INSERT on every member of a site every half second; any success is a write on a standby."""

    def __init__(self, site: Site) -> None:
        self.site, self.accepted, self.refused = site, list[str](), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WriteWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for node in self.site.nodes:
                try:
                    self.site.sql(node, "INSERT INTO sites VALUES ('written on a standby')")
                    self.accepted.append(node.name)
                except psycopg.errors.ReadOnlySqlTransaction:
                    self.refused += 1
                except psycopg.Error:
                    pass  # not answering (a dead member, a restart): no write either


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[Site, Site]]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-standby-"))
    workdir.chmod(0o755)  # the agents run as postgres
    a = Site(workdir / "a", "site-a", SITE_A_IPS, None)
    b = Site(workdir / "b", "site-b", SITE_B_IPS, a.cluster, standby_of=a)
    try:
        a.cluster.prepare()
        a.cluster.start_etcd()
        a.start_agents()
        primary = a.wait_roles("/primary", 60, "site A: a primary and a streaming replica")
        a.sql(primary, "CREATE TABLE sites (note text)")
        a.sql(primary, "INSERT INTO sites VALUES ('written on A before B existed')")
        b.cluster.prepare()
        b.start_agents()
        b.wait_roles("/standby-leader", 60, "site B: a standby leader and a streaming replica")
        yield a, b
    finally:
        b.cluster.stop()
        a.cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def watcher(sites: tuple[Site, Site]) -> Iterator[WriteWatcher]:
    with WriteWatcher(sites[1]) as watching:
        yield watching


def test_site_b_follows_site_a_and_never_writes(sites: tuple[Site, Site], watcher: WriteWatcher) -> None:
    a, b = sites
    primary = a.wait_roles("/primary", 30, "site A's primary")
    a.sql(primary, "INSERT INTO sites VALUES ('written on A')")
    b.wait_rows(2)
    leader = b.with_status("/standby-leader")[0]
    assert leader.get("/primary")[0] == 503
    status = leader.get("/patroni")[1] or {}
    assert status.get("role") == "standby_leader", status
    members = {m["name"]: m["role"] for m in (leader.get("/cluster")[1] or {}).get("members", [])}
    assert members[leader.name] == "standby_leader", members
    listed = pgwarden("list", "-c", str(user_config_path(leader)))
    assert "Standby Leader" in listed.stdout, listed
    for node in b.nodes:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            b.sql(node, "INSERT INTO sites VALUES ('must fail')")
    assert not watcher.accepted


def test_site_a_fails_over_and_b_follows_its_new_primary(sites: tuple[Site, Site], watcher: WriteWatcher) -> None:
    a, b = sites
    old = a.wait_roles("/primary", 30, "site A's primary")
    a.cluster.kill_host(old)
    new = next(n for n in a.nodes if n is not old)
    wait_until(lambda: new.get("/primary", 1.0)[0] == 200, 40, f"{new.name} as site A's new primary")
    a.sql(new, "INSERT INTO sites VALUES ('written on A after its failover')")
    b.wait_rows(3)
    a.cluster.start_agent(old)
    a.wait_roles("/primary", 60, "site A whole again")
    assert not watcher.accepted


def test_another_member_of_b_takes_over_as_standby_leader(sites: tuple[Site, Site], watcher: WriteWatcher) -> None:
    a, b = sites
    dead = b.with_status("/standby-leader")[0]
    b.cluster.kill_host(dead)
    survivor = next(n for n in b.nodes if n is not dead)
    wait_until(lambda: survivor.get("/standby-leader", 1.0)[0] == 200, 30, f"{survivor.name} as standby leader")
    primary = a.wait_roles("/primary", 30, "site A's primary")
    a.sql(primary, "INSERT INTO sites VALUES ('written on A after B lost its standby leader')")
    b.wait_rows(4)
    b.cluster.start_agent(dead)
    assert b.wait_roles("/standby-leader", 60, "site B whole again") is survivor
    b.wait_rows(4)
    assert not watcher.accepted


def _replayed(node: Node) -> int:
    xlog = (node.get("/patroni")[1] or {}).get("xlog") or {}
    return int(xlog.get("replayed_location") or xlog.get("location") or 0)


def test_site_switchover(sites: tuple[Site, Site], watcher: WriteWatcher) -> None:
    a, b = sites
    old_primary = a.wait_roles("/primary", 30, "site A's primary")
    demoted = pgwarden("demote-cluster", "-c", str(user_config_path(old_primary)), "--host", b.hosts,
                       "--port", str(b.port), "--force")
    assert demoted.returncode == 0, f"{demoted.stdout}{demoted.stderr}{agent_log_tails(a.cluster)}"
    a_leader = a.wait_roles("/standby-leader", 30, "site A demoted")
    for node in a.nodes:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            a.sql(node, "INSERT INTO sites VALUES ('must fail: A is a standby now')")
    # Before promoting B, make sure it has all of A's WAL (A's shutdown checkpoint included): the
    # operator's check that nothing written on A is left behind.
    b_leader = b.with_status("/standby-leader")[0]
    wait_until(lambda: _replayed(b_leader) >= _replayed(a_leader) > 0, 30, "site B to have all of site A's WAL")
    watcher.__exit__()  # B is about to become writable
    assert not watcher.accepted and watcher.refused > 0
    promoted = pgwarden("promote-cluster", "-c", str(user_config_path(b_leader)), "--force")
    assert promoted.returncode == 0, f"{promoted.stdout}{promoted.stderr}{agent_log_tails(b.cluster)}"
    new_primary = b.wait_roles("/primary", 30, "site B promoted")
    b.sql(new_primary, "INSERT INTO sites VALUES ('written on B after the switchover')")
    a.wait_rows(5)
    with contextlib.suppress(Exception):
        print(pgwarden("list", "-c", str(user_config_path(a_leader))).stdout)
