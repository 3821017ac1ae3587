"""A whole pgwarden cluster on this machine: one etcd and N agents with their PostgreSQL, on loopback.

Used by `pgwarden demo`, by the integration tests and by the benchmarks. Every process it starts is
tracked by PID and stopped by `stop()`; when run as root, agents (and so PostgreSQL) run as the
`postgres` user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ETCD_BIN = "/usr/bin/etcd"
PG_BIN = "/usr/lib/postgresql/15/bin"
RUN_AS = "postgres"

# Timings for a local cluster: the fastest Patroni allows (ttl >= 20, loop_wait + 2*retry <= ttl).
DEMO_DCS: dict[str, Any] = {
    "ttl": 20,
    "loop_wait": 2,
    "retry_timeout": 5,
    "maximum_lag_on_failover": 1048576,
    "postgresql": {
        "use_pg_rewind": True,
        "use_slots": True,
        "parameters": {"max_connections": 100, "wal_keep_size": "128MB"},
    },
}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_ports(preferred: list[int]) -> list[int]:
    """The preferred ports if all are free, else as many free ephemeral ones (a 0 asks for that)."""
    if all(p > 0 and port_is_free(p) for p in preferred):
        return preferred
    return [free_port() for _ in preferred]


@dataclass
class Node:
    name: str
    dir: Path
    pg_port: int
    api_port: int
    agent: subprocess.Popen[bytes] | None = None
    agent_args: tuple[str, ...] | None = None
    """What the agent is given after `agent`; None: (config_path,), (): nothing (PATRONI_* env only)."""

    @property
    def config_path(self) -> Path:
        return self.dir / "pgwarden.yml"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "agent.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, dict[str, Any] | None]:
        """(status, JSON body) of a REST GET; (0, None) when the agent does not answer."""
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body) if body else None
            except ValueError:
                return exc.code, None
        except (OSError, ValueError):
            return 0, None


@dataclass
class LocalCluster:
    workdir: Path
    size: int = 3
    scope: str = "demo"
    etcd_ports: tuple[int, int] = (2379, 2380)
    pg_base_port: int = 5432
    api_base_port: int = 8008
    dcs: Mapping[str, Any] = field(default_factory=lambda: DEMO_DCS)
    python: str = sys.executable
    nodes: list[Node] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    extra_config: Callable[[Node], Mapping[str, Any]] | None = None
    agent_command: Sequence[str] | None = None
    """The command that runs one agent, its configuration file appended; None: this Python's
    `pgwarden agent`. Another Patroni-compatible agent (Patroni itself) works too, for comparisons."""
    write_config: Callable[[Node, dict[str, Any]], Sequence[str]] | None = None
    """Writes a node's configuration in another form (the user's own YAML, a directory, nothing but
    environment) given `node_config(node)`, and returns the agent's arguments (`Node.agent_args`)."""
    agent_env: Callable[[Node], Mapping[str, str]] | None = None
    """Extra environment for a node's agent (PATRONI_* variables)."""

    # -- setup ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_ports = tuple(pick_ports(list(self.etcd_ports)))  # type: ignore[assignment]
        pg_ports = pick_ports([self.pg_base_port + i if self.pg_base_port else 0 for i in range(self.size)])
        api_ports = pick_ports([self.api_base_port + i if self.api_base_port else 0 for i in range(self.size)])
        self.nodes = [Node(f"node{i + 1}", self.workdir / f"node{i + 1}", pg_ports[i], api_ports[i])
                      for i in range(self.size)]
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            if self.write_config is None:
                node.config_path.write_text(yaml.safe_dump(self.node_config(node), sort_keys=False))
            else:
                node.agent_args = tuple(self.write_config(node, self.node_config(node)))
            _chown_tree(node.dir)

    def node_config(self, node: Node) -> dict[str, Any]:
        config: dict[str, Any] = {
            "scope": self.scope,
            "namespace": "/service",
            "name": node.name,
            "restapi": {"listen": f"127.0.0.1:{node.api_port}", "connect_address": f"127.0.0.1:{node.api_port}"},
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_ports[0]}"},
            "bootstrap": {
                "dcs": dict(self.dcs),
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                "pg_hba": [
                    "local all all trust",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": PG_BIN,
                "pgpass": str(node.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "demo-superuser-secret"},
                    "replication": {"username": "replicator", "password": "demo-replication-secret"},
                    "rewind": {"username": "rewind_user", "password": "demo-rewind-secret"},
                },
                "parameters": {"unix_socket_directories": str(node.dir)},
                "use_pg_rewind": True,
                "remove_data_directory_on_rewind_failure": True,
            },
            "tags": {},
        }
        if self.extra_config is not None:
            config = _deep_merge(config, self.extra_config(node))
        return config

    # -- processes -----------------------------------------------------------------------------------

    def start_etcd(self) -> None:
        client, peer = self.etcd_ports
        data = self.workdir / "etcd"
        log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - owned by the child process
        self.etcd = subprocess.Popen(
            [ETCD_BIN, "--name", "demo", "--data-dir", str(data),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"demo=http://127.0.0.1:{peer}",
             "--listen-metrics-urls", "", "--log-level", "warn", "--logger", "zap"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{client}/health"), 20, "etcd to become healthy")

    def stop_etcd(self) -> None:
        _terminate(self.etcd, 10)
        self.etcd = None

    def start_agent(self, node: Node) -> None:
        log = open(node.log_path, "ab")  # noqa: SIM115 - owned by the child process
        kwargs: dict[str, Any] = {}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            env["HOME"] = user.pw_dir
        else:
            env["HOME"] = os.environ.get("HOME", "/tmp")
        if self.agent_env is not None:
            env.update(self.agent_env(node))
        args = (str(node.config_path),) if node.agent_args is None else node.agent_args
        node.agent = subprocess.Popen(
            [*(self.agent_command or (self.python, "-m", "pgwarden.cli.entry", "agent")), *args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(node.dir), start_new_session=True, **kwargs)
        log.close()

    def stop_agent(self, node: Node, timeout: float = 60) -> None:
        """A clean stop (SIGTERM): the agent stops PostgreSQL and, as leader, hands the key over."""
        _terminate(node.agent, timeout)
        node.agent = None

    def kill_host(self, node: Node) -> None:
        """SIGKILL the agent and the whole PostgreSQL instance at once, as if the host died."""
        pid = node.postmaster_pid()
        if node.agent is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.agent.pid, signal.SIGKILL)
            node.agent.wait()
            node.agent = None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: node.postmaster_pid() is None, 10, f"{node.name}'s postmaster to die")

    def kill_postmaster(self, node: Node) -> None:
        pid = node.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def start(self) -> None:
        self.prepare()
        self.start_etcd()
        for node in self.nodes:
            self.start_agent(node)

    def stop(self) -> None:
        """Stop every agent (cleanly, then by force), any PostgreSQL left, and etcd."""
        running = [n for n in self.nodes if n.agent is not None and n.agent.poll() is None]
        for node in running:
            with contextlib.suppress(ProcessLookupError):
                node.agent.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for node in self.nodes:
            _terminate(node.agent, 30)
            node.agent = None
        for node in self.nodes:
            pid = node.postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.stop_etcd()

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- observation ---------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def leader(self) -> Node | None:
        """The node whose /primary answers 200, if exactly one does."""
        primaries = [n for n in self.nodes if n.agent is not None and n.get("/primary", 1.0)[0] == 200]
        return primaries[0] if len(primaries) == 1 else None

    def streaming_replicas(self) -> list[Node]:
        return [n for n in self.nodes if n.agent is not None and n.get("/replica", 1.0)[0] == 200]

    def healthy(self, replicas: int | None = None) -> bool:
        wanted = self.size - 1 if replicas is None else replicas
        return self.leader() is not None and len(self.streaming_replicas()) >= wanted

    def wait_healthy(self, timeout: float = 120, replicas: int | None = None) -> Node:
        wait_until(lambda: self.healthy(replicas), timeout, "one primary and streaming replicas")
        leader = self.leader()
        assert leader is not None
        return leader

    def cluster_json(self) -> dict[str, Any] | None:
        for node in self.nodes:
            if node.agent is not None:
                status, body = node.get("/cluster")
                if status == 200 and body:
                    return body
        return None

    def conninfo(self, node: Node, dbname: str = "postgres") -> str:
        return (f"host=127.0.0.1 port={node.pg_port} user=postgres dbname={dbname} "
                f"password=demo-superuser-secret connect_timeout=2")

    def multi_host_dsn(self) -> str:
        hosts = ",".join("127.0.0.1" for _ in self.nodes)
        ports = ",".join(str(n.pg_port) for n in self.nodes)
        return (f"host={hosts} port={ports} user=postgres dbname=postgres password=demo-superuser-secret "
                "connect_timeout=2 target_session_attrs=read-write")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll until `predicate()`; returns the seconds it took. TimeoutError names what was awaited."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(RUN_AS)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    os.chmod(path, 0o700)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@contextlib.contextmanager
def running_cluster(workdir: Path, **kwargs: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(workdir, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
