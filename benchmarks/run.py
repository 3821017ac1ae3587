#!/usr/bin/env python3
"""pgwarden failover benchmarks: a local 3-node cluster, every drill scenario, REST throughput, idle footprint.

Builds a cluster with `LocalCluster` (etcd + 3 agents + PostgreSQL 15 on loopback, as the postgres user),
runs `pgwarden drill` for host loss, postmaster kill and planned switchover with several repetitions,
measures `GET /primary` throughput with 8 concurrent clients and the sequential p99 latency, and the
idle agents' RSS and CPU; then writes a markdown table next to Patroni 4.1.5's figures (issue 5).

    sudo /opt/pgwarden/venv/bin/python benchmarks/run.py --repeat 5 --out benchmarks/results.md

Nothing here asserts: the numbers are for the note and the README, never for a test.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pgwarden.config import load_local
from pgwarden.drill import AgentRestarter, Drill, DrillOptions, Fault, Progress, Report, read_topology
from pgwarden.drill.topology import multi_host_dsn
from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node

TIMINGS: Mapping[str, Mapping[str, int] | None] = {
    "default": None,  # pgwarden's own defaults: no ttl/loop_wait/retry_timeout in bootstrap.dcs
    "fast": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5},  # the fastest Patroni allows
    "patroni-default": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
}
SCENARIOS: Mapping[str, Fault] = {
    "host-kill": Fault.HOST_KILL,
    "postmaster-kill": Fault.POSTMASTER_KILL,
    "switchover": Fault.SWITCHOVER,
}
REST_CLIENTS = 8
SEQUENTIAL_REQUESTS = 2000

# Patroni 4.1.5 on this kind of machine (issue 5): (defaults, fastest allowed); None = not measured.
PATRONI = {
    "host-kill": ("29.5 s", "19.0 s"),
    "postmaster-kill": ("9.1 s", "2.7 s"),
    "switchover": ("2.4 s, 219 failed tx", "2.4 s, ~210 failed tx"),
    "rest": ("~1,900 req/s", ""),
    "rss": ("51.6 MB", ""),
}
TARGETS = {
    "host-kill": "≤ 8 s",
    "postmaster-kill": "≤ 1.5 s",
    "switchover": "≤ 1.0 s, < 100 failed tx",
    "rest": "≥ 4,000 req/s",
    "p99": "< 1 ms",
    "rss": "≤ 50 MB",
    "cpu": "≤ Patroni's",
}
LABELS = {
    "host-kill": "host loss of the primary (agent and postmaster SIGKILLed): writes impossible for",
    "postmaster-kill": "postmaster SIGKILLed, agent alive: writes impossible for",
    "switchover": "planned switchover: writes impossible for, failed transactions",
}


# --------------------------------------------------------------------------------------------------
# The cluster


def build_cluster(timings: str, agent_command: Sequence[str] | None = None, dcs_kind: str = "etcd3") -> LocalCluster:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-bench-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its node directories
    dcs = {k: v for k, v in DEMO_DCS.items() if k not in ("ttl", "loop_wait", "retry_timeout")}
    dcs.update(TIMINGS[timings] or {})
    return LocalCluster(workdir, dcs=dcs, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                        agent_command=agent_command, dcs_kind=dcs_kind)


def _prometheus_sum(text: str, metric: str) -> float:
    """The sum of every sample of `metric` (all label sets) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and line[len(metric):len(metric) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def store_requests(cluster: LocalCluster) -> float:
    """Requests the DCS server has received so far, counted by the server itself: gRPC messages for etcd's
    v3 API (its JSON gateway ends there; keepalive and watch stream messages count one each), HTTP requests
    for its v2 API (each long-poll watch counts), packets for ZooKeeper (`mntr`; the client's pings count)."""
    address = f"127.0.0.1:{cluster.etcd_ports[0]}"
    if cluster.dcs_kind == "zookeeper":
        from pgwarden.localcluster.zookeeper import four_letter_word

        for line in four_letter_word(cluster.etcd_ports[0], "mntr").splitlines():
            if line.startswith("zk_packets_received"):
                return float(line.split()[1])
        raise RuntimeError("zookeeper mntr gave no zk_packets_received")
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    metric = "etcd_http_received_total" if cluster.dcs_kind == "etcd" else "grpc_server_msg_received_total"
    return _prometheus_sum(text, metric)


def dcs_requests_per_minute(cluster: LocalCluster, seconds: float) -> float:
    """The idle cluster's request rate at the DCS server (all agents together), over `seconds`."""
    before = store_requests(cluster)
    time.sleep(seconds)
    return (store_requests(cluster) - before) * 60 / seconds


def restarter(cluster: LocalCluster) -> AgentRestarter:
    """The drill's hook after a host kill: reap the killed agent and start it again."""

    def restart(name: str) -> bool:
        node = cluster.node(name)
        if node.agent is not None:
            node.agent.wait(10)
            node.agent = None
        cluster.start_agent(node)
        return True

    return restart


class ProgressPrinter:
    """One rewritten status line on a terminal; one line per phase change otherwise (logs stay short)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_phase = ""

    def __call__(self, p: Progress) -> None:
        if not self.tty:
            if p.phase != self.last_phase:
                print(f"  [{p.repetition}/{p.repetitions}] {p.phase}", file=sys.stderr)
                self.last_phase = p.phase
            return
        since = f" {p.since_fault:5.1f}s" if p.since_fault is not None else ""
        outage = f" outage {p.outage_since:.1f}s" if p.outage_since is not None else ""
        line = f"\r  [{p.repetition}/{p.repetitions}] {p.phase}{since} ok={p.acknowledged} failed={p.failed}{outage}"
        sys.stderr.write(line[:110].ljust(110))
        sys.stderr.flush()


def run_scenario(cluster: LocalCluster, fault: Fault, repeat: int, rate: float, settle: float) -> Report:
    local = load_local(cluster.nodes[0].config_path, {})
    superuser = local.postgresql.authentication.superuser
    topology = read_topology(local)
    dsn = multi_host_dsn(topology.members, user=superuser.username, password=superuser.password)
    drill = Drill(lambda: read_topology(local), dsn, DrillOptions(fault, rate=rate, settle=settle),
                  restarter=restarter(cluster), progress=ProgressPrinter())
    report = drill.run(repeat)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    return report


# --------------------------------------------------------------------------------------------------
# REST throughput and latency


@dataclass
class RestResult:
    tool: str
    requests_per_s: float
    statuses: dict[int, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None


async def _hammer(url: str, seconds: float, clients: int) -> tuple[int, dict[int, int]]:
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=5)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client() -> None:
            while time.monotonic() < deadline:
                async with session.get(url) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return sum(statuses.values()), statuses


SEQUENTIAL_RUNS = 5
SEQUENTIAL_WARMUP = 200


def _sequential(host: str, port: int, count: int) -> list[float]:
    """Latencies of `count` GET /primary one after another on one keep-alive connection.

    A plain blocking client (http.client), like a load balancer's checker: an asyncio client's own
    event-loop overhead would be most of what it measures."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    latencies = []
    try:
        for index in range(SEQUENTIAL_WARMUP + count):
            started = time.perf_counter()
            conn.request("GET", "/primary")
            conn.getresponse().read()
            if index >= SEQUENTIAL_WARMUP:
                latencies.append(time.perf_counter() - started)
    finally:
        conn.close()
    return sorted(latencies)


def _percentiles(host: str, port: int) -> tuple[float, float]:
    """(p50, p99) in ms: the median over SEQUENTIAL_RUNS runs of each (one run is at the mercy of
    whatever else the 2 cores are doing)."""
    runs = [_sequential(host, port, SEQUENTIAL_REQUESTS) for _ in range(SEQUENTIAL_RUNS)]
    p50 = sorted(r[len(r) // 2] for r in runs)[len(runs) // 2]
    p99 = sorted(r[int(len(r) * 0.99)] for r in runs)[len(runs) // 2]
    return p50 * 1000, p99 * 1000


def rest_throughput(node: Node, seconds: float) -> RestResult:
    """8 concurrent keep-alive clients on GET /primary (wrk if installed, else aiohttp), plus sequential p99."""
    url = node.api_url + "/primary"
    p50, p99 = _percentiles("127.0.0.1", node.api_port)
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "-t", "2", "-c", str(REST_CLIENTS), "-d", f"{seconds:.0f}s", url],
                             capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        statuses = {200: -1} if non2xx is None else {0: int(non2xx.group(1))}
        return RestResult("wrk -t2 -c8", float(match.group(1)) if match else 0.0, statuses, p50, p99)
    count, statuses = asyncio.run(_hammer(url, seconds, REST_CLIENTS))
    return RestResult("aiohttp, 8 clients", count / seconds, statuses, p50, p99)


# --------------------------------------------------------------------------------------------------
# Idle footprint


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


IDLE_WARMUP = 15.0  # seconds after the cluster is healthy before measuring (start-up work settles)


def idle_footprint(cluster: LocalCluster, seconds: float) -> dict[str, dict[str, float]]:
    """RSS (MB) and CPU (% of one core over `seconds`) of every agent process, the cluster idle;
    `leader` says which agent held the leader key."""
    time.sleep(IDLE_WARMUP)
    agents = {n.name: n.agent.pid for n in cluster.nodes if n.agent is not None}
    before = {name: _cpu_seconds(pid) for name, pid in agents.items()}
    time.sleep(seconds)
    leader = cluster.leader()
    out = {}
    for name, pid in agents.items():
        cpu = (_cpu_seconds(pid) - before[name]) / seconds * 100
        out[name] = {"rss_mb": round(_rss_mb(pid), 1), "cpu_percent": round(cpu, 3),
                     "leader": float(leader is not None and leader.name == name)}
    return out


def idle_of_agent(command: Sequence[str], timings: str, seconds: float, keep: bool) -> dict[str, dict[str, float]]:
    """The idle footprint of another Patroni-compatible agent (Patroni, for the comparison) on the
    same cluster layout: the same configuration files, etcd and PostgreSQL."""
    cluster = build_cluster(timings, agent_command=command)
    try:
        cluster.start()
        cluster.wait_healthy(180)
        return idle_footprint(cluster, seconds)
    finally:
        cluster.stop()
        if not keep:
            cluster.remove()


def _idle_cells(idle: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    """(largest RSS, CPU of the leader / median of the others) as table cells."""
    rss = max(v["rss_mb"] for v in idle.values())
    leader = [v["cpu_percent"] for v in idle.values() if v.get("leader")]
    others = sorted(v["cpu_percent"] for v in idle.values() if not v.get("leader"))
    cpu = f"leader {leader[0]:.2f} %" if leader else "leader n/a"
    if others:
        cpu += f", others {others[len(others) // 2]:.2f} %"
    return f"{rss:.1f} MB", cpu


# --------------------------------------------------------------------------------------------------
# Report


def _spread_text(report: Report, key: str, unit: str = " s", digits: int = 1) -> str:
    s = report.spreads()[key]
    if not s.n or s.median is None or s.min is None or s.max is None:
        return "n/a"
    return f"{s.median:.{digits}f}{unit} ({s.min:.{digits}f}–{s.max:.{digits}f})"


def scenario_cell(name: str, report: Report | None) -> str:
    if report is None:
        return "not run"
    failed = [r for r in report.runs if r.error is not None]
    if failed and len(failed) == len(report.runs):
        return f"failed: {failed[0].error}"
    cell = _spread_text(report, "writes_impossible_s", digits=2)
    if name == "switchover":
        cell += f", {_spread_text(report, 'failed_transactions', unit='', digits=0)} failed tx"
    if failed:
        cell += f" ({len(failed)} of {len(report.runs)} runs failed)"
    return cell


def markdown(timings: str, reports: Mapping[str, Report | None], rest: RestResult | None,
             idle: Mapping[str, Mapping[str, float]] | None, repeat: int,
             compare: Mapping[str, Mapping[str, float]] | None = None, compare_label: str = "") -> str:
    lines = [
        f"## pgwarden benchmark ({time.strftime('%Y-%m-%d %H:%M')}, timings: {timings} "
        f"{dict(TIMINGS[timings] or {}) or '(pgwarden defaults)'}, {repeat} repetitions, "
        f"{os.cpu_count()} cores)",
        "",
        "Medians, (min–max) in brackets. Patroni 4.1.5 figures from issue 5 (median of 3).",
        "",
        "| scenario | Patroni defaults (ttl 30, loop_wait 10) | Patroni fastest (ttl 20, loop_wait 2) "
        "| pgwarden | target |",
        "|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        patroni = PATRONI[name]
        lines.append(f"| {LABELS[name]} | {patroni[0]} | {patroni[1]} | {scenario_cell(name, reports.get(name))} "
                     f"| {TARGETS[name]} |")
    if rest is not None:
        lines.append(f"| REST `GET /primary`, 8 concurrent clients ({rest.tool}) | {PATRONI['rest'][0]} | "
                     f"| {rest.requests_per_s:,.0f} req/s | {TARGETS['rest']} |")
        lines.append(f"| REST `GET /primary`, sequential p99 (p50), median of {SEQUENTIAL_RUNS} runs | | "
                     f"| {rest.p99_ms:.2f} ms "
                     f"({rest.p50_ms:.2f} ms) | {TARGETS['p99']} |")
    if idle:
        rss, cpu = _idle_cells(idle)
        rss_there, cpu_there = _idle_cells(compare) if compare else (PATRONI["rss"][0], "")
        label = f" ({compare_label})" if compare else ""
        lines.append(f"| agent memory (RSS), idle (largest of the agents){label} | {rss_there} | | {rss} "
                     f"| {TARGETS['rss']} |")
        lines.append(f"| agent CPU, idle (% of one core){label} | {cpu_there} | | {cpu} | {TARGETS['cpu']} |")
    lines += ["", "Details per scenario (median (min–max)):", ""]
    lines += ["| scenario | failed tx | new primary answers after | switchover API answered after "
              "| acknowledged writes lost | healed after |", "|---|---|---|---|---|---|"]
    for name, report in reports.items():
        if report is None:
            continue
        lines.append(f"| {name} | {_spread_text(report, 'failed_transactions', unit='', digits=0)} "
                     f"| {_spread_text(report, 'primary_answers_after_s', digits=2)} "
                     f"| {_spread_text(report, 'api_answered_after_s', digits=2)} "
                     f"| {_spread_text(report, 'missing_writes', unit='', digits=0)} "
                     f"| {_spread_text(report, 'healed_after_s')} |")
    errors = [f"- {name} #{r.repetition}: {r.error}" for name, rep in reports.items() if rep
              for r in rep.runs if r.error]
    if errors:
        lines += ["", "Errors:", "", *errors]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="drills per scenario (default 5)")
    parser.add_argument("--dcs", choices=("etcd3", "etcd", "zookeeper"), default="etcd3",
                        help="the agents' DCS: etcd's v3 API (default), its v2 API, or ZooKeeper")
    parser.add_argument("--timings", choices=list(TIMINGS), default="default",
                        help="default: pgwarden's own; fast: ttl 20/loop_wait 2; patroni-default: ttl 30/loop_wait 10")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument("--rate", type=float, default=100.0, help="write attempts per second (default 100)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds writes must keep working after recovery (default 3)")
    parser.add_argument("--rest-seconds", type=float, default=10.0, help="REST throughput run length (0: skip)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="idle footprint window, after a 15 s warm-up (0: skip; default 60: six HA cycles)")
    parser.add_argument("--compare-agent", default=None, metavar="COMMAND",
                        help="also measure the idle footprint of this Patroni-compatible agent (e.g. a patroni "
                             "executable) on the same cluster layout, for the Patroni column")
    parser.add_argument("--out", type=Path, default=None, help="append the markdown table to this file")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's work directory")
    parser.add_argument("--fresh", action="store_true",
                        help="build a new cluster for every drill (slower; no run inherits an earlier one's state)")
    return parser.parse_args(argv)


def scenario_on_fresh_clusters(timings: str, fault: Fault, repeat: int, rate: float, settle: float,
                               keep: bool, dcs_kind: str = "etcd3") -> Report:
    """Each repetition on a cluster built for it: no run inherits the state an earlier one left."""
    runs = []
    options = DrillOptions(fault, rate=rate, settle=settle)
    for index in range(1, repeat + 1):
        cluster = build_cluster(timings, dcs_kind=dcs_kind)
        try:
            cluster.start()
            cluster.wait_healthy(180)
            one = run_scenario(cluster, fault, 1, rate, settle)
            options = one.options
            runs += [dataclasses.replace(r, repetition=index) for r in one.runs]
        finally:
            cluster.stop()
            if not keep:
                cluster.remove()
    return Report(fault, options, tuple(runs))


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    cluster = build_cluster(args.timings, dcs_kind=args.dcs)
    reports: dict[str, Report | None] = {}
    rest: RestResult | None = None
    idle: dict[str, dict[str, float]] | None = None
    dcs_rate: float | None = None
    try:
        print(f"starting a 3-node cluster on {args.dcs} in {cluster.workdir} (timings: {args.timings})",
              file=sys.stderr)
        cluster.start()
        leader = cluster.wait_healthy(180)
        if args.idle_seconds > 0:
            print(f"idle footprint over {args.idle_seconds:.0f} s...", file=sys.stderr)
            idle = idle_footprint(cluster, args.idle_seconds)
            print(f"idle DCS requests over {args.idle_seconds:.0f} s...", file=sys.stderr)
            dcs_rate = dcs_requests_per_minute(cluster, args.idle_seconds)
        if args.rest_seconds > 0:
            print(f"REST GET /primary on {leader.name} for {args.rest_seconds:.0f} s...", file=sys.stderr)
            rest = rest_throughput(leader, args.rest_seconds)
        for name in scenarios:
            if args.fresh:
                continue
            print(f"drill: {name} x{args.repeat}", file=sys.stderr)
            reports[name] = run_scenario(cluster, SCENARIOS[name], args.repeat, args.rate, args.settle)
    finally:
        cluster.stop()
        if not args.keep:
            cluster.remove()
    if args.fresh:
        for name in scenarios:
            print(f"drill: {name} x{args.repeat}, a fresh cluster for each", file=sys.stderr)
            reports[name] = scenario_on_fresh_clusters(args.timings, SCENARIOS[name], args.repeat, args.rate,
                                                       args.settle, args.keep, args.dcs)
    compare = None
    if args.compare_agent and args.idle_seconds > 0:
        print(f"idle footprint of {args.compare_agent} over {args.idle_seconds:.0f} s...", file=sys.stderr)
        compare = idle_of_agent(shlex.split(args.compare_agent), args.timings, args.idle_seconds, args.keep)
    text = markdown(args.timings, reports, rest, idle, args.repeat, compare,
                    f"Patroni column: {Path(shlex.split(args.compare_agent)[0]).name} measured here"
                    if compare else "")
    text += f"\nDCS: {args.dcs}" + (f"; idle DCS requests, all 3 agents: {dcs_rate:.0f} per minute "
                                      "(counted by the server)\n" if dcs_rate is not None else "\n")
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({
            "timings": args.timings,
            "reports": {k: v.as_json() for k, v in reports.items() if v is not None},
            "rest": rest.__dict__ if rest else None,
            "idle": idle,
            "compare_idle": compare,
            "dcs": args.dcs,
            "dcs_requests_per_minute": dcs_rate,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
