#!/usr/bin/env python3
"""Write unavailability of a whole rolling migration from Patroni to pgwarden.

Each run builds a local 3-node cluster bootstrapped by Patroni 4.1 (etcd v3, PostgreSQL 15 on loopback,
as the postgres user; ttl 20, loop_wait 2, retry_timeout 5), starts a writer inserting a numbered row
every `--interval` seconds (10 ms by default) through a libpq multi-host DSN with
`target_session_attrs=read-write`, and migrates as docs/migrating-from-patroni.md says: Patroni stopped
and pgwarden started on each replica in turn (waiting until it streams), a switchover to a pgwarden
replica through pgwarden's REST API, then the old leader. It reports, as medians (min-max) over
`--repeat` runs: the total time writes were impossible (failed, or took more than `--blocked-after`
seconds), the longest such window, failed write attempts, acknowledged writes lost, and how long the
migration took.

    cd /work/main
    sudo /opt/pgwarden/venv/bin/python benchmarks/migration.py --repeat 3

Nothing here asserts: the numbers are for notes, never for a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pgwarden.drill.measure import acknowledged_ids, missing_ids, outage_windows, spread
from pgwarden.drill.workload import Writer, prepare_table, stored_ids
from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.patroni import patroni_available, patroni_command
from pgwarden.localcluster.processes import wait_until

STEP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Run:
    unavailable: float
    """Seconds writes were impossible, summed over every window."""
    longest: float
    failed: int
    lost: int
    migration: float
    """Seconds from the first agent stopped to the last one streaming."""


def streams(node: Node) -> bool:
    return node.get("/replica", 1.0)[0] == 200


def swap(cluster: LocalCluster, node: Node) -> None:
    """Stop Patroni on `node`, start pgwarden on the same file and data directory, wait until it streams."""
    cluster.stop_agent(node)
    node.command = None
    cluster.start_agent(node)
    wait_until(lambda: streams(node), STEP_TIMEOUT, f"{node.name} streaming under pgwarden")


def one_run(index: int, interval: float, blocked_after: float) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-bench-migration-", dir="/tmp"))
    workdir.chmod(0o755)  # the agents run as postgres
    cluster = LocalCluster(workdir, size=3, scope=f"benchmig{index}", etcd_ports=(0, 0), pg_base_port=0,
                           api_base_port=0)
    try:
        cluster.prepare()
        for node in cluster.nodes:
            node.command = patroni_command()
        cluster.start_etcd()
        for node in cluster.nodes:
            cluster.start_agent(node)
        old = cluster.wait_healthy(STEP_TIMEOUT)
        dsn = cluster.multi_host_dsn()
        prepare_table(dsn)
        writer = Writer(dsn, f"migration{index}", interval)
        writer.start()
        time.sleep(2)  # a steady state before the first step
        started = time.monotonic()
        try:
            replicas = [n for n in cluster.nodes if n is not old]
            for replica in replicas:
                swap(cluster, replica)
            status, body = replicas[0].get("/patroni")
            assert status == 200, body
            request = json.dumps({"leader": old.name, "candidate": replicas[0].name}).encode()
            call = urllib.request.Request(replicas[0].api_url + "/switchover", data=request, method="POST",
                                          headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(call, timeout=90) as response:
                response.read()
            wait_until(lambda: cluster.leader() is replicas[0], STEP_TIMEOUT, f"{replicas[0].name} to lead")
            wait_until(lambda: streams(old), STEP_TIMEOUT, f"{old.name} to follow")
            swap(cluster, old)
            finished = time.monotonic()
            time.sleep(2)
        finally:
            writer.stop()
        attempts = writer.attempts()
        windows, _ = outage_windows(attempts, started, blocked_after)
        lost = missing_ids(acknowledged_ids(attempts), stored_ids(dsn, writer.run))
        durations = [w.duration for w in windows]
        return Run(unavailable=sum(durations), longest=max(durations, default=0.0),
                   failed=sum(1 for a in attempts if not a.ok and a.started >= started), lost=len(lost),
                   migration=finished - started)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between writes")
    parser.add_argument("--blocked-after", type=float, default=1.0,
                        help="a write slower than this counts as writes being impossible")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON too")
    args = parser.parse_args(argv)
    if not patroni_available():
        print("Patroni is not installed (scripts/setup.sh installs it in /opt/patroni/venv)", file=sys.stderr)
        return 2
    runs = []
    for index in range(args.repeat):
        run = one_run(index, args.interval, args.blocked_after)
        runs.append(run)
        print(f"run {index + 1}: writes impossible {run.unavailable:.2f}s (longest {run.longest:.2f}s), "
              f"{run.failed} failed attempts, {run.lost} acknowledged writes lost, migration {run.migration:.1f}s",
              flush=True)
    for name in ("unavailable", "longest", "migration"):
        got = spread(getattr(r, name) for r in runs)
        print(f"{name}: median {got.median:.2f}s ({got.min:.2f}-{got.max:.2f}, n={got.n})")
    print(f"acknowledged writes lost: {sum(r.lost for r in runs)}")
    if args.json:
        print(json.dumps([asdict(r) for r in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
