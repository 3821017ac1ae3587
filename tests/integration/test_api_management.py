"""The management REST API on a real 2-node cluster (one cluster start for the whole module).

Covers /config (GET, PATCH, a refused invalid PATCH), authentication of the unsafe endpoints,
/metrics, /openapi.json, and finally a real switchover through POST /switchover.

NOTE: the switchover step needs the decision core to act on the `failover` key; until the core does,
that last step fails (503 "Switchover status unknown") while every step before it passes.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]  # fmt: skip

USER, PASSWORD = "operator", "api-Secret-123"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def request(node: Node, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, str]:
    """(status, text) of one REST call; a 30 s timeout covers a whole switchover wait (2 x 10 s)."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json", **(AUTH if auth else {})}
    call = urllib.request.Request(node.api_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-api-"))
    workdir.chmod(0o755)
    local = LocalCluster(
        workdir, size=2, scope="api", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
        extra_config=lambda node: {"restapi": {"authentication": {"username": USER, "password": PASSWORD}}},
    )  # fmt: skip
    try:
        local.start()
        local.wait_healthy(replicas=1)
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_management_api_on_a_real_cluster(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(replicas=1)
    replica = next(node for node in cluster.nodes if node is not leader)

    status, text = request(leader, "GET", "/config")
    assert status == 200 and json.loads(text)["loop_wait"] == 2

    assert request(leader, "PATCH", "/config", {"maximum_lag_on_failover": 2097152}, auth=False)[0] == 401
    status, text = request(leader, "PATCH", "/config", {"maximum_lag_on_failover": 2097152})
    assert status == 200 and json.loads(text)["maximum_lag_on_failover"] == 2097152
    status, text = request(replica, "PATCH", "/config", {"ttl": "abc"})
    assert status == 400 and "ttl" in text
    assert json.loads(request(replica, "GET", "/config")[1])["ttl"] != "abc"

    status, text = request(leader, "GET", "/metrics")
    assert status == 200
    assert f'patroni_primary{{name="{leader.name}",scope="api"}} 1.0' in text
    assert request(leader, "GET", "/openapi.json")[0] == 200
    assert request(leader, "POST", "/switchover", {"leader": replica.name}) == (412, "leader name does not match")

    # Needs the core to act on the failover key (see the module docstring).
    status, text = request(leader, "POST", "/switchover", {"leader": leader.name, "candidate": replica.name})
    assert (status, text) == (200, f'Successfully switched over to "{replica.name}"')
    wait_until(lambda: cluster.leader() is replica, 30, "the candidate to lead")
