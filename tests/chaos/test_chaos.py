"""A short, seeded chaos set on real processes in network namespaces (docs/chaos.md).

One 3-host cluster in `synchronous_mode: on` (each host namespace runs an etcd member, PostgreSQL 15
on a small filesystem of its own and a pgwarden agent; the clients have their own namespace), then
each of a few fault kinds once (a full disk on the primary among them), in
a seeded order: the checker must find no lost acknowledged commit, no double writer, and one primary
with streaming replicas after the faults heal. A failure names the folder with its seed, schedule,
history and every log; `benchmarks/chaos.py` runs the long schedules.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.chaos.cluster import DISK_MB, ChaosCluster
from pgwarden.chaos.faults import covering_schedule
from pgwarden.chaos.net import tools_missing
from pgwarden.chaos.runner import run_schedule, summarize
from pgwarden.chaos.workload import CREATE_TABLE, Ids
from pgwarden.localcluster.etcd import etcd_available
from pgwarden.localcluster.postgres import pg_available

SEED = 19
KINDS = ["primary-etcd", "replicas-pg", "stop-agent", "minority", "loss", "disk-full"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root"),
    pytest.mark.skipif(bool(tools_missing()), reason=f"needs {', '.join(tools_missing())}"),
    pytest.mark.skipif(not (etcd_available() and pg_available()), reason="needs etcd and PostgreSQL 15"),
]


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[ChaosCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-chaos-test-", dir="/tmp"))
    workdir.chmod(0o755)  # the postgres user must reach the host directories below it
    cluster = ChaosCluster(workdir / "cluster", mode="on", disk_mb=DISK_MB)

    def cleanup() -> None:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(cleanup)  # also when the run is interrupted before the finally
    try:
        cluster.start(timeout=90)
        cluster.sql(cluster.multi_host_dsn(), CREATE_TABLE)
        yield cluster
    finally:
        cleanup()
        atexit.unregister(cleanup)


def test_a_seeded_set_of_faults_loses_no_acknowledged_commit_and_never_has_two_writers(
        chaos_cluster: ChaosCluster) -> None:
    specs = covering_schedule(SEED, KINDS, duration=(5, 8), gap=(1, 2))
    outdir = Path(tempfile.gettempdir()) / "pgwarden-chaos-failures"
    result = run_schedule(chaos_cluster, Ids(), SEED, specs, outdir,
                          replay=f"pytest tests/chaos/test_chaos.py (SEED = {SEED})")
    print("\n" + summarize([result]))
    assert result.records and len(result.records) == len(KINDS)
    assert result.acknowledged > 0
    assert result.violations == [], f"seed {SEED}, artifacts in {result.folder}"
