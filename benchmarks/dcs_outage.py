#!/usr/bin/env python3
"""Write availability through a DCS outage, with failsafe_mode on and off.

For each mode it builds a local 3-node cluster (etcd, three pgwarden agents and PostgreSQL 15 on
loopback, as the postgres user; ttl 20, loop_wait 2, retry_timeout 5, pgwarden's default 7 s leader
lease; `failsafe_mode` set in bootstrap.dcs), then `--repeat` times:

1. waits until there is one primary and every replica streams;
2. starts a writer inserting a numbered row every `--interval` seconds (default 50 ms) through a libpq
   multi-host DSN with `target_session_attrs=read-write` (after an error it reconnects on the next
   attempt, so it finds whichever node is the primary);
3. takes etcd away for `--outage` seconds (`--fault`: `freeze` SIGSTOPs it for the whole outage,
   `kill` SIGKILLs it, `freeze-kill`, the default, freezes it for the first half and kills it for the
   second), then restarts it from the same data directory on the same ports;
4. keeps writing until writes are acknowledged again and the cluster is healthy.

It prints, as medians (min-max) over the repetitions, for the attempts started during the outage: the
share of writes acknowledged, the longest time between two acknowledged writes, when writes stopped
(if they did), and how long after etcd's return writes came back.

    cd /work/main
    sudo /opt/pgwarden/venv/bin/python benchmarks/dcs_outage.py --repeat 3 --outage 60

Nothing here asserts: the numbers are for notes and the README, never for a test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgwarden.drill.measure import Attempt, Spread, spread
from pgwarden.drill.workload import Writer, prepare_table
from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster
from pgwarden.localcluster.processes import wait_until

MODES = ("on", "off")
FAULTS = ("freeze", "kill", "freeze-kill")
HEALTHY_TIMEOUT = 180.0
WRITES_BACK_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------------
# The cluster and the outage


def build_cluster(mode: str) -> LocalCluster:
    workdir = Path(tempfile.mkdtemp(prefix=f"pgwarden-bench-dcs-{mode}-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its node directories
    dcs = {**DEMO_DCS, "failsafe_mode": mode == "on"}
    return LocalCluster(workdir, scope=f"benchdcs{mode}", dcs=dcs, etcd_ports=(0, 0), pg_base_port=0,
                        api_base_port=0, extra_config=lambda node: {"watchdog": {"mode": "off"}})


class AgentExited(RuntimeError):
    """An agent exited (a refused configuration, a crash): the mode cannot be measured."""


def wait_healthy(cluster: LocalCluster, timeout: float) -> None:
    def ready() -> bool:
        for node in cluster.nodes:
            if node.agent is not None and node.agent.poll() is not None:
                tail = "\n".join(node.log_path.read_text(errors="replace").splitlines()[-15:])
                raise AgentExited(f"{node.name}'s agent exited with {node.agent.returncode}:\n{tail}")
        return cluster.healthy()

    wait_until(ready, timeout, "one primary and streaming replicas")


def etcd_down(cluster: LocalCluster, how: str) -> None:
    """SIGSTOP (`freeze`) or SIGKILL (`kill`) the cluster's etcd, by its PID."""
    etcd = cluster.etcd
    assert etcd is not None
    if how == "freeze":
        os.kill(etcd.pid, signal.SIGSTOP)
        return
    os.kill(etcd.pid, signal.SIGKILL)
    etcd.process.wait(10)
    cluster.etcd = None


def etcd_back(cluster: LocalCluster) -> None:
    """Restart etcd from the same data directory (killing a frozen one first)."""
    if cluster.etcd is not None:
        etcd_down(cluster, "kill")
    cluster.start_etcd()


# --------------------------------------------------------------------------------------------------
# One outage


@dataclass
class Outage:
    """One repetition. Times are seconds from etcd going away; None: it did not happen."""

    mode: str
    attempted: int
    acknowledged: int
    longest_gap: float
    writes_stopped_after: float | None
    """The first attempt that failed, or blocked for more than a second."""
    writes_back_after_etcd: float | None
    """From etcd's restart to the first write acknowledged after a stop (0 when writes never stopped)."""
    healthy_after_etcd: float | None
    outage: float

    @property
    def availability(self) -> float:
        return self.acknowledged / self.attempted if self.attempted else 0.0


def summarize(mode: str, attempts: Sequence[Attempt], down: float, back: float, healthy: float | None) -> Outage:
    during = [a for a in attempts if down <= a.started < back]
    acked = sorted(a.finished for a in attempts if a.ok and down < a.finished < back)
    points = [down, *acked, back]
    gap = max(b - a for a, b in itertools.pairwise(points))
    bad = [a for a in attempts if a.started >= down and (not a.ok or a.latency > 1.0)]
    stopped = bad[0].started - down if bad else None
    back_after: float | None = 0.0
    if bad:
        again = [a.finished for a in attempts if a.ok and a.started > bad[0].started]
        back_after = max(0.0, again[0] - back) if again else None
    return Outage(mode, len(during), sum(1 for a in during if a.ok), gap, stopped, back_after,
                  None if healthy is None else healthy - back, back - down)


def one_outage(cluster: LocalCluster, mode: str, args: argparse.Namespace, index: int) -> Outage:
    wait_healthy(cluster, HEALTHY_TIMEOUT)
    dsn = cluster.multi_host_dsn() + " options='-c statement_timeout=3000'"
    prepare_table(dsn)
    writer = Writer(dsn, f"dcs-{mode}-{index}-{time.time_ns()}", interval=args.interval)
    writer.start()
    try:
        wait_until(lambda: writer.counts()[0] >= 10, 30, "the writer's first rows")
        down = time.monotonic()
        etcd_down(cluster, "kill" if args.fault == "kill" else "freeze")
        if args.fault == "freeze-kill":
            time.sleep(args.outage / 2)  # the fault's duration, not a synchronisation
            etcd_down(cluster, "kill")
            time.sleep(max(0.0, down + args.outage - time.monotonic()))
        else:
            time.sleep(args.outage)
        etcd_back(cluster)
        back = time.monotonic()

        def writing_again() -> bool:
            last = writer.counts()[2]
            return last is not None and last.ok and last.started > back

        with contextlib.suppress(TimeoutError):
            wait_until(writing_again, WRITES_BACK_TIMEOUT, "writes acknowledged again")
        healthy: float | None = None
        with contextlib.suppress(TimeoutError):
            wait_healthy(cluster, HEALTHY_TIMEOUT)
            healthy = time.monotonic()
    finally:
        writer.stop()
    return summarize(mode, writer.attempts(), down, back, healthy)


@dataclass
class ModeResult:
    mode: str
    outages: list[Outage] = field(default_factory=list)
    error: str | None = None

    def spread(self, metric: str) -> Spread:
        return spread(getattr(o, metric) for o in self.outages)


def run_mode(mode: str, args: argparse.Namespace) -> ModeResult:
    result = ModeResult(mode)
    cluster = build_cluster(mode)
    try:
        print(f"failsafe_mode {mode}: starting a 3-node cluster in {cluster.workdir}", file=sys.stderr)
        cluster.start()
        for index in range(args.repeat):
            outage = one_outage(cluster, mode, args, index)
            result.outages.append(outage)
            print(f"  [{index + 1}/{args.repeat}] {outage.acknowledged}/{outage.attempted} writes acknowledged "
                  f"({outage.availability:.1%}), longest gap {outage.longest_gap:.2f} s", file=sys.stderr)
    except (AgentExited, TimeoutError) as exc:
        result.error = str(exc)
        print(f"failsafe_mode {mode}: stopped: {exc}", file=sys.stderr)
    finally:
        cluster.stop()
        if not args.keep:
            cluster.remove()
    return result


# --------------------------------------------------------------------------------------------------
# Output


def _fmt(s: Spread, unit: str = " s", percent: bool = False) -> str:
    if s.median is None or s.min is None or s.max is None:
        return "n/a"
    if percent:
        return f"{s.median:.1%} ({s.min:.1%}–{s.max:.1%})"
    return f"{s.median:.2f}{unit} ({s.min:.2f}–{s.max:.2f})"


def _reason(error: str, limit: int = 160) -> str:
    """The last line of an error (an agent's own explanation), cut to fit a table cell."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    text = lines[-1] if lines else error
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(results: Sequence[ModeResult], args: argparse.Namespace) -> str:
    lines = [
        f"## Writes through a DCS outage ({time.strftime('%Y-%m-%d %H:%M')}, 3 nodes, etcd away {args.outage:.0f} s "
        f"({args.fault}), a write every {args.interval * 1000:.0f} ms, pgwarden's 7 s lease, {os.cpu_count()} cores)",
        "",
        "Medians (min–max) over the repetitions; attempts started while etcd was away.",
        "",
        "| failsafe_mode | outages | writes acknowledged | longest gap | writes stopped after "
        "| writes back after etcd returned | healthy after etcd returned |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stopped = [o.writes_stopped_after for o in r.outages]
        stopped_text = (f"never ({len(stopped)}/{len(stopped)})" if stopped and all(s is None for s in stopped)
                        else _fmt(r.spread("writes_stopped_after")))
        lines.append(f"| {r.mode} | {len(r.outages)}{f' (stopped: {_reason(r.error)})' if r.error else ''} "
                     f"| {_fmt(r.spread('availability'), percent=True)} | {_fmt(r.spread('longest_gap'))} "
                     f"| {stopped_text} | {_fmt(r.spread('writes_back_after_etcd'))} "
                     f"| {_fmt(r.spread('healthy_after_etcd'))} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="outages per mode (default 3)")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds etcd stays away (default 60)")
    parser.add_argument("--fault", choices=FAULTS, default="freeze-kill",
                        help="how etcd goes away (default freeze-kill: SIGSTOP, then SIGKILL half way)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two writes (default 0.05)")
    parser.add_argument("--modes", default=",".join(MODES), help="failsafe_mode values to measure: on,off")
    parser.add_argument("--out", type=Path, default=None, help="append the markdown table to this file")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the clusters' work directories and logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.repeat < 1 or args.outage <= 0 or args.interval <= 0:
        print(f"bad arguments (modes {unknown or modes}, repeat {args.repeat}, outage {args.outage}, "
              f"interval {args.interval})", file=sys.stderr)
        return 2
    results = [run_mode(mode, args) for mode in modes]
    text = markdown(results, args)
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps([{
            "mode": r.mode, "error": r.error,
            "outages": [{**dataclasses.asdict(o), "availability": o.availability} for o in r.outages],
        } for r in results], indent=2))
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
