"""One seeded schedule on a running chaos cluster, its verdict, its artifacts, and the summary table.

`run_schedule` converges the cluster, starts the writers, applies and heals each fault of the
schedule, heals everything, waits for convergence, stops the writers and checks the history. A run
with a violation (or `keep=True`) leaves a folder with its seed, schedule, fault records, history,
verdict and every log; `benchmarks/chaos.py --seed SEED --schedules 1 ...` replays it.
"""

from __future__ import annotations

import datetime
import json
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgwarden.chaos.checker import double_writers, incidents, loss_window, lost_commits, unavailability
from pgwarden.chaos.cluster import ETCD_CLIENT, ChaosCluster
from pgwarden.chaos.faults import Fault, FaultRecord, FaultSpec, heal_everything
from pgwarden.chaos.net import NetError, run
from pgwarden.chaos.workload import TABLE, Attempt, Ids, Writer

ETCDCTL = "/usr/bin/etcdctl"

CONVERGE_BOUND = 120.0
"""Seconds after the last heal within which one primary and streaming replicas are required."""
WARMUP = 1.5
TAIL = 2.0
"""Writes after convergence: proves the converged cluster takes them (and lets blocked ones finish)."""


@dataclass
class RunResult:
    """The verdict of one schedule; `violations` empty means it passed."""

    seed: int
    mode: str
    specs: list[FaultSpec]
    records: list[FaultRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    acknowledged: int = 0
    lost: int = 0
    loss_window: float = 0.0
    double_writers: int = 0
    unavailable: list[tuple[str, float]] = field(default_factory=list)
    recovery: float | None = None
    resets: int = 0
    """Watchdog resets (hosts "rebooted") during the run."""
    folder: Path | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["records"] = [r.as_json() for r in self.records]
        out["folder"] = str(self.folder) if self.folder else None
        return out


def run_schedule(cluster: ChaosCluster, ids: Ids, seed: int, specs: Sequence[FaultSpec], outdir: Path,
                 keep: bool = False, log: Any = print, replay: str = "") -> RunResult:
    """Run `specs` on `cluster` (healed and converged first); see the module docstring. `replay` is the
    command that runs this schedule again, for the artifacts' REPLAY file."""
    result = RunResult(seed, cluster.mode, list(specs))
    resets_before = sum(len(w.resets) for w in cluster.watchdogs.values())
    heal_everything(cluster)
    cluster.revive()
    cluster.wait_converged(CONVERGE_BOUND)
    writers = [Writer(h.ip, h.dsn(), cluster.net.client, ids) for h in cluster.hosts]
    writers.append(Writer("multi", cluster.multi_host_dsn(), cluster.net.client, ids))
    for writer in writers:
        writer.start()
    time.sleep(WARMUP)
    try:
        for number, spec in enumerate(specs):
            fault = Fault(cluster, spec, number)
            try:
                record = fault.apply()
                result.records.append(record)
                log(f"  fault {number}: {spec.kind} {spec.duration:.1f}s: {record.detail}")
                time.sleep(spec.duration)
            finally:
                fault.heal()
                revived = cluster.revive()
                if revived:
                    log(f"  watchdog reset {', '.join(revived)}: agent started again")
            time.sleep(spec.gap)
    finally:
        heal_everything(cluster)
        cluster.revive()
    healed = time.time()
    last_heal = max((r.healed_at or healed for r in result.records), default=healed)
    try:
        cluster.wait_converged(CONVERGE_BOUND)
        result.recovery = time.time() - last_heal
    except TimeoutError as exc:
        result.violations.append(f"not converged {CONVERGE_BOUND:.0f}s after the faults healed: "
                                 f"{str(exc).splitlines()[0]}")
    time.sleep(TAIL)
    for writer in writers:
        writer.stop()
    for writer in writers:
        if not writer.join(30):
            result.violations.append(f"writer {writer.name} still blocked 30s after the run")
    history = [a for w in writers for a in w.history()]
    _check(cluster, result, history, healed)
    result.resets = sum(len(w.resets) for w in cluster.watchdogs.values()) - resets_before
    if result.violations or keep:
        result.folder = save_artifacts(cluster, result, history, outdir, replay)
    return result


def _check(cluster: ChaosCluster, result: RunResult, history: list[Attempt], end: float) -> None:
    names = {h.ip: h.name for h in cluster.hosts}
    acked = [a for a in history if a.ok]
    result.acknowledged = len(acked)
    if acked:
        try:
            low, high = min(a.id for a in acked), max(a.id for a in acked)
            rows = cluster.sql(cluster.multi_host_dsn(), f"SELECT id FROM {TABLE} WHERE id BETWEEN %s AND %s",
                               (low, high))
            lost = lost_commits(acked, {int(r[0]) for r in rows})
        except Exception as exc:
            result.violations.append(f"could not read the rows back: {type(exc).__name__}: {exc}")
            lost = []
        result.lost = len(lost)
        window = loss_window(lost)
        result.loss_window = window[1] - window[0] if window else 0.0
        if lost and cluster.mode != "async":
            ids = ", ".join(f"{a.id}@{names.get(a.host, a.host)}" for a in lost[:10])
            result.violations.append(f"{len(lost)} acknowledged commits lost in synchronous mode "
                                     f"{cluster.mode}: {ids}")
    doubles = double_writers(history)
    result.double_writers = len(doubles)
    for incident in incidents(doubles):
        first, second = (names.get(h, h) for h in incident.hosts)
        result.violations.append(
            f"double writer: {first} and {second} both writable from {_clock(incident.start)} to "
            f"{_clock(incident.end)} UTC ({incident.end - incident.start:.2f}s, {incident.findings} findings), "
            f"e.g. {incident.evidence}")
    records = result.records
    windows = [(r.spec.kind, r.applied_at, records[i + 1].applied_at if i + 1 < len(records) else
                end + (result.recovery or 0.0)) for i, r in enumerate(records)]
    result.unavailable = unavailability(history, windows)


def save_artifacts(cluster: ChaosCluster, result: RunResult, history: list[Attempt], outdir: Path,
                   replay: str = "") -> Path:
    """Everything needed to understand and replay the run, in one folder."""
    folder = outdir / f"{cluster.mode}-seed{result.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result.as_json(), indent=1, default=str))
    with open(folder / "history.jsonl", "w") as out:
        for attempt in sorted(history, key=lambda a: a.start):
            out.write(json.dumps(attempt.as_json()) + "\n")
    replay = replay or (f"benchmarks/chaos.py --mode {cluster.mode} --seed {result.seed} --schedules 1 "
                        f"--faults {len(result.specs)}")
    (folder / "REPLAY").write_text(f"{replay}\n(the schedule is in result.json; roles resolve against the live "
                                   "cluster, so the primary and the timing may differ)\n")
    for host in cluster.hosts:
        target = folder / host.name
        target.mkdir(exist_ok=True)
        for name in ("agent.log", "etcd.log", "pgwarden.yml"):
            if (host.dir / name).exists():
                shutil.copy(host.dir / name, target / name)
        for pg_log in (host.data_dir / "pgwarden-postgres.log", host.data_dir / "log"):
            if pg_log.is_dir():
                shutil.copytree(pg_log, target / "pg_log", dirs_exist_ok=True)
            elif pg_log.is_file():
                shutil.copy(pg_log, target / pg_log.name)
    (folder / "state.txt").write_text(cluster_state(cluster))
    result.folder = folder
    (folder / "result.json").write_text(json.dumps(result.as_json(), indent=1, default=str))
    return folder


def cluster_state(cluster: ChaosCluster) -> str:
    """Each agent's /patroni and the DCS keys as etcd holds them now: why a run did not converge."""
    parts = []
    for host in cluster.hosts:
        status, body = cluster.rest(host, "/patroni")
        parts.append(f"== {host.name} /patroni {status}: {json.dumps(body, sort_keys=True)}")
    endpoints = ",".join(f"http://{h.ip}:{ETCD_CLIENT}" for h in cluster.hosts)
    try:
        keys = run(["ip", "netns", "exec", cluster.net.client, ETCDCTL, "--endpoints", endpoints,
                    "--command-timeout=5s", "get", "--prefix", "/service/"], timeout=15)
    except (NetError, subprocess.TimeoutExpired) as exc:
        keys = f"(etcdctl failed: {exc})"
    return "\n".join(parts) + "\n== etcd keys under /service/\n" + keys


def summarize(results: Sequence[RunResult]) -> str:
    """The table: schedules, faults, violations, lost commits, unavailability per fault type, recovery."""
    if not results:
        return "(no schedules ran)"
    mode = results[0].mode
    per_kind: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for kind, gap in result.unavailable:
            per_kind[kind].append(gap)
    recoveries = [r.recovery for r in results if r.recovery is not None]
    lost = sum(r.lost for r in results)
    lines = [
        f"mode {mode}: {len(results)} schedules, {sum(len(r.records) for r in results)} faults injected, "
        f"{sum(1 for r in results if r.violations)} schedules with violations, "
        f"{sum(r.double_writers for r in results)} double writers, {sum(r.resets for r in results)} watchdog resets, "
        f"{lost} acknowledged commits lost of {sum(r.acknowledged for r in results)}"
        + (f" (longest loss window {max(r.loss_window for r in results):.1f}s)" if lost else ""),
        f"recovery (last heal to one primary, all replicas streaming): median "
        f"{_fmt(recoveries, statistics.median)}, max {_fmt(recoveries, max)}",
        f"{'fault type':<18} {'n':>4} {'unavail. median':>16} {'max':>8}",
    ]
    for kind in sorted(per_kind):
        gaps = per_kind[kind]
        lines.append(f"{kind:<18} {len(gaps):>4} {statistics.median(gaps):>15.1f}s {max(gaps):>7.1f}s")
    return "\n".join(lines)


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]


def _fmt(values: Sequence[float], fn: Any) -> str:
    return f"{fn(values):.1f}s" if values else "-"
