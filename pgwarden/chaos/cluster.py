"""Real etcd, PostgreSQL 15 and pgwarden agents, one of each per host namespace.

Each host namespace runs one member of a single etcd cluster (every member listed in every agent's
`etcd3` section), and an agent configured with Patroni-style YAML, as `LocalCluster` writes it, that
starts its PostgreSQL. Processes run as the `postgres` user (`ip netns exec NS setpriv ...`, both of
which exec, so the PID we hold is the process itself) in their own session, and are stopped by PID.
Observation (REST, SQL) runs in threads that entered the client namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import yaml

from pgwarden.chaos.net import Network, enter_netns, run
from pgwarden.chaos.watchdog import HostWatchdog
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN, PG_USER, give_to_pg_user, kill_postmaster_group
from pgwarden.localcluster.processes import terminate
from pgwarden.postgres.datadir import postmaster_pid

ETCD_CLIENT, ETCD_PEER, PG_PORT, API_PORT = 2379, 2380, 5432, 8008
SUPERUSER_PASSWORD = "chaos-superuser-secret"
SOURCE_TREE = str(Path(__file__).resolve().parents[2])
"""The directory holding this `pgwarden` package: the agents are started with it on PYTHONPATH."""
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
MODES = {"async": False, "on": True, "quorum": "quorum"}
"""The suite's modes and the `synchronous_mode` each writes into bootstrap.dcs."""

# Small: three other clusters share two cores with this one. wal_keep_size is small too: the members' slots
# (and their copies on the replicas) hold what a member needs, and PostgreSQL keeps every timeline's copy of a
# segment within wal_keep_size of the current position. With a failover or two per schedule and little WAL
# written between them, 128MB let pg_wal grow by about 16 MB a schedule until a host's disk was full (the
# footprints of 4 December: 560 MB after 20 schedules, files of 27 timelines back to segment 3).
PG_PARAMETERS: dict[str, Any] = {"shared_buffers": "16MB", "max_connections": 40, "wal_keep_size": "32MB",
                                 "max_wal_senders": 8, "max_replication_slots": 8, "work_mem": "1MB",
                                 "wal_buffers": "1MB", "max_wal_size": "256MB"}
DISK_MB = 1024
"""The size of each host's own small filesystem (a tmpfs) when the cluster has one: the data directory
(about 40 MB), pg_wal (wal_keep_size + max_wal_size at most), the server log and the one copy a failed
rewind leaves (`data.failed.*`) fit. Only what is written takes memory, the filler too (while it lasts)."""
FILLER = "chaos-filler"
"""The file a `disk-full` fault grows on a host's filesystem until no byte is left."""


def clock_injection_available() -> bool:
    """libfaketime is what steps an agent's wall clock; without it clock faults are skipped."""
    return FAKETIME_LIB.is_file()


@dataclass
class Host:
    """One host namespace and the processes this suite started in it."""

    index: int
    ns: str
    ip: str
    dir: Path
    etcd: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    clock_offset: int = 0
    """Seconds the agent's clocks were stepped forward so far (they never step back)."""

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def disk(self) -> Path:
        """The host's disk: the mount point of its own small filesystem when the cluster has them."""
        return self.dir / "disk"

    @property
    def data_dir(self) -> Path:
        return self.disk / "data"

    @property
    def clock_file(self) -> Path:
        """libfaketime's offset for this host's agent (and the PostgreSQL it starts), `+<clock_offset>s`."""
        return self.dir / "faketime.rc"

    def postmaster_pid(self) -> int | None:
        return postmaster_pid(self.data_dir)

    def dsn(self) -> str:
        return conninfo(self.ip)


def conninfo(hosts: str, read_write: bool = False) -> str:
    """A DSN to `hosts` (comma separated) that fails fast on a dead or cut-off peer.

    tcp_user_timeout drops a connection whose data stays unacknowledged; a client never *cancels* a
    commit waiting for synchronous replication (PostgreSQL would report it committed)."""
    ports = ",".join(str(PG_PORT) for _ in hosts.split(","))
    dsn = (f"host={hosts} port={ports} user=postgres dbname=postgres password={SUPERUSER_PASSWORD} "
           "connect_timeout=2 keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=2 "
           "tcp_user_timeout=4000 application_name=chaos")
    return dsn + (" target_session_attrs=read-write" if read_write else "")


@dataclass
class ChaosCluster:
    """The namespaces, the processes and how to observe them. `start()`, then `close()` (idempotent)."""

    workdir: Path
    mode: str = "async"
    size: int = 3
    clock: bool = False
    """Start agents under libfaketime so a fault can step their wall clock."""
    watchdog: bool = False
    """Give every agent a watchdog (`mode: required`) whose stand-in resets the host (chaos/watchdog.py)."""
    disk_mb: int = 0
    """When > 0, each host's data directory lives on its own tmpfs of this size, which `disk-full` fills."""
    mounted: list[Path] = field(default_factory=list)
    watchdogs: dict[str, HostWatchdog] = field(default_factory=dict)
    net: Network = field(init=False)
    hosts: list[Host] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, not {self.mode!r}")
        self.net = Network(self.size)

    # -- setup ---------------------------------------------------------------------------------------

    def start(self, timeout: float = 180) -> None:
        """Namespaces, etcd members, agents; returns once one primary and every replica streams."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # the postgres user must reach its host directories
        self.net.build()
        self.hosts = [Host(i, self.net.host_ns(i), self.net.host_ip(i), self.workdir / f"h{i}")
                      for i in range(1, self.size + 1)]
        for host in self.hosts:
            host.disk.mkdir(parents=True, exist_ok=True)
            if self.disk_mb > 0:
                self._mount_disk(host)
            (host.dir / "pgwarden.yml").write_text(yaml.safe_dump(self.agent_config(host), sort_keys=False))
            host.clock_file.write_text("+0\n")
            give_to_pg_user(host.dir)
            if self.watchdog:
                self.watchdogs[host.name] = HostWatchdog(host.dir / "watchdog", partial(self.reset_host, host))
        self._pool = ThreadPoolExecutor(max_workers=self.size + 1, thread_name_prefix="chaos-client",
                                        initializer=enter_netns, initargs=(self.net.client,))
        for host in self.hosts:
            self.start_etcd(host)
        for host in self.hosts:
            self.start_agent(host)
        self.wait_converged(timeout)

    def _mount_disk(self, host: Host) -> None:
        """A small tmpfs of its own under the host's directory (only there: nothing else is mounted)."""
        run(["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m,mode=0700", f"{self.net.tag}-{host.name}",
             str(host.disk)])
        self.mounted.append(host.disk)

    def fill_disk(self, host: Host) -> int:
        """Grow the host's filler file until its filesystem has no byte left; returns the bytes added.

        Called again and again while the fault lasts: PostgreSQL removes old WAL segments at
        checkpoints, and the space they free must not let it write again."""
        free = _free_bytes(host.disk)
        if free <= 0:
            return 0
        with open(host.disk / FILLER, "ab") as filler:
            size = filler.seek(0, os.SEEK_END)
            try:
                os.posix_fallocate(filler.fileno(), size, free)
            except OSError:  # a few pages short: fill what remains page by page
                with contextlib.suppress(OSError):
                    while True:
                        os.write(filler.fileno(), b"\0" * 4096)
        return free

    def free_disk(self, host: Host) -> bool:
        """Remove the host's filler file; True if there was one."""
        try:
            (host.disk / FILLER).unlink()
        except FileNotFoundError:
            return False
        return True

    def switch_wal(self, host: Host, timeout: float = 5.0) -> str:
        """`pg_switch_wal()` on the host: the next write needs a new WAL segment (16 MB), on it and on
        the replicas that stream from it. Our workload writes too little to reach a segment's end within
        a fault, and a full disk only hurts pg_wal when a segment has to be created. Never raises."""
        assert self._pool is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            future = self._pool.submit(_sql, host.dsn(), "SELECT pg_switch_wal()", ())
            try:
                rows = future.result(max(0.1, deadline - time.monotonic()))
            except psycopg.errors.ObjectNotInPrerequisiteState:
                # still in recovery: a primary the REST API announced a moment before its promotion ended
                if time.monotonic() < deadline - 0.5:
                    time.sleep(0.5)
                    continue
                return f"pg_switch_wal on {host.name}: still in recovery"
            except Exception as exc:  # a PANIC, a timeout: what the fault is about, not our failure
                return f"pg_switch_wal on {host.name}: {type(exc).__name__}"
            return f"pg_switch_wal on {host.name} at {rows[0][0]}"

    def data_identity(self) -> dict[str, int | None]:
        """Each host's pg_control inode: pg_rewind rewrites that file in place, a new clone (or a new
        cluster) writes a new one, so a change between two readings is a re-clone."""
        out: dict[str, int | None] = {}
        for host in self.hosts:
            try:
                out[host.name] = (host.data_dir / "global" / "pg_control").stat().st_ino
            except OSError:
                out[host.name] = None
        return out

    def agent_config(self, host: Host) -> dict[str, Any]:
        """Patroni-style YAML, as a user writes it: etcd3 with the three members, one PostgreSQL."""
        subnet = host.ip.rsplit(".", 1)[0] + ".0/24"
        return {
            "scope": "chaos",
            "namespace": "/service",
            "name": host.name,
            "restapi": {"listen": f"{host.ip}:{API_PORT}", "connect_address": f"{host.ip}:{API_PORT}"},
            "etcd3": {"hosts": [f"{h.ip}:{ETCD_CLIENT}" for h in self.hosts]},
            "bootstrap": {
                "dcs": {
                    "ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": MODES[self.mode],
                    "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                   "parameters": {"max_connections": PG_PARAMETERS["max_connections"],
                                                  "wal_keep_size": PG_PARAMETERS["wal_keep_size"]}},
                },
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                "pg_hba": ["local all all trust", f"host replication replicator {subnet} scram-sha-256",
                           f"host all all {subnet} scram-sha-256"],
            },
            "postgresql": {
                "listen": f"{host.ip}:{PG_PORT}",
                "connect_address": f"{host.ip}:{PG_PORT}",
                "data_dir": str(host.data_dir),
                "bin_dir": PG_BIN,
                "pgpass": str(host.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                    "replication": {"username": "replicator", "password": "chaos-replication-secret"},
                    "rewind": {"username": "rewind_user", "password": "chaos-rewind-secret"},
                },
                "parameters": {"unix_socket_directories": str(host.dir), **PG_PARAMETERS},
                "use_pg_rewind": True,
                "remove_data_directory_on_rewind_failure": True,
            },
            "tags": {},
            **({"watchdog": {"mode": "required", "driver": "testing", "device": str(host.dir / "watchdog")}}
               if self.watchdog else {}),
        }

    def _spawn(self, host: Host, argv: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        user = pwd.getpwnam(PG_USER)
        base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": user.pw_dir}
        command = ["ip", "netns", "exec", host.ns, "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                   "--clear-groups", "--", *argv]
        with open(host.dir / log_name, "ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**base, **env},
                                    cwd=str(host.dir), start_new_session=True)

    def start_etcd(self, host: Host) -> None:
        members = ",".join(f"{h.name}=http://{h.ip}:{ETCD_PEER}" for h in self.hosts)
        argv = [ETCD_BIN, "--name", host.name, "--data-dir", str(host.dir / "etcd"),
                "--listen-client-urls", f"http://{host.ip}:{ETCD_CLIENT}",
                "--advertise-client-urls", f"http://{host.ip}:{ETCD_CLIENT}",
                "--listen-peer-urls", f"http://{host.ip}:{ETCD_PEER}",
                "--initial-advertise-peer-urls", f"http://{host.ip}:{ETCD_PEER}",
                "--initial-cluster", members, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.net.tag,
                # A loaded machine: etcd's defaults (100 ms / 1 s) would elect on mere scheduling delays.
                "--heartbeat-interval", "200", "--election-timeout", "2000",
                "--listen-metrics-urls", "", "--log-level", "warn", "--logger", "zap"]
        host.etcd = self._spawn(host, argv, "etcd.log", {})

    def start_agent(self, host: Host) -> None:
        argv = [sys.executable, "-m", "pgwarden.cli.entry", "agent", str(host.dir / "pgwarden.yml")]
        if self.clock:
            # Both clocks move (FAKETIME_DONT_FAKE_MONOTONIC breaks Python's time.sleep with EINVAL here), so
            # steps only go forward (faults.py). Set after the switch to postgres (env execs): preloaded into
            # root's `ip`, libfaketime would create a semaphore the agent cannot open.
            argv = ["env", f"LD_PRELOAD={FAKETIME_LIB}", f"FAKETIME_TIMESTAMP_FILE={host.clock_file}",
                    "FAKETIME_CACHE_DURATION=1", "FAKETIME_DISABLE_SHM=1", *argv]
        # The agents run the tree this code was imported from (a frozen worktree for long runs while the
        # main tree is edited), not whatever the virtualenv's editable install points at.
        host.agent = self._spawn(host, argv, "agent.log", {"PYTHONUNBUFFERED": "1", "PYTHONPATH": SOURCE_TREE})

    def reset_host(self, host: Host) -> None:
        """What the watchdog does: the host's agent and PostgreSQL die at once (SIGKILL, even if stopped)."""
        pid = host.postmaster_pid()
        if host.agent is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.agent.pid, signal.SIGKILL)
        if pid is not None:
            kill_postmaster_group(pid)

    def revive(self, reset_only: bool = False) -> list[str]:
        """Start the agent again on every host whose agent died (a watchdog reset): the host is back.
        `reset_only`: only agents the watchdog killed (SIGKILL); one that exited by itself stays down, so
        that waiting for convergence reports it."""
        dead = [h for h in self.hosts if h.agent is not None and h.agent.poll() is not None]
        if reset_only:
            dead = [h for h in dead if h.name in self.watchdogs and h.agent is not None
                    and h.agent.returncode == -signal.SIGKILL]
        for host in dead:
            self.start_agent(host)
        return [h.name for h in dead]

    # -- observation (in the client namespace) ---------------------------------------------------------

    def in_client_ns(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on a thread inside the client namespace and return its result."""
        assert self._pool is not None, "start() first"
        return self._pool.submit(fn, *args).result()

    def rest(self, host: Host, path: str, timeout: float = 2.0) -> tuple[int, dict[str, Any] | None]:
        """(status, JSON body) of the host's REST API; (0, None) when it does not answer."""
        return self.in_client_ns(_get, f"http://{host.ip}:{API_PORT}{path}", timeout)  # type: ignore[no-any-return]

    def roles(self) -> dict[str, str]:
        """Each host's answer to /primary and /replica: "primary", "replica" or "-" (neither, unreachable)."""
        assert self._pool is not None
        futures = {h.name: (self._pool.submit(_get, f"http://{h.ip}:{API_PORT}/primary", 2.0),
                            self._pool.submit(_get, f"http://{h.ip}:{API_PORT}/replica", 2.0)) for h in self.hosts}
        out = {}
        for name, (primary, replica) in futures.items():
            out[name] = "primary" if primary.result()[0] == 200 else "replica" if replica.result()[0] == 200 else "-"
        return out

    def primary(self) -> Host | None:
        """The one host whose /primary answers 200, if exactly one does."""
        roles = self.roles()
        names = [n for n, r in roles.items() if r == "primary"]
        return self.host(names[0]) if len(names) == 1 else None

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def converged(self) -> bool:
        roles = self.roles()
        return sorted(roles.values()) == ["primary"] + ["replica"] * (self.size - 1)

    def wait_converged(self, timeout: float) -> float:
        """Seconds until one primary and streaming replicas; TimeoutError with each agent's log tail."""
        start = time.monotonic()
        while not self.converged():
            self.revive(reset_only=True)  # a watchdog reset after the last heal: the host reboots as well
            exited = [f"{h.name} (exit status {h.agent.returncode})" for h in self.hosts
                      if h.agent is not None and h.agent.poll() is not None]
            if exited or time.monotonic() - start > timeout:
                why = f"agents exited: {exited}" if exited else f"no convergence within {timeout:.0f}s"
                raise TimeoutError(f"{why}: {self.roles()}\n{self.describe()}")
            time.sleep(0.5)
        return time.monotonic() - start

    def describe(self, lines: int = 8) -> str:
        parts = []
        for host in self.hosts:
            try:
                tail = (host.dir / "agent.log").read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = []
            parts.append(f"== {host.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def sql(self, dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one autocommit statement, run from the client namespace."""
        return self.in_client_ns(_sql, dsn, query, params)  # type: ignore[no-any-return]

    def footprint(self) -> dict[str, dict[str, Any]]:
        """Each host's disk use after a schedule: MiB in pg_wal, in a moved-aside copy (`data.failed.*`),
        free on its own filesystem, and its slots' restart LSNs against its position, so WAL that piles up
        over a long run (a slot not advanced, a copy left behind) shows before a disk fills."""
        out: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            entry: dict[str, Any] = {"wal_mb": _mib(host.data_dir / "pg_wal"),
                                     "aside_mb": sum(_mib(p) for p in host.disk.glob("data.failed.*"))}
            if self.disk_mb > 0:
                with contextlib.suppress(OSError):
                    stat = os.statvfs(host.disk)
                    entry["free_mb"] = round(stat.f_bavail * stat.f_frsize / 2**20, 1)
            with contextlib.suppress(psycopg.Error, OSError):
                [(slots, lsn)] = self.sql(host.dsn(), FOOTPRINT_QUERY)
                entry["slots"], entry["lsn"] = slots, str(lsn)
            out[host.name] = entry
        return out

    def multi_host_dsn(self) -> str:
        return conninfo(",".join(h.ip for h in self.hosts), read_write=True)

    # -- teardown ------------------------------------------------------------------------------------

    def resume_all(self) -> None:
        """SIGCONT every process we started or a fault may have frozen (a stopped one ignores SIGTERM)."""
        for host in self.hosts:
            for pid in (p.pid for p in (host.agent, host.etcd) if p is not None and p.poll() is None):
                _signal(pid, signal.SIGCONT)
            pm = host.postmaster_pid()
            if pm is not None:
                _signal(pm, signal.SIGCONT)

    def close(self) -> None:
        """Stop every agent, PostgreSQL and etcd member by PID, then delete the namespaces. Idempotent."""
        self.resume_all()
        for host in self.hosts:
            if host.agent is not None and host.agent.poll() is None:
                _signal(host.agent.pid, signal.SIGTERM)
        for host in self.hosts:
            terminate(host.agent, 20)
            host.agent = None
            pid = host.postmaster_pid()
            if pid is not None:
                kill_postmaster_group(pid)
        for host in self.hosts:
            terminate(host.etcd, 10)
            host.etcd = None
        for watchdog in self.watchdogs.values():
            watchdog.close()
        self.watchdogs.clear()
        for disk in reversed(self.mounted):
            # lazy: a process we did not start (a shell looking at the logs) must not keep it mounted
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30, check=False)
        self.mounted.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.net.close()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _get(url: str, timeout: float) -> tuple[int, dict[str, Any] | None]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _sql(dsn: str, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)  # our own constant queries
        return cursor.fetchall() if cursor.description else []


FOOTPRINT_QUERY = ("SELECT (SELECT coalesce(json_object_agg(slot_name, restart_lsn::text), '{}') "
                   "FROM pg_replication_slots), "
                   "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END")
"""A host's slots ({name: restart_lsn}) and its own position, in one round trip."""


def _mib(path: Path) -> float:
    """MiB a directory tree takes (allocated blocks), 0 when it is missing; files vanishing meanwhile are skipped."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return round(total / 2**20, 1)
