"""The watchdog (contract 2.6) with Patroni's `testing` driver, on real clusters.

Every node's `watchdog.device` is a FIFO read by a `KernelStandIn` (tests/support/watchdog_kernel.py),
which records what the agent writes (`C` open, `timeout=<s>`, `1` keepalive, `V` clean close) and
"resets the host" (SIGKILLs that node's agent and PostgreSQL) when an armed timeout passes without a
keepalive. The agents read a Patroni user's YAML (`watchdog: {mode, driver: testing, device,
safety_margin}`). The expected timeout is `lease_ttl - safety_margin` in whole seconds (-1: half the
lease), with pgwarden's leader lease `pgwarden.lease_ttl` (7 s by default, capped by ttl), never shorter
than the lease's own deadline rounded up (docs/fencing.md; `expected_timeout`).

TestOneArmedLeader, one 3-node cluster (node1 and node2 `mode: required`, node3 `mode: automatic`,
safety_margin 1, so 7 - 1 = 6 s), in order:
1. the bootstrap leader arms its FIFO with the expected timeout and feeds it with no gap as long as the
   timeout; the replicas' FIFOs are never armed;
2. `pgwarden edit-config` (then PATCH /config) changing `pgwarden.lease_ttl` re-arms it (new `timeout=`);
3. a switchover: the old leader closes its watchdog cleanly (`V`), the new one arms;
4. SIGTERM of the leader's agent: `V`, and the next leader arms;
5. the leader's agent frozen (SIGSTOP): keepalives stop, the stand-in resets the host `timeout` s after
   the last one, before another node becomes writable; the split-brain watcher sees one writer at most.

TestMissingDevice, one 3-node cluster where node2's device does not exist (`mode: required`), node1 and
node3 with FIFOs and `safety_margin: -1` (half the lease), in order:
1. node1 bootstraps and arms with the documented timeout (half the lease would be 3 s: 6 s);
2. node1's host dies: node3 takes over, node2 is never writable and publishes `watchdog_failed: true`;
3. node3's host dies too, leaving node2 alone: it never promotes, and says why in its log.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgwarden.localcluster.cluster import LocalCluster, Node
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN, kill_postmaster_group
from pgwarden.localcluster.processes import wait_until
from tests.support.cluster import (
    WritableWatcher,
    agent_log_tails,
    member_lease_ttl,
    pgwarden,
    print_logs_if_failed,
    rest,
    running_user_cluster,
    user_config_path,
    wait_healthy_or_fail,
)
from tests.support.watchdog_kernel import Event, KernelStandIn

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]

LEASE_TTL = 7
"""pgwarden's default leader lease (`pgwarden.lease_ttl`, not set in the YAML), capped by ttl (20)."""
FEEDS = ("open", "timeout", "keepalive")
"""What restarts the countdown of an armed watchdog."""
NOT_PROMOTING = "Not promoting self because watchdog could not be activated"
"""Patroni's line (contract 2.3) when a candidate in mode `required` cannot arm its watchdog."""

PATRONI_YML = """\
# A Patroni user's configuration with Patroni's testing watchdog driver (a FIFO instead of /dev/watchdog).
scope: ${scope}
namespace: /service/
name: ${name}

restapi:
  listen: 127.0.0.1:${api_port}
  connect_address: 127.0.0.1:${api_port}

etcd3:
  hosts: ${etcd}

bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_keep_size: 128MB
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all all 127.0.0.1/32 scram-sha-256

postgresql:
  listen: 127.0.0.1:${pg_port}
  connect_address: 127.0.0.1:${pg_port}
  data_dir: ${node_dir}/data
  bin_dir: ${pg_bin}
  pgpass: ${node_dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: demo-superuser-secret
    replication:
      username: replicator
      password: demo-replication-secret
    rewind:
      username: rewind_user
      password: demo-rewind-secret
  parameters:
    unix_socket_directories: '${node_dir}'
  use_pg_rewind: true
  remove_data_directory_on_rewind_failure: true

watchdog:
  mode: ${mode}
  driver: testing
  device: ${device}
  safety_margin: ${safety_margin}

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"""


def expected_timeout(lease_ttl: int, safety_margin: int) -> int:
    """The timeout a leader arms (docs/fencing.md): the lease minus the safety margin (-1: half the lease) in
    whole seconds, but never shorter than the time a leader may write without a renewal (rounded up), nor
    longer than the lease less a second. Written out here, not imported, so the test checks the arithmetic."""
    margin = lease_ttl / 2 if safety_margin == -1 else safety_margin
    orderly = math.ceil(lease_ttl - max(1.5, lease_ttl / 5))
    return max(1, min(lease_ttl - 1, max(int(lease_ttl - margin), orderly)))


# --------------------------------------------------------------------------------------------------
# Clusters whose nodes each have a kernel stand-in


@dataclass(frozen=True)
class WatchdogSpec:
    mode: str
    safety_margin: int
    fifo: bool = True
    """False: the configured device does not exist."""


@dataclass
class Watched:
    cluster: LocalCluster
    kernels: dict[str, KernelStandIn]
    specs: Mapping[str, WatchdogSpec]

    def kernel(self, node: Node) -> KernelStandIn:
        return self.kernels[node.name]

    def timeout(self, node: Node, lease_ttl: int = LEASE_TTL) -> int:
        return expected_timeout(lease_ttl, self.specs[node.name].safety_margin)


def device(node: Node, spec: WatchdogSpec) -> Path:
    return node.dir / ("watchdog" if spec.fifo else "no-such-watchdog")


def host_reset(node: Node) -> Callable[[], None]:
    """What the kernel's reset does to a host: its agent and its whole PostgreSQL die at once."""

    def reset() -> None:
        agent = node.agent
        if agent is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.pid, signal.SIGKILL)
        pid = node.postmaster_pid()
        if pid is not None:
            kill_postmaster_group(pid)

    return reset


@contextlib.contextmanager
def watched_cluster(prefix: str, scope: str, specs: Mapping[str, WatchdogSpec]) -> Iterator[Watched]:
    """A cluster whose node1 bootstraps alone (the others join once it is the primary), each node's
    watchdog device a FIFO read by a KernelStandIn, or missing. The agents are stopped before the
    stand-ins close their FIFOs."""

    def values(node: Node) -> dict[str, object]:
        spec = specs[node.name]
        return {"mode": spec.mode, "device": device(node, spec), "safety_margin": spec.safety_margin}

    with running_user_cluster(prefix, scope, PATRONI_YML, size=len(specs), values=values, start=False) as local, \
            contextlib.ExitStack() as stack:
        kernels = {node.name: stack.enter_context(KernelStandIn(device(node, specs[node.name]), host_reset(node)))
                   for node in local.nodes if specs[node.name].fifo}
        stack.callback(local.stop)  # first on exit: no agent writes to a FIFO nobody reads any more
        local.start_etcd()
        first = local.nodes[0]
        local.start_agent(first)
        wait(local, lambda: first.get("/primary")[0] == 200, 60, f"{first.name} to bootstrap")
        for node in local.nodes[1:]:
            local.start_agent(node)
        wait_healthy_or_fail(local, 120)
        yield Watched(local, kernels, specs)


# --------------------------------------------------------------------------------------------------
# Helpers


def wait(cluster: LocalCluster, predicate: Callable[[], bool], timeout: float, what: str) -> float:
    try:
        return wait_until(predicate, timeout, what, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}{agent_log_tails(cluster)}") from None


def expect_event(watched: Watched, node: Node, kind: str, timeout: float, *, since: float | None = None) -> Event:
    """The first `kind` event on `node`'s FIFO (at or after `since`), waiting at most `timeout` seconds."""
    kernel = watched.kernel(node)
    if not kernel.wait_for(kind, timeout, since=since):
        raise AssertionError(f"no {kind!r} on {node.name}'s watchdog within {timeout:.0f}s; its events: "
                             f"{describe(kernel.events()[-15:], since)}{agent_log_tails(watched.cluster)}")
    return next(e for e in kernel.events() if e[1] == kind and (since is None or e[0] >= since))


def describe(events: list[Event], origin: float | None = None) -> str:
    zero = origin if origin is not None else (events[0][0] if events else 0.0)
    return ", ".join(f"{at - zero:+.2f}s {kind}{'' if value is None else f'={value}'}" for at, kind, value in events)


def feed_gaps(events: list[Event], start: float, end: float) -> float:
    """The longest time the watchdog went unfed over [start, end] (`end` counts as the end of a gap)."""
    feeds = [at for at, kind, _ in events if kind in FEEDS and start <= at <= end]
    points = [*feeds, end]
    return max((b - a for a, b in itertools.pairwise(points)), default=end - start)


def timeouts(kernel: KernelStandIn, since: float | None = None) -> list[int | None]:
    return [v for at, kind, v in kernel.events() if kind == "timeout" and (since is None or at >= since)]


def wait_all_on_lease(watched: Watched, lease_ttl: int) -> None:
    """Wait until every running member's key lives on a lease of `lease_ttl` seconds: each has applied
    the new /config (pgwarden applies it in the background, so a member may lag a cycle behind)."""
    running = [n for n in watched.cluster.nodes if n.agent is not None]
    wait(watched.cluster, lambda: all(member_lease_ttl(watched.cluster, n.name) == lease_ttl for n in running), 30,
         f"every member to run with a {lease_ttl}s lease")


def patroni_status(node: Node) -> dict[str, Any]:
    status, body = node.get("/patroni", timeout=5)
    return body if status == 200 and isinstance(body, dict) else {}


def current_leader(watched: Watched, replicas: int | None = None) -> Node:
    return wait_healthy_or_fail(watched.cluster, 120, replicas)


def assert_no_reset(watched: Watched) -> None:
    reset = {name: k.resets for name, k in watched.kernels.items() if k.resets}
    assert not reset, f"the watchdog reset a host: {reset}"


# --------------------------------------------------------------------------------------------------
# One armed leader at a time


SPECS_ONE_LEADER = {
    "node1": WatchdogSpec("required", 1),
    "node2": WatchdogSpec("required", 1),
    "node3": WatchdogSpec("automatic", 1),
}


@pytest.fixture(scope="class")
def one_leader_cluster() -> Iterator[Watched]:
    """TestOneArmedLeader's cluster, stopped when that class is done (before the next one starts)."""
    with watched_cluster("it-watchdog", "itwatchdog", SPECS_ONE_LEADER) as watching:
        yield watching


class TestOneArmedLeader:
    @pytest.fixture
    def watched(self, one_leader_cluster: Watched) -> Watched:
        return one_leader_cluster

    @pytest.fixture
    def watcher(self, watched: Watched, request: pytest.FixtureRequest) -> Iterator[WritableWatcher]:
        with WritableWatcher(watched.cluster) as watching:
            yield watching
        print_logs_if_failed(watched.cluster, request)
        assert not watching.violations, "two writable nodes at once:\n" + "\n".join(watching.violations[:20])

    def test_the_leader_arms_and_feeds_its_watchdog_and_replicas_never_arm(
            self, watched: Watched, watcher: WritableWatcher) -> None:
        leader = current_leader(watched)
        assert leader.name == "node1", "node1 bootstraps alone"
        kernel = watched.kernel(leader)
        armed = expect_event(watched, leader, "timeout", 30)
        print(f"\n{leader.name}'s watchdog: {describe(kernel.events()[:6])}")
        assert armed[2] == watched.timeout(leader), f"armed with {armed[2]}s, expected {watched.timeout(leader)}s"
        assert any(kind == "open" and at <= armed[0] for at, kind, _ in kernel.events()), "armed without an open"
        # Lead a while: the keepalives keep coming, never further apart than the timeout.
        assert kernel.wait_for("keepalive", 30, since=armed[0], count=5), describe(kernel.events()[-10:])
        gap = feed_gaps(kernel.events(), armed[0], time.monotonic())
        assert gap < watched.timeout(leader), f"the watchdog went unfed for {gap:.2f}s"
        assert kernel.armed
        for node in watched.cluster.nodes:
            if node is not leader:
                other = watched.kernel(node)
                assert not timeouts(other) and not other.armed and other.count("keepalive") == 0, (
                    f"replica {node.name}'s watchdog: {describe(other.events())}")
        assert_no_reset(watched)

    def test_a_new_lease_ttl_re_arms_the_watchdog(self, watched: Watched, watcher: WritableWatcher) -> None:
        leader = current_leader(watched)
        kernel = watched.kernel(leader)
        assert kernel.last_timeout == watched.timeout(leader)
        longer = LEASE_TTL + 3
        changed = time.monotonic()
        edited = pgwarden("-c", str(user_config_path(leader)), "edit-config", "-s", f"pgwarden.lease_ttl={longer}",
                          "--force")
        assert edited.returncode == 0, edited.stdout + edited.stderr
        rearmed = expect_event(watched, leader, "timeout", 30, since=changed)
        assert rearmed[2] == watched.timeout(leader, longer), (
            f"re-armed with {rearmed[2]}s for a {longer}s lease, expected {watched.timeout(leader, longer)}s")
        assert kernel.wait_for("keepalive", 10, since=rearmed[0]), "no keepalive after re-arming"
        wait_all_on_lease(watched, longer)

        back = time.monotonic()
        status, text = rest(leader, "PATCH", "/config", {"pgwarden": {"lease_ttl": LEASE_TTL}})
        assert status == 200, f"PATCH /config: {status} {text}"
        again = expect_event(watched, leader, "timeout", 30, since=back)
        assert again[2] == watched.timeout(leader), f"re-armed with {again[2]}s, expected {watched.timeout(leader)}s"
        print(f"\nre-armed: {rearmed[2]}s for a {longer}s lease, {again[2]}s for {LEASE_TTL}s")
        wait_all_on_lease(watched, LEASE_TTL)  # before the next test's switchover
        assert current_leader(watched) is leader
        assert_no_reset(watched)

    def test_a_switchover_closes_the_old_watchdog_and_arms_the_new(
            self, watched: Watched, watcher: WritableWatcher) -> None:
        old = current_leader(watched)
        candidate = watched.cluster.node("node3")  # mode automatic, with a working device
        assert candidate is not old
        started = time.monotonic()
        status, text = rest(old, "POST", "/switchover", {"leader": old.name, "candidate": candidate.name})
        assert status == 200, f"POST /switchover: {status} {text}"
        closed = expect_event(watched, old, "close", 30, since=started)
        armed = expect_event(watched, candidate, "timeout", 30, since=started)
        print(f"\nswitchover {old.name} -> {candidate.name}: {old.name} closed at {closed[0] - started:+.2f}s, "
              f"{candidate.name} armed at {armed[0] - started:+.2f}s")
        assert armed[2] == watched.timeout(candidate)
        assert current_leader(watched) is candidate
        old_kernel = watched.kernel(old)
        assert not old_kernel.armed
        late = [e for e in old_kernel.events() if e[1] == "keepalive" and e[0] > closed[0]]
        assert not late, f"{old.name} fed its watchdog after closing it: {describe(late, started)}"
        assert watched.kernel(candidate).wait_for("keepalive", 10, since=armed[0])
        assert_no_reset(watched)

    def test_sigterm_of_the_leader_closes_its_watchdog(self, watched: Watched, watcher: WritableWatcher) -> None:
        leader = current_leader(watched)
        kernel = watched.kernel(leader)
        assert kernel.armed
        stopped = time.monotonic()
        watched.cluster.stop_agent(leader)  # SIGTERM, and wait for the agent to exit
        # The stand-in may parse the last bytes a moment after the agent exited.
        kernel.wait_for("close", 2, since=stopped)
        closes = [e for e in kernel.events() if e[1] == "close" and e[0] >= stopped]
        assert closes, f"{leader.name} exited without closing its watchdog: {describe(kernel.events()[-8:], stopped)}"
        assert not kernel.armed
        others = [n for n in watched.cluster.nodes if n is not leader]
        wait(watched.cluster, lambda: any(timeouts(watched.kernel(n), stopped) for n in others), 60,
             "another node to arm its watchdog")
        new = current_leader(watched, replicas=1)
        assert new in others and timeouts(watched.kernel(new), stopped)[0] == watched.timeout(new)
        print(f"\nSIGTERM of {leader.name}: closed {closes[0][0] - stopped:.2f}s after the signal; {new.name} leads")
        assert_no_reset(watched)

    def test_a_frozen_leader_is_reset_before_another_node_takes_over(
            self, watched: Watched, watcher: WritableWatcher) -> None:
        leader = current_leader(watched, replicas=1)
        survivor = next(n for n in watched.cluster.nodes if n is not leader and n.agent is not None)
        kernel = watched.kernel(leader)
        timeout = watched.timeout(leader)
        assert kernel.last_timeout == timeout and kernel.armed
        assert leader.agent is not None
        frozen = time.monotonic()
        os.kill(leader.agent.pid, signal.SIGSTOP)
        try:
            reset = expect_event(watched, leader, "reset", timeout + 10, since=frozen)
        finally:
            if leader.agent is not None:  # reaped below; SIGCONT in case the reset never came
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader.agent.pid, signal.SIGCONT)
        writable = watcher.wait(lambda writers: survivor.name in writers, 60, f"{survivor.name} to become writable")
        if leader.agent is not None:
            leader.agent.wait(10)
            leader.agent = None

        events = kernel.events()
        fed = [at for at, kind, _ in events if kind in FEEDS and at < reset[0]]
        late = [at - frozen for at, kind, _ in events if kind == "keepalive" and at > frozen + 0.2]
        print(f"\nfrozen {leader.name}: reset {reset[0] - frozen:.2f}s after the freeze "
              f"({reset[0] - fed[-1]:.2f}s after the last keepalive, timeout {timeout}s); "
              f"{survivor.name} writable {writable - frozen:.2f}s after the freeze")
        assert not late, f"keepalives after the freeze: {late}"
        assert timeout - 0.1 <= reset[0] - fed[-1] <= timeout + 1.0, (
            f"reset {reset[0] - fed[-1]:.2f}s after the last keepalive, timeout {timeout}s")
        assert reset[0] < writable, (f"{survivor.name} was writable {writable - frozen:.2f}s after the freeze, before "
                                     f"the reset at {reset[0] - frozen:.2f}s")
        assert leader.postmaster_pid() is None, "the reset left PostgreSQL running"
        armed = expect_event(watched, survivor, "timeout", 30, since=frozen)
        assert armed[2] == watched.timeout(survivor)
        assert watched.kernel(survivor).resets == 0


# --------------------------------------------------------------------------------------------------
# A member that cannot arm its watchdog in mode required


SPECS_MISSING = {
    "node1": WatchdogSpec("required", -1),
    "node2": WatchdogSpec("required", -1, fifo=False),
    "node3": WatchdogSpec("required", -1),
}


@pytest.fixture(scope="class")
def missing_device_cluster() -> Iterator[Watched]:
    with watched_cluster("it-watchdog-missing", "itwdmissing", SPECS_MISSING) as watching:
        yield watching


class TestMissingDevice:
    @pytest.fixture
    def watched(self, missing_device_cluster: Watched) -> Watched:
        return missing_device_cluster

    @pytest.fixture
    def watcher(self, watched: Watched, request: pytest.FixtureRequest) -> Iterator[WritableWatcher]:
        with WritableWatcher(watched.cluster) as watching:
            yield watching
        print_logs_if_failed(watched.cluster, request)
        assert not watching.violations, "two writable nodes at once:\n" + "\n".join(watching.violations[:20])

    def test_safety_margin_minus_one_arms_the_documented_timeout(self, watched: Watched,
                                                                 watcher: WritableWatcher) -> None:
        leader = current_leader(watched)
        assert leader.name == "node1"
        armed = expect_event(watched, leader, "timeout", 30)
        assert armed[2] == expected_timeout(LEASE_TTL, -1), (
            f"safety_margin -1 armed {armed[2]}s for a {LEASE_TTL}s lease, expected {expected_timeout(LEASE_TTL, -1)}s")

    def test_host_loss_skips_the_member_without_a_watchdog(self, watched: Watched, watcher: WritableWatcher) -> None:
        cluster = watched.cluster
        node1, node2, node3 = (cluster.node(f"node{i}") for i in (1, 2, 3))
        assert current_leader(watched) is node1
        print(f"\nbefore the failover, node2's /patroni has watchdog_failed="
              f"{patroni_status(node2).get('watchdog_failed')}")
        cluster.kill_host(node1)  # returns once the postmaster is dead
        killed = time.monotonic()
        writable = watcher.wait(lambda writers: bool(writers), 90, "a new primary")
        assert watcher.writable() == {node3.name}, f"writable: {sorted(watcher.writable())}"
        armed = expect_event(watched, node3, "timeout", 30, since=killed)  # its value: the test above
        print(f"node3 armed timeout={armed[2]}")
        assert node2.name not in watcher.writable_between(killed, time.monotonic())
        wait(cluster, lambda: patroni_status(node2).get("watchdog_failed") is True, 30,
             "node2's /patroni to show watchdog_failed: true")
        print(f"host loss of node1: node3 writable after {writable - killed:.1f}s")

    def test_the_only_candidate_without_a_watchdog_never_promotes(
            self, watched: Watched, watcher: WritableWatcher) -> None:
        cluster = watched.cluster
        node2, node3 = cluster.node("node2"), cluster.node("node3")
        assert current_leader(watched, replicas=1) is node3  # node1 died in the previous test
        log_start = node2.log_path.stat().st_size
        cluster.kill_host(node3)  # returns once the postmaster is dead
        killed = time.monotonic()

        def said_why() -> bool:
            with node2.log_path.open(errors="replace") as log:
                log.seek(log_start)
                return NOT_PROMOTING in log.read()

        wait(cluster, said_why, LEASE_TTL + 30, f"node2 to log {NOT_PROMOTING!r}")
        wait(cluster, lambda: patroni_status(node2).get("watchdog_failed") is True, 30,
             "node2's /patroni to show watchdog_failed: true")
        # Past the lease and a few races: node2 never accepted a write.
        until = killed + LEASE_TTL + 5
        while time.monotonic() < until:
            assert node2.name not in watcher.writable(), "node2 accepts writes without a watchdog"
            time.sleep(0.2)
        assert node2.name not in watcher.writable_between(killed, time.monotonic())
        watcher.wait(lambda writers: not writers, 5, "no writable node")
        assert patroni_status(node2).get("role") != "primary"
        print(f"\nnode2 alone: logged {NOT_PROMOTING!r}, not writable {time.monotonic() - killed:.0f}s after the kill")
