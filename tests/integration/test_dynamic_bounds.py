"""Bounds on dynamic settings, and a legal timing change taking effect at once (issue 20 item 5), on a
real 2-node cluster.

Reproduced before the fix: `PATCH /config {"ttl": 1e18}` was accepted and every lease renewal failed;
after `{"ttl": 600, "pgwarden": {"lease_ttl": 600}}` and back to `{"ttl": 20}` the members' keepalive
slept out the old period (a third of 600 s) while their keys sat on the new, short lease: the keys
expired and came back every few seconds and /cluster often listed one member only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.localcluster.cluster import LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from tests.support.cluster import rest, running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("bounds", "bounds", size=2) as local:
        yield local


def _listed(cluster: LocalCluster) -> set[str]:
    body = cluster.cluster_json() or {}
    return {member["name"] for member in body.get("members", [])}


def test_a_huge_ttl_is_refused_and_nothing_is_written(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    _, before = rest(node, "GET", "/config")
    status, body = rest(node, "PATCH", "/config", {"ttl": 1e18})
    assert status == 400 and "ttl: expected a number <= 3600" in body, body
    status, body = rest(node, "PATCH", "/config", {"synchronous_node_count": 1000})
    assert status == 400 and "synchronous_node_count" in body, body
    assert rest(node, "GET", "/config")[1] == before


def test_members_stay_listed_after_a_long_lease_goes_back_to_a_short_one(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy(replicas=1)
    assert rest(leader, "PATCH", "/config", {"ttl": 600, "pgwarden": {"lease_ttl": 600}})[0] == 200
    time.sleep(4)  # every agent takes the long lease (validated in the background, within a cycle or two)
    assert rest(leader, "PATCH", "/config", {"ttl": 20})[0] == 200  # the lease is ttl now: 20 s
    _members_always_listed(cluster, 24)
    assert rest(leader, "PATCH", "/config", {"pgwarden": None})[0] == 200  # the default 7 s lease
    _members_always_listed(cluster, 12)


def _members_always_listed(cluster: LocalCluster, seconds: float) -> None:
    names = {node.name for node in cluster.nodes}
    time.sleep(2)
    samples, short = 0, []
    deadline = time.monotonic() + seconds  # longer than the lease the keys are on now
    while time.monotonic() < deadline:
        listed = _listed(cluster)
        samples += 1
        if listed != names:
            short.append(sorted(listed))
        time.sleep(0.25)
    assert not short, f"/cluster missed a member in {len(short)} of {samples} samples: {short[:5]}"
