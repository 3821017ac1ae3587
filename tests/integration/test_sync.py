"""Synchronous mode `on` on one real 3-node cluster, reused by every test of this module, in order.

node1 starts alone, so it is the first primary; node3 carries the tag `nosync`, so node2 is the only
possible synchronous standby. The tests check that the primary lists node2 in synchronous_standby_names
and publishes it in /sync; that a switchover to the asynchronous node3 is refused; that node3 is never
made synchronous, even when node2 is gone; that strict mode makes commits wait with no standby and
lets them through when one returns; that switching synchronous_mode off -> on -> off through
PATCH /config costs the writers nothing; and, last, that host loss promotes node2 with every
acknowledged commit. A `SyncSampler` watches ssn and /sync for the whole module.

Helpers here are shared with test_sync_quorum.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwarden.drill.measure import Attempt, acknowledged_ids, missing_ids
from pgwarden.drill.workload import Writer, prepare_table, stored_ids
from pgwarden.localcluster.cluster import DEMO_DCS, LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

NOSYNC = "node3"
HTTP_TIMEOUT = 10.0
SQL_TIMEOUT = 2


# --------------------------------------------------------------------------------------------------
# Helpers (also used by test_sync_quorum.py)


def read_sync_key(cluster: LocalCluster) -> dict[str, Any] | None:
    """The raw `/sync` key from etcd (through its v3 JSON gateway), or None when it does not exist."""
    key = base64.b64encode(f"/service/{cluster.scope}/sync".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.etcd_ports[0]}/v3/kv/range",
                                     data=json.dumps({"key": key}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        kvs = json.loads(response.read()).get("kvs") or []
    if not kvs:
        return None
    value: dict[str, Any] = json.loads(base64.b64decode(kvs[0]["value"]))
    return value


def sync_standbys(sync: Mapping[str, Any] | None) -> list[str]:
    """The names `/sync` publishes as synchronous ("a,b" or null in the key)."""
    text = (sync or {}).get("sync_standby") or ""
    return [name for name in str(text).split(",") if name]


def primary_ssn(cluster: LocalCluster, node: Node) -> str | None:
    """synchronous_standby_names on `node` if it is a running primary; None otherwise."""
    try:
        with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=SQL_TIMEOUT) as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')"
                               ).fetchone()
    except psycopg.Error:
        return None
    if row is None or row[0]:
        return None
    return str(row[1])


def listed(ssn: str | None) -> set[str]:
    """Member names in an ssn pgwarden wrote (it double-quotes every name)."""
    parts = (ssn or "").split('"')
    return {parts[i] for i in range(1, len(parts), 2)}


@dataclass(frozen=True)
class SyncPicture:
    ssn: str | None
    sync: dict[str, Any] | None

    def settled(self, leader: str, standbys: set[str]) -> bool:
        """ssn lists exactly `standbys` and /sync publishes exactly them, for `leader`."""
        return (listed(self.ssn) == standbys and self.sync is not None and self.sync.get("leader") == leader
                and set(sync_standbys(self.sync)) == standbys)


def picture(cluster: LocalCluster, leader: Node) -> SyncPicture:
    return SyncPicture(primary_ssn(cluster, leader), read_sync_key(cluster))


def wait_picture(cluster: LocalCluster, leader: Node, what: str, check: Callable[[SyncPicture], bool],
                 timeout: float = 60) -> SyncPicture:
    """Wait until the leader's ssn and /sync satisfy `check`; the timeout error shows the last picture."""
    seen: list[SyncPicture] = []

    def ready() -> bool:
        seen.append(picture(cluster, leader))
        return check(seen[-1])

    try:
        wait_until(ready, timeout, what, interval=0.3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last seen: {seen[-1] if seen else None}") from None
    return seen[-1]


def rest(node: Node, method: str, path: str, body: Mapping[str, object] | None = None) -> tuple[int, str]:
    """(status, text) of a REST call with a JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(node.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def patch_config(node: Node, patch: Mapping[str, object]) -> None:
    status, text = rest(node, "PATCH", "/config", patch)
    assert status == 200, f"PATCH /config {patch}: {status} {text}"


class SyncSampler:
    """Every ~0.3 s: every running primary's ssn and the /sync key; remembers every name either listed."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.in_ssn: set[str] = set()
        self.in_sync_key: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync-sampler", daemon=True)

    def __enter__(self) -> SyncSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node in [n for n in self.cluster.nodes if n.agent is not None]:
                self.in_ssn |= listed(primary_ssn(self.cluster, node))
            with contextlib.suppress(OSError, ValueError):
                self.in_sync_key |= set(sync_standbys(read_sync_key(self.cluster)))
            self.samples += 1
            self._stop.wait(0.3)


@dataclass
class SteadyWriter:
    """pgwarden's drill workload (one INSERT per `interval` through the multi-host DSN) as a context."""

    cluster: LocalCluster
    interval: float
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dsn = self.cluster.multi_host_dsn()
        prepare_table(self.dsn)
        self.writer = Writer(self.dsn, self.run, self.interval)

    def __enter__(self) -> SteadyWriter:
        self.writer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.stop()
        self.attempts = self.writer.attempts()

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for a in self.writer.attempts() if a.ok and a.started >= moment)

    def wait_acknowledged(self, count: int, timeout: float = 60) -> None:
        """Wait until `count` writes started from now on are acknowledged."""
        since = time.monotonic()
        wait_until(lambda: self.acknowledged_since(since) >= count, timeout, f"{count} acknowledged writes")

    def lost(self) -> list[int]:
        """Acknowledged ids the current primary lacks."""
        acked = acknowledged_ids(self.attempts)
        return missing_ids(acked, stored_ids(self.dsn, self.run))


def start_first_then_others(cluster: LocalCluster) -> None:
    """Start etcd and node1 alone (so it becomes the primary), then the other agents."""
    cluster.prepare()
    cluster.start_etcd()
    first = cluster.nodes[0]
    cluster.start_agent(first)
    wait_until(lambda: cluster.leader() is first, 90, f"{first.name} to bootstrap as the primary")
    for node in cluster.nodes[1:]:
        cluster.start_agent(node)


def stop_agents(cluster: LocalCluster, nodes: list[Node]) -> None:
    """SIGTERM several agents at once (each stops its PostgreSQL cleanly), then wait for all."""
    for node in nodes:
        if node.agent is not None:
            node.agent.send_signal(signal.SIGTERM)
    for node in nodes:
        cluster.stop_agent(node)


def lock_held_cycles(node: Node) -> int:
    """How many HA cycles `node` has ended holding the lock with nothing to change (synchronous
    replication included: a cycle that changes ssn or /sync logs another line)."""
    return node.log_path.read_text(errors="replace").count(f"no action. I am ({node.name}), the leader with the lock")


def wait_lock_held_cycles(node: Node, cycles: int, timeout: float = 60) -> None:
    """Wait for `cycles` more such cycles of `node`. With 2 or more, at least one of them read the DCS
    and PostgreSQL after this call (a cycle already under way may log the first)."""
    start = lock_held_cycles(node)
    wait_until(lambda: lock_held_cycles(node) >= start + cycles, timeout,
               f"{cycles} more HA cycles of {node.name} holding the lock with nothing to change")


def dynamic_cache(node: Node) -> dict[str, Any] | None:
    """The /config that `node`'s agent runs with: its copy in the data directory (patroni.dynamic.json,
    rewritten as soon as the agent adopts a changed /config)."""
    try:
        value: dict[str, Any] = json.loads((node.data_dir / "patroni.dynamic.json").read_text())
    except (OSError, ValueError):
        return None
    return value


def dump_logs(cluster: LocalCluster, lines: int = 40) -> None:
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            print(f"==== {node.name} agent log (tail)")
            print("\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:]))


# --------------------------------------------------------------------------------------------------
# The cluster


@dataclass
class OnCluster:
    local: LocalCluster
    sampler: SyncSampler

    def node(self, name: str) -> Node:
        return self.local.node(name)


@pytest.fixture(scope="module")
def on(request: pytest.FixtureRequest) -> Iterator[OnCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-it-sync-"))
    workdir.chmod(0o755)
    local = LocalCluster(workdir, scope="itsync", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0,
                         dcs={**DEMO_DCS, "synchronous_mode": "on"},
                         extra_config=lambda n: {"tags": {"nosync": True}} if n.name == NOSYNC else {})
    failed_before = request.session.testsfailed
    try:
        start_first_then_others(local)
        local.wait_healthy(120)
        with SyncSampler(local) as sampler:
            yield OnCluster(local, sampler)
        if request.session.testsfailed > failed_before:
            dump_logs(local)
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def insert_timed(cluster: LocalCluster, node: Node, cancel_after: float,
                 statement_timeout_ms: int = 0) -> tuple[float, list[str]]:
    """One autocommit INSERT on `node`: (seconds it took, server notices received).

    The client cancels it after `cancel_after` seconds, as an application's own timeout would: a commit
    still waiting for its standbys then returns with PostgreSQL's "canceling wait for synchronous
    replication" warning. `statement_timeout` cannot do this: PostgreSQL disables it before committing.
    """
    notices: list[str] = []
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=SQL_TIMEOUT) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute("CREATE TABLE IF NOT EXISTS sync_probe (at timestamptz DEFAULT now())")
        conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
        notices.clear()  # only the INSERT's own notices matter
        guard = threading.Timer(cancel_after, conn.cancel)
        guard.start()
        started = time.monotonic()
        try:
            conn.execute("INSERT INTO sync_probe DEFAULT VALUES")
        finally:
            guard.cancel()
        return time.monotonic() - started, notices


def waiting_for_sync_rep(cluster: LocalCluster, node: Node, longer_than: float = 0.0) -> int:
    """How many backends on `node` wait for synchronous replication (wait_event SyncRep), in a
    statement begun more than `longer_than` seconds ago."""
    with psycopg.connect(cluster.conninfo(node), autocommit=True, connect_timeout=SQL_TIMEOUT) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                           " AND clock_timestamp() - query_start > make_interval(secs => %s)",
                           (longer_than,)).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------------
# Tests, in order on the same cluster


def test_one_synchronous_standby_is_listed_and_published(on: OnCluster) -> None:
    wait_picture(on.local, on.node("node1"), "node2 in ssn and /sync",
                 lambda p: p.settled("node1", {"node2"}) and "FIRST 1" in (p.ssn or ""))
    wait_until(lambda: on.node("node2").get("/sync")[0] == 200, 20, "node2's GET /sync to answer 200")
    assert on.node("node3").get("/sync")[0] == 503
    assert on.node("node3").get("/async")[0] == 200
    expected = {"node1": "leader", "node2": "sync_standby", "node3": "replica"}
    roles: dict[str, str] = {}

    def roles_shown() -> bool:  # GET /cluster answers from the agent's last DCS read: a cycle may pass
        body = on.local.cluster_json() or {}
        roles.update({m["name"]: m.get("role") for m in body.get("members", [])})
        return roles == expected

    with contextlib.suppress(TimeoutError):
        wait_until(roles_shown, 10, "GET /cluster to show node2 as sync_standby")
    assert roles == expected


def test_switchover_to_an_asynchronous_replica_is_refused(on: OnCluster) -> None:
    status, text = rest(on.node("node1"), "POST", "/switchover", {"leader": "node1", "candidate": "node3"})
    assert status == 412, text
    assert on.local.leader() is on.node("node1")


def test_a_nosync_replica_is_not_made_synchronous_when_the_synchronous_one_goes(on: OnCluster) -> None:
    primary, node2 = on.node("node1"), on.node("node2")
    on.local.stop_agent(node2)
    # Non-strict: with node2 gone, the primary drops it and, node3 being nosync, lists nobody.
    wait_picture(on.local, primary, "node2 dropped from ssn and /sync, nobody listed instead",
                 lambda p: p.ssn == "" and p.sync is not None and not sync_standbys(p.sync))
    took, notices = insert_timed(on.local, primary, cancel_after=5)
    assert took < 2 and not notices, (took, notices)
    wait_lock_held_cycles(primary, 2)  # cycles that saw node2 gone: still nobody listed
    assert listed(primary_ssn(on.local, primary)) == set()
    on.local.start_agent(node2)
    wait_picture(on.local, primary, "node2 back in ssn and /sync", lambda p: p.settled("node1", {"node2"}))


def test_strict_mode_blocks_commits_without_a_standby_and_resumes_when_one_returns(on: OnCluster) -> None:
    primary, node2, node3 = on.node("node1"), on.node("node2"), on.node("node3")
    patch_config(primary, {"synchronous_mode_strict": True})
    try:
        wait_until(lambda: (dynamic_cache(primary) or {}).get("synchronous_mode_strict") is True, 60,
                   "the primary to run with synchronous_mode_strict")
        stop_agents(on.local, [node2, node3])
        # Cycles that saw both standbys gone: a non-strict primary drops node2 in the first of them
        # (see the previous test); a strict one must keep it.
        wait_lock_held_cycles(primary, 3)
        ssn = primary_ssn(on.local, primary)
        assert listed(ssn), f"strict mode must keep a synchronous standby (or the placeholder) in ssn: {ssn!r}"
        assert NOSYNC not in listed(ssn)
        print(f"\nstrict, no standby: ssn {ssn!r}, /sync {read_sync_key(on.local)}")
        # A commit issued now must wait (statement_timeout does not cut that wait short), then complete
        # on its own once node2 streams again.
        outcome: dict[str, tuple[float, list[str]] | psycopg.Error] = {}

        def commit() -> None:
            try:
                outcome["result"] = insert_timed(on.local, primary, cancel_after=90, statement_timeout_ms=1000)
            except psycopg.Error as exc:
                outcome["error"] = exc

        waiter = threading.Thread(target=commit, daemon=True)
        waiter.start()
        # Waiting for twice its statement_timeout shows that the timeout does not end the wait.
        wait_until(lambda: not waiter.is_alive() or waiting_for_sync_rep(on.local, primary, longer_than=2) == 1,
                   60, "the commit to wait over 2 s for a synchronous standby (or to return)")
        assert waiter.is_alive(), f"a commit went through with no standby in strict mode: {outcome}"
        assert waiting_for_sync_rep(on.local, primary) == 1
        restarted = time.monotonic()
        on.local.start_agent(node2)
        waiter.join(90)
        assert not waiter.is_alive(), "the waiting commit never completed after node2 came back"
        result = outcome.get("result")
        assert isinstance(result, tuple), outcome
        took, notices = result
        assert not notices, f"the commit was cancelled rather than confirmed: {notices}"
        print(f"\nstrict: the waiting commit completed {time.monotonic() - restarted:.1f}s after node2's "
              f"agent was started (it waited {took:.1f}s in all)")
        assert listed(primary_ssn(on.local, primary)) == {"node2"}
    finally:
        patch_config(primary, {"synchronous_mode_strict": False})
        if node3.agent is None:
            on.local.start_agent(node3)
        if node2.agent is None:
            on.local.start_agent(node2)
    on.local.wait_healthy(90)
    wait_picture(on.local, primary, "node2 in ssn and /sync", lambda p: p.settled("node1", {"node2"}))


def test_switching_synchronous_mode_at_runtime_costs_no_write(on: OnCluster) -> None:
    primary = on.node("node1")
    steps: list[str] = []
    with SteadyWriter(on.local, interval=0.05) as writer:
        writer.wait_acknowledged(20)
        for mode in ("off", "on", "off"):
            patch_config(primary, {"synchronous_mode": mode})
            if mode == "off":
                wait_picture(on.local, primary, "ssn emptied and /sync deleted",
                             lambda p: p.ssn == "" and p.sync is None)
            else:
                wait_picture(on.local, primary, "node2 in ssn and /sync", lambda p: p.settled("node1", {"node2"}))
            steps.append(mode)
            writer.wait_acknowledged(20)  # writes go on in this mode
    failed = [a for a in writer.attempts if not a.ok]
    slowest = max(a.latency for a in writer.attempts)
    print(f"\nruntime mode changes {steps}: {len(writer.attempts)} writes, {len(failed)} failed, "
          f"slowest {slowest * 1000:.0f} ms")
    assert len(writer.attempts) > 60
    assert not failed, failed[:3]
    assert slowest < 2.0, f"a write was blocked for {slowest:.1f}s"
    assert writer.lost() == []
    patch_config(primary, {"synchronous_mode": "on"})
    wait_picture(on.local, primary, "node2 in ssn and /sync", lambda p: p.settled("node1", {"node2"}))


def test_host_loss_promotes_the_synchronous_standby_without_losing_commits(on: OnCluster) -> None:
    old, sync, nosync = on.node("node1"), on.node("node2"), on.node(NOSYNC)
    on.local.wait_healthy(60)
    wait_picture(on.local, old, "node2 in ssn and /sync", lambda p: p.settled("node1", {"node2"}))
    with SteadyWriter(on.local, interval=0.01) as writer:
        writer.wait_acknowledged(100)
        killed = time.monotonic()
        on.local.kill_host(old)
        wait_until(lambda: on.local.leader() is not None, 90, "a new primary")
        assert on.local.leader() is sync, "only the synchronous standby may take over"
        wait_until(lambda: writer.acknowledged_since(time.monotonic() - 0.5) > 10, 60, "writes to resume")
    print(f"\nhost loss in on mode: {sum(a.ok for a in writer.attempts)} writes acknowledged, new primary "
          f"{sync.name}, writes back {max(a.finished for a in writer.attempts) - killed:.1f}s after the kill")
    assert writer.lost() == [], "acknowledged commits lost"
    # The only replica left is nosync: the new primary must run without a synchronous standby.
    wait_picture(on.local, sync, "/sync written by node2 with no standby",
                 lambda p: p.sync is not None and p.sync.get("leader") == "node2" and not sync_standbys(p.sync))
    wait_lock_held_cycles(sync, 2)  # cycles that settled with node3 as the only replica left
    assert NOSYNC not in listed(primary_ssn(on.local, sync))
    # node3 first has to follow node2 on its new timeline before it counts as a healthy async replica.
    took = wait_until(lambda: nosync.get("/async")[0] == 200, 60, "node3's GET /async to answer 200")
    print(f"node3 streams from node2 (GET /async 200) {time.monotonic() - killed:.1f}s after the kill "
          f"({took:.1f}s after the checks above)")
    assert NOSYNC not in listed(primary_ssn(on.local, sync))


def test_the_nosync_replica_was_never_synchronous(on: OnCluster) -> None:
    assert on.sampler.samples > 50
    assert NOSYNC not in on.sampler.in_ssn, on.sampler.in_ssn
    assert NOSYNC not in on.sampler.in_sync_key, on.sampler.in_sync_key
    assert "node2" in on.sampler.in_ssn and "node2" in on.sampler.in_sync_key
