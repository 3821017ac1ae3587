#!/usr/bin/env python3
"""A planned site switchover: how long no site accepts writes (demote-cluster, then promote-cluster).

It builds two local pgwarden clusters of `--size` members on one etcd (site A primary, site B a standby
cluster of A, as tests/integration/test_standby_cluster.py does: each site's members on their own loopback
addresses at one port, the other site named by a multi-host entry), starts a writer inserting a row every
`--interval` seconds (default 50 ms) through one libpq multi-host DSN over all members with
`target_session_attrs=read-write` (it reconnects after an error, so it finds whichever node is writable),
then `--repeat` times moves the writable site to the other one, as docs/disaster-recovery.md says:

1. `pgwarden demote-cluster --host <other site> --port <port> --force` on the writable site;
2. waits until the other site's standby leader has replayed all of the demoted site's WAL;
3. `pgwarden promote-cluster --force` on the other site;
4. waits for the first acknowledged write.

It prints each round's window without writes (last acknowledged write before, first after) and the median.

    cd /work/main
    sudo /opt/pgwarden/venv/bin/python benchmarks/site_switchover.py --repeat 3

Nothing here asserts: the numbers are for notes, never for a test.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

PASSWORD = "demo-superuser-secret"
TEMPLATE = """\
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
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_keep_size: 128MB
${standby}
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.0/8 scram-sha-256
  - host all all 127.0.0.0/8 scram-sha-256
postgresql:
  listen: ${ip}:${port}
  connect_address: ${ip}:${port}
  data_dir: ${node_dir}/data
  bin_dir: ${pg_bin}
  pgpass: ${node_dir}/pgpass
  authentication:
    superuser: {username: postgres, password: demo-superuser-secret}
    replication: {username: replicator, password: demo-replication-secret}
    rewind: {username: rewind_user, password: demo-rewind-secret}
  parameters:
    unix_socket_directories: '${node_dir}'
  use_pg_rewind: true
watchdog:
  mode: off
"""
STANDBY = """\
    standby_cluster:
      host: ${remote_hosts}
      port: ${remote_port}"""


class Site:
    def __init__(self, workdir: Path, scope: str, ips: list[str], etcd: LocalCluster | None,
                 remote: Site | None = None) -> None:
        self.ips, self.port = ips, free_port()
        template = TEMPLATE.replace("${standby}", STANDBY if remote is not None else "")

        def write(node: Node, ours: dict[str, Any]) -> list[str]:
            shared = etcd if etcd is not None else self.cluster
            values: dict[str, object] = {
                "scope": scope, "name": node.name, "api_port": node.api_port, "node_dir": node.dir,
                "pg_bin": PG_BIN, "etcd": f"127.0.0.1:{shared.etcd_ports[0]}", "ip": self.ip(node),
                "port": self.port}
            if remote is not None:
                values.update(remote_hosts=remote.hosts, remote_port=remote.port)
            path = node.dir / "patroni.yml"
            path.write_text(string.Template(template).substitute(values))
            return [str(path)]

        self.cluster = LocalCluster(workdir, size=len(ips), scope=scope, etcd_ports=(0, 0), pg_base_port=0,
                                    api_base_port=0, write_config=write)

    @property
    def hosts(self) -> str:
        return ",".join(self.ips)

    def ip(self, node: Node) -> str:
        return self.ips[self.cluster.nodes.index(node)]

    def config(self) -> str:
        node = self.cluster.nodes[0]
        return str(node.dir / "patroni.yml")

    def start(self) -> None:
        for node in self.cluster.nodes:
            self.cluster.start_agent(node)

    def member(self, path: str) -> Node | None:
        found = [n for n in self.cluster.nodes if n.get(path, 1.0)[0] == 200]
        return found[0] if len(found) == 1 else None

    def ready(self, path: str) -> bool:
        replicas = [n for n in self.cluster.nodes if n.get("/replica", 1.0)[0] == 200]
        return self.member(path) is not None and len(replicas) == len(self.cluster.nodes) - 1


def replayed(node: Node) -> int:
    xlog = (node.get("/patroni")[1] or {}).get("xlog") or {}
    return int(xlog.get("replayed_location") or xlog.get("location") or 0)


class Writer:
    """Inserts a row every `interval` seconds wherever writes are accepted; keeps the acknowledgement times."""

    def __init__(self, dsn: str, interval: float) -> None:
        self.dsn, self.interval, self.acked = dsn, interval, list[float]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(self.interval):
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                conn.execute("INSERT INTO ticks VALUES (now())")
                self.acked.append(time.monotonic())
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None


def pgwarden(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pgwarden.cli.entry", *args], capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pgwarden {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def switch(old: Site, new: Site, writer: Writer) -> float:
    """Move the writable site from `old` to `new`; the window without acknowledged writes, in seconds."""
    started = time.monotonic()
    pgwarden("-c", old.config(), "demote-cluster", "--host", new.hosts, "--port", str(new.port), "--force")
    demoted = time.monotonic()
    old_leader, new_leader = old.member("/standby-leader"), new.member("/standby-leader")
    assert old_leader is not None and new_leader is not None
    wait_until(lambda: replayed(new_leader) >= replayed(old_leader) > 0, 60, "the new site to have all WAL")
    caught_up = time.monotonic()
    pgwarden("-c", new.config(), "promote-cluster", "--force")
    promoted = time.monotonic()
    wait_until(lambda: writer.acked and writer.acked[-1] > started and new.member("/primary") is not None, 60,
               "writes on the new site")
    first = min(t for t in writer.acked if t > started)
    print(f"  demote-cluster returned after {demoted - started:.2f}s, WAL caught up after {caught_up - started:.2f}s,"
          f" promote-cluster returned after {promoted - started:.2f}s, first write after {first - started:.2f}s")
    last_before = max(t for t in writer.acked if t <= started)
    later = [t for t in writer.acked if t >= last_before]
    return max(b - a for a, b in itertools.pairwise(later))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-site-switchover-"))
    workdir.chmod(0o755)
    a = Site(workdir / "a", "site-a", [f"127.0.16.{i + 1}" for i in range(args.size)], None)
    b = Site(workdir / "b", "site-b", [f"127.0.16.{i + 11}" for i in range(args.size)], a.cluster, remote=a)
    writer: Writer | None = None
    try:
        a.cluster.prepare()
        a.cluster.start_etcd()
        a.start()
        wait_until(lambda: a.ready("/primary"), 120, "site A")
        primary = a.member("/primary")
        assert primary is not None
        with psycopg.connect(f"host={a.ip(primary)} port={a.port} user=postgres password={PASSWORD} "
                             "dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE TABLE ticks (at timestamptz)")
        b.cluster.prepare()
        b.start()
        wait_until(lambda: b.ready("/standby-leader"), 120, "site B")
        hosts = ",".join([*a.ips, *b.ips])
        ports = ",".join([str(a.port)] * len(a.ips) + [str(b.port)] * len(b.ips))
        writer = Writer(f"host={hosts} port={ports} user=postgres password={PASSWORD} dbname=postgres "
                        "connect_timeout=1 target_session_attrs=read-write", args.interval)
        writer.start()
        windows = []
        old, new = a, b
        for round_ in range(args.repeat):
            time.sleep(3)
            window = switch(old, new, writer)
            windows.append(window)
            print(f"round {round_ + 1}: {old.cluster.scope} -> {new.cluster.scope}: no writes for {window:.2f}s",
                  flush=True)
            old, new = new, old
        print(f"site switchover, writes impossible for: median {statistics.median(windows):.2f}s "
              f"(min {min(windows):.2f}s, max {max(windows):.2f}s) over {len(windows)} rounds")
    finally:
        if writer is not None:
            writer.stop()
        b.cluster.stop()
        a.cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
