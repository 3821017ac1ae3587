#!/usr/bin/env python3
"""Synchronous replication benchmarks (issue 7): acknowledged commits lost over host-loss drills, host-loss
failover time in synchronous vs asynchronous mode, and the commit-latency cost of each mode (pgbench).

For each mode (`async`, `on`, `quorum`) it builds a local cluster (`--size` nodes, default 5, with
`synchronous_node_count` `--count`, default 2; pgwarden's own timings, so the 7 s leader lease), then:

1. pgbench against the primary: `--clients` clients (default 8) for `--pgbench-seconds`, each transaction
   one autocommit INSERT, so every transaction is one commit that waits for the standbys in sync modes;
2. `--drills` host-loss drills (`--async-drills` in async mode) under the drill's steady write load (100
   writes/s through a multi-host DSN): SIGKILL of the primary's agent and PostgreSQL at once, the
   drill's "writes impossible for" and "new primary answers after", and every acknowledged write looked
   up on the new primary. Before each drill it waits until the primary has published its full set of
   synchronous standbys in /sync, so every drill starts from the steady state.

    cd /work/main   # the repository root: the script reuses benchmarks/run.py's helpers
    sudo /opt/pgwarden/venv/bin/python -m benchmarks.sync --drills 25 --async-drills 10 --json /tmp/sync.json

Nothing here asserts: the numbers are for the issue's note and the README.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.run import ProgressPrinter, restarter
from pgwarden.config import load_local
from pgwarden.drill import Drill, DrillOptions, Fault, read_topology
from pgwarden.drill.runner import RunResult
from pgwarden.drill.topology import multi_host_dsn
from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

MODES = ("async", "on", "quorum")
PGBENCH = str(Path(PG_BIN, "pgbench"))
PGBENCH_TABLE = "pgbench_sync"
PGBENCH_SCRIPT = f"INSERT INTO {PGBENCH_TABLE} (v) VALUES (1);\n"
SETTLE_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------------
# The cluster


def build_cluster(mode: str, size: int, count: int) -> LocalCluster:
    """A cluster with pgwarden's default timings, in `mode` (async = synchronous_mode off)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"pgwarden-bench-sync-{mode}-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its node directories
    dcs = {k: v for k, v in DEMO_DCS.items() if k not in ("ttl", "loop_wait", "retry_timeout")}
    dcs["synchronous_mode"] = "off" if mode == "async" else mode
    dcs["synchronous_node_count"] = count
    return LocalCluster(workdir, size=size, scope=f"bench{mode}", dcs=dcs, etcd_ports=(0, 0), pg_base_port=0,
                        api_base_port=0)


def read_sync_key(cluster: LocalCluster) -> dict[str, Any] | None:
    """The raw /sync key, through etcd's v3 JSON gateway."""
    key = base64.b64encode(f"/service/{cluster.scope}/sync".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_ports[0]}/v3/kv/range",
                                     data=json.dumps({"key": key}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.loads(response.read()).get("kvs") or []
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


def sync_names(sync: Mapping[str, Any] | None) -> list[str]:
    return [n for n in str((sync or {}).get("sync_standby") or "").split(",") if n]


def wait_sync_settled(cluster: LocalCluster, mode: str, count: int) -> dict[str, Any] | None:
    """Wait until the current primary publishes its full set of synchronous standbys; the /sync read."""
    if mode == "async":
        cluster.wait_healthy(SETTLE_TIMEOUT)
        return None
    wanted = count if mode == "on" else cluster.size - 1
    seen: list[dict[str, Any] | None] = [None]

    def settled() -> bool:
        leader = cluster.leader()
        with contextlib.suppress(OSError, ValueError):
            seen[0] = read_sync_key(cluster)
        sync = seen[0]
        return (leader is not None and sync is not None and sync.get("leader") == leader.name
                and len(sync_names(sync)) == wanted)

    wait_until(settled, SETTLE_TIMEOUT, f"/sync to publish {wanted} synchronous standbys", interval=0.5)
    return seen[0]


# --------------------------------------------------------------------------------------------------
# pgbench


@dataclass
class PgbenchResult:
    tps: float
    latency_ms: float
    transactions: int
    failed: int
    ssn: str


def pgbench(cluster: LocalCluster, clients: int, seconds: int) -> PgbenchResult:
    """`clients` clients, each transaction one autocommit INSERT, for `seconds`, against the primary."""
    leader = cluster.wait_healthy(SETTLE_TIMEOUT)
    with psycopg.connect(cluster.conninfo(leader), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {PGBENCH_TABLE} (id bigserial PRIMARY KEY, v int)")
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
    script = cluster.workdir / "insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    env = {**os.environ, "PGPASSWORD": "demo-superuser-secret"}
    out = subprocess.run(
        [PGBENCH, "-n", "-h", "127.0.0.1", "-p", str(leader.pg_port), "-U", "postgres", "-c", str(clients),
         "-j", "2", "-T", str(seconds), "-f", str(script), "postgres"],
        capture_output=True, text=True, env=env, timeout=seconds + 60, check=True).stdout
    return PgbenchResult(
        tps=float(_field(out, r"tps = ([\d.]+)")),
        latency_ms=float(_field(out, r"latency average = ([\d.]+) ms")),
        transactions=int(_field(out, r"number of transactions actually processed: (\d+)")),
        failed=int(_field(out, r"number of failed transactions: (\d+)", "0")),
        ssn=str(row[0]) if row else "")


def _field(text: str, pattern: str, default: str | None = None) -> str:
    match = re.search(pattern, text)
    if match is None:
        if default is not None:
            return default
        raise RuntimeError(f"pgbench output lacks {pattern!r}:\n{text}")
    return match.group(1)


# --------------------------------------------------------------------------------------------------
# Drills


@dataclass
class DrillRecord:
    run: RunResult
    sync_before: dict[str, Any] | None
    """The /sync key just before the fault (None in async mode)."""

    @property
    def promoted_a_published_standby(self) -> bool | None:
        if self.sync_before is None or self.run.new_primary is None:
            return None
        return self.run.new_primary in sync_names(self.sync_before)


@dataclass
class ModeResult:
    mode: str
    size: int
    count: int
    pgbench: PgbenchResult | None = None
    drills: list[DrillRecord] = field(default_factory=list)
    stopped_early: str | None = None

    def completed(self) -> list[RunResult]:
        return [d.run for d in self.drills if d.run.error is None and d.run.missing is not None]

    def lost(self) -> int:
        return sum(len(r.missing or ()) for r in self.completed())

    def median(self, attribute: str) -> float | None:
        values: list[float] = []
        for run in self.completed():
            value = (getattr(run.measurement, attribute, None) if attribute == "writes_impossible"
                     else getattr(run, attribute))
            if value is not None:
                values.append(float(value))
        return statistics.median(values) if values else None


def drills(cluster: LocalCluster, result: ModeResult, repeat: int, deadline: float) -> None:
    """Up to `repeat` host-loss drills, each from the settled state, until `deadline` (monotonic)."""
    local = load_local(cluster.nodes[0].config_path, {})
    superuser = local.postgresql.authentication.superuser
    topology = read_topology(local)
    dsn = multi_host_dsn(topology.members, user=superuser.username, password=superuser.password)
    drill = Drill(lambda: read_topology(local), dsn, DrillOptions(Fault.HOST_KILL, rate=100.0, settle=3.0),
                  restarter=restarter(cluster), progress=ProgressPrinter())
    for index in range(1, repeat + 1):
        if time.monotonic() > deadline:
            result.stopped_early = f"time budget spent after {index - 1} drills"
            return
        try:
            sync_before = wait_sync_settled(cluster, result.mode, result.count)
        except TimeoutError as exc:
            result.stopped_early = f"before drill {index}: {exc}"
            return
        run = drill.run(1).runs[0]
        record = DrillRecord(dataclasses.replace(run, repetition=index), sync_before)
        result.drills.append(record)
        _print_drill(result.mode, record)
        if run.error is not None:
            result.stopped_early = f"drill {index} failed: {run.error}"
            return


def _print_drill(mode: str, record: DrillRecord) -> None:
    run = record.run
    m = run.measurement
    impossible = f"{m.writes_impossible:.2f}s" if m and m.writes_impossible is not None else "n/a"
    answers = f"{run.primary_answers_after:.2f}s" if run.primary_answers_after is not None else "n/a"
    lost = len(run.missing) if run.missing is not None else "unchecked"
    published = "" if record.sync_before is None else f" (/sync before: {sync_names(record.sync_before)})"
    print(f"  {mode} #{run.repetition}: {run.old_primary} -> {run.new_primary}{published}, writes impossible "
          f"{impossible}, new primary after {answers}, acknowledged {m.acknowledged if m else 0}, lost {lost}"
          + (f", ERROR {run.error}" if run.error else ""), file=sys.stderr)


# --------------------------------------------------------------------------------------------------


def run_mode(mode: str, args: argparse.Namespace, deadline: float) -> ModeResult:
    result = ModeResult(mode, args.size, args.count)
    cluster = build_cluster(mode, args.size, args.count)
    try:
        print(f"[{mode}] starting a {args.size}-node cluster in {cluster.workdir}", file=sys.stderr)
        cluster.start()
        wait_sync_settled(cluster, mode, args.count)
        if args.pgbench_seconds > 0:
            result.pgbench = pgbench(cluster, args.clients, args.pgbench_seconds)
            pb = result.pgbench
            print(f"[{mode}] pgbench: {pb.tps:.0f} tps, {pb.latency_ms:.2f} ms average (ssn {pb.ssn!r})",
                  file=sys.stderr)
        repeat = args.async_drills if mode == "async" else args.drills
        if repeat > 0:
            drills(cluster, result, repeat, deadline)
    finally:
        cluster.stop()
        if not args.keep:
            cluster.remove()
    return result


def _fmt(value: float | None, unit: str = " s", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def markdown(results: Sequence[ModeResult], args: argparse.Namespace) -> str:
    lines = [
        f"## pgwarden synchronous replication ({time.strftime('%Y-%m-%d %H:%M')}, {args.size} nodes, "
        f"synchronous_node_count {args.count}, pgwarden default timings, {os.cpu_count()} cores)",
        "",
        "| mode | host-loss drills | acknowledged writes lost | promoted a published standby "
        "| writes impossible (median) | new primary answers (median) | pgbench tps | pgbench avg latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        done = r.completed()
        promoted = [d.promoted_a_published_standby for d in r.drills if d.run in done]
        promoted_text = "n/a" if r.mode == "async" else f"{sum(1 for p in promoted if p)}/{len(done)}"
        pb = r.pgbench
        lines.append(
            f"| {r.mode} | {len(done)}" + (f" ({r.stopped_early})" if r.stopped_early else "")
            + f" | {r.lost()} | {promoted_text} | {_fmt(r.median('writes_impossible'))} "
            f"| {_fmt(r.median('primary_answers_after'))} "
            f"| {f'{pb.tps:,.0f}' if pb else 'n/a'} | {_fmt(pb.latency_ms if pb else None, ' ms')} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of async, on, quorum")
    parser.add_argument("--size", type=int, default=5, help="nodes per cluster (default 5)")
    parser.add_argument("--count", type=int, default=2, help="synchronous_node_count (default 2)")
    parser.add_argument("--drills", type=int, default=50, help="host-loss drills in on and quorum mode (default 50)")
    parser.add_argument("--async-drills", type=int, default=10, help="host-loss drills in async mode (default 10)")
    parser.add_argument("--mode-minutes", type=float, default=0.0,
                        help="start no new drill in a mode after this many minutes of it (0: no limit)")
    parser.add_argument("--pgbench-seconds", type=int, default=30, help="pgbench run length (0: skip)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    parser.add_argument("--out", type=Path, default=None, help="append the markdown table to this file")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the clusters' work directories")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"unknown mode(s): {', '.join(unknown)}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    budget = args.mode_minutes * 60 if args.mode_minutes > 0 else float("inf")
    results = [run_mode(mode, args, time.monotonic() + budget) for mode in modes]
    text = markdown(results, args)
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps([{
            "mode": r.mode, "size": r.size, "synchronous_node_count": r.count,
            "pgbench": dataclasses.asdict(r.pgbench) if r.pgbench else None,
            "lost": r.lost(), "stopped_early": r.stopped_early,
            "drills": [{**d.run.as_json(), "sync_before": d.sync_before} for d in r.drills],
        } for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
