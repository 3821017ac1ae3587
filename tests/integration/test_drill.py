"""`pgwarden drill` end to end on one real 3-node cluster: correctness only, never timing.

Checks what the drill promises an operator: it refuses without --yes; after a fault there is a
primary again, no acknowledged write is lost, and the old primary is back in the cluster.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgwarden.cli.drill import drill
from pgwarden.config import load_local
from pgwarden.drill import Drill, DrillOptions, Fault, read_topology
from pgwarden.drill.topology import multi_host_dsn
from pgwarden.localcluster.cluster import LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
    pytest.mark.skipif(os.geteuid() != 0, reason="kills need to find the postgres user's processes"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-drill-test-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    local_cluster = LocalCluster(workdir, etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    try:
        local_cluster.start()
        local_cluster.wait_healthy(120)
        yield local_cluster
    finally:
        local_cluster.stop()
        local_cluster.remove()


def _drill(cluster: LocalCluster, fault: Fault) -> Drill:
    local = load_local(cluster.nodes[0].config_path, {})
    superuser = local.postgresql.authentication.superuser
    dsn = multi_host_dsn(read_topology(local).members, user=superuser.username, password=superuser.password)

    def restart(name: str) -> bool:
        node = cluster.node(name)
        if node.agent is not None:
            node.agent.wait(10)
            node.agent = None
        cluster.start_agent(node)
        return True

    return Drill(lambda: read_topology(local), dsn, DrillOptions(fault, settle=1.0, heal_timeout=120),
                 restarter=restart)


def test_the_drill_refuses_without_yes(cluster: LocalCluster) -> None:
    result = CliRunner().invoke(drill, ["-c", str(cluster.nodes[0].config_path), "--fault", "host-kill"])
    assert result.exit_code == 2, result.output
    assert "--yes" in result.output


def test_host_kill_fails_over_without_losing_acknowledged_writes(cluster: LocalCluster) -> None:
    report = _drill(cluster, Fault.HOST_KILL).run(1)
    run = report.runs[0]
    assert run.error is None, run.error
    assert run.measurement is not None and run.measurement.recovered
    assert run.new_primary is not None and run.new_primary != run.old_primary
    assert run.missing == ()
    assert run.old_timeline is not None and run.new_timeline is not None and run.new_timeline > run.old_timeline
    assert run.old_primary_rejoined


def test_postmaster_kill_through_the_cli(cluster: LocalCluster) -> None:
    result = CliRunner().invoke(drill, ["-c", str(cluster.nodes[0].config_path), "--fault", "postmaster-kill",
                                       "--yes", "--json", "--settle", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    run = report["runs"][0]
    assert run["error"] is None
    assert run["missing_writes"] == 0
    assert run["writes_recovered"]
    assert run["old_primary_rejoined"]


def test_switchover_moves_the_primary_without_losing_acknowledged_writes(cluster: LocalCluster) -> None:
    run = _drill(cluster, Fault.SWITCHOVER).run(1).runs[0]
    assert run.error is None, run.error
    assert run.api is not None and run.api.accepted
    assert run.new_primary is not None and run.new_primary != run.old_primary
    assert run.missing == ()
    assert run.old_primary_rejoined
