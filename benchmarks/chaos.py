#!/usr/bin/env python3
"""Chaos schedules on real processes in network namespaces (docs/chaos.md).

Builds one 3-host cluster (each host namespace runs an etcd member, PostgreSQL 15 and a pgwarden
agent; the clients have their own namespace) in `--mode` async, on (`synchronous_mode: on`) or
quorum, then runs `--schedules` seeded schedules of `--faults` faults each on it, healing and
converging in between, and prints a table: schedules, faults injected, violations, unavailability per
fault type (median and max) and recovery time. Schedule i uses seed `--seed + i`; a failed schedule
leaves a folder (printed) with its seed, schedule, history and every log. Replay one with
`--seed THAT_SEED --schedules 1 --faults K`.

    cd /work/main
    sudo /opt/pgwarden/venv/bin/python benchmarks/chaos.py --schedules 20 --mode on --seed 1

Every schedule's result (seed, mode, faults, violations, unavailability per fault, recovery) is
appended to `--results` (benchmarks/results/chaos.jsonl, committed: the 200-schedule target takes
more than one session) as soon as it is known, and the table printed at the end covers every
schedule in that file, per mode. `--table-only` prints it without running anything.

Needs root, `ip` and `nft` (not for --table-only). Nothing here asserts: the numbers are for notes,
never for a test.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pgwarden.chaos.cluster import DISK_MB, MODES, ChaosCluster, clock_injection_available
from pgwarden.chaos.faults import KINDS, make_schedule
from pgwarden.chaos.net import tools_missing
from pgwarden.chaos.runner import RunResult, run_schedule, summary_table
from pgwarden.chaos.workload import CREATE_TABLE, Ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=5)
    parser.add_argument("--mode", choices=sorted(MODES), default="async")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--watchdog", action="store_true",
                        help="agents with watchdog mode required; a stand-in resets (kills) a host it is not fed by")
    parser.add_argument("--hosts", type=int, choices=(3, 5), default=3, help="host namespaces (etcd members)")
    parser.add_argument("--faults", type=int, default=4, help="faults per schedule")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    parser.add_argument("--min-duration", type=float, default=5.0)
    parser.add_argument("--max-duration", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp"), help="where failed runs leave their folder")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder, not only failed ones")
    parser.add_argument("--json", type=Path, help="also write every result of this run, in full, here")
    parser.add_argument("--disk-mb", type=int, default=DISK_MB,
                        help="size of each host's own filesystem (tmpfs) for disk-full faults; 0: none")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the accumulated results (JSON lines): each schedule is appended, the table covers all")
    parser.add_argument("--no-record", action="store_true", help="do not append to --results (a replay, a try)")
    parser.add_argument("--note", default="", help="a word on this run, kept with its records")
    parser.add_argument("--stop-on-violation", action="store_true",
                        help="end the run after the first schedule with a violation (its folder stays)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --results and stop")
    args = parser.parse_args()
    if args.table_only:
        print(summary_table(load_records(args.results)))
        return 0
    if os.geteuid() != 0 or tools_missing():
        sys.exit(f"needs root and {', '.join(tools_missing()) or 'ip, nft'}")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        sys.exit(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    clock = "clock" in kinds and clock_injection_available()
    if "clock" in kinds and not clock:
        print("libfaketime not found: clock steps skipped")
        kinds.remove("clock")

    workdir = Path(tempfile.mkdtemp(prefix=f"pgwarden-chaos-{args.mode}-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach the host directories below it
    clusters: list[ChaosCluster] = []

    def cleanup() -> None:
        for old in clusters:
            old.close()
        shutil.rmtree(workdir, ignore_errors=True)

    def fresh_cluster() -> ChaosCluster:
        """A new cluster (the first, or after one that did not converge any more)."""
        for old in clusters:
            old.close()
        new = ChaosCluster(workdir / f"cluster{len(clusters) + 1}", mode=args.mode, size=args.hosts, clock=clock,
                           watchdog=args.watchdog, disk_mb=args.disk_mb if "disk-full" in kinds else 0)
        clusters.append(new)
        started = time.monotonic()
        new.start()
        new.sql(new.multi_host_dsn(), CREATE_TABLE)
        print(f"cluster up in {time.monotonic() - started:.0f}s (namespaces {new.net.tag}-*)")
        return new

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` ends it cleanly too (background jobs ignore SIGINT)
    results: list[RunResult] = []
    context = {"at": "", "revision": _revision(), "watchdog": args.watchdog, "hosts": args.hosts,
               "durations": [args.min_duration, args.max_duration], **({"note": args.note} if args.note else {})}
    try:
        cluster = fresh_cluster()
        ids = Ids()
        for index in range(args.schedules):
            seed = args.seed + index
            specs = make_schedule(seed, args.faults, kinds, (args.min_duration, args.max_duration))
            print(f"schedule {index + 1}/{args.schedules} seed {seed}")
            try:
                replay = (f"benchmarks/chaos.py --mode {args.mode} --seed {seed} --schedules 1 --faults {args.faults} "
                          f"--kinds {','.join(kinds)} --min-duration {args.min_duration} "
                          f"--max-duration {args.max_duration} --hosts {args.hosts}"
                          + (" --watchdog" if args.watchdog else ""))
                result = run_schedule(cluster, ids, seed, specs, args.out, keep=args.keep, replay=replay)
            except TimeoutError as exc:  # not converged before the schedule: counted by the previous one
                print(f"  seed {seed}: cluster not converged before the schedule, skipped:\n{exc}")
                cluster = fresh_cluster()
                continue
            results.append(result)
            if not args.no_record:
                context["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                append_record(args.results, result.record(**context))
            status = "ok" if not result.violations else "VIOLATIONS:\n    " + "\n    ".join(result.violations)
            print(f"  recovery {result.recovery or -1:.1f}s, {result.acknowledged} acked, lost {result.lost}: {status}")
            if result.folder is not None:
                print(f"  artifacts: {result.folder}")
            if result.violations and args.stop_on_violation:
                print("stopping: --stop-on-violation")
                break
            if result.recovery is None:  # stuck: the next schedules get a new cluster
                cluster = fresh_cluster()
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if results and not args.no_record:
            print(f"this run: {len(results)} schedules appended to {args.results}; all accumulated schedules:")
            print(summary_table(load_records(args.results)))
        else:
            print(summary_table([r.record(watchdog=args.watchdog, hosts=args.hosts) for r in results]))
        if args.json is not None:
            args.json.write_text(json.dumps([r.as_json() for r in results], indent=1, default=str))
        cleanup()
        atexit.unregister(cleanup)
    return 1 if any(r.violations for r in results) else 0


RESULTS = Path(__file__).resolve().parent / "results" / "chaos.jsonl"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One line per schedule, written (and flushed) as soon as it is known: a killed run loses nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:
        out.write(json.dumps(record, sort_keys=True, default=str) + "\n")


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every record of the accumulated file (none if it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _revision() -> str:
    """The checked-out commit, `+dirty` when pgwarden/ holds uncommitted changes (the agents run that tree)."""
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", "pgwarden"], capture_output=True,
                           check=False).returncode != 0
    return (proc.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
