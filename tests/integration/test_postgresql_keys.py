"""Patroni's `postgresql` keys on real processes: config_dir, custom_conf, bin_name, recovery_conf,
pg_ident (dynamic and per role), proxy_address, parameters of older versions, pg_ctl_timeout and
primary_stop_timeout.

One shared 2-node cluster (etcd, two agents as the postgres user, PostgreSQL 15) carries every key
that a running cluster shows; the stop/kill path runs on a single server of a `PgSandbox`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN, PG_USER, pg_available
from pgwarden.localcluster.processes import wait_until
from pgwarden.postgres.conf import GENERATED_MARKER
from tests.support.pg import PgSandbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists() and pg_available()),
                       reason="needs etcd, PostgreSQL 15 and the postgres user"),
]

BINARIES = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind")
CUSTOM_CONF = "# the user's own base configuration\nwork_mem = '7MB'\n"
DCS: dict[str, Any] = {
    **DEMO_DCS,
    "postgresql": {
        **DEMO_DCS["postgresql"],
        # Written for PostgreSQL 12: 10 segments of 16 MB (not the 128MB default, so the translation shows).
        "parameters": {"max_connections": 100, "wal_keep_segments": 10},
        "recovery_conf": {"recovery_min_apply_delay": "1s", "primary_conninfo": "host=nowhere"},
        "pg_ident": ["basemap postgres postgres"],
        "pg_ident_replica": ["replicamap postgres postgres"],
    },
}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _node_extra(workdir: Path) -> Any:
    def extra(node: Node) -> dict[str, Any]:
        return {"postgresql": {
            "config_dir": str(node.dir / "etc"),
            "custom_conf": str(node.dir / "custom.conf"),
            "bin_dir": str(workdir / "bin"),
            "bin_name": {name: f"renamed-{name}" for name in BINARIES},
            "proxy_address": f"127.0.0.1:{16432 + int(node.name[-1])}",
        }}

    return extra


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-keys-"))
    workdir.chmod(0o755)
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    for name in BINARIES:  # only the renamed names exist: nothing works unless bin_name is followed
        (bin_dir / f"renamed-{name}").symlink_to(Path(PG_BIN, name))
    local = LocalCluster(workdir, size=2, scope="keys", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         dcs=DCS, extra_config=_node_extra(workdir))
    try:
        local.prepare()
        for node in local.nodes:
            custom = node.dir / "custom.conf"
            custom.write_text(CUSTOM_CONF)
            _chown(custom)
        local.start_etcd()
        for node in local.nodes:
            local.start_agent(node)
        local.wait_healthy(120)
        yield local
    except BaseException:
        for node in local.nodes:
            with contextlib.suppress(OSError):
                print(f"==== {node.name} agent log (tail)")
                print("\n".join(node.log_path.read_text(errors="replace").splitlines()[-40:]))
        raise
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _show(cluster: LocalCluster, node: Node, query: str) -> Any:
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=2) as conn:
        row = conn.execute(query).fetchone()
        return row[0] if row else None


def _roles(cluster: LocalCluster) -> tuple[Node, Node]:
    leader = cluster.wait_healthy(60)
    replica = next(n for n in cluster.nodes if n is not leader)
    return leader, replica


def test_configuration_files_live_in_config_dir(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        etc = node.dir / "etc"
        assert _show(cluster, node, "SHOW config_file") == str(etc / "postgresql.conf")
        assert _show(cluster, node, "SHOW hba_file") == str(etc / "pg_hba.conf")
        assert _show(cluster, node, "SHOW ident_file") == str(etc / "pg_ident.conf")
        assert _show(cluster, node, "SHOW data_directory") == str(node.data_dir)
        generated = (etc / "postgresql.conf").read_text()
        assert generated.startswith(GENERATED_MARKER)
        assert (etc / "postgresql.base.conf").is_file()  # initdb's file, kept (not included: custom_conf)
        assert (etc / "pg_hba.conf").read_text().startswith(GENERATED_MARKER)
        data_conf = node.data_dir / "postgresql.conf"  # initdb's original (or the clone's copy of it)
        assert not data_conf.exists() or not data_conf.read_text().startswith(GENERATED_MARKER)


def test_custom_conf_is_the_included_base_and_never_written(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        custom = node.dir / "custom.conf"
        assert f"include '{custom}'" in (node.dir / "etc" / "postgresql.conf").read_text()
        assert custom.read_text() == CUSTOM_CONF
        assert _show(cluster, node, "SHOW work_mem") == "7MB"


def test_bin_name_binaries_run_the_cluster(cluster: LocalCluster) -> None:
    # The bin dir holds only renamed links: initdb, pg_ctl, pg_controldata and pg_basebackup all ran
    # through bin_name, and the postmaster is the renamed `postgres` (pg_ctl -p).
    leader, replica = _roles(cluster)
    assert {p.name for p in (cluster.workdir / "bin").iterdir()} == {f"renamed-{b}" for b in BINARIES}
    for node in (leader, replica):
        pid = node.postmaster_pid()
        assert pid is not None
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert argv0.endswith("renamed-postgres"), argv0


def test_wal_keep_segments_becomes_wal_keep_size(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        assert _show(cluster, node, "SHOW wal_keep_size") == "160MB"
        assert "wal_keep_segments" not in (node.dir / "etc" / "postgresql.conf").read_text()


def test_recovery_conf_reaches_the_replica_but_not_primary_conninfo(cluster: LocalCluster) -> None:
    leader, replica = _roles(cluster)
    assert _show(cluster, replica, "SHOW recovery_min_apply_delay") == "1s"
    conninfo = _show(cluster, replica, "SHOW primary_conninfo")
    assert f"port={leader.pg_port}" in conninfo and "nowhere" not in conninfo
    assert "primary_conninfo" in (replica.log_path.read_text(errors="replace"))  # warned and ignored
    assert not (replica.data_dir / "recovery.conf").exists()


def test_pg_ident_dynamic_with_a_role_variant(cluster: LocalCluster) -> None:
    leader, replica = _roles(cluster)
    query = "SELECT string_agg(map_name, ',') FROM pg_ident_file_mappings WHERE error IS NULL"
    assert _show(cluster, leader, query) == "basemap"
    assert _show(cluster, replica, query) == "replicamap"
    # A changed /config reaches the running servers (file rewritten and reloaded).
    body = json.dumps({"postgresql": {"pg_ident": ["newmap postgres postgres"]}}).encode()
    request = urllib.request.Request(leader.api_url + "/config", data=body, method="PATCH",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    wait_until(lambda: _show(cluster, leader, query) == "newmap", 30, "the new pg_ident on the primary")
    assert _show(cluster, replica, query) == "replicamap"  # pg_ident_replica still wins there


def test_proxy_address_is_published_as_proxy_url(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        key = base64.b64encode(f"/service/{cluster.scope}/members/{node.name}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_ports[0]}/v3/kv/range",
                                         data=json.dumps({"key": key}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            kvs = json.loads(response.read())["kvs"]
        member = json.loads(base64.b64decode(kvs[0]["value"]))
        assert member["proxy_url"] == f"postgres://127.0.0.1:{16432 + int(node.name[-1])}/postgres"
        assert member["conn_url"] == f"postgres://127.0.0.1:{node.pg_port}/postgres"


# -- one server: pg_ctl_timeout and primary_stop_timeout ----------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[PgSandbox]:
    box = PgSandbox()
    try:
        yield box
    finally:
        box.cleanup()


def _wrapper_bin(box: PgSandbox, stop_hangs: bool) -> Path:
    """A bin dir whose `pg_ctl.logged` records its arguments, then runs the real pg_ctl (or, for a stop
    with `stop_hangs`, sleeps: a shutdown that does not finish)."""
    bin_dir = box.root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in BINARIES:
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(Path(PG_BIN, name))
    script = bin_dir / "pg_ctl.logged"
    hang = 'if [ "$1" = stop ]; then sleep 60; exit 1; fi\n' if stop_hangs else ""
    script.write_text(f'#!/bin/sh\necho "$@" >> {box.root}/pg_ctl.args\n{hang}exec {PG_BIN}/pg_ctl "$@"\n')
    script.chmod(0o755)
    for path in (bin_dir, script, *(bin_dir / n for n in BINARIES)):
        _chown(path)
    return bin_dir


def test_pg_ctl_timeout_and_primary_stop_timeout_kill(sandbox: PgSandbox) -> None:
    bin_dir = _wrapper_bin(sandbox, stop_hangs=False)
    settings = sandbox.settings("solo", bin_dir=bin_dir, bin_name={"pg_ctl": "pg_ctl.logged"}, pg_ctl_timeout=17.0)
    for op, args in (("initdb", {}), ("write_config", {"role": "primary"}), ("start", {}), ("stop", {}),
                     ("start", {})):
        result = sandbox.run(settings, op, **args)
        assert result.ok, f"{op}: {result.message}"
    calls = (sandbox.root / "pg_ctl.args").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["start", "stop", "start"]
    assert all("-t 17" in call for call in calls), calls

    # A stop that hangs (as a primary's can, waiting on a synchronous standby) is killed after kill_after.
    _wrapper_bin(sandbox, stop_hangs=True)
    started = time.monotonic()
    result = sandbox.run(settings, "stop", mode="fast", kill_after=2.0)
    took = time.monotonic() - started
    assert result.ok and result.message.startswith("killed"), result.message
    assert took < 20, took
    assert not sandbox.probe(settings).running
    _wrapper_bin(sandbox, stop_hangs=False)
    assert sandbox.run(settings, "start").ok  # no backend survived to hold the shared memory
