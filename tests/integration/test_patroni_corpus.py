"""Patroni users' configuration forms, each run as a real cluster (issue 11's compatibility corpus).

Every configuration here is written the way people write Patroni's, not the way pgwarden writes its
own (`LocalCluster.node_config`): YAML templates in `tests/integration/corpus/` (a file, or a directory
of files merged in name order), PATRONI_* variables over a file, PATRONI_CONFIGURATION, and nothing but
PATRONI_* variables. Each form starts real agents (as `postgres`) against a real etcd, and the CLI is
run as a separate process, found from the same file, from the environment alone, or from `--dcs-url`.

The two most common forms (`etcd3: {host: ...}` and environment only) get 3 nodes, a switchover and a
failover by killing the leader's host; so do the other backends' forms (`etcd:` for etcd's v2 API and
`zookeeper:`, each with synchronous replication and a rejoin by pg_rewind). The other forms start together
as 1-node clusters to keep the file's run time down.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import string
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

CORPUS = Path(__file__).parent / "corpus"
CLI_TIMEOUT = 120.0
DEAD_PORT = free_port()  # an etcd member that is down (nothing listens there)


# -- writing a node's configuration the user's way ------------------------------------------------------


def substitutions(cluster: LocalCluster, node: Node) -> dict[str, Any]:
    return {
        "scope": cluster.scope, "name": node.name, "fqdn": f"{node.name}.db-east-1.example.com",
        "etcd": f"127.0.0.1:{cluster.etcd_ports[0]}",
        "api_port": node.api_port, "pg_port": node.pg_port, "node_dir": node.dir, "dead_port": DEAD_PORT,
    }  # fmt: skip


def short(member: Any) -> str:
    """The LocalCluster node name of a member named like a host (`node1.db-east-1.example.com`)."""
    return str(member).split(".")[0]


def render(template: Path, cluster: LocalCluster, node: Node) -> str:
    return string.Template(template.read_text()).substitute(substitutions(cluster, node))


POST_INIT = """#!/bin/sh
# bootstrap.post_init (Patroni's legacy name of post_bootstrap): called with a connection URL
echo "$1" > "$(dirname "$0")/post_init.done"
"""


@dataclass(frozen=True)
class Form:
    """One way users configure Patroni. `template`: a file or directory under corpus/ (None: no file)."""

    id: str
    template: str | None
    size: int = 1
    as_configuration_var: bool = False
    """Give the rendered template as PATRONI_CONFIGURATION instead of a path."""
    env: Callable[[LocalCluster, Node], dict[str, str]] | None = None
    cli_env: Callable[[LocalCluster], dict[str, str]] | None = None
    """The CLI's environment when it finds the cluster from the environment alone (else `-c` the node's path)."""
    rendered: dict[str, str] = field(default_factory=dict, compare=False)
    dcs_kind: str = "etcd3"
    """The DCS server the cluster gets (LocalCluster.dcs_kind): the form's section must name it."""

    def write(self, cluster: LocalCluster, node: Node, _ours: dict[str, Any]) -> list[str]:
        """LocalCluster.write_config: write the user's configuration, ignoring pgwarden's own (`_ours`)."""
        (node.dir / "post_init.sh").write_text(POST_INIT)
        (node.dir / "post_init.sh").chmod(0o755)
        if self.template is None:
            return []
        source = CORPUS / self.template
        if self.as_configuration_var:
            self.rendered[node.name] = render(source, cluster, node)
            return []
        if source.is_dir():
            target = node.dir / "patroni.d"
            target.mkdir()
            for item in sorted(source.iterdir()):
                yml = item.suffix in (".yml", ".yaml")
                (target / item.name).write_text(render(item, cluster, node) if yml else item.read_text())
        else:
            target = node.dir / "patroni.yml"
            target.write_text(render(source, cluster, node))
        return [str(target)]

    def agent_env(self, cluster: LocalCluster, node: Node) -> dict[str, str]:
        env = self.env(cluster, node) if self.env else {}
        if self.as_configuration_var:
            env["PATRONI_CONFIGURATION"] = self.rendered[node.name]
        return env


def make_cluster(form: Form, workdir: Path) -> LocalCluster:
    cluster = LocalCluster(workdir / form.id, size=form.size, scope=f"corpus-{form.id}", etcd_ports=(0, 0),
                           pg_base_port=0, api_base_port=0, dcs_kind=form.dcs_kind)
    cluster.write_config = lambda node, ours: form.write(cluster, node, ours)
    cluster.agent_env = lambda node: form.agent_env(cluster, node)
    return cluster


@contextlib.contextmanager
def started(forms: list[Form]) -> Iterator[dict[str, LocalCluster]]:
    """Start one cluster per form, all at once; stop every process by PID and remove every directory."""
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-corpus-"))
    workdir.chmod(0o755)
    clusters = {form.id: make_cluster(form, workdir) for form in forms}
    try:
        with contextlib.ExitStack() as stack:
            for cluster in clusters.values():
                stack.callback(cluster.stop)
                cluster.start()
            yield clusters
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- the CLI, as a separate process ----------------------------------------------------------------------


def pgwarden(cluster: LocalCluster, *args: str, env: Mapping[str, str] | None = None,
             expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run `pgwarden ARGS` in a clean environment (only `env` added): no PATRONI_* leaks in from here."""
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(cluster.workdir), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "pgwarden.cli.entry", *args], env={**base, **(env or {})},
                            cwd=cluster.workdir, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
    assert result.returncode == expect, (
        f"pgwarden {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        f"{agent_logs(cluster)}")
    return result


def agent_logs(cluster: LocalCluster, lines: int = 25) -> str:
    out = []
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            tail = node.log_path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"\n--- {node.name} agent log (last {lines} lines) ---\n" + "\n".join(tail))
    return "".join(out)


def assert_no_traceback(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
        assert "Traceback" not in text, f"{cluster.scope}/{node.name} logged a traceback:\n{text[-5000:]}"


def logged(node: Node, text: str) -> Callable[[], bool]:
    """Whether `node`'s agent log holds `text` (a predicate, for `wait`)."""
    return lambda: text in node.log_path.read_text(errors="replace")


def wait(cluster: LocalCluster, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        wait_until(predicate, timeout, what, interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}{agent_logs(cluster)}") from None


def target_args(form: Form, cluster: LocalCluster) -> tuple[list[str], dict[str, str]]:
    """How the CLI finds this cluster: the same configuration path as node1's agent, or the environment."""
    node = cluster.nodes[0]
    if form.cli_env is not None:
        return [], form.cli_env(cluster)
    if form.as_configuration_var:
        return [], {"PATRONI_CONFIGURATION": form.rendered[node.name]}
    assert node.agent_args, "a file form passes its path to the agent"
    return ["-c", node.agent_args[0]], form.env(cluster, node) if form.env else {}  # the host's own environment


def members(form: Form, cluster: LocalCluster) -> list[dict[str, Any]]:
    args, env = target_args(form, cluster)
    rows: list[dict[str, Any]] = json.loads(pgwarden(cluster, *args, "list", "-f", "json", env=env).stdout)
    return rows


def leader_name(form: Form, cluster: LocalCluster) -> str | None:
    return next((short(r["Member"]) for r in members(form, cluster) if r["Role"] == "Leader"), None)


def show_config(form: Form, cluster: LocalCluster) -> dict[str, Any]:
    args, env = target_args(form, cluster)
    shown: dict[str, Any] = yaml.safe_load(pgwarden(cluster, *args, "show-config", env=env).stdout)
    return shown


def query(form: Form, cluster: LocalCluster, sql: str, password: str) -> str:
    args, env = target_args(form, cluster)
    result = pgwarden(cluster, *args, "query", "-U", "postgres", "-c", sql, env={**env, "PGPASSWORD": password})
    return result.stdout.splitlines()[1]


def wait_cluster(form: Form, cluster: LocalCluster, timeout: float = 120) -> Node:
    """One primary, size-1 streaming replicas (REST), and the same seen by `pgwarden list`."""
    wait(cluster, lambda: cluster.healthy(), timeout, f"{form.id}: one primary and streaming replicas")
    leader = cluster.leader()
    assert leader is not None

    def listed() -> bool:
        rows = members(form, cluster)
        leaders = [short(r["Member"]) for r in rows if r["Role"] == "Leader"]
        streaming = sum(r["State"] == "streaming" for r in rows)
        return len(rows) == cluster.size and leaders == [leader.name] and streaming == cluster.size - 1

    wait(cluster, listed, 30, f"{form.id}: `pgwarden list` to show {leader.name} leading")
    return leader


# -- the forms -------------------------------------------------------------------------------------------


def env_only(cluster: LocalCluster, node: Node) -> dict[str, str]:
    """A container's configuration: nothing but PATRONI_* variables (node3 lists etcd members the
    documented way, with a member that is down)."""
    etcd = f"127.0.0.1:{cluster.etcd_ports[0]}"
    dcs = ({"PATRONI_ETCD3_HOSTS": f"'{etcd}','127.0.0.1:{DEAD_PORT}'"} if node.name == "node3"
           else {"PATRONI_ETCD3_HOST": etcd})
    return {
        "PATRONI_SCOPE": cluster.scope,
        "PATRONI_NAME": node.name,
        **dcs,
        "PATRONI_LOG_LEVEL": "INFO",
        "PATRONI_RESTAPI_LISTEN": f"127.0.0.1:{node.api_port}",
        "PATRONI_RESTAPI_CONNECT_ADDRESS": f"127.0.0.1:{node.api_port}",
        "PATRONI_RESTAPI_USERNAME": "admin",
        "PATRONI_RESTAPI_PASSWORD": "admin-secret",
        "PATRONI_POSTGRESQL_LISTEN": f"127.0.0.1:{node.pg_port}",
        "PATRONI_POSTGRESQL_CONNECT_ADDRESS": f"127.0.0.1:{node.pg_port}",
        "PATRONI_POSTGRESQL_DATA_DIR": str(node.data_dir),
        "PATRONI_POSTGRESQL_BIN_DIR": PG_BIN,
        "PATRONI_POSTGRESQL_PGPASS": str(node.dir / "pgpass"),
        "PATRONI_SUPERUSER_USERNAME": "postgres",
        "PATRONI_SUPERUSER_PASSWORD": "env-superuser",
        "PATRONI_REPLICATION_USERNAME": "replicator",
        "PATRONI_REPLICATION_PASSWORD": "env-replication",
        "PATRONI_REWIND_USERNAME": "rewinder",
        "PATRONI_REWIND_PASSWORD": "env-rewind",
    }


def env_only_cli(cluster: LocalCluster) -> dict[str, str]:
    """`PATRONI_ETCD3_HOST=... PATRONI_SCOPE=... pgwarden list`, with the REST credentials for actions."""
    return {"PATRONI_SCOPE": cluster.scope, "PATRONI_ETCD3_HOST": f"127.0.0.1:{cluster.etcd_ports[0]}",
            "PATRONI_RESTAPI_USERNAME": "admin", "PATRONI_RESTAPI_PASSWORD": "admin-secret"}


def env_over_file(cluster: LocalCluster, node: Node) -> dict[str, str]:
    return {
        "PATRONI_SCOPE": cluster.scope,
        "PATRONI_NAME": node.name,
        "PATRONI_ETCD3_HOST": f"127.0.0.1:{cluster.etcd_ports[0]}",
        "PATRONI_RESTAPI_LISTEN": f"127.0.0.1:{node.api_port}",
        "PATRONI_RESTAPI_CONNECT_ADDRESS": f"127.0.0.1:{node.api_port}",
        "PATRONI_SUPERUSER_PASSWORD": "from-the-environment",
        "PATRONI_REPLICATION_PASSWORD": "from-the-environment",
    }


def zookeeper_env_only(cluster: LocalCluster, node: Node) -> dict[str, str]:
    """A container on ZooKeeper: PATRONI_ZOOKEEPER_HOSTS instead of the etcd3 variables."""
    env = {k: v for k, v in env_only(cluster, node).items() if not k.startswith("PATRONI_ETCD3_")}
    return {**env, "PATRONI_ZOOKEEPER_HOSTS": f"'127.0.0.1:{cluster.etcd_ports[0]}'"}


def zookeeper_env_only_cli(cluster: LocalCluster) -> dict[str, str]:
    return {"PATRONI_SCOPE": cluster.scope, "PATRONI_ZOOKEEPER_HOSTS": f"127.0.0.1:{cluster.etcd_ports[0]}",
            "PATRONI_RESTAPI_USERNAME": "admin", "PATRONI_RESTAPI_PASSWORD": "admin-secret"}


def etcd2_env_only(cluster: LocalCluster, node: Node) -> dict[str, str]:
    """A container on etcd's v2 API: PATRONI_ETCD_HOSTS (a list in YAML flow form) instead of PATRONI_ETCD3_*."""
    env = {k: v for k, v in env_only(cluster, node).items() if not k.startswith("PATRONI_ETCD3_")}
    return {**env, "PATRONI_ETCD_HOSTS": f"['127.0.0.1:{cluster.etcd_ports[0]}']"}


def etcd2_env_only_cli(cluster: LocalCluster) -> dict[str, str]:
    return {"PATRONI_SCOPE": cluster.scope, "PATRONI_ETCD_HOSTS": f"127.0.0.1:{cluster.etcd_ports[0]}",
            "PATRONI_RESTAPI_USERNAME": "admin", "PATRONI_RESTAPI_PASSWORD": "admin-secret"}


HOST_FORM = Form("etcd3-host", "etcd3-host.yml", size=3)
ENV_FORM = Form("env-only", None, size=3, env=env_only, cli_env=env_only_cli)
ETCD2_FORM = Form("etcd-v2-host", "etcd-v2-host.yml", size=3, dcs_kind="etcd")
ZOOKEEPER_FORM = Form("zookeeper-hosts", "zookeeper-hosts.yml", size=3, dcs_kind="zookeeper")
SINGLE_FORMS = [
    Form("hosts-list", "etcd3-hosts-list.yml"),
    Form("hosts-string", "etcd3-hosts-string.yml"),
    Form("url", "etcd3-url.yml"),
    Form("host-protocol", "etcd3-host-protocol.yml"),
    Form("config-dir", "config-dir"),
    Form("env-over-file", "env-override.yml", env=env_over_file),
    Form("yaml-quirks", "yaml-quirks.yml"),
    Form("configuration-var", "etcd3-host.yml", as_configuration_var=True),
    Form("zookeeper-env-only", None, env=zookeeper_env_only, cli_env=zookeeper_env_only_cli, dcs_kind="zookeeper"),
    Form("etcd-v2-hosts-string", "etcd-v2-hosts-string.yml", dcs_kind="etcd"),
    Form("zookeeper-hosts-string", "zookeeper-hosts-string.yml", dcs_kind="zookeeper"),
    Form("etcd-v2-url", "etcd-v2-url.yml", dcs_kind="etcd"),
    Form("etcd-v2-env-only", None, env=etcd2_env_only, cli_env=etcd2_env_only_cli, dcs_kind="etcd"),
]


# -- 3 nodes: the two most common forms switch over and fail over -------------------------------------


def has_sync_standby(form: Form, cluster: LocalCluster) -> bool:
    return any(r["Role"] == "Sync Standby" for r in members(form, cluster))


def switchover_and_failover(form: Form, cluster: LocalCluster, leader_option: str, *, sync: bool = False) -> Node:
    """Switch over to a named candidate, then kill the new leader's host; returns the killed node. With
    `sync` (synchronous_mode on), the new leader must have named a synchronous standby before its host is
    lost: until then no member may promote, by design."""
    args, env = target_args(form, cluster)
    leader = wait_cluster(form, cluster)
    full = {short(r["Member"]): str(r["Member"]) for r in members(form, cluster)}
    assert sorted(full) == ["node1", "node2", "node3"]

    candidate = next(n.name for n in cluster.nodes if n is not leader)
    if sync:  # in synchronous mode only the synchronous standby may take over (Patroni answers 412 otherwise)
        wait(cluster, lambda: has_sync_standby(form, cluster), 60, "a synchronous standby")
        candidate = next(short(r["Member"]) for r in members(form, cluster) if r["Role"] == "Sync Standby")
    result = pgwarden(cluster, *args, "switchover", leader_option, full[leader.name], "--candidate", full[candidate],
                      "--force", env=env)
    assert f'Successfully switched over to "{full[candidate]}"' in result.stdout, result.stdout
    wait(cluster, lambda: leader_name(form, cluster) == candidate, 60, f"{candidate} to lead after the switchover")
    new_leader = wait_cluster(form, cluster)
    assert new_leader.name == candidate
    if sync:
        wait(cluster, lambda: has_sync_standby(form, cluster), 60, "a synchronous standby of the new leader")

    cluster.kill_host(new_leader)
    survivors = [n.name for n in cluster.nodes if n is not new_leader]
    wait(cluster, lambda: (lead := cluster.leader()) is not None and lead.name in survivors, 90,
         f"a failover to one of {survivors} after killing {new_leader.name}'s host")
    wait(cluster, lambda: leader_name(form, cluster) in survivors, 30, "`pgwarden list` to show the new leader")
    wait(cluster, lambda: len(cluster.streaming_replicas()) == 1, 60, "the other survivor to follow the new leader")
    return new_leader


def test_etcd3_host_form_switches_over_and_fails_over() -> None:
    """`etcd3: {host: 127.0.0.1:PORT}`, Patroni's most common form, which once crashed the agent."""
    form = HOST_FORM
    with started([form]) as clusters:
        cluster = clusters[form.id]
        wait_cluster(form, cluster)
        shown = show_config(form, cluster)
        assert (shown["ttl"], shown["loop_wait"], shown["retry_timeout"]) == (20, 2, 5)
        assert shown["postgresql"]["use_pg_rewind"] is True
        # `namespace: /service/` is the same namespace as `/service`: the DCS URL finds the keys.
        dcs_url = f"etcd3://127.0.0.1:{cluster.etcd_ports[0]}/service"
        rows = json.loads(pgwarden(cluster, "--dcs-url", dcs_url, "list", cluster.scope, "-f", "json").stdout)
        assert len(rows) == 3
        # member names like host names become valid replication slot names, as Patroni makes them
        leader = wait_cluster(form, cluster)
        slots = query(form, cluster, "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots",
                      "zalando")
        assert slots.split(",") == [f"{n.name}_db_east_1_example_com" for n in cluster.nodes if n is not leader]
        haproxy = pgwarden(cluster, "haproxy-config", "-c", target_args(form, cluster)[0][1]).stdout
        assert all(node.name in haproxy for node in cluster.nodes), haproxy
        killed = switchover_and_failover(form, cluster, "--leader")
        # The dead host comes back: rewound with the rewind user of the file, it follows the new leader.
        cluster.start_agent(killed)
        wait_cluster(form, cluster)
        assert_no_traceback(cluster)


def test_environment_only_form_switches_over_and_fails_over() -> None:
    """`pgwarden agent` with no argument: every setting from PATRONI_* variables, and the CLI too."""
    form = ENV_FORM
    with started([form]) as clusters:
        cluster = clusters[form.id]
        assert all(n.agent_args == () for n in cluster.nodes)
        wait_cluster(form, cluster)
        # No bootstrap.dcs can come from the environment: /config is empty or holds Patroni's defaults.
        shown = show_config(form, cluster) or {}
        assert shown.get("ttl", 30) == 30 and shown.get("loop_wait", 10) == 10
        status, body = cluster.nodes[0].get("/patroni")
        assert status == 200 and body is not None and body["patroni"]["scope"] == cluster.scope
        assert query(form, cluster, "SELECT current_user", "env-superuser") == "postgres"
        # POST /reload with the REST credentials from the CLI's environment: each agent re-reads the
        # PATRONI_* variables it started with (they are gone from its own environment by then)
        pgwarden(cluster, "reload", cluster.scope, "--force", env=env_only_cli(cluster))
        for node in cluster.nodes:
            wait(cluster, logged(node, "reload: local configuration re-read"), 15, f"{node.name} to re-read its config")
            assert not logged(node, "reload: the configuration is invalid")()
        switchover_and_failover(form, cluster, "--primary")
        assert_no_traceback(cluster)


def raw_leader_key(form: Form, cluster: LocalCluster) -> str | None:
    """`/service/<scope>/leader` read from the store itself, as vip-manager or a dashboard reads it."""
    key = f"/service/{cluster.scope}/leader"
    address = f"127.0.0.1:{cluster.etcd_ports[0]}"
    if form.dcs_kind == "zookeeper":
        from kazoo.client import KazooClient

        client = KazooClient(hosts=address, timeout=5)
        client.start(timeout=10)
        try:
            return client.get(key)[0].decode() if client.exists(key) else None
        finally:
            client.stop()
            client.close()
    with contextlib.suppress(urllib.error.HTTPError), \
            urllib.request.urlopen(f"http://{address}/v2/keys{key}", timeout=5) as response:
        return str(json.loads(response.read())["node"]["value"])
    return None


@pytest.mark.parametrize("form", [ETCD2_FORM, ZOOKEEPER_FORM], ids=lambda f: f.id)
def test_other_backends_switch_over_fail_over_rejoin_and_replicate_synchronously(form: Form) -> None:
    """The cluster scenarios on etcd's v2 API and on ZooKeeper: Patroni's key layout in the store, a
    synchronous standby, a switchover, host loss of the leader, and the lost host rejoining."""
    with started([form]) as clusters:
        cluster = clusters[form.id]
        leader = wait_cluster(form, cluster)
        full = {short(r["Member"]): str(r["Member"]) for r in members(form, cluster)}
        assert raw_leader_key(form, cluster) == full[leader.name]
        wait(cluster, lambda: has_sync_standby(form, cluster), 60, "a synchronous standby")
        killed = switchover_and_failover(form, cluster, "--leader", sync=True)
        new_leader = cluster.leader()
        assert new_leader is not None and raw_leader_key(form, cluster) == full[new_leader.name]
        cluster.start_agent(killed)
        wait_cluster(form, cluster)
        wait(cluster, lambda: has_sync_standby(form, cluster), 60, "a synchronous standby after the rejoin")
        assert_no_traceback(cluster)


# -- 1 node each: the other forms, all started together -------------------------------------------------


@pytest.fixture(scope="class")
def single_clusters() -> Iterator[dict[str, LocalCluster]]:
    with started(SINGLE_FORMS) as clusters:
        yield clusters


def form_by_id(form_id: str) -> Form:
    return next(f for f in SINGLE_FORMS if f.id == form_id)


class TestSingleNodeForms:
    @pytest.mark.parametrize("form", SINGLE_FORMS, ids=lambda f: f.id)
    def test_starts_and_the_cli_reads_it(self, single_clusters: dict[str, LocalCluster], form: Form) -> None:
        cluster = single_clusters[form.id]
        leader = wait_cluster(form, cluster, timeout=150)
        rows = members(form, cluster)
        assert [(short(r["Member"]), r["Role"], r["State"]) for r in rows] == [(leader.name, "Leader", "running")]
        assert rows[0]["Host"] == f"127.0.0.1:{leader.pg_port}"
        shown = show_config(form, cluster) or {}  # nothing but environment: no bootstrap.dcs, Patroni's defaults
        assert int(shown.get("ttl", 30)) == (30 if form.id == "yaml-quirks" or form.template is None else 20)
        status, body = leader.get("/patroni")
        assert status == 200 and body is not None and body["role"] in ("primary", "master")
        assert body["patroni"]["scope"] == cluster.scope and short(body["patroni"]["name"]) == leader.name

    def test_hosts_forms_survive_a_dead_etcd_member(self, single_clusters: dict[str, LocalCluster]) -> None:
        for form_id in ("hosts-list", "hosts-string"):
            form, cluster = form_by_id(form_id), single_clusters[form_id]
            wait_cluster(form, cluster, timeout=150)
            assert str(DEAD_PORT) in Path(cluster.nodes[0].agent_args[0]).read_text()  # type: ignore[index]

    def test_rest_credentials_from_the_file_reach_the_cli(self, single_clusters: dict[str, LocalCluster]) -> None:
        form, cluster = form_by_id("host-protocol"), single_clusters["host-protocol"]
        wait_cluster(form, cluster, timeout=150)
        args, env = target_args(form, cluster)
        result = pgwarden(cluster, *args, "reload", cluster.scope, "--force", env=env)
        assert "node1" in result.stdout and "rror" not in result.stdout + result.stderr
        # patronictl's own small file in its default place (~/.config/patroni/patronictl.yaml), no -c
        ctl_file = cluster.workdir / ".config" / "patroni" / "patronictl.yaml"
        ctl_file.parent.mkdir(parents=True)
        ctl_file.write_text(f"etcd3:\n  host: 127.0.0.1:{cluster.etcd_ports[0]}\n"
                            "ctl:\n  authentication:\n    username: admin\n    password: admin-secret\n")
        try:
            result = pgwarden(cluster, "reload", cluster.scope, "--force")
            assert "node1" in result.stdout and "rror" not in result.stdout + result.stderr
            refused = pgwarden(cluster, "reload", cluster.scope, "--force", expect=1,
                               env={"PATRONI_CTL_PASSWORD": "wrong"})  # the environment overrides the file
            assert "401" in refused.stdout + refused.stderr or "refused" in refused.stdout + refused.stderr
        finally:
            ctl_file.unlink()

    def test_config_directory_is_merged_in_name_order(self, single_clusters: dict[str, LocalCluster]) -> None:
        form, cluster = form_by_id("config-dir"), single_clusters["config-dir"]
        leader = wait_cluster(form, cluster, timeout=150)
        assert query(form, cluster, "SHOW work_mem", "secretpassword") == "16MB"  # 90-site-overrides.yml wins
        assert query(form, cluster, "SHOW max_connections", "secretpassword") == "50"  # 30-bootstrap.yaml
        status, body = leader.get("/patroni")
        assert status == 200 and body is not None and body.get("tags") == {"datacenter": "dc2"}

    def test_environment_overrides_the_file(self, single_clusters: dict[str, LocalCluster]) -> None:
        form, cluster = form_by_id("env-over-file"), single_clusters["env-over-file"]
        leader = wait_cluster(form, cluster, timeout=150)
        assert leader.get("/patroni")[1]["patroni"]["scope"] == cluster.scope  # type: ignore[index]
        assert query(form, cluster, "SELECT 1", "from-the-environment") == "1"
        # the CLI reading the same file with the same environment agrees
        args, _ = target_args(form, cluster)
        env = env_over_file(cluster, leader)
        rows = json.loads(pgwarden(cluster, *args, "list", "-f", "json", env=env).stdout)
        assert [r["Member"] for r in rows] == [leader.name]

    def test_yaml_quirks_are_understood(self, single_clusters: dict[str, LocalCluster]) -> None:
        form, cluster = form_by_id("yaml-quirks"), single_clusters["yaml-quirks"]
        leader = wait_cluster(form, cluster, timeout=150)
        shown = show_config(form, cluster)
        assert shown["synchronous_mode"] in (True, "on")
        assert int(float(shown["loop_wait"])) == 10 and int(shown["master_start_timeout"]) == 300
        password = "12345"
        assert query(form, cluster, "SHOW log_connections", password) == "on"
        assert query(form, cluster, "SHOW track_io_timing", password) == "on"
        assert query(form, cluster, "SHOW max_connections", password) == "120"
        assert query(form, cluster, "SHOW log_min_duration_statement", password) == "500ms"
        assert query(form, cluster, "SHOW data_checksums", password) == "on"
        assert query(form, cluster, "SHOW pg_stat_statements.track", password) == "all"
        hba = (leader.data_dir / "pg_hba.conf").read_text()
        assert "0.0.0.0/0" in hba and "::1/128" not in hba  # postgresql.pg_hba, not bootstrap.pg_hba
        done = leader.dir / "post_init.done"
        wait(cluster, done.exists, 10, "the post_init script to run")
        assert done.read_text().startswith("postgres")
        # /config seeded with quoted numbers is still edited, validated and applied as usual
        args, env = target_args(form, cluster)
        pgwarden(cluster, *args, "edit-config", "-s", "loop_wait=5", "-p", "work_mem=8MB", "--force", env=env)
        assert int(show_config(form, cluster)["loop_wait"]) == 5
        wait(cluster, lambda: query(form, cluster, "SHOW work_mem", password) == "8MB", 30, "work_mem to be applied")

    def test_the_cli_finds_clusters_by_dcs_url_and_environment(
            self, single_clusters: dict[str, LocalCluster]) -> None:
        cluster = single_clusters["url"]
        wait_cluster(form_by_id("url"), cluster, timeout=150)
        etcd = f"127.0.0.1:{cluster.etcd_ports[0]}"
        by_url = pgwarden(cluster, "list", cluster.scope, "-f", "json", "--dcs-url", f"etcd3://{etcd}")
        by_env = pgwarden(cluster, "list", "-f", "json", env={"PATRONI_SCOPE": cluster.scope,
                                                               "PATRONI_ETCD3_URL": f"http://{etcd}"})
        by_dcs_url_var = pgwarden(cluster, "list", cluster.scope, "-f", "json", env={"DCS_URL": f"etcd3://{etcd}"})
        by_ctl_file = pgwarden(cluster, "list", "-f", "json",
                               env={"PATRONICTL_CONFIG_FILE": cluster.nodes[0].agent_args[0]})  # type: ignore[index]
        for result in (by_url, by_env, by_dcs_url_var, by_ctl_file):
            assert [r["Member"] for r in json.loads(result.stdout)] == ["node1"]

    def test_the_cli_finds_a_zookeeper_cluster_by_dcs_url(self, single_clusters: dict[str, LocalCluster]) -> None:
        form, cluster = form_by_id("zookeeper-env-only"), single_clusters["zookeeper-env-only"]
        wait_cluster(form, cluster, timeout=150)
        url = f"zookeeper://127.0.0.1:{cluster.etcd_ports[0]}"
        rows = json.loads(pgwarden(cluster, "list", cluster.scope, "-f", "json", "--dcs-url", url).stdout)
        assert [r["Member"] for r in rows] == ["node1"]

    def test_the_cli_finds_an_etcd_v2_cluster_by_dcs_url(self, single_clusters: dict[str, LocalCluster]) -> None:
        form, cluster = form_by_id("etcd-v2-env-only"), single_clusters["etcd-v2-env-only"]
        wait_cluster(form, cluster, timeout=150)
        url = f"etcd://127.0.0.1:{cluster.etcd_ports[0]}"
        rows = json.loads(pgwarden(cluster, "list", cluster.scope, "-f", "json", "--dcs-url", url).stdout)
        assert [r["Member"] for r in rows] == ["node1"]

    def test_no_agent_logged_a_traceback(self, single_clusters: dict[str, LocalCluster]) -> None:
        for cluster in single_clusters.values():
            assert_no_traceback(cluster)
