"""Quorum commit on a real 5-node cluster: `synchronous_mode: quorum`, `synchronous_node_count: 2`.

The primary lists every standby in `ANY 2 (...)` and publishes them in /sync with a quorum that makes
every promotion set (a candidate and `quorum` other voters) meet every acknowledgement set: 4 voters,
any 2 confirm each commit, so quorum 2, the value Patroni writes (`voters - k`). Then the primary's
host is lost under a steady write load: a new primary must take over with every acknowledged commit,
and rebuild the quorum over the 3 standbys that are left (quorum 1).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.integration.test_sync import (
    SteadyWriter,
    dump_logs,
    listed,
    start_first_then_others,
    sync_standbys,
    wait_picture,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

SIZE = 5
COUNT = 2


def safe_quorum(voters: int) -> int:
    """Patroni's `quorum` for `ANY COUNT` over `voters`: how many voters other than the candidate it must
    see so that the candidate and those always include one of any COUNT confirming standbys."""
    return voters - COUNT


@pytest.fixture(scope="module")
def quorum(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-quorum-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, size=SIZE, scope="itquorum", etcd_ports=(0, 0), pg_base_port=0,
                         api_base_port=0,
                         dcs={**DEMO_DCS, "synchronous_mode": "quorum", "synchronous_node_count": COUNT})
    failed_before = request.session.testsfailed
    try:
        start_first_then_others(local)
        local.wait_healthy(180)
        yield local
        if request.session.testsfailed > failed_before:
            dump_logs(local)
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_every_standby_is_a_voter_with_a_safe_quorum(quorum: LocalCluster) -> None:
    primary = quorum.node("node1")
    standbys = {n.name for n in quorum.nodes if n is not primary}
    seen = wait_picture(quorum, primary, f"ANY {COUNT} over every standby, published with a safe quorum",
                        lambda p: p.settled("node1", standbys) and (p.ssn or "").startswith(f"ANY {COUNT}"))
    assert seen.sync is not None and seen.sync.get("quorum") == safe_quorum(len(standbys)), seen
    wait_until(lambda: all(quorum.node(n).get("/quorum")[0] == 200 for n in standbys), 20,
               "every standby's GET /quorum to answer 200")
    assert quorum.node("node2").get("/sync")[0] == 503  # quorum standbys are not "sync" standbys


def test_host_loss_in_quorum_mode_loses_no_acknowledged_commit(quorum: LocalCluster) -> None:
    old = quorum.node("node1")
    with SteadyWriter(quorum, interval=0.01) as writer:
        time.sleep(2)
        killed = time.monotonic()
        quorum.kill_host(old)
        wait_until(lambda: quorum.leader() is not None, 90, "a new primary")
        wait_until(lambda: writer.acknowledged_since(time.monotonic() - 0.5) > 10, 60, "writes to resume")
    new = quorum.leader()
    assert new is not None and new is not old
    print(f"\nhost loss in quorum mode: {sum(a.ok for a in writer.attempts)} writes acknowledged, new primary "
          f"{new.name}, writes back {max(a.finished for a in writer.attempts) - killed:.1f}s after the kill")
    assert writer.lost() == [], "acknowledged commits lost"
    # The standbys left form the new quorum, every one of them a voter.
    left = {n.name for n in quorum.nodes if n is not old and n is not new}
    seen = wait_picture(quorum, new, "the new primary's quorum over the standbys left",
                        lambda p: p.settled(new.name, left) and (p.ssn or "").startswith(f"ANY {COUNT}"),
                        timeout=90)
    assert listed(seen.ssn) == set(sync_standbys(seen.sync)) == left
    assert seen.sync is not None and seen.sync.get("quorum") == safe_quorum(len(left)), seen
