"""Issue 11, on real processes: a bootstrap that PostgreSQL refuses must not fill the disk.

A one-node cluster whose bootstrap.dcs carries a parameter PostgreSQL refuses at start: the agent wins
the initialize race, initdb works, the start fails. It tries again after backing off (5 s, 10 s), gives
up after the third failure with one CRITICAL line naming the parameter, and exits non-zero; every
attempt's data directory (created by initdb, so no user data) is removed, not moved aside, and the
initialize key is released.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

GIVE_UP_WITHIN = 60.0


@pytest.fixture
def refused_cluster() -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-bootfail-"))
    workdir.chmod(0o755)
    dcs = copy.deepcopy(DEMO_DCS)
    dcs["postgresql"]["parameters"]["shared_buffers"] = "1PB"  # valid syntax, refused by PostgreSQL at start
    local = LocalCluster(workdir, size=1, scope="bootfail", dcs=dcs, etcd_ports=(0, 0), pg_base_port=0,
                         api_base_port=0)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_refused_bootstrap_gives_up_with_the_cause_and_leaves_no_copies(refused_cluster: LocalCluster) -> None:
    node = refused_cluster.nodes[0]
    assert node.agent is not None
    started = time.monotonic()
    seen_siblings: set[str] = set()
    while node.agent.poll() is None and time.monotonic() - started < GIVE_UP_WITHIN + 15:
        seen_siblings |= {p.name for p in node.dir.iterdir() if p.name.startswith("data")}
        time.sleep(0.2)
    took = time.monotonic() - started
    log = node.log_path.read_text(errors="replace")
    returncode = node.agent.poll()
    print(f"agent exited with {returncode} after {took:.1f}s")
    assert returncode is not None, f"the agent still runs after {took:.0f}s:\n{log[-3000:]}"
    assert returncode == 3  # EXIT_GAVE_UP: systemd does not restart it (RestartPreventExitStatus)
    assert took < GIVE_UP_WITHIN, log[-3000:]

    critical = [line for line in log.splitlines() if " CRITICAL: " in line]
    assert len(critical) == 1, log[-3000:]
    assert "Failed to bootstrap cluster after 3 attempts" in critical[0]
    assert 'invalid value for parameter "shared_buffers"' in critical[0]
    attempts = len(re.findall(r"INFO: trying to bootstrap a new cluster", log))
    assert attempts == 3, log[-3000:]
    # Each backoff is said once (the cycles waiting it out stay quiet), with PostgreSQL's words.
    backoffs = re.findall(r"INFO: bootstrap attempt (\d) failed \(.*shared_buffers.*\); trying again in", log)
    assert backoffs == ["1", "2"], log[-3000:]

    # Nothing was moved aside: at most the data directory itself (here not even that: initdb made it,
    # so each failed attempt removed it), never a `.failed` copy, even while it ran.
    leftovers = [p.name for p in node.dir.iterdir() if p.name.startswith("data")]
    assert len(leftovers) <= 1 and not [n for n in leftovers if ".failed" in n], leftovers
    assert not [n for n in seen_siblings if ".failed" in n], seen_siblings

    # The initialize key was released: another node could try (asked through etcd's JSON gateway).
    assert _initialize_key_absent(refused_cluster)


def _initialize_key_absent(cluster: LocalCluster) -> bool:
    import base64
    import json
    import urllib.request

    key = base64.b64encode(f"/service/{cluster.scope}/initialize".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_ports[0]}/v3/kv/range",
                                     data=json.dumps({"key": key}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
    return not body.get("kvs")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the data directory to another user")
def test_an_empty_data_dir_owned_by_root_is_never_taken_over() -> None:
    """Issue 20 item 8: an empty data_dir owned by root (not the agent's user) used to be renamed aside
    and a new cluster bootstrapped in its place. Now it is left exactly as it is, and the agent gives
    up saying whose it is."""
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-rootdir-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, size=1, scope="rootdir", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    try:
        local.prepare()
        node = local.nodes[0]
        node.data_dir.mkdir(mode=0o755)  # root's, after prepare() gave the node's directory to postgres
        before = node.data_dir.stat()
        local.start_etcd()
        local.start_agent(node)
        assert node.agent is not None
        node.agent.wait(GIVE_UP_WITHIN)
        log = node.log_path.read_text(errors="replace")
        assert node.agent.returncode not in (None, 0), log[-3000:]
        critical = [line for line in log.splitlines() if " CRITICAL: " in line]
        assert len(critical) == 1 and "owned by root (uid 0)" in critical[0], log[-3000:]
        after = node.data_dir.stat()
        assert (after.st_ino, after.st_uid) == (before.st_ino, 0) and not list(node.data_dir.iterdir())
        assert [p.name for p in node.dir.iterdir() if p.name.startswith("data")] == ["data"]
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)
