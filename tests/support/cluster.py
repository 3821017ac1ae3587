"""Real clusters for integration tests: one LocalCluster on free loopback ports in a temp dir, its REST
API, and its agents' logs when a test failed. Each test module keeps its own module-scoped fixture
(its size, scope and configuration) built from `running_cluster`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import string
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until


@contextlib.contextmanager
def running_cluster(prefix: str, scope: str, *, size: int = 3, replicas: int | None = None, timeout: float = 120,
                    **options: Any) -> Iterator[LocalCluster]:
    """A started LocalCluster with every replica streaming (or `replicas` of them); stopped by PID and
    its directory removed afterwards. `options` go to LocalCluster (extra_config, agent_env, ...)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"pgwarden-{prefix}-"))
    workdir.chmod(0o755)  # the agents run as postgres
    local = LocalCluster(workdir, size=size, scope=scope, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         **options)
    try:
        local.start()
        local.wait_healthy(timeout, replicas=replicas)
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def rest(node: Node, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None,
         timeout: float = 60) -> tuple[int, str]:
    """(status, text) of one call to a member's REST API; a JSON body when `body` is not None."""
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(node.api_url + path, data=data, method=method,
                                  headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


PGWARDEN = [os.environ.get("PGWARDEN_PYTHON", "/opt/pgwarden/venv/bin/python"), "-m", "pgwarden.cli.entry"]


def pgwarden(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The `pgwarden` command as a user runs it (a separate process), its output captured."""
    return subprocess.run([*PGWARDEN, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def print_logs_if_failed(cluster: LocalCluster, request: pytest.FixtureRequest, lines: int = 40) -> None:
    """After a test (in a fixture's teardown): the tail of every agent's log when the test failed."""
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            print(f"==== {node.name} agent log (tail)")
            print("\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:]))


# --------------------------------------------------------------------------------------------------
# Added for the failsafe and watchdog tests (tests/integration/test_failsafe.py, test_watchdog.py):
# clusters configured from a Patroni user's YAML file, a fail-fast wait for health, a split-brain
# watcher, etcd outages by PID, and raw reads of the DCS keys with etcdctl.

ETCDCTL = "/usr/bin/etcdctl"


def user_yaml_writer(template: str, values: Callable[[Node], Mapping[str, object]] | None = None
                     ) -> Callable[[Node, dict[str, Any]], list[str]]:
    """A `LocalCluster.write_config` that writes each node's `patroni.yml` from `template`, a Patroni
    user's YAML with `${...}` placeholders (string.Template): `scope`, `name`, `etcd` (host:port),
    `api_port`, `pg_port`, `node_dir`, `pg_bin`, and whatever `values(node)` adds. pgwarden's own form
    of the configuration (what the cluster passes in) only lends the ports and the scope."""

    def write(node: Node, ours: dict[str, Any]) -> list[str]:
        substitutions: dict[str, object] = {
            "scope": ours["scope"], "name": node.name, "etcd": ours["etcd3"]["hosts"], "api_port": node.api_port,
            "pg_port": node.pg_port, "node_dir": node.dir, "pg_bin": PG_BIN, **(values(node) if values else {}),
        }  # fmt: skip
        path = node.dir / "patroni.yml"
        path.write_text(string.Template(template).substitute(substitutions))
        return [str(path)]

    return write


def user_config_path(node: Node) -> Path:
    """The configuration file a node's agent was started with (the user's patroni.yml, or ours)."""
    return Path(node.agent_args[0]) if node.agent_args else node.config_path


def agent_log_tails(cluster: LocalCluster, lines: int = 40) -> str:
    """The last `lines` of every agent's log, for an assertion's message."""
    out = []
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            tail = node.log_path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"\n---- {node.name} agent log (last {lines} lines) ----\n" + "\n".join(tail))
    return "".join(out)


def wait_healthy_or_fail(cluster: LocalCluster, timeout: float = 120, replicas: int | None = None) -> Node:
    """`cluster.wait_healthy`, but an agent that exits (a refused configuration, a crash) fails the wait
    at once, and a timeout fails with every agent's log."""

    def ready() -> bool:
        for node in cluster.nodes:
            if node.agent is not None and node.agent.poll() is not None:
                raise AssertionError(f"{node.name}'s agent exited with {node.agent.returncode} while waiting for "
                                     f"a healthy cluster{agent_log_tails(cluster)}")
        return cluster.healthy(replicas)

    try:
        wait_until(ready, timeout, "one primary and streaming replicas")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}{agent_log_tails(cluster)}") from None
    leader = cluster.leader()
    assert leader is not None
    return leader


@contextlib.contextmanager
def running_user_cluster(prefix: str, scope: str, template: str, *, size: int = 3,
                         values: Callable[[Node], Mapping[str, object]] | None = None, start: bool = True,
                         timeout: float = 120, **options: Any) -> Iterator[LocalCluster]:
    """A LocalCluster whose agents read a Patroni user's YAML (`user_yaml_writer`). With `start`, etcd
    and every agent are started and the cluster is healthy when yielded; without it the nodes are only
    prepared (directories, configuration files) and the caller starts etcd and the agents. Every
    process is stopped by PID and the directory removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"pgwarden-{prefix}-"))
    workdir.chmod(0o755)  # the agents run as postgres
    local = LocalCluster(workdir, size=size, scope=scope, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         write_config=user_yaml_writer(template, values), **options)
    try:
        if start:
            local.start()
            wait_healthy_or_fail(local, timeout)
        else:
            local.prepare()
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def etcd_get(cluster: LocalCluster, key: str, *, prefix: bool = False, timeout: float = 10) -> dict[str, str]:
    """{full key: value} of `/service/<scope>/<key>` (every key under it with `prefix`), read with
    etcdctl as an operator would; empty when there is no such key."""
    full = f"/service/{cluster.scope}/{key}"
    args = [ETCDCTL, f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", "--command-timeout=3s", "get", full]
    done = subprocess.run([*args, *(["--prefix"] if prefix else [])], capture_output=True, text=True,
                          timeout=timeout, check=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    lines = done.stdout.splitlines()
    return dict(zip(lines[0::2], lines[1::2], strict=False))


def etcd_json(cluster: LocalCluster, key: str) -> Any:
    """The JSON value of one key under the scope (None when missing)."""
    value = etcd_get(cluster, key).get(f"/service/{cluster.scope}/{key}")
    return None if value is None else json.loads(value)


class EtcdOutage:
    """The cluster's etcd made unavailable and brought back, by its PID.

    `freeze()` SIGSTOPs it (requests hang, as behind a dead network); `kill()` SIGKILLs it (it is gone:
    connections are refused); `restart()` starts it again from the same data directory on the same
    ports. `down_at` and `back_at` are the monotonic instants of the first freeze or kill and of the
    restart. As a context manager it always leaves etcd running again, so that a module's cluster
    outlives a failed test."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.down_at: float | None = None
        self.back_at: float | None = None
        self.frozen = False

    def __enter__(self) -> EtcdOutage:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster.etcd is None or self.frozen:
            self.restart()

    def _mark_down(self) -> float:
        now = time.monotonic()
        if self.down_at is None:
            self.down_at = now
        return now

    def freeze(self) -> float:
        assert self.cluster.etcd is not None, "etcd is not running"
        os.kill(self.cluster.etcd.pid, signal.SIGSTOP)
        self.frozen = True
        return self._mark_down()

    def kill(self) -> float:
        etcd = self.cluster.etcd
        assert etcd is not None, "etcd is not running"
        os.kill(etcd.pid, signal.SIGKILL)  # delivered to a stopped process too
        etcd.process.wait(10)
        self.cluster.etcd = None
        self.frozen = False
        return self._mark_down()

    def restart(self) -> float:
        if self.cluster.etcd is not None:
            self.kill()
        self.cluster.start_etcd()
        self.back_at = time.monotonic()
        return self.back_at


class WritableWatcher:
    """Polls `SELECT NOT pg_is_in_recovery()` on every node about every `interval` seconds, in a thread.

    `violations` lists every round in which two nodes accepted writes at once; `history` records each
    change of the set of writable nodes as (monotonic instant, names). Use as a context manager."""

    def __init__(self, cluster: LocalCluster, interval: float = 0.05) -> None:
        self.cluster = cluster
        self.interval = interval
        self.violations: list[str] = []
        self.history: list[tuple[float, frozenset[str]]] = []
        self.last_round: tuple[float, frozenset[str]] | None = None
        """(when it started, writable nodes) of the last complete round."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: dict[str, psycopg.Connection[tuple[Any, ...]]] = {}
        self._thread = threading.Thread(target=self._run, name="writable-watcher", daemon=True)

    def __enter__(self) -> WritableWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                conn.close()

    def _writable(self, node: Node) -> bool:
        conn = self._conns.get(node.name)
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(self.cluster.conninfo(node), autocommit=True, connect_timeout=1,
                                       options="-c statement_timeout=1000")
                self._conns[node.name] = conn
            row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
        except psycopg.Error:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._conns.pop(node.name, None)
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            writers = frozenset(n.name for n in self.cluster.nodes if self._writable(n))
            now = time.monotonic()
            with self._lock:
                self.last_round = (started, writers)
                if not self.history or self.history[-1][1] != writers:
                    self.history.append((now, writers))
                if len(writers) > 1:
                    self.violations.append(f"{time.strftime('%H:%M:%S')}: writable at once: {sorted(writers)}")
            self._stop.wait(self.interval)

    def writable(self) -> frozenset[str]:
        """The nodes writable in the last round (empty before the first)."""
        with self._lock:
            return self.history[-1][1] if self.history else frozenset()

    def wait(self, predicate: Callable[[frozenset[str]], bool], timeout: float, what: str) -> float:
        """Wait until a round that started after this call sees writable nodes for which `predicate`
        holds; returns that round's instant. TimeoutError names `what`."""
        since = time.monotonic()
        seen: list[float] = []

        def fresh() -> bool:
            with self._lock:
                if self.last_round is None or self.last_round[0] < since:
                    return False
                at, writers = self.last_round
            if predicate(writers):
                seen.append(at)
                return True
            return False

        wait_until(fresh, timeout, what, interval=self.interval)
        return seen[-1]

    def became_writable(self, name: str, after: float) -> float | None:
        """The first instant at or after `after` at which `name` was seen writable (None: never)."""
        with self._lock:
            history = list(self.history)
        for index, (at, writers) in enumerate(history):
            ends = history[index + 1][0] if index + 1 < len(history) else float("inf")
            if name in writers and ends >= after:
                return max(at, after)
        return None

    def writable_between(self, start: float, end: float) -> set[str]:
        """Every node seen writable at some instant in [start, end]."""
        with self._lock:
            history = list(self.history)
        seen: set[str] = set()
        for index, (at, writers) in enumerate(history):
            ends = history[index + 1][0] if index + 1 < len(history) else float("inf")
            if at <= end and ends >= start:
                seen |= writers
        return seen


def member_lease_ttl(cluster: LocalCluster, name: str) -> int | None:
    """The TTL etcd granted the lease that `name`'s member key lives on: the leader lease that member
    runs with (pgwarden moves its keys to a new lease when `pgwarden.lease_ttl` changes); None when
    the key or its lease is missing."""
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    base = [ETCDCTL, f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", "--command-timeout=3s", "-w", "json"]
    key = f"/service/{cluster.scope}/members/{name}"
    got = subprocess.run([*base, "get", key], capture_output=True, text=True, timeout=10, check=True, env=env)
    kvs = json.loads(got.stdout).get("kvs") or []
    lease = int(kvs[0].get("lease") or 0) if kvs else 0
    if not lease:
        return None
    alive = subprocess.run([*base, "lease", "timetolive", format(lease, "x")], capture_output=True, text=True,
                           timeout=10, check=True, env=env)
    granted = json.loads(alive.stdout).get("granted-ttl")
    return int(granted) if granted else None
