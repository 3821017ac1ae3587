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

import psycopg

from pgwarden.chaos.checker import double_writers, incidents, loss_window, lost_commits, unavailability
from pgwarden.chaos.cluster import ETCD_CLIENT, ChaosCluster
from pgwarden.chaos.faults import Fault, FaultRecord, FaultSpec, heal_everything
from pgwarden.chaos.net import NetError, run
from pgwarden.chaos.workload import TABLE, Attempt, Ids, Writer

ETCDCTL = "/usr/bin/etcdctl"

CONVERGE_BOUND = 120.0
"""Seconds after the last heal within which one primary and streaming replicas are required."""
WARMUP = 1.5
READ_BACK_BOUND = 60.0
"""Seconds the checker keeps trying to read the rows back from a primary (see `read_back`)."""
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
    reclones: list[str] = field(default_factory=list)
    """Hosts whose data directory was replaced (a new clone) during the run: a rewind did not do."""
    folder: Path | None = None
    footprint: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each host's pg_wal, moved-aside copy, free space and slots after the run (`ChaosCluster.footprint`)."""

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["records"] = [r.as_json() for r in self.records]
        out["folder"] = str(self.folder) if self.folder else None
        return out

    def record(self, **context: Any) -> dict[str, Any]:
        """One line of the accumulated results file: the verdict and numbers, no history. `context`
        says what the mode alone does not (watchdog, hosts, the code's revision, when)."""
        unavailable = [round(gap, 2) for _, gap in self.unavailable]
        faults = [{"kind": r.spec.kind, "duration": r.spec.duration, "targets": r.targets, "detail": r.detail,
                   "unavailable": unavailable[i] if i < len(unavailable) else None}
                  for i, r in enumerate(self.records)]
        return {**context, "mode": self.mode, "seed": self.seed, "faults": faults, "violations": self.violations,
                "acknowledged": self.acknowledged, "lost": self.lost, "loss_window": round(self.loss_window, 2),
                "double_writers": self.double_writers,
                "recovery": None if self.recovery is None else round(self.recovery, 2), "resets": self.resets,
                "reclones": self.reclones, "folder": str(self.folder) if self.folder else None,
                "footprint": self.footprint}


def run_schedule(cluster: ChaosCluster, ids: Ids, seed: int, specs: Sequence[FaultSpec], outdir: Path,
                 keep: bool = False, log: Any = print, replay: str = "") -> RunResult:
    """Run `specs` on `cluster` (healed and converged first); see the module docstring. `replay` is the
    command that runs this schedule again, for the artifacts' REPLAY file."""
    result = RunResult(seed, cluster.mode, list(specs))
    resets_before = sum(len(w.resets) for w in cluster.watchdogs.values())
    heal_everything(cluster)
    cluster.revive()
    cluster.wait_converged(CONVERGE_BOUND)
    identity = cluster.data_identity()
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
    after = cluster.data_identity()
    result.reclones = sorted(name for name, inode in identity.items() if after.get(name) != inode)
    result.footprint = cluster.footprint()
    if result.violations or result.reclones or keep:  # a re-clone is no violation, but worth its logs
        result.folder = save_artifacts(cluster, result, history, outdir, replay)
    return result


def _check(cluster: ChaosCluster, result: RunResult, history: list[Attempt], end: float) -> None:
    names = {h.ip: h.name for h in cluster.hosts}
    acked = [a for a in history if a.ok]
    result.acknowledged = len(acked)
    if acked:
        try:
            low, high = min(a.id for a in acked), max(a.id for a in acked)
            lost = lost_commits(acked, read_back(cluster, low, high, READ_BACK_BOUND))
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


def read_back(cluster: ChaosCluster, low: int, high: int, bound: float) -> set[int]:
    """The stored ids in [low, high], read from the primary, retried for `bound` seconds.

    The cluster converged before, but it may move again just after: a member cut off by the last
    fault rejoins etcd with a higher raft term (etcd 3.4 runs without pre-vote) and forces an
    election; a leader whose lease lapses meanwhile demotes and starts again (seed 202, mode on).
    The rows are judged once a primary answers; the last error is raised after `bound`."""
    deadline = time.monotonic() + bound
    while True:
        try:
            rows = cluster.sql(cluster.multi_host_dsn(), f"SELECT id FROM {TABLE} WHERE id BETWEEN %s AND %s",
                               (low, high))
            return {int(r[0]) for r in rows}
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


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
    """The table of these results (see `summary_table`)."""
    return summary_table([r.record() for r in results]) if results else "(no schedules ran)"


def mode_label(record: dict[str, Any]) -> str:
    """The row group of a record: the mode, `+watchdog` when the agents had one, `, 5 hosts` when not 3."""
    label = str(record["mode"]) + ("+watchdog" if record.get("watchdog") else "")
    return label + (f", {record['hosts']} hosts" if record.get("hosts", 3) != 3 else "")


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """One table per mode over result records (`RunResult.record()`, also the lines of the accumulated
    file): schedules, faults, violations, lost commits, re-clones, recovery, unavailability per fault type."""
    if not records:
        return "(no schedules recorded)"
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[mode_label(record)].append(record)
    return "\n\n".join(_mode_table(label, group) for label, group in sorted(groups.items()))


def _mode_table(label: str, records: Sequence[dict[str, Any]]) -> str:
    per_kind: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for fault in record["faults"]:
            if fault.get("unavailable") is not None:
                per_kind[fault["kind"]].append(fault["unavailable"])
    recoveries = [r["recovery"] for r in records if r.get("recovery") is not None]
    lost = sum(r["lost"] for r in records)
    failed = [r for r in records if r["violations"] and not r.get("excused")]
    not_converged = sum(1 for r in failed if any("not converged" in v for v in r["violations"]))
    excused = sum(1 for r in records if r["violations"] and r.get("excused"))
    lines = [
        f"mode {label}: {len(records)} schedules, {sum(len(r['faults']) for r in records)} faults injected, "
        f"{len(failed)} schedules with violations ({not_converged} not converged)"
        + (f", {excused} excused (a fault of the suite, not of pgwarden: see their `excused`)" if excused else "")
        + ", "
        f"{sum(r['double_writers'] for r in records)} double-writer findings, "
        f"{sum(r.get('resets', 0) for r in records)} watchdog resets, "
        f"{sum(len(r.get('reclones') or []) for r in records)} re-clones{_unmeasured(records)}, "
        f"{lost} acknowledged commits lost of {sum(r['acknowledged'] for r in records)}"
        + (f" (longest loss window {max(r['loss_window'] for r in records):.1f}s)" if lost else ""),
        f"recovery (last heal to one primary, all replicas streaming): median "
        f"{_fmt(recoveries, statistics.median)}, max {_fmt(recoveries, max)}",
        *_footprint_line(records),
        f"{'fault type':<18} {'n':>4} {'unavail. median':>16} {'max':>8}",
    ]
    for kind in sorted(per_kind):
        gaps = per_kind[kind]
        lines.append(f"{kind:<18} {len(gaps):>4} {statistics.median(gaps):>15.1f}s {max(gaps):>7.1f}s")
    return "\n".join(lines)


def _footprint_line(records: Sequence[dict[str, Any]]) -> list[str]:
    """The largest pg_wal and the least free space any host had after a schedule (records that measured it)."""
    hosts = [h for r in records for h in (r.get("footprint") or {}).values()]
    if not hosts:
        return []
    free = [h["free_mb"] for h in hosts if "free_mb" in h]
    wal = max(h["wal_mb"] for h in hosts)
    return [f"disk after a schedule ({len(hosts)} host readings): pg_wal at most {wal:.0f} MiB"
            + (f", free space at least {min(free):.0f} MiB" if free else "")]


def _unmeasured(records: Sequence[dict[str, Any]]) -> str:
    """Records imported from before re-clones were counted say null: the table must not call that 0."""
    older = sum(1 for r in records if r.get("reclones") is None)
    return f" (not counted in {older} older schedules)" if older else ""


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]


def _fmt(values: Sequence[float], fn: Any) -> str:
    return f"{fn(values):.1f}s" if values else "-"
