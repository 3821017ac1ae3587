"""The simulated surroundings of N agents: hosts, clocks, network, etcd, PostgreSQL and clients.

The world holds state and physics (how WAL flows between servers); it makes no HA decision. The
agents (`sim.agent`) act on it only through the operations in `sim.dcs_client` and `sim.pgops`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgwarden.core.snapshot import HaSettings, WatchdogSettings
from pgwarden.model import Tags
from pgwarden.sim.etcd import EtcdStore
from pgwarden.sim.kernel import Clock, Kernel
from pgwarden.sim.postgres import Proc, SimPg, has_timeline, same_prefix, switch_point, truncate
from pgwarden.sim.recorder import Recorder

if TYPE_CHECKING:
    from pgwarden.sim.agent import SimAgent

DCS = "etcd"
WALL_EPOCH = 1_700_000_000.0
"""Wall-clock time (epoch seconds) at global time 0: what `time.time()` would say."""
RUNNING = Proc.RUNNING
DCS_TIMEOUT = 2.0  # pgwarden.dcs.dcs_from_config's default RPC timeout
PEER_TIMEOUT = 2.0  # pgwarden.agent.peers.PEER_TIMEOUT


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What one run simulates. Everything else is drawn from the run's seed."""

    nodes: int = 3
    fault_window: float = 1500.0
    """Faults happen between `warmup` and this instant (global seconds); all have healed by then."""
    warmup: float = 120.0
    settle: float = 240.0
    """After the fault window: how long the cluster has to converge (liveness)."""
    drift: float = 1e-3
    settings: HaSettings = field(default_factory=lambda: HaSettings(ttl=30, loop_wait=10, retry_timeout=10))
    write_rate: float = 200_000.0
    """Bytes of WAL per second that the clients produce on a writable node."""
    keepalive: bool = True
    """Agents refresh their lease apart from the HA cycle (pgwarden); False: the lease is `ttl` and only
    the HA cycle refreshes it (Patroni's behaviour)."""
    fold_keepalives: bool = True
    """Fold runs of keepalive outcomes (exact for the core; False only to test that it is)."""
    virtual_keepalive: bool = True
    """Fast-forward steady keepalives without events (exact; False only to test that it is)."""
    operations: bool = False
    """Also draw what operators do (`sim.faults.OPERATIONS`: switchovers and failovers through the
    `failover` key, scheduled ones too, maintenance mode, restart and reinitialize requests) and give
    members tags (replicatefrom, nofailover, clonefrom). Off by default, so the classic schedules of
    the seeds pinned by regression tests stay what they were; campaigns turn it on."""
    stable_exit: float = 0.0
    """When > 0: end the run early once, after the fault window, the liveness condition (one primary
    holding the key, every other running server streaming from it) has held for this many seconds;
    liveness is then checked at that instant instead of at the end of `settle`. Off by default, so the
    seeds pinned by regression tests keep their traces; campaigns turn it on (it saves most of the
    settle time of a converged run)."""
    fencing: bool = False
    """Also draw, per run, the fencing settings: the watchdog (mode required, every host) and
    `failsafe_mode` in /config, each in about half of the runs (`sim.run._draw_fencing`). Off by default,
    so the seeds pinned by regression tests keep their traces; campaigns turn it on."""
    permanent_slots: tuple[str, ...] = ()
    """Permanent physical slots in /config (`slots`): the primary keeps them, every failover-capable replica
    a copy advanced to the positions the primary publishes. Empty by default, so the seeds pinned by
    regression tests keep their traces."""
    logical_slots: tuple[str, ...] = ()
    """Permanent logical slots in /config (database app, plugin pgoutput; wal_level logical): the primary keeps
    them, a consumer confirms on each, every failover-capable replica copies their state (one restart) and
    advances its copies. Empty by default, so the seeds pinned by regression tests keep their traces."""
    check_every_event: bool = False
    """Run the per-event invariant checks after every event, not only after those that changed a server
    (exact; True only to test that it is)."""

    @property
    def end(self) -> float:
        return self.fault_window + self.settle


@dataclass(slots=True)
class SimNode:
    name: str
    clock: Clock
    pg: SimPg
    host_up: bool = True
    agent: SimAgent | None = None
    slow_promote: float = 0.0
    slow_checkpoint: float = 0.0
    pauses: list[tuple[float, float | None, float]] = field(default_factory=list)
    """Agent pauses: (start, end or None while paused, lease_sent at the start)."""
    lease_sent: float = -1e9
    """Global time at which this node last sent a successful lease refresh for the leader key."""
    tags: Tags = field(default_factory=Tags)
    """The member tags of this node's local configuration."""
    watchdog_timeout: int | None = None
    """The host's watchdog (`sim.fencing`): its timeout while armed, else None."""
    watchdog_expiry: float | None = None
    """Global time at which the armed watchdog resets the host unless fed."""
    watchdog_timer: float | None = None
    """When the pending expiry check of `sim.fencing` runs (None: none pending)."""
    watchdog_resets: int = 0


@dataclass(slots=True)
class World:
    opts: SimOptions
    rng: random.Random
    kernel: Kernel
    recorder: Recorder
    nodes: dict[str, SimNode] = field(default_factory=dict)
    etcd: EtcdStore = field(init=False)
    """The simulated etcd (set right after the world is built: its callbacks refer to the world)."""
    dcs_up: bool = True
    dcs_latency: float = 0.002
    blocked: set[frozenset[str]] = field(default_factory=set)
    peer_loss: float = 0.0
    peer_delay: float = 0.002
    config: dict[str, object] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)
    """The logical consumers' confirmed positions (SimOptions.logical_slots): where each resumes after a
    failover, so a new primary's slot must be at or before it."""
    next_uid: int = 1
    sysid_counter: int = 7_000_000_000_000_000_000
    pgs: list[SimPg] = field(default_factory=list)
    overrides: dict[tuple[int, str], list[object]] = field(default_factory=dict)
    """Stacks of values that overlapping faults gave to one attribute (sim.faults._override)."""
    checker: object = None  # the invariants' incremental state (sim.invariants.Checker)
    steps: Callable[..., Any] | None = None
    """The executor's steps under test (`engine.steps.run` when None; a mutant's in tests)."""
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    """Every host's `watchdog` section in this run (off unless `SimOptions.fencing` drew it)."""
    pg_changed: bool = True
    """Set by every change of a server's process state or WAL lineage (what the invariants checked after
    each event look at): the checker skips events that changed neither."""

    @property
    def now(self) -> float:
        return self.kernel.now

    # -- network ---------------------------------------------------------------------------------------

    def link_ok(self, a: str, b: str) -> bool:
        nodes = self.nodes
        if a == DCS:
            if not self.dcs_up:
                return False
        elif not nodes[a].host_up:
            return False
        if b == DCS:
            if not self.dcs_up:
                return False
        elif not nodes[b].host_up:
            return False
        return not self.blocked or frozenset((a, b)) not in self.blocked

    def dcs_reachable(self, node: str) -> bool:
        return (self.dcs_up and self.nodes[node].host_up
                and (not self.blocked or frozenset((node, DCS)) not in self.blocked))

    def peer_answers(self, asker: str, peer: str) -> bool:
        """A peer's REST API answers when the link works, its agent runs and is not paused."""
        target = self.nodes[peer]
        agent = target.agent
        if agent is None or agent.finished or peer in self.kernel.paused or not self.link_ok(asker, peer):
            return False
        return not (self.peer_loss and self.rng.random() < self.peer_loss)

    # -- the agents' fast-forwarded keepalives (sim.agent.SimAgent.catch_up) ---------------------------

    def catch_up(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is not None and node.agent is not None:
            node.agent.catch_up()

    def end_virtual_keepalives(self) -> None:
        """Before the world changes (a fault): replay every virtual keepalive and tick for real again."""
        for node in self.nodes.values():
            if node.agent is not None:
                node.agent.end_virtual()

    # -- identities ----------------------------------------------------------------------------------------

    def new_uid(self) -> int:
        self.next_uid += 1
        return self.next_uid

    def new_sysid(self) -> str:
        self.sysid_counter += 1
        return str(self.sysid_counter)

    def local_time(self, node: str) -> float:
        clock = self.nodes[node].clock
        return clock.offset + clock.rate * self.kernel.now  # clock.local(now), inlined: called every step

    def wall_time(self, node: str) -> float:
        """A node's wall clock (only compared with instants an operator scheduled): NTP keeps it within
        half a second of the others; the skew is derived from the node's clock, so no draw is added."""
        clock = self.nodes[node].clock
        return WALL_EPOCH + self.kernel.now + (clock.offset % 1.0) - 0.5

    # -- WAL flow ---------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring every server's WAL position up to now: writers first, then replicas (two passes let a
        cascading replica see its upstream's new position)."""
        now = self.kernel.now
        pgs = self.pgs
        cascading = False
        for pg in pgs:
            if pg.writable_since is not None:
                pg.advance(now)
            elif pg.following is not None and pg.following in self.nodes:
                cascading = cascading or self.nodes[pg.following].pg.in_recovery
        for _ in range(2 if cascading else 1):
            for pg in pgs:
                if pg.proc is RUNNING and pg.in_recovery:
                    self._stream(pg, now)

    def _stream(self, pg: SimPg, now: float) -> None:
        upstream = self._upstream_of(pg)
        if upstream is None or not self._pg_would_stream(pg, upstream):
            pg.streaming_from = None
            return
        target = upstream.lsn if upstream.in_recovery else upstream.lsn_at(now - pg.lag_seconds)
        new_lsn = pg.lsn if pg.lsn > target else target
        if pg.lineage is not upstream.lineage:
            self._stream_lineage(pg, upstream, new_lsn, now)
        pg.lsn = new_lsn
        pg.streaming_from = upstream.name

    def _stream_lineage(self, pg: SimPg, upstream: SimPg, new_lsn: int, now: float) -> None:
        """Check that the replica's WAL is a prefix of its upstream's and adopt the upstream's
        history up to `new_lsn` (skipped when both already share the very same lineage object)."""
        if not same_prefix(pg.lineage, upstream.lineage, pg.lsn):
            self.recorder.violation(
                now, "history", f"{pg.name} streams from {upstream.name} although its WAL diverged "
                f"(timeline {pg.timeline} uid {pg.uid} vs timeline {upstream.timeline} uid {upstream.uid})",
                key=("diverged-stream", pg.name, pg.uid, upstream.uid))
        if upstream.timeline > pg.timeline or new_lsn > pg.lsn:
            lineage = truncate(upstream.lineage, new_lsn)
            # Share the upstream's tuple when equal, so the next refresh takes the fast path.
            pg.lineage = upstream.lineage if lineage == upstream.lineage else lineage
            self.pg_changed = True

    def _upstream_of(self, pg: SimPg) -> SimPg | None:
        name = pg.following
        if name is None or name == pg.name or name not in self.nodes:
            return None
        upstream = self.nodes[name].pg
        if not upstream.accepting or upstream.sysid != pg.sysid or not self.link_ok(pg.name, name):
            return None
        return upstream

    @staticmethod
    def _pg_would_stream(pg: SimPg, upstream: SimPg) -> bool:
        """PostgreSQL's own check, by timeline numbers and history-file switch points only."""
        mine, theirs = pg.timeline, upstream.timeline
        if theirs < mine:
            return False
        if theirs == mine:
            return pg.lsn <= upstream.lsn
        if not has_timeline(upstream.lineage, mine):
            return False
        switch = switch_point(upstream.lineage, mine)
        return switch is not None and pg.lsn <= switch

    # -- pause bookkeeping ---------------------------------------------------------------------------------

    def paused_past_lease(self, name: str, settings: HaSettings) -> bool:
        """Did this node's agent stay stopped (stop-the-world) past the instant by which its last lease
        refresh obliged it to stop writes? Such a node may write while another holds the lease: the
        documented exception that only a watchdog fences."""
        self.catch_up(name)
        node = self.nodes[name]
        deadline = settings.lock_deadline(node.lease_sent)
        # The last refresh must predate the pause. It may have been *answered* only after the pause (a
        # keepalive sent just before it: seed 1585), which moves lease_sent on without a new epoch.
        for start, end, _ in node.pauses:
            if node.lease_sent <= start <= deadline <= (self.kernel.now if end is None else end):
                return True
        return False
