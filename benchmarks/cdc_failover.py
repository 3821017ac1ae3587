#!/usr/bin/env python3
"""CDC through failover (issue 16): changes lost and duplicated by host losses of the primary while a
consumer reads a permanent logical slot, and what the slot costs the failover.

For each mode it builds a local 3-node cluster (etcd, PostgreSQL 15, three pgwarden agents; synchronous_mode
on, so an acknowledged write survives the loss of the primary; `wal_level: logical` in both modes):

- `logical`: `slots: {cdc: {type: logical, database: postgres, plugin: test_decoding}}` in /config, and a
  consumer, pg_recvlogical through a multi-host DSN (`target_session_attrs=read-write`), restarted
  whenever it exits and resuming from the slot's own position (pgwarden.localcluster.cdc);
- `plain`: the same cluster without the slot and without a consumer: the baseline.

A writer inserts a numbered row every 10 ms through the same multi-host DSN. `--failovers` times (default
10): wait until the cluster is healthy (and, with the slot, every replica says `logical_slots_ready`),
SIGKILL the primary's agent and PostgreSQL at once, wait for the new primary, start the old node's agent
again. Per failover it records "writes impossible for" (the drill's measure: from the first failed or
blocked write to the next acknowledged one), and with the slot the duplicates the consumer received
between this failover and the next (rows received again), and how long until every copy was ready again.
At the end the writer stops and the consumer drains: every acknowledged row the consumer never received
is a lost change (must be 0).

    cd /work/main   # the repository root
    sudo /opt/pgwarden/venv/bin/python -m benchmarks.cdc_failover --failovers 10 --json /tmp/cdc.json

Nothing here asserts: the numbers are for the issue's note.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.sync import sync_names
from pgwarden.drill.measure import acknowledged_ids, measure
from pgwarden.drill.workload import TABLE, Writer, prepare_table, stored_ids
from pgwarden.localcluster.cdc import LogicalConsumer
from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node
from pgwarden.localcluster.processes import wait_until

MODES = ("logical", "plain")
SLOT = "cdc"
RUN = "cdc-bench"
TIMEOUT = 180.0
NUDGE_EVERY = 3.0
SETTLE = 3.0
"""Seconds of writes after a new primary answers, so the outage window closes inside the log."""


@dataclass
class Failover:
    old: str
    new: str
    writes_impossible: float | None
    duplicates: int | None = None
    """Rows the consumer received again between this failover and the next (None: no consumer)."""
    copies_ready_after: float | None = None
    """Seconds from the fault until every replica's copy was ready again (None: no slot)."""


@dataclass
class ModeResult:
    mode: str
    failovers: list[Failover] = field(default_factory=list)
    acknowledged: int = 0
    missing_in_database: int = 0
    received: int | None = None
    missing_changes: int | None = None
    duplicates_total: int | None = None
    consumer_runs: int | None = None


# --------------------------------------------------------------------------------------------------
# The cluster


def cluster_dcs(mode: str, timings: str) -> dict[str, Any]:
    dcs = dict(DEMO_DCS)
    if timings == "default":  # pgwarden's own ttl, loop_wait and retry_timeout
        dcs = {k: v for k, v in dcs.items() if k not in ("ttl", "loop_wait", "retry_timeout")}
    parameters = {**DEMO_DCS["postgresql"]["parameters"], "wal_level": "logical"}
    dcs["postgresql"] = {**DEMO_DCS["postgresql"], "parameters": parameters}
    dcs["synchronous_mode"] = True
    if mode == "logical":
        dcs["slots"] = {SLOT: {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}
    return dcs


def build_cluster(mode: str, timings: str) -> LocalCluster:
    workdir = Path(tempfile.mkdtemp(prefix=f"pgwarden-bench-cdc-{mode}-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its node directories
    return LocalCluster(workdir, size=3, scope=f"benchcdc{mode}", dcs=cluster_dcs(mode, timings), etcd_ports=(0, 0),
                        pg_base_port=0, api_base_port=0)


def copy_ready(cluster: LocalCluster, node: Node) -> bool:
    """The replica's member JSON (its key in the DCS) says its copies of the logical slots are ready."""
    try:
        member = read_key(cluster, f"members/{node.name}")
    except (OSError, ValueError):
        return False
    return member is not None and member.get("logical_slots_ready") is True


def read_key(cluster: LocalCluster, key: str) -> dict[str, Any] | None:
    """The JSON value of `/service/<scope>/<key>`, through etcd's v3 JSON gateway (None: no such key)."""
    path = base64.b64encode(f"/service/{cluster.scope}/{key}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_ports[0]}/v3/kv/range",
                                     data=json.dumps({"key": path}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.loads(response.read()).get("kvs") or []
    value = json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None
    return value if isinstance(value, dict) else None


def sync_settled(cluster: LocalCluster, leader: Node) -> bool:
    """Has `leader` published a synchronous standby in /sync (without one no replica may be promoted)?"""
    try:
        sync = read_key(cluster, "sync")
    except (OSError, ValueError):
        return False
    return sync is not None and sync.get("leader") == leader.name and bool(sync_names(sync))


def wait_ready(cluster: LocalCluster, with_slot: bool) -> Node:
    """The leader, once every replica streams, /sync names a synchronous standby (and, with the slot,
    every replica says its copies are ready)."""
    leader = cluster.wait_healthy(TIMEOUT)
    wait_until(lambda: sync_settled(cluster, leader), TIMEOUT, "a synchronous standby in /sync", interval=0.3)
    if with_slot:
        others = [n for n in cluster.nodes if n is not leader]
        nudged = [0.0]

        def ready() -> bool:
            # A checkpoint logs the running transactions from which the slot's restart_lsn moves on: a
            # replica cloned after the slot was made waits for that before it can copy it.
            if time.monotonic() - nudged[0] > NUDGE_EVERY:
                nudged[0] = time.monotonic()
                with contextlib.suppress(psycopg.Error), psycopg.connect(
                        cluster.conninfo(leader), autocommit=True, connect_timeout=3) as conn:
                    conn.execute("CHECKPOINT")
            return all(copy_ready(cluster, n) for n in others)

        wait_until(ready, TIMEOUT, "every replica's copy ready", interval=0.3)
    return leader


def new_leader(cluster: LocalCluster, old: Node) -> Node:
    wait_until(lambda: (leader := cluster.leader()) is not None and leader is not old, TIMEOUT, "a new primary",
               interval=0.1)
    leader = cluster.leader()
    assert leader is not None
    return leader


def duplicates(before: Counter[int], after: Counter[int]) -> int:
    """Rows received between two readings that had been received before, or twice in between."""
    received = sum(after.values()) - sum(before.values())
    return received - (len(after) - len(before))


# --------------------------------------------------------------------------------------------------
# One mode


def run_mode(mode: str, args: argparse.Namespace) -> ModeResult:
    cluster = build_cluster(mode, args.timings)
    result = ModeResult(mode)
    with_slot = mode == "logical"
    try:
        cluster.start()
        wait_ready(cluster, False)  # the copies become ready once the consumer moves the slot on
        dsn = cluster.multi_host_dsn()
        prepare_table(dsn)
        writer = Writer(dsn, RUN, interval=0.01)
        consumer = LogicalConsumer(dsn, SLOT, cluster.workdir / "consumer") if with_slot else None
        if consumer is not None:
            consumer.start()
        writer.start()
        try:
            for number in range(1, args.failovers + 1):
                result.failovers.append(one_failover(cluster, writer, consumer, number, args.failovers))
        finally:
            writer.stop()
        finish(result, cluster, writer, consumer, dsn)
    finally:
        cluster.stop()
        if args.keep:
            print(f"  kept {cluster.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(cluster.workdir, ignore_errors=True)
    return result


def one_failover(cluster: LocalCluster, writer: Writer, consumer: LogicalConsumer | None, number: int,
                 total: int) -> Failover:
    old = wait_ready(cluster, consumer is not None)
    if consumer is not None:
        # The consumer is up to date: what it receives from now on and had received before is a duplicate.
        wanted = set(acknowledged_ids(writer.attempts()))
        consumer.wait_for(TABLE, wanted, TIMEOUT, where=("run", RUN))
    before = consumer.rows(TABLE, where=("run", RUN)) if consumer is not None else Counter[int]()
    print(f"  [{number}/{total}] host loss of {old.name}", file=sys.stderr)
    fault_at = time.monotonic()
    cluster.kill_host(old)
    new = new_leader(cluster, old)
    time.sleep(SETTLE)
    cluster.start_agent(old)
    failover = Failover(old.name, new.name, measure(writer.attempts(), fault_at).writes_impossible)
    if consumer is not None:
        wait_ready(cluster, True)
        failover.copies_ready_after = time.monotonic() - fault_at
        # Everything written until now received: the duplicates of this failover are all in.
        consumer.wait_for(TABLE, set(acknowledged_ids(writer.attempts())), TIMEOUT, where=("run", RUN))
        failover.duplicates = duplicates(before, consumer.rows(TABLE, where=("run", RUN)))
    return failover


def finish(result: ModeResult, cluster: LocalCluster, writer: Writer, consumer: LogicalConsumer | None,
           dsn: str) -> None:
    acknowledged = set(acknowledged_ids(writer.attempts()))
    result.acknowledged = len(acknowledged)
    cluster.wait_healthy(TIMEOUT)
    result.missing_in_database = len(acknowledged - set(stored_ids(dsn, RUN)))
    if consumer is None:
        return
    missing = consumer.wait_for(TABLE, acknowledged, 60, where=("run", RUN))
    consumer.stop()
    received = consumer.rows(TABLE, where=("run", RUN))
    result.received = len(received)
    result.missing_changes = len(missing - set(received))
    result.duplicates_total = sum(received.values()) - len(received)
    result.consumer_runs = consumer.runs


# --------------------------------------------------------------------------------------------------
# Report


def median(values: Sequence[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def span(values: Sequence[float | int], unit: str = "") -> str:
    """` (min-max)`, or nothing without values."""
    return f" ({fmt(min(values), unit)}-{fmt(max(values), unit)})" if values else ""


def markdown(results: Sequence[ModeResult], args: argparse.Namespace) -> str:
    lines = [f"### CDC through failover ({args.failovers} host losses per mode, timings {args.timings}, "
             f"{time.strftime('%Y-%m-%d')})", "",
             "| mode | failovers | writes impossible (median, min-max) | changes missing | duplicates per failover "
             "(median, min-max) | copies ready again after (median) | acknowledged writes | lost in database |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        impossible = [f.writes_impossible for f in r.failovers if f.writes_impossible is not None]
        dups = [f.duplicates for f in r.failovers if f.duplicates is not None]
        lines.append(
            f"| {r.mode} | {len(r.failovers)} | {fmt(median(impossible), ' s')}{span(impossible, ' s')} | "
            f"{fmt(r.missing_changes)} | {fmt(median(dups))}{span(dups)} | "
            f"{fmt(median([f.copies_ready_after for f in r.failovers]), ' s')} | "
            f"{r.acknowledged} | {r.missing_in_database} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--failovers", type=int, default=10, help="host losses per mode (default 10)")
    parser.add_argument("--modes", default=",".join(MODES), help="logical,plain (default both)")
    parser.add_argument("--timings", choices=("fast", "default"), default="fast",
                        help="fast: ttl 20, loop_wait 2, retry_timeout 5 (default); default: pgwarden's own")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--out", type=Path, help="append the markdown table here")
    parser.add_argument("--keep", action="store_true", help="keep the work directories and their logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.failovers < 1:
        print(f"modes are {', '.join(MODES)}; --failovers at least 1", file=sys.stderr)
        return 2
    results = []
    for mode in modes:
        print(f"mode {mode}", file=sys.stderr)
        results.append(run_mode(mode, args))
    text = markdown(results, args)
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
