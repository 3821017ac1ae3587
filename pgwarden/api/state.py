"""What the REST API knows about this node: one immutable value, replaced, never changed.

The agent publishes a fresh `NodeState` after every HA cycle and after every local PostgreSQL probe
(about once a second). The REST server only ever reads the latest one, so a health check never waits on
the HA loop and never touches the DCS: a slow or frozen loop cannot make HAProxy's checks slow, only
stale, and staleness is bounded by `lock_deadline` (the lock) and `next_cycle_deadline` (/liveness).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pgwarden.model import ClusterView, LocalPg, Tags


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
    role_override: str | None = None
    """A role the agent knows better than the probe, e.g. "demoted" while demoting; None: derive it."""
    pg_state: str | None = None
    """The agent's PostgreSQL lifecycle state (a `PgState` value such as "starting", "stopping",
    "creating replica") when it knows better than the probe; None: derive it from the probe."""
    dcs_reachable: bool = True
    """False when the agent's latest DCS operation failed (Patroni's "DCS unreachable")."""
    watchdog_failed: bool = False
    """True when the watchdog could not be armed: peers then exclude this node from leader races."""


class StateHolder:
    """The single hand-over point between the agent (writer) and the REST server (reader).

    Both run on the same event loop; `publish` swaps one reference, so a reader always sees one whole
    `NodeState`, never a mix of two.
    """

    def __init__(self, initial: NodeState, wakeup: Callable[[], None] | None = None) -> None:
        self._state = initial
        self._wakeup = wakeup

    def get(self) -> NodeState:
        """The latest published state."""
        return self._state

    def publish(self, state: NodeState) -> None:
        """Replace the published state (called by the agent only)."""
        self._state = state

    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None:
        """Install the callback that wakes the HA loop (the agent sets it once its loop exists)."""
        self._wakeup = wakeup

    def request_wakeup(self) -> None:
        """Ask the HA loop to run a cycle now (after a management request); a no-op without a loop."""
        if self._wakeup is not None:
            self._wakeup()
