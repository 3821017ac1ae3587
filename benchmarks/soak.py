#!/usr/bin/env python3
"""pgwarden "no false failover" soak: a healthy cluster under CPU starvation and etcd stalls must keep its leader.

Issue 5's target: 0 leader changes in a 30-minute drill-less run of a 3-node cluster with pgwarden's
DEFAULT timings, both cores saturated by a CPU hog, and etcd frozen (SIGSTOP) for 3 s every 2 minutes.

The script builds a local cluster with `LocalCluster` (no ttl/loop_wait/retry_timeout in
bootstrap.dcs, so Patroni's 30/10/10 and pgwarden's 7 s leader lease apply), waits until it is
healthy, then for `--minutes`:

- runs one busy-loop process per core (`--hogs`), at the agents' own priority;
- freezes etcd with SIGSTOP for `--etcd-stop` seconds every `--etcd-every` seconds (the first stop
  half an interval after the start, so an 8-minute run has 4 stops), then SIGCONT;
- writes a row `--rate` times a second through the multi-host DSN (target_session_attrs=read-write);
- every `--poll` seconds, in one round: `GET /primary` on every agent, `pg_is_in_recovery()` on every
  PostgreSQL, and the DCS `leader` key read straight from etcd (value and create_revision).

It reports leader changes (the node answering 200 on /primary changed, or its timeline moved), leader
key re-creations (a new create_revision: the key was lost and taken again, even by the same node),
rounds with two writable PostgreSQL instances or two 200s on /primary, the time no node answered
/primary, and what the writer saw. Every process it starts (cluster, hogs) is stopped by PID at the end,
Ctrl-C included; etcd always gets its SIGCONT first. When something went wrong the work directory (agent
logs in nodeN/agent.log) is kept for the diagnosis.

    sudo /opt/pgwarden/venv/bin/python benchmarks/soak.py                 # 30 minutes
    sudo /opt/pgwarden/venv/bin/python benchmarks/soak.py --minutes 8 --json /tmp/soak.json

Nothing here asserts: the numbers are for the note and the README.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.drill.workload import Writer, current_timeline, prepare_table
from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node

HOG_CODE = "while True:\n    pass\n"
REST_TIMEOUT = 1.0
PG_TIMEOUT_S = 1
ETCD_TIMEOUT = 0.5


# --------------------------------------------------------------------------------------------------
# One observation round


@dataclass(frozen=True)
class NodeSample:
    primary_status: int  # HTTP status of GET /primary; 0 when the agent did not answer in time
    timeline: int | None  # from /primary's body
    writable: bool | None  # not pg_is_in_recovery(); None when PostgreSQL did not answer


@dataclass(frozen=True)
class Round:
    at: float  # seconds since the soak started
    nodes: dict[str, NodeSample]
    leader_key: tuple[str, int] | None  # (value, create_revision); None while etcd does not answer


def get_primary(node: Node) -> tuple[int, int | None]:
    """(status, timeline) of GET /primary; (0, None) when the agent does not answer in time."""
    try:
        with urllib.request.urlopen(node.api_url + "/primary", timeout=REST_TIMEOUT) as response:
            body = json.loads(response.read() or b"null")
            return response.status, body.get("timeline") if isinstance(body, dict) else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


class RecoveryProbe:
    """`pg_is_in_recovery()` on one node over a kept connection (reconnects after any error)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def writable(self) -> bool | None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=PG_TIMEOUT_S,
                                            options=f"-c statement_timeout={PG_TIMEOUT_S * 1000}")
            row = self.conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return None if row is None else not row[0]
        except psycopg.Error:
            self.close()
            return None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def read_leader_key(etcd_url: str, key: str, kind: str = "etcd3") -> tuple[str, int] | None:
    """(value, creation mark) of `key`: create_revision through etcd's v3 JSON gateway, createdIndex through its
    v2 API, the czxid on ZooKeeper (`etcd_url` is then host:port); None if the store does not answer."""
    if kind == "etcd":
        return _read_leader_key_v2(etcd_url, key)
    if kind == "zookeeper":
        return _read_leader_key_zookeeper(etcd_url.removeprefix("http://"), key)
    payload = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(etcd_url + "/v3/kv/range", data=payload, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=ETCD_TIMEOUT) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    kvs = body.get("kvs") or []
    if not kvs:
        return ("", 0)  # etcd answered: no leader key
    return base64.b64decode(kvs[0]["value"]).decode(), int(kvs[0]["create_revision"])


def _read_leader_key_v2(etcd_url: str, key: str) -> tuple[str, int] | None:
    try:
        with urllib.request.urlopen(f"{etcd_url}/v2/keys{key}", timeout=ETCD_TIMEOUT) as response:
            node = json.loads(response.read())["node"]
    except urllib.error.HTTPError as exc:
        return ("", 0) if exc.code == 404 else None
    except (OSError, ValueError, KeyError):
        return None
    return str(node["value"]), int(node["createdIndex"])


_ZOOKEEPER_CLIENTS: dict[str, Any] = {}
"""One kazoo client per ZooKeeper address for the whole soak: a session per poll would load the server."""


def _read_leader_key_zookeeper(address: str, key: str) -> tuple[str, int] | None:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    client = _ZOOKEEPER_CLIENTS.get(address)
    try:
        if client is None:
            client = KazooClient(hosts=address, timeout=ETCD_TIMEOUT)
            client.start(timeout=ETCD_TIMEOUT)
            _ZOOKEEPER_CLIENTS[address] = client
        data, stat = client.get(key)
        return data.decode(), int(stat.czxid)
    except NoNodeError:
        return ("", 0)
    except Exception:
        return None  # the store did not answer, whatever kazoo raised


def close_zookeeper_clients() -> None:
    for client in _ZOOKEEPER_CLIENTS.values():
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
    _ZOOKEEPER_CLIENTS.clear()


class Observer:
    """Samples the whole cluster every `interval` seconds on its own thread; `rounds` is the log."""

    def __init__(self, cluster: LocalCluster, interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self.rounds: list[Round] = []
        self.probes = {n.name: RecoveryProbe(cluster.conninfo(n)) for n in cluster.nodes}
        self.etcd_url = f"http://127.0.0.1:{cluster.etcd_ports[0]}"
        self.leader_key = f"/service/{cluster.scope}/leader"
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2 * len(cluster.nodes) + 1)
        self._thread = threading.Thread(target=self._loop, name="soak-observer", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        close_zookeeper_clients()
        for probe in self.probes.values():
            probe.close()

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self.rounds.append(self._round())
            due = max(due + self.interval, time.monotonic())
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _round(self) -> Round:
        at = time.monotonic() - self.started
        rest = {n.name: self._pool.submit(get_primary, n) for n in self.cluster.nodes}
        pg = {name: self._pool.submit(p.writable) for name, p in self.probes.items()}
        key = self._pool.submit(read_leader_key, self.etcd_url, self.leader_key, self.cluster.dcs_kind)
        nodes = {name: NodeSample(*rest[name].result(), pg[name].result()) for name in rest}
        return Round(at, nodes, key.result())


# --------------------------------------------------------------------------------------------------
# Faults: CPU hogs and etcd stalls


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[list[int]]:
    """`count` busy-loop processes, killed by PID on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG_CODE], start_new_session=True) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)


@dataclass
class EtcdStall:
    at: float  # seconds since the soak started
    seconds: float  # how long etcd was actually frozen


class EtcdFreezer:
    """SIGSTOP/SIGCONT of the etcd process; `thaw()` is safe to call any time (and always is, at the end)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.frozen = False

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        self.frozen = False


# --------------------------------------------------------------------------------------------------
# Analysis


@dataclass
class Summary:
    minutes: float
    rounds: int
    etcd_stalls: list[EtcdStall]
    initial_leader: str | None
    final_leader: str | None
    leader_changes: list[str] = field(default_factory=list)  # "t=… node1 (tl 1) -> node2 (tl 2)"
    leader_key_changes: list[str] = field(default_factory=list)
    two_writable_rounds: int = 0
    two_primary_rounds: int = 0
    no_primary_seconds: float = 0.0  # every agent answered /primary with a non-200 status
    no_primary_periods: list[str] = field(default_factory=list)
    rest_timeouts: dict[str, int] = field(default_factory=dict)
    writes_acknowledged: int = 0
    writes_failed: int = 0
    longest_write_gap_s: float = 0.0
    timeline_before: int | None = None
    timeline_after: int | None = None

    @property
    def false_failover(self) -> bool:
        return bool(self.leader_changes or self.leader_key_changes or self.two_writable_rounds
                    or self.two_primary_rounds or self.timeline_before != self.timeline_after)


def _primary_of(r: Round) -> tuple[str, int | None] | None:
    ok = [(name, s.timeline) for name, s in r.nodes.items() if s.primary_status == 200]
    return ok[0] if len(ok) == 1 else None


def leader_changes(rounds: Sequence[Round]) -> list[str]:
    """Every change of the node (or its timeline) answering 200 on /primary, alone."""
    changes, last = [], None
    for r in rounds:
        now = _primary_of(r)
        if now is None:
            continue
        if last is not None and now != last:
            changes.append(f"t={r.at:.1f}s {last[0]} (tl {last[1]}) -> {now[0]} (tl {now[1]})")
        last = now
    return changes


def leader_key_changes(rounds: Sequence[Round]) -> list[str]:
    """Every change of the leader key's holder or create_revision (lost and taken again), and its absence."""
    changes, last = [], None
    for r in rounds:
        if r.leader_key is None:
            continue
        if last is not None and r.leader_key != last:
            changes.append(f"t={r.at:.1f}s {last[0] or '(none)'}@{last[1]} -> "
                           f"{r.leader_key[0] or '(none)'}@{r.leader_key[1]}")
        last = r.leader_key
    return changes


def no_primary_periods(rounds: Sequence[Round], interval: float) -> tuple[float, list[str]]:
    """Time during which every agent answered /primary with an explicit non-200 (timeouts excluded)."""
    total, periods, start = 0.0, [], None
    for r in rounds:
        none = all(s.primary_status not in (0, 200) for s in r.nodes.values())
        if none and start is None:
            start = r.at
        elif not none and start is not None:
            periods.append(f"t={start:.1f}s for {r.at - start:.1f}s")
            total += r.at - start
            start = None
    if start is not None and rounds:
        total += rounds[-1].at - start + interval
        periods.append(f"t={start:.1f}s until the end")
    return total, periods


def summarize(rounds: Sequence[Round], writer: Writer, stalls: list[EtcdStall], minutes: float,
              interval: float, timelines: tuple[int | None, int | None]) -> Summary:
    first = next((p for p in map(_primary_of, rounds) if p), None)
    last = next((p for p in map(_primary_of, reversed(rounds)) if p), None)
    s = Summary(minutes, len(rounds), stalls, first[0] if first else None, last[0] if last else None)
    s.leader_changes = leader_changes(rounds)
    s.leader_key_changes = leader_key_changes(rounds)
    s.two_writable_rounds = sum(1 for r in rounds if sum(bool(x.writable) for x in r.nodes.values()) > 1)
    s.two_primary_rounds = sum(1 for r in rounds if sum(x.primary_status == 200 for x in r.nodes.values()) > 1)
    s.no_primary_seconds, s.no_primary_periods = no_primary_periods(rounds, interval)
    names = rounds[0].nodes if rounds else {}
    s.rest_timeouts = {n: sum(1 for r in rounds if r.nodes[n].primary_status == 0) for n in names}
    attempts = writer.attempts()
    acked = [a.finished for a in attempts if a.ok]
    s.writes_acknowledged = len(acked)
    s.writes_failed = len(attempts) - len(acked)
    gaps = [b - a for a, b in itertools.pairwise(acked)]
    s.longest_write_gap_s = round(max(gaps, default=0.0), 2)
    s.timeline_before, s.timeline_after = timelines
    return s


def markdown(s: Summary, hogs: int, etcd_stop: float, etcd_every: float, rate: float) -> str:
    verdict = "**FALSE FAILOVER**" if s.false_failover else "no false failover"
    lines = [
        f"## pgwarden soak ({time.strftime('%Y-%m-%d %H:%M')}, {s.minutes:g} min, pgwarden default timings, "
        f"{hogs} CPU hogs on {os.cpu_count()} cores, etcd SIGSTOP {etcd_stop:g} s every {etcd_every:g} s, "
        f"{rate:g} writes/s): {verdict}",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| etcd stalls | {len(s.etcd_stalls)} ({', '.join(f'{x.seconds:.1f} s' for x in s.etcd_stalls)}) | |",
        f"| leader changes (/primary) | {len(s.leader_changes)} | 0 |",
        f"| leader key lost and re-taken (create_revision) | {len(s.leader_key_changes)} | 0 |",
        f"| rounds with two writable PostgreSQL / two /primary 200 | {s.two_writable_rounds} / "
        f"{s.two_primary_rounds} | 0 / 0 |",
        f"| time with no primary on /primary | {s.no_primary_seconds:.1f} s | 0 |",
        f"| timeline before → after | {s.timeline_before} → {s.timeline_after} | unchanged |",
        f"| writes acknowledged / failed, longest gap | {s.writes_acknowledged} / {s.writes_failed}, "
        f"{s.longest_write_gap_s:.2f} s | |",
        f"| /primary polls not answered within {REST_TIMEOUT:g} s | "
        f"{', '.join(f'{k} {v}' for k, v in s.rest_timeouts.items())} (of {s.rounds} rounds) | |",
    ]
    details = [*s.leader_changes, *s.leader_key_changes, *(f"no primary {p}" for p in s.no_primary_periods)]
    if details:
        lines += ["", "Events:", "", *(f"- {d}" for d in details)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# The run


def build_cluster(dcs_kind: str = "etcd3") -> LocalCluster:
    """3 nodes with pgwarden's default timings: Patroni's ttl/loop_wait/retry_timeout, the 7 s lease."""
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-soak-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its node directories
    dcs = {k: v for k, v in DEMO_DCS.items() if k not in ("ttl", "loop_wait", "retry_timeout")}
    return LocalCluster(workdir, dcs=dcs, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0, dcs_kind=dcs_kind)


def stall_schedule(seconds: float, every: float) -> list[float]:
    """Start times of the etcd stalls: half an interval in, then every interval, before the end."""
    out, at = [], every / 2
    while at < seconds:
        out.append(at)
        at += every
    return out


def soak(cluster: LocalCluster, args: argparse.Namespace) -> Summary:
    server = cluster.zookeeper if cluster.dcs_kind == "zookeeper" else cluster.etcd
    assert server is not None
    dsn = cluster.multi_host_dsn()
    prepare_table(dsn)
    timeline_before = current_timeline(dsn)
    seconds = args.minutes * 60
    freezer = EtcdFreezer(server.pid)
    writer = Writer(dsn, run=f"soak-{int(time.time())}", interval=1.0 / args.rate)
    observer = Observer(cluster, args.poll)
    stalls: list[EtcdStall] = []
    with cpu_hogs(args.hogs) as hog_pids:
        log(f"CPU hogs: PIDs {hog_pids}; soaking for {args.minutes:g} min")
        writer.start()
        observer.start()
        try:
            for at in stall_schedule(seconds, args.etcd_every):
                sleep_until(observer.started + at)
                started = time.monotonic()
                freezer.freeze()
                try:
                    time.sleep(args.etcd_stop)
                finally:
                    freezer.thaw()
                stalls.append(EtcdStall(round(at, 1), time.monotonic() - started))
                log(f"t={at:.0f}s etcd frozen {stalls[-1].seconds:.1f}s; {progress(observer.rounds)}")
            sleep_until(observer.started + seconds)
        finally:
            freezer.thaw()
            observer.stop()
            writer.stop()
    timeline_after = _timeline_or_none(dsn)
    return summarize(observer.rounds, writer, stalls, args.minutes, args.poll, (timeline_before, timeline_after))


def _timeline_or_none(dsn: str) -> int | None:
    try:
        return current_timeline(dsn)
    except psycopg.Error:
        return None


def progress(rounds: Sequence[Round]) -> str:
    return f"leader changes so far: {len(leader_changes(rounds))}, key changes: {len(leader_key_changes(rounds))}"


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def log(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    parser.add_argument("--dcs", choices=("etcd3", "etcd", "zookeeper"), default="etcd3",
                        help="the agents' DCS (default etcd3); the stalls freeze that server")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2,
                        help="busy-loop processes (default: one per core)")
    parser.add_argument("--etcd-stop", type=float, default=3.0, help="seconds etcd stays frozen (default 3)")
    parser.add_argument("--etcd-every", type=float, default=120.0, help="seconds between etcd stalls (default 120)")
    parser.add_argument("--rate", type=float, default=10.0, help="writes per second (default 10)")
    parser.add_argument("--poll", type=float, default=0.2, help="observation interval in seconds (default 0.2)")
    parser.add_argument("--out", type=Path, default=None, help="append the markdown table to this file")
    parser.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even when all went well")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a kill of the script cleans up like Ctrl-C
    cluster = build_cluster(args.dcs)
    keep = args.keep
    try:
        log(f"starting a 3-node cluster in {cluster.workdir}")
        cluster.start()
        leader = cluster.wait_healthy(180)
        log(f"healthy, leader {leader.name}")
        summary = soak(cluster, args)
    except BaseException:
        keep = True
        raise
    finally:
        log("stopping the cluster")
        cluster.stop()
        if keep:
            log(f"work directory kept: {cluster.workdir} (agent logs: nodeN/agent.log)")
    text = markdown(summary, args.hogs, args.etcd_stop, args.etcd_every, args.rate)
    print(text)
    if args.out:
        with args.out.open("a") as handle:
            handle.write(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({**asdict(summary), "false_failover": summary.false_failover}, indent=2))
    if summary.false_failover and not args.keep:
        log(f"false failover: work directory kept for the diagnosis: {cluster.workdir}")
    elif not keep:
        cluster.remove()
    return 1 if summary.false_failover else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
