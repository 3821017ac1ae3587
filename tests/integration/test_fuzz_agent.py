"""Random garbage in every DCS key a running agent reads (issue 20, "Also"), written with `etcdctl`
behind its back, one key at a time, on a real 1-node cluster:

* the agent never crashes (process alive, no traceback or "please report it as a BUG" in its log);
* the primary stays primary through garbage in every key but `leader` (whose overwrite, garbage or not,
  takes the lock from the agent: etcdctl's put drops its lease) and answers /primary 200 once the key
  is restored;
* no data directory is moved aside.

The values come from hypothesis (derandomized); the in-process properties of the same decoding are in
tests/unit/test_fuzz_inputs.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import print_logs_if_failed, running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()
                            and Path("/usr/bin/etcdctl").exists()),
                       reason="needs etcd, etcdctl and PostgreSQL 15"),
]

SCOPE = "fuzzagent"
KEYS = ("status", "history", "failover", "sync", "config", "initialize", "members/node1", "leader")
VALUES_PER_KEY = 16
PAUSE = 0.3
"""Seconds each value stays (loop_wait is 2: the agent reads several of them, each key's last one surely)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("fuzzagent", SCOPE, size=1) as local:
        yield local


@pytest.fixture(autouse=True)
def _logs_on_failure(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_logs_if_failed(cluster, request, lines=60)


def etcdctl(cluster: LocalCluster, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["/usr/bin/etcdctl", f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", *args],
                            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True, input=stdin,
                            timeout=10, check=True)
    return result.stdout


def _key(name: str) -> str:
    return f"/service/{SCOPE}/{name}"


def _get(cluster: LocalCluster, name: str) -> bytes | None:
    out = etcdctl(cluster, "get", _key(name), "--print-value-only")
    return out[:-1] if out else None  # etcdctl adds a newline


def _put(cluster: LocalCluster, name: str, value: bytes) -> None:
    etcdctl(cluster, "put", "--", _key(name), stdin=value)  # from stdin: any bytes, a leading '-' too


_members = ("node1", "node2", "", "x" * 300)
_garbage = st.one_of(
    st.binary(min_size=1, max_size=60),
    st.text(min_size=1, max_size=40).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                 | st.text(max_size=10) | st.sampled_from(_members),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                     st.sampled_from(["optime", "timeline", "slots", "retain_slots", "leader", "member",
                                      "scheduled_at", "sync_standby", "quorum", "ttl", "loop_wait", "pause",
                                      "role", "state", "xlog_location", "tags", "postgresql", "x"]),
                     inner, max_size=5),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"{", b"[" * 3000, b"1" * 5000, b"null", b"[]", b"{}", b"node1:node2", b"\xff\xfe",
                     b'{"optime": " 12", "timeline": 99999}', b'[[1, 0, "x"], [20000, 5, "y"]]',
                     b'{"leader": "node1", "sync_standby": "node1", "quorum": -3}', b'{"ttl": 1e18, "pause": "yes"}',
                     b'{"leader": "node1", "member": "node1"}', b'{"leader": "ghost", "member": "node1"}',
                     b'{"scheduled_at": "2000-01-01T00:00:00+00:00", "leader": "node1", "member": "node2"}']),
)


def _draw_values(key: str) -> list[bytes]:
    """VALUES_PER_KEY garbage values for `key`, the same on every run."""
    drawn: list[bytes] = []

    @settings(max_examples=VALUES_PER_KEY, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_garbage)
    def collect(value: bytes) -> None:
        if len(drawn) < VALUES_PER_KEY:
            drawn.append(value)

    collect()
    return drawn


def _agent_log(node: Node) -> str:
    return node.log_path.read_text(errors="replace")


def _check_agent(node: Node) -> None:
    assert node.agent is not None and node.agent.poll() is None, "the agent exited"
    log = _agent_log(node)
    assert "Traceback" not in log, log[log.find("Traceback") - 2000:][:4000]
    assert "please report it as a BUG" not in log.lower(), log[-4000:]


def _moved_aside(cluster: LocalCluster) -> list[str]:
    return sorted(str(p) for p in cluster.workdir.rglob("*.failed*"))


@pytest.mark.parametrize("key", KEYS)
def test_garbage_in_a_dcs_key_never_crashes_or_demotes_the_agent(cluster: LocalCluster, key: str) -> None:
    node = cluster.nodes[0]
    wait_until(lambda: node.get("/primary")[0] == 200, 60, "node1 primary before the garbage")
    original = _get(cluster, key)
    postmaster = node.postmaster_pid()
    codes: list[int] = []
    try:
        for value in _draw_values(key):
            _put(cluster, key, value)
            time.sleep(PAUSE)
            codes.append(node.get("/primary")[0])
            assert node.agent is not None and node.agent.poll() is None, f"the agent exited after {value!r}"
        time.sleep(2.5)  # the last value is surely read by a full HA cycle
        codes.append(node.get("/primary")[0])
        _check_agent(node)
    finally:
        if key in ("leader", "members/node1") or original is None:
            # what the agent owns (its lease went with etcdctl's put): deleted, the agent writes its own
            etcdctl(cluster, "del", _key(key))
        else:
            _put(cluster, key, original)
    wait_until(lambda: node.get("/primary")[0] == 200, 60, f"node1 primary again after restoring {key!r}")
    _check_agent(node)
    assert _moved_aside(cluster) == []
    if key != "leader":
        assert set(codes) == {200}, f"/primary answered {codes} while {key!r} held garbage"
        assert node.postmaster_pid() == postmaster, "PostgreSQL was restarted"
