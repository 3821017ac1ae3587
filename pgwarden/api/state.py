"""What the REST API knows about this node: one immutable value, replaced, never changed.

The agent publishes a fresh `NodeState` after every HA cycle and after every local PostgreSQL probe.
The REST server only ever reads the latest one, so a health check never waits on the HA loop and never
touches the DCS: a slow or frozen loop cannot make HAProxy's checks slow, only stale, and staleness is
bounded by `lock_deadline` (the lock) and `next_cycle_deadline` (/liveness).

The PostgreSQL part is kept fresh on demand: a request that finds it older than `FRESH_PG` asks the
agent for a new probe first (`StateHolder.fresh`; one probe at a time, however many requests wait,
each waiting at most `REFRESH_BOUND`). An agent nobody asks probes only in its HA cycle, and one
checked by load balancers probes at most once per `FRESH_PG`, as Patroni queries per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pgwarden.aio import bounded
from pgwarden.model import ClusterView, LocalPg, Tags

FRESH_PG = 1.0
"""Seconds a probe of PostgreSQL stays fresh enough to answer a request from."""
REFRESH_BOUND = 1.0
"""Seconds a request waits for a new probe; after that it is answered from what is known."""


@dataclass(frozen=True, slots=True)
class DurationSummary:
    """Running totals of one kind of timed operation (a Prometheus summary without quantiles)."""

    count: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0
    last_seconds: float | None = None

    def observe(self, seconds: float) -> DurationSummary:
        """The summary with one more observation (a new value; this one is unchanged)."""
        return DurationSummary(self.count + 1, self.total_seconds + seconds, max(self.max_seconds, seconds), seconds)


@dataclass(frozen=True, slots=True)
class AgentMetrics:
    """pgwarden's own counters and timings, kept by the agent and published with every NodeState.

    Counters count since the agent started (Prometheus handles the reset on restart).
    """

    failovers: int = 0
    """Promotions of this node without a healthy former leader handing over (leader lost)."""
    switchovers: int = 0
    """Planned hand-overs this node took part in (as the old or the new leader)."""
    promotions: int = 0
    demotions: int = 0
    ha_cycles: int = 0
    last_cycle_seconds: float | None = None
    """Wall time the latest HA cycle took (observe, decide, act)."""
    lease_renewals: DurationSummary = DurationSummary()
    """Latency of each leader lock renewal (update_leader) while this node led."""
    leader_since: float | None = None
    """Monotonic instant this node acquired the leader lock; None when it does not hold it."""


@dataclass(frozen=True, slots=True)
class NodeState:
    """Everything the REST API reports, as of the latest publication by the agent.

    Instants named `*_deadline` are on the agent's MONOTONIC clock; `dcs_last_seen` is wall-clock epoch
    seconds because it is only displayed, never compared.
    """

    name: str
    scope: str
    version: str
    """The pgwarden version string (published as `patroni.version` and member `version`)."""
    api_url: str
    conn_url: str
    pg: LocalPg
    """The latest probe of the local PostgreSQL."""
    cluster: ClusterView | None
    """The latest successful DCS read, or None before the first one."""
    dcs_last_seen: float | None
    """Epoch seconds of that read."""
    lock_deadline: float | None
    """Monotonic instant until which this node may act as the leader; None: not the lock holder."""
    tags: Tags
    paused: bool
    maximum_lag_on_failover: int
    ttl: int
    loop_wait: int
    next_cycle_deadline: float
    """Monotonic instant by which the HA loop should have started its next cycle (for /liveness)."""
    pending_restart: bool = False
    standby_cluster: bool = False
    """The adopted configuration has a `standby_cluster` section (never /config's raw value)."""
    role_override: str | None = None
    """A role the agent knows better than the probe, e.g. "demoted" while demoting; None: derive it."""
    pg_state: str | None = None
    """The agent's PostgreSQL lifecycle state (a `PgState` value such as "starting", "stopping",
    "creating replica") when it knows better than the probe; None: derive it from the probe."""
    dcs_reachable: bool = True
    """False when the agent's latest DCS operation failed (Patroni's "DCS unreachable")."""
    watchdog_failed: bool = False
    """True when the watchdog could not be armed: peers then exclude this node from leader races."""
    failsafe_mode_is_active: bool = False
    """The leader keeps running without the DCS because every member confirmed it (contract 2.8)."""
    metrics: AgentMetrics = AgentMetrics()
    """pgwarden's own counters and timings (GET /metrics, `pgwarden_*`)."""
    pg_observed_at: float | None = None
    """Monotonic instant of the probe behind `pg`; None: unknown (then it is never refreshed)."""
    logical_slots_ready: bool | None = None
    """Whether this node's copies of the permanent logical slots are ready (the member JSON's
    `logical_slots_ready`); None: the cluster has no permanent logical slots."""


class StateHolder:
    """The single hand-over point between the agent (writer) and the REST server (reader).

    Both run on the same event loop; `publish` swaps one reference, so a reader always sees one whole
    `NodeState`, never a mix of two.
    """

    def __init__(self, initial: NodeState, wakeup: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._state = initial
        self._wakeup = wakeup
        self._clock = clock
        self._refresher: Callable[[], Awaitable[None]] | None = None
        self._refreshing: asyncio.Future[None] | None = None

    def get(self) -> NodeState:
        """The latest published state."""
        return self._state

    async def fresh(self) -> NodeState:
        """The latest state, after a new probe of PostgreSQL if the published one is older than
        FRESH_PG (and the agent installed a refresher). Never waits longer than REFRESH_BOUND."""
        observed = self._state.pg_observed_at
        if self._refresher is None or observed is None or self._clock() - observed <= FRESH_PG:
            return self._state
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresher())
            self._refreshing.add_done_callback(_retrieve)
        with contextlib.suppress(TimeoutError):
            await bounded(asyncio.shield(self._refreshing), REFRESH_BOUND)
        return self._state

    def publish(self, state: NodeState) -> None:
        """Replace the published state (called by the agent only)."""
        self._state = state

    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None:
        """Install the callback that wakes the HA loop (the agent sets it once its loop exists)."""
        self._wakeup = wakeup

    def set_refresher(self, refresher: Callable[[], Awaitable[None]] | None) -> None:
        """Install the agent's "probe PostgreSQL and publish" coroutine function used by `fresh`."""
        self._refresher = refresher

    def request_wakeup(self) -> None:
        """Ask the HA loop to run a cycle now (after a management request); a no-op without a loop."""
        if self._wakeup is not None:
            self._wakeup()


def _retrieve(future: asyncio.Future[None]) -> None:
    """A refresh that failed is the agent's to log; keep asyncio from reporting it as never retrieved."""
    if not future.cancelled():
        future.exception()
