"""A whole pgwarden cluster on this machine: one DCS server and N agents with their PostgreSQL, on loopback.

The DCS is an etcd (agents on its v3 API, or on its v2 API with `dcs_kind="etcd"`) or a ZooKeeper
(`dcs_kind="zookeeper"`).

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
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgwarden.localcluster.etcd import LocalEtcd
from pgwarden.localcluster.patroni import kill_postmaster_tree
from pgwarden.localcluster.ports import pick_ports
from pgwarden.localcluster.postgres import PG_BIN, PG_USER, give_to_pg_user
from pgwarden.localcluster.processes import terminate, wait_until
from pgwarden.localcluster.zookeeper import LocalZooKeeper
from pgwarden.postgres.datadir import postmaster_pid

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


@dataclass
class Node:
    name: str
    dir: Path
    pg_port: int
    api_port: int
    agent: subprocess.Popen[bytes] | None = None
    agent_args: tuple[str, ...] | None = None
    """What the agent is given after `agent`; None: (config_path,), (): nothing (PATRONI_* env only)."""
    command: Sequence[str] | None = None
    """This node's own agent command (e.g. `localcluster.patroni.patroni_command()`: a mixed cluster);
    None: the cluster's `agent_command`. Changed between a stop and a start, it migrates the node."""

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
        return postmaster_pid(self.data_dir)

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
    etcd: LocalEtcd | None = None
    dcs_kind: str = "etcd3"
    """The agents' DCS, by Patroni's section name: "etcd3", "etcd" (etcd's v2 API) or "zookeeper". `etcd_ports`
    are the server's ports either way (ZooKeeper uses the first)."""
    zookeeper: LocalZooKeeper | None = None
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
            give_to_pg_user(node.dir)

    def node_config(self, node: Node) -> dict[str, Any]:
        config: dict[str, Any] = {
            "scope": self.scope,
            "namespace": "/service",
            "name": node.name,
            "restapi": {"listen": f"127.0.0.1:{node.api_port}", "connect_address": f"127.0.0.1:{node.api_port}"},
            **self.dcs_section(),
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

    def dcs_section(self) -> dict[str, Any]:
        """The node configuration's DCS section, in the form Patroni's users write it."""
        address = f"127.0.0.1:{self.etcd_ports[0]}"
        if self.dcs_kind == "zookeeper":
            return {"zookeeper": {"hosts": [address]}}
        return {self.dcs_kind: {"hosts": address}}

    # -- processes -----------------------------------------------------------------------------------

    def start_etcd(self) -> None:
        """Start the DCS server (etcd, or ZooKeeper with `dcs_kind="zookeeper"`) and wait until it serves."""
        client, peer = self.etcd_ports
        if self.dcs_kind == "zookeeper":
            self.zookeeper = LocalZooKeeper.spawn(data_dir=self.workdir / "zookeeper",
                                                  log_path=self.workdir / "zookeeper.log", client_port=client)
            self.zookeeper.wait_healthy(60)
            return
        self.etcd = LocalEtcd.spawn(name="demo", data_dir=self.workdir / "etcd", log_path=self.workdir / "etcd.log",
                                    client_port=client, peer_port=peer, enable_v2=self.dcs_kind == "etcd")
        self.etcd.wait_healthy(20)

    def stop_etcd(self) -> None:
        if self.etcd is not None:
            self.etcd.stop(10)
        if self.zookeeper is not None:
            self.zookeeper.stop(10)
        self.etcd = self.zookeeper = None

    def start_agent(self, node: Node) -> None:
        log = open(node.log_path, "ab")  # noqa: SIM115 - owned by the child process
        kwargs: dict[str, Any] = {}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            env["HOME"] = user.pw_dir
        else:
            env["HOME"] = os.environ.get("HOME", "/tmp")
        if self.agent_env is not None:
            env.update(self.agent_env(node))
        args = (str(node.config_path),) if node.agent_args is None else node.agent_args
        node.agent = subprocess.Popen(
            [*(node.command or self.agent_command or (self.python, "-m", "pgwarden.cli.entry", "agent")), *args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(node.dir), start_new_session=True, **kwargs)
        log.close()

    def stop_agent(self, node: Node, timeout: float = 60) -> None:
        """A clean stop (SIGTERM): the agent stops PostgreSQL and, as leader, hands the key over."""
        terminate(node.agent, timeout)
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
            kill_postmaster_tree(pid)
        wait_until(lambda: node.postmaster_pid() is None, 10, f"{node.name}'s postmaster to die")

    def kill_postmaster(self, node: Node) -> None:
        pid = node.postmaster_pid()
        if pid is not None:
            kill_postmaster_tree(pid)

    def start(self) -> None:
        self.prepare()
        self.start_etcd()
        for node in self.nodes:
            self.start_agent(node)

    def stop(self) -> None:
        """Stop every agent (cleanly, then by force), any PostgreSQL left, and the DCS server."""
        running = [n for n in self.nodes if n.agent is not None and n.agent.poll() is None]
        for node in running:
            with contextlib.suppress(ProcessLookupError):
                node.agent.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for node in self.nodes:
            terminate(node.agent, 30)
            node.agent = None
        for node in self.nodes:
            pid = node.postmaster_pid()
            if pid is not None:
                kill_postmaster_tree(pid)
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
        try:
            wait_until(lambda: self.healthy(replicas), timeout, "one primary and streaming replicas")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.describe()}") from None  # CI keeps only this message
        leader = self.leader()
        assert leader is not None
        return leader

    def describe(self, log_lines: int = 12) -> str:
        """Each node's agent, its /patroni answer and its log's last lines: why a wait did not end."""
        parts = []
        for node in self.nodes:
            alive = node.agent is not None and node.agent.poll() is None
            status, body = node.get("/patroni") if alive else (0, None)
            fields = {k: body.get(k) for k in ("role", "state", "replication_state", "timeline")} if body else {}
            try:
                tail = node.log_path.read_text(errors="replace").splitlines()[-log_lines:]
            except OSError:
                tail = []
            parts.append(f"== {node.name}: agent {'running' if alive else 'not running'}, /patroni {status} "
                         f"{fields}\n" + "\n".join(tail))
        return "\n".join(parts)

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


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
