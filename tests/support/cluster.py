"""Real clusters for integration tests: one LocalCluster on free loopback ports in a temp dir, its REST
API, and its agents' logs when a test failed. Each test module keeps its own module-scoped fixture
(its size, scope and configuration) built from `running_cluster`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node


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
