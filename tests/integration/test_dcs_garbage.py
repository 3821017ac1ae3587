"""Hostile and careless DCS values on a real 3-node cluster (issue 20, items 4 and 7).

Raw values are written with `etcdctl`, behind the agents' and the API's back:

* `status.timeline: 20000`, then a switchover: the new primary takes the next timeline (not 20001,
  with 20,005 placeholder files), `/history` names the real parent, and no replica is moved aside;
* an unreadable `failover` key: `DELETE /switchover` and `pgwarden flush` clear it, a switchover over
  it works (it used to answer 409 for ever);
* an unreadable `config`: `GET /config` is an error, `PATCH` and `edit-config` refuse (they would store
  only the patch), and the agents keep running with the configuration they had (here: paused).

One cluster for the module (< 3 minutes in all).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pgwarden.cli.main import main
from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import print_logs_if_failed, rest, running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()
                            and Path("/usr/bin/etcdctl").exists()),
                       reason="needs etcd, etcdctl and PostgreSQL 15"),
]

SCOPE = "garbage"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("garbage", SCOPE) as local:
        yield local


@pytest.fixture(autouse=True)
def _logs_on_failure(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_logs_if_failed(cluster, request)


def etcdctl(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run(["/usr/bin/etcdctl", f"--endpoints=http://127.0.0.1:{cluster.etcd_ports[0]}", *args],
                            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=10, check=True)
    return result.stdout


def key(name: str) -> str:
    return f"/service/{SCOPE}/{name}"


def put_raw(cluster: LocalCluster, name: str, text: str) -> None:
    etcdctl(cluster, "put", key(name), text)


def get_raw(cluster: LocalCluster, name: str) -> str | None:
    out = etcdctl(cluster, "get", key(name), "--print-value-only")
    return out[:-1] if out else None  # etcdctl adds a newline


def pgwarden(cluster: LocalCluster, *args: str) -> Any:
    return CliRunner().invoke(main, ["-c", str(cluster.nodes[0].config_path), *args], catch_exceptions=False)


def status(node: Node) -> dict[str, Any]:
    code, body = node.get("/patroni")
    assert code == 200 and body is not None, f"{node.name}: /patroni answered {code}"
    return body


def moved_aside(cluster: LocalCluster) -> list[str]:
    """Data directories moved aside (`<data>.failed.<timestamp>`): a re-clone happened."""
    return sorted(str(p) for node in cluster.nodes for p in node.dir.glob("*.failed*"))


def switchover(cluster: LocalCluster, leader: Node, candidate: Node) -> None:
    code, text = rest(leader, "POST", "/switchover", {"leader": leader.name, "candidate": candidate.name})
    assert code == 200, f"{code} {text}"
    wait_until(lambda: cluster.leader() is candidate and cluster.healthy(), 90,
               f"{candidate.name} leading with two streaming replicas")


def test_a_garbage_reserved_timeline_is_ignored(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy()
    before = int(status(leader)["timeline"])
    stored = json.loads(get_raw(cluster, "status") or "{}")
    put_raw(cluster, "status", json.dumps({**stored, "timeline": 20000}))
    time.sleep(2.5)  # every agent reads it at least once (loop_wait 2)

    candidate = next(n for n in cluster.nodes if n is not leader)
    switchover(cluster, leader, candidate)

    after = int(status(candidate)["timeline"])
    assert after == before + 1, f"promoted from timeline {before} to {after}"
    histories = sorted(p.name for p in (candidate.data_dir / "pg_wal").glob("*.history"))
    assert len(histories) <= after, f"placeholder files written: {histories[:5]}... ({len(histories)})"
    code, text = rest(candidate, "GET", "/history")
    history = json.loads(text)
    assert code == 200 and history, text
    assert [row[0] for row in history][-1] == before and history[-1][4] == candidate.name
    assert all(row[0] < after for row in history)
    published = json.loads(get_raw(cluster, "status") or "{}")
    assert published.get("timeline") == after  # the new leader's claim replaced the garbage
    # Every replica follows the new timeline, and none was moved aside and re-cloned.
    wait_until(lambda: all(int(status(n).get("timeline") or 0) == after for n in cluster.nodes), 30,
               "every member on the new timeline")
    assert moved_aside(cluster) == []
    for node in cluster.nodes:
        log = node.log_path.read_text(errors="replace")
        assert "reinitializ" not in log.lower() and "rewind" not in log.lower(), node.name
        assert log.count("implausible 'status' timeline 20000") <= 2, f"{node.name} repeats the warning"

    # Garbage written again, with no promotion to come: the leader's next renewal puts its own back.
    put_raw(cluster, "status", json.dumps({**published, "timeline": 20000}))
    wait_until(lambda: json.loads(get_raw(cluster, "status") or "{}").get("timeline") == after, 15,
               "the leader to rewrite /status")


def test_an_unreadable_failover_key_is_cleared_and_does_not_block_switchovers(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy()
    put_raw(cluster, "failover", "{garbage")
    code, text = rest(leader, "DELETE", "/switchover")
    assert code == 200, f"{code} {text}"
    assert get_raw(cluster, "failover") is None

    put_raw(cluster, "failover", "neither JSON nor leader-colon-member")
    result = pgwarden(cluster, "flush", SCOPE, "switchover", "--force")
    assert result.exit_code == 0, result.output
    assert "No pending" not in result.output
    assert get_raw(cluster, "failover") is None

    put_raw(cluster, "failover", "[1, 2")
    candidate = next(n for n in cluster.nodes if n is not leader)
    switchover(cluster, leader, candidate)  # 200, not 409 for ever
    wait_until(lambda: get_raw(cluster, "failover") is None, 20, "the switchover's failover key to be cleared")


def test_an_unreadable_config_is_neither_shown_nor_patched(cluster: LocalCluster) -> None:
    leader = cluster.wait_healthy()
    code, text = rest(leader, "PATCH", "/config", {"pause": True})
    assert code == 200, text
    wait_until(lambda: all(status(n).get("pause") is True for n in cluster.nodes), 20, "every agent paused")
    good = get_raw(cluster, "config")
    assert good is not None

    garbage = '{"ttl": 20, "loop_wait": '
    put_raw(cluster, "config", garbage)
    code, text = rest(leader, "GET", "/config")
    assert code == 502 and "the stored /config is not valid JSON" in text, f"{code} {text}"
    code, text = rest(leader, "PATCH", "/config", {"loop_wait": 3})
    assert code == 503 and "not valid JSON" in text, f"{code} {text}"
    result = pgwarden(cluster, "edit-config", SCOPE, "-s", "loop_wait=3", "--force")
    assert result.exit_code != 0 and "not valid JSON" in result.output, result.output
    assert get_raw(cluster, "config") == garbage  # nothing stored only the patch

    # The agents keep the configuration they run with (still paused), not the defaults of `{}`.
    time.sleep(5)
    for node in cluster.nodes:
        assert status(node).get("pause") is True, f"{node.name} left maintenance mode"
    assert cluster.healthy()

    # PUT replaces the whole value: allowed, and the cluster takes it.
    code, text = rest(leader, "PUT", "/config", {**json.loads(good), "pause": False})
    assert code == 200, text
    wait_until(lambda: all(not status(n).get("pause") for n in cluster.nodes), 20, "every agent resumed")
    assert cluster.healthy()
    for node in cluster.nodes:
        log = node.log_path.read_text(errors="replace")
        assert log.count("ignored malformed 'config'") <= 2, f"{node.name} repeats the warning"
