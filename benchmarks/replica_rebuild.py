#!/usr/bin/env python3
"""Time to create a replica from a pgBackRest repository versus with pg_basebackup, for the same data.

It builds a local two-node cluster (etcd, two pgwarden agents and PostgreSQL 15 on loopback, as the
postgres user), fills the primary with `pgbench -i -s SCALE` (scale 70 is about 1 GB), archives its WAL
into a pgBackRest repository on the local file system and takes a full backup. Then, `--repeat` times
for each method, it stops the second member's agent, empties its data directory, configures its
`create_replica_methods` as `[pgbackrest]` (a restore, `no_params`) or `[basebackup]`, starts the agent
and measures until the member's `/replica` answers 200 (the new replica streams): the whole replica
creation as pgwarden runs it, the restore or copy, the configuration and the start.

    cd /work/main
    sudo /opt/pgwarden/venv/bin/python benchmarks/replica_rebuild.py --scale 70 --repeat 3

Nothing here asserts: the numbers are for notes and the README, never for a test.
"""

from __future__ import annotations

import argparse
import copy
import os
import pwd
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node
from pgwarden.localcluster.pgbackrest import PgBackRest
from pgwarden.localcluster.postgres import PG_BIN, PG_USER
from pgwarden.localcluster.processes import wait_until

STANZA = "bench"
METHODS = ("pgbackrest", "basebackup")


def _methods(repo: PgBackRest, node: Node, method: str) -> dict[str, Any]:
    if method == "basebackup":
        return {"postgresql": {"create_replica_methods": ["basebackup"]}}
    return {"postgresql": {"create_replica_methods": ["pgbackrest"], "pgbackrest": {
        "command": repo.shell(f"--pg1-path={node.data_dir}", "--delta", "restore"), "keep_data": True,
        "no_params": True}}}


def _as_postgres(argv: list[str], timeout: float) -> None:
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    subprocess.run(argv, check=True, timeout=timeout, capture_output=True, **kwargs)


def _size(node: Node) -> str:
    out = subprocess.run(["du", "-sh", str(node.data_dir)], capture_output=True, text=True, check=False).stdout
    return out.split()[0] if out else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70: about 1 GB)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-bench-rebuild-", dir="/tmp"))
    workdir.chmod(0o755)
    repo = PgBackRest(workdir / "pgbackrest", STANZA)
    chosen = {"method": "basebackup"}
    dcs = copy.deepcopy(DEMO_DCS)

    def extra(node: Node) -> dict[str, Any]:
        config: dict[str, Any] = {"postgresql": {"parameters": {
            "archive_mode": "on", "archive_command": repo.archive_command, "unix_socket_directories": str(node.dir)}}}
        if node.name == "node2":
            config["postgresql"].update(_methods(repo, node, chosen["method"])["postgresql"])
        return config

    cluster = LocalCluster(workdir / "cluster", size=2, scope=STANZA, dcs=dcs, etcd_ports=(0, 0), pg_base_port=0,
                           api_base_port=0, extra_config=extra)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    try:
        cluster.prepare()
        primary, replica = cluster.nodes
        repo.write_config(primary.data_dir, primary.pg_port, primary.dir)
        cluster.start_etcd()
        cluster.start_agent(primary)
        cluster.wait_healthy(120, replicas=0)
        started = time.monotonic()
        _as_postgres([f"{PG_BIN}/pgbench", "-i", "-q", "-s", str(args.scale), "-h", str(primary.dir), "-p",
                      str(primary.pg_port), "-U", "postgres", "postgres"], 3600)
        print(f"pgbench -i -s {args.scale}: {time.monotonic() - started:.0f}s, data directory {_size(primary)}")
        repo.create_stanza()
        started = time.monotonic()
        repo.full_backup()
        print(f"full backup: {time.monotonic() - started:.0f}s")
        for _ in range(args.repeat):
            for method in METHODS:
                if replica.agent is not None:
                    cluster.stop_agent(replica)
                shutil.rmtree(replica.data_dir, ignore_errors=True)
                chosen["method"] = method
                replica.config_path.write_text(yaml.safe_dump(cluster.node_config(replica), sort_keys=False))
                started = time.monotonic()
                cluster.start_agent(replica)
                wait_until(lambda: replica.get("/replica", 1.0)[0] == 200, 1800, f"a replica by {method}", 0.1)
                times[method].append(time.monotonic() - started)
                print(f"{method}: {times[method][-1]:.1f}s")
        for method in METHODS:
            runs = times[method]
            print(f"{method:>10}: median {statistics.median(runs):.1f}s (min {min(runs):.1f}, max {max(runs):.1f}; "
                  f"{len(runs)} runs)")
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
