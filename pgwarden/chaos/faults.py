"""Faults with apply()/heal(), and seeded random schedules of them.

A schedule is a list of `FaultSpec`s drawn from a seed: a kind, the role of its target ("primary",
"replica" or "any", resolved against the cluster when the fault starts), how long it lasts and the
pause after it. Network faults are nftables tables inside host namespaces (one table per fault, so
faults compose and healing one deletes exactly its rules); process faults SIGSTOP/SIGCONT by PID;
a clock step rewrites the libfaketime offset file of one agent: forward only, and it stays (both
the wall clock and CLOCK_MONOTONIC jump, as after a stall; stepping back would move CLOCK_MONOTONIC
backwards, which Linux never does, so healing leaves the offset in place); a full disk grows a filler
file on one host's own small filesystem (its data directory and pg_wal) and keeps it full until the
heal removes the file.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pgwarden.chaos.cluster import ETCD_CLIENT, ETCD_PEER, PG_PORT, ChaosCluster, Host

KINDS = ("partition-primary", "primary-etcd", "replicas-pg", "minority", "one-way", "loss",
         "stop-agent", "stop-etcd", "stop-postmaster", "clock", "disk-full")
"""Every fault kind (docs/chaos.md describes each)."""
ROLES = {"partition-primary": "primary", "primary-etcd": "primary", "replicas-pg": "primary",
         "minority": "any", "one-way": "primary", "loss": "any", "stop-agent": "primary",
         "stop-etcd": "any", "stop-postmaster": "primary", "clock": "primary",
         "disk-full": "primary"}
DISK_TOP_UP = 0.5
"""Seconds between two top-ups of a full disk (PostgreSQL frees space when it removes old WAL)."""


@dataclass(frozen=True)
class FaultSpec:
    """One step of a schedule, before it meets the cluster."""

    kind: str
    duration: float
    gap: float
    pick: int
    """Chooses among the hosts of the role (and the minority's members), so a seed replays the same choice."""
    param: int = 0
    """The loss percentage, the clock step forward in seconds, or for `disk-full` 1 to fill a replica's
    disk instead of the primary's."""


@dataclass
class FaultRecord:
    """What one fault did: the spec, the hosts it hit, wall-clock (time.time) start and end."""

    spec: FaultSpec
    targets: list[str]
    applied_at: float
    healed_at: float | None = None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "spec": asdict(self.spec)}


def make_schedule(seed: int, count: int, kinds: Sequence[str] = KINDS, duration: tuple[float, float] = (5, 25),
                  gap: tuple[float, float] = (2, 5)) -> list[FaultSpec]:
    """`count` faults drawn from `seed`: the same seed, kinds and bounds give the same schedule."""
    rng = random.Random(seed)
    specs = []
    for _ in range(count):
        kind = rng.choice(list(kinds))
        param = _param(kind, rng)
        specs.append(FaultSpec(kind, round(rng.uniform(*duration), 1), round(rng.uniform(*gap), 1),
                               rng.randrange(1 << 16), param))
    return specs


def _param(kind: str, rng: random.Random) -> int:
    if kind == "loss":
        return rng.choice([20, 30, 50])
    if kind == "clock":
        return rng.choice([5, 15, 40])
    if kind == "disk-full":
        return rng.choice([0, 0, 1])  # the primary's disk twice as often as a replica's
    return 0


def covering_schedule(seed: int, kinds: Sequence[str], duration: tuple[float, float],
                      gap: tuple[float, float]) -> list[FaultSpec]:
    """Each of `kinds` once, in an order and with timings drawn from `seed` (the CI's short set)."""
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    return [FaultSpec(kind, round(rng.uniform(*duration), 1), round(rng.uniform(*gap), 1), rng.randrange(1 << 16),
                      30 if kind == "loss" else 15 if kind == "clock" else 0) for kind in order]


@dataclass
class Fault:
    """A fault bound to a cluster: apply() then heal(); `record` says what happened when."""

    cluster: ChaosCluster
    spec: FaultSpec
    number: int
    record: FaultRecord | None = None
    _tables: list[tuple[str, str]] = field(default_factory=list)
    _stopped: list[int] = field(default_factory=list)
    _filled: list[Host] = field(default_factory=list)
    _filling: threading.Event | None = None
    _filler: threading.Thread | None = None

    def apply(self) -> FaultRecord:
        targets, detail = self._inject()
        self.record = FaultRecord(self.spec, [h.name for h in targets], time.time(), detail=detail)
        return self.record

    def heal(self) -> None:
        for ns, table in self._tables:
            self.cluster.net.drop_table(ns, table)
        for pid in self._stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if self._filling is not None and self._filler is not None:
            self._filling.set()
            self._filler.join()
        for host in self._filled:
            self.cluster.free_disk(host)
        self._tables.clear()
        self._stopped.clear()
        self._filled.clear()
        if self.record is not None:
            self.record.healed_at = time.time()

    # -- injection -----------------------------------------------------------------------------------

    def _role_hosts(self) -> tuple[Host, list[Host]]:
        """(the target, everybody else); the target is the current primary for primary faults."""
        hosts = self.cluster.hosts
        role = ROLES[self.spec.kind]
        primary = self.cluster.primary()
        if self.spec.kind == "disk-full" and self.spec.param == 1 and primary is not None:
            replicas = [h for h in hosts if h is not primary]
            target = replicas[self.spec.pick % len(replicas)]
            return target, [h for h in hosts if h is not target]
        # "any", or no single primary right now: the pick decides
        target = primary if role == "primary" and primary is not None else hosts[self.spec.pick % len(hosts)]
        return target, [h for h in hosts if h is not target]

    def _inject(self) -> tuple[list[Host], str]:
        kind = self.spec.kind
        target, others = self._role_hosts()
        if kind in ("partition-primary", "primary-etcd", "replicas-pg"):
            ports = {"partition-primary": (), "primary-etcd": (ETCD_CLIENT, ETCD_PEER), "replicas-pg": (PG_PORT,)}[kind]
            self._partition([target], others, ports)
            return [target], f"{target.name} | {','.join(h.name for h in others)} ports {list(ports) or 'all'}"
        if kind == "minority":
            size = (len(self.cluster.hosts) - 1) // 2
            rng = random.Random(self.spec.pick)
            minority = rng.sample(self.cluster.hosts, size)
            majority = [h for h in self.cluster.hosts if h not in minority]
            self._partition(minority, majority, ())
            return minority, f"{','.join(h.name for h in minority)} | {','.join(h.name for h in majority)}"
        if kind == "one-way":
            self._rules(target, [f"ip saddr {{ {', '.join(h.ip for h in others)} }} drop"], [])
            return [target], f"{target.name} receives nothing from the other hosts (it still sends)"
        if kind == "loss":
            subnet = target.ip.rsplit(".", 1)[0] + ".0/24"
            self._rules(target, [f"ip saddr {subnet} numgen random mod 100 < {self.spec.param} drop"], [])
            return [target], f"{self.spec.param}% of packets into {target.name} dropped"
        if kind == "clock":
            if not self.cluster.clock:
                return [target], "clock: agents run without libfaketime, nothing stepped"
            target.clock_offset += self.spec.param
            target.clock_file.write_text(f"+{target.clock_offset}s\n")
            return [target], f"{target.name}'s agent clocks stepped +{self.spec.param}s (now +{target.clock_offset}s)"
        if kind == "disk-full":
            return [target], self._fill(target)
        return self._stop(kind, target)

    def _fill(self, target: Host) -> str:
        """Fill the target's filesystem now and keep it full (a thread tops it up) until heal()."""
        if not self.cluster.mounted:
            return f"disk-full: {target.name} has no filesystem of its own (disk_mb=0), nothing filled"
        added = self.cluster.fill_disk(target)
        self._filled.append(target)
        stop = threading.Event()

        def top_up() -> None:
            while not stop.wait(DISK_TOP_UP):
                self.cluster.fill_disk(target)

        self._filling, self._filler = stop, threading.Thread(target=top_up, name="chaos-disk-full", daemon=True)
        self._filler.start()
        primary = self.cluster.primary()  # the role as it is now (the target was chosen a moment ago)
        role = "the primary" if primary is target else "a replica" if primary is not None else "no single primary"
        switched = self.cluster.switch_wal(primary) if primary is not None else "no primary to switch WAL on"
        return f"{target.name}'s disk ({role}) filled: {added >> 20} MB added, 0 bytes free; {switched}"

    def _stop(self, kind: str, target: Host) -> tuple[list[Host], str]:
        proc = {"stop-agent": target.agent, "stop-etcd": target.etcd}.get(kind)
        pid = proc.pid if proc is not None else target.postmaster_pid()
        if pid is None:
            return [target], f"{kind}: nothing to stop on {target.name}"
        os.kill(pid, signal.SIGSTOP)
        self._stopped.append(pid)
        return [target], f"SIGSTOP {kind.removeprefix('stop-')} pid {pid} on {target.name}"

    def _partition(self, side_a: list[Host], side_b: list[Host], ports: Sequence[int]) -> None:
        """Drop traffic between the two sides (only on `ports`, either direction, if given), on both sides."""
        for here, there in ((side_a, side_b), (side_b, side_a)):
            addresses = ", ".join(h.ip for h in there)
            if ports:
                port_set = ", ".join(str(p) for p in ports)
                match_in = [f"ip saddr {{ {addresses} }} tcp {d} {{ {port_set} }} drop" for d in ("dport", "sport")]
                match_out = [f"ip daddr {{ {addresses} }} tcp {d} {{ {port_set} }} drop" for d in ("dport", "sport")]
            else:
                match_in, match_out = [f"ip saddr {{ {addresses} }} drop"], [f"ip daddr {{ {addresses} }} drop"]
            for host in here:
                self._rules(host, match_in, match_out)

    def _rules(self, host: Host, inbound: list[str], outbound: list[str]) -> None:
        table = f"chaos{self.number}"
        chains = [f"  chain {name} {{ type filter hook {name} priority -10; policy accept;\n"
                  + "".join(f"    {rule}\n" for rule in rules) + "  }\n"
                  for name, rules in (("input", inbound), ("output", outbound))]
        self.cluster.net.nft(host.ns, f"table inet {table} {{\n{''.join(chains)}}}\n")
        self._tables.append((host.ns, table))


def heal_everything(cluster: ChaosCluster) -> None:
    """Whatever a fault left behind: every chaos nft table, every stopped process, every filler file
    (clock steps stay)."""
    for host in cluster.hosts:
        for table in cluster.net.chaos_tables(host.ns):
            cluster.net.drop_table(host.ns, table)
    cluster.resume_all()
    for host in cluster.hosts:
        cluster.free_disk(host)
