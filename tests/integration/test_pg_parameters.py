"""PostgreSQL parameters are checked before they are written (issue 20 item 6), on a real 1-node cluster.

Reproduced before the fix: `shared_buffers: "1PB"` was accepted and reloaded (PostgreSQL refused it,
the agent logged success) and the next restart failed in a loop; a newline in a value broke
postgresql.conf; a newline in a parameter NAME wrote a line of its own. Now PATCH /config checks names
and values statically and against this member's pg_settings, and answers 400 with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from pgwarden.localcluster.cluster import LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import pgwarden, rest, running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("params", "params", size=1) as local:
        yield local


def _setting(cluster: LocalCluster, name: str) -> str:
    with psycopg.connect(cluster.conninfo(cluster.nodes[0])) as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("parameters", "reason"), [
    ({"shared_buffers": "1PB"}, "postgresql.parameters.shared_buffers: '1PB' is not a valid value"),
    ({"shared_buffers": "16TB"}, "postgresql.parameters.shared_buffers: 16TB is outside the range 16 .. 1073741823"),
    ({"work_mem": "8MB\nlog_min_messages = debug5"}, "postgresql.parameters.work_mem: expected a parameter value "
                                                     "without a newline"),
    ({"work_mem = '8MB'\nlog_min_messages": "debug5"}, "expected a parameter name"),
    ({"no_such_parameter": 1}, "postgresql.parameters.no_such_parameter: unknown parameter"),
    ({"wal_level": "bogus"}, "expected one of minimal, replica, logical"),
])  # fmt: skip
def test_parameters_postgresql_would_refuse_are_refused_and_nothing_is_written(
        cluster: LocalCluster, parameters: dict[str, object], reason: str) -> None:
    node = cluster.nodes[0]
    _, before = rest(node, "GET", "/config")
    conf = (node.data_dir / "postgresql.conf").read_text()
    status, body = rest(node, "PATCH", "/config", {"postgresql": {"parameters": parameters}})
    assert status == 400 and reason in body, (status, body)
    status, body = rest(node, "PUT", "/config", {"postgresql": {"parameters": parameters}})
    assert status == 400 and reason in body, (status, body)
    assert rest(node, "GET", "/config")[1] == before
    time.sleep(0.5)
    assert (node.data_dir / "postgresql.conf").read_text() == conf


def test_a_legal_change_is_applied(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    assert _setting(cluster, "work_mem") != "24MB"
    status, body = rest(node, "PATCH", "/config", {"postgresql": {"parameters": {"work_mem": "24MB",
                                                                               "my_ext.flag": "on"}}})
    assert status == 200, body
    wait_until(lambda: _setting(cluster, "work_mem") == "24MB", 20, "work_mem applied")
    lines = (node.data_dir / "postgresql.conf").read_text().splitlines()
    assert "work_mem = '24MB'" in lines and "my_ext.flag = 'on'" in lines
    log = node.log_path.read_text()
    assert "applied changed PostgreSQL configuration (reloaded)" in log
    assert "PostgreSQL refused" not in log


def test_edit_config_checks_the_parameters_too(cluster: LocalCluster, tmp_path: Path) -> None:
    node = cluster.nodes[0]
    _, before = rest(node, "GET", "/config")
    edited = pgwarden("edit-config", "-c", str(node.config_path), "-p", "shared_buffers=1PB", "--force")
    assert edited.returncode != 0, edited
    assert "postgresql.parameters.shared_buffers: '1PB' is not a valid value" in edited.stdout + edited.stderr
    patch = tmp_path / "patch.yml"
    patch.write_text(yaml.safe_dump({"postgresql": {"parameters": {"work_mem = '8MB'\nlog_min_messages": "debug5"}}}))
    edited = pgwarden("edit-config", "-c", str(node.config_path), "--apply", str(patch), "--force")
    assert edited.returncode != 0 and "expected a parameter name" in edited.stdout + edited.stderr, edited
    assert rest(node, "GET", "/config")[1] == before


def test_a_value_postgresql_refuses_at_reload_is_logged_as_refused(cluster: LocalCluster) -> None:
    """A /config written behind the API's back (etcdctl, an old tool) reaches the file; the reload that
    PostgreSQL refuses is an ERROR naming the setting, not "applied"."""
    node = cluster.nodes[0]
    _, text = rest(node, "GET", "/config")
    before = json.loads(text)
    broken = json.loads(text)
    broken.setdefault("postgresql", {}).setdefault("parameters", {})["work_mem"] = "1PB"
    key = f"/service/{cluster.scope}/config"
    etcdctl = ["etcdctl", f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", "put", key, json.dumps(broken)]
    subprocess.run(etcdctl, check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    try:
        wait_until(lambda: "PostgreSQL refused part of the changed configuration" in node.log_path.read_text(), 30,
                   "the refused reload logged")
        line = next(line for line in node.log_path.read_text().splitlines() if "PostgreSQL refused" in line)
        assert "work_mem = '1PB'" in line and "ERROR" in line, line
        assert _setting(cluster, "work_mem") == "24MB"  # PostgreSQL kept the old value
    finally:
        assert rest(node, "PUT", "/config", before)[0] == 200


def test_a_postgresql_that_cannot_start_is_retried_with_a_backoff(cluster: LocalCluster) -> None:
    """Reproduced before: a restart with a parameter PostgreSQL refuses failed, and the start was tried
    again 298 times in 40 s. Now: after 1, 2, 4, 8, 16 s, then every 30 s."""
    node = cluster.nodes[0]
    _, text = rest(node, "GET", "/config")
    before = json.loads(text)
    broken = json.loads(text)
    broken.setdefault("postgresql", {}).setdefault("parameters", {})["shared_buffers"] = "1PB"
    key = f"/service/{cluster.scope}/config"
    etcdctl = ["etcdctl", f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", "put", key, json.dumps(broken)]
    subprocess.run(etcdctl, check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    mark = len(node.log_path.read_text().splitlines())
    try:
        wait_until(lambda: "shared_buffers = '1PB'" in node.log_path.read_text(), 30, "the refused reload logged")
        rest(node, "POST", "/restart", {})
        time.sleep(20)
        lines = node.log_path.read_text().splitlines()[mark:]
        starts = [line for line in lines if "starting primary after failure" in line or "starting as" in line]
        assert any("failed to start" in line and "trying again in" in line for line in lines), lines[-20:]
        assert 2 <= len(starts) <= 8, starts
    finally:
        assert rest(node, "PUT", "/config", before)[0] == 200
        cluster.wait_healthy(timeout=90, replicas=0)
