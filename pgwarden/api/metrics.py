"""GET /metrics: Patroni's metric names (contract 4.4) plus pgwarden's own, in Prometheus text format.

Every value is a pure function of the latest `NodeState` and the clocks passed in, computed when a
scrape arrives (a custom collector), so a scrape never waits on the HA loop. Each application gets
its own `CollectorRegistry`: the process-global registry would mix two agents in one test process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgwarden.api.health import (
    effective_role,
    holds_lock,
    is_quorum_standby,
    is_sync_standby,
    pg_state,
    replication_state,
)
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.model import PgState, ReplicationState, Role

# prometheus_client is imported on the first scrape, not with the agent: an agent nobody scrapes keeps
# about 1.4 MB less resident.
if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

LABELS = ("scope", "name")

# patroni_postgres_state is the index of the state in this fixed order (append only: dashboards
# compare numbers).
POSTGRES_STATES: tuple[str, ...] = (
    PgState.INITIALIZING, PgState.BOOTSTRAP_FAILED, PgState.CREATING_REPLICA, PgState.RUNNING,
    PgState.STARTING, PgState.START_FAILED, PgState.RESTARTING, PgState.RESTART_FAILED,
    PgState.STOPPING, PgState.STOPPED, PgState.STOP_FAILED, PgState.CRASHED, PgState.REWINDING,
    PgState.UNKNOWN,
)  # fmt: skip

Value = Callable[[NodeState, float], float]
"""(state, monotonic now) -> the metric's value."""


def version_number(version: str) -> int:
    """'4.0.2' -> 40002 (major*10000 + minor*100 + patch); anything unparsable counts as 0."""
    parts: list[int] = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    parts += [0] * (3 - len(parts))
    return parts[0] * 10000 + parts[1] * 100 + parts[2]


def epoch_of(timestamp: str | None) -> float:
    """A PostgreSQL timestamptz text ('2024-01-01 10:00:00.1+00') as epoch seconds; 0 when unknown."""
    if not timestamp:
        return 0.0
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


def _role_is(role: str) -> Value:
    return lambda s, now: _flag(s.pg.accepting and effective_role(s, now) == role)


def _replica_value(read: Callable[[NodeState], Any]) -> Value:
    """A standby-only number (0 on a primary or when unknown)."""
    return lambda s, now: float(read(s) or 0) if s.pg.in_recovery else 0.0


def _failover_priority(s: NodeState, now: float) -> float:
    return 0.0 if s.tags.nofailover else float(s.tags.failover_priority)


def _failsafe_enabled(s: NodeState, now: float) -> float:
    return _flag(s.cluster is not None and s.cluster.dynamic.failsafe_mode)


def _failsafe_member(s: NodeState, now: float) -> float:
    failsafe = s.cluster.failsafe if s.cluster is not None else None
    return _flag(failsafe is not None and s.name in failsafe)


def _state_index(s: NodeState, now: float) -> float:
    state = pg_state(s)
    return float(POSTGRES_STATES.index(state)) if state in POSTGRES_STATES else float(len(POSTGRES_STATES))


PATRONI_GAUGES: tuple[tuple[str, str, Value], ...] = (
    ("patroni_version", "Patroni-compatible version number (major*10000+minor*100+patch).",
     lambda s, now: float(version_number(s.version))),
    ("patroni_postgres_running", "1 if PostgreSQL is running, 0 otherwise.",
     lambda s, now: _flag(pg_state(s) == PgState.RUNNING)),
    ("patroni_postmaster_start_time", "Epoch seconds of the postmaster start (0 when not running).",
     lambda s, now: epoch_of(s.pg.postmaster_start_time) if s.pg.accepting else 0.0),
    ("patroni_primary", "1 if this node runs as the primary, 0 otherwise.", _role_is(Role.PRIMARY)),
    ("patroni_xlog_location", "Current WAL location (bytes) on the primary, 0 otherwise.",
     lambda s, now: float(s.pg.wal_lsn or 0) if s.pg.in_recovery is False else 0.0),
    ("patroni_standby_leader", "1 if this node is the standby leader, 0 otherwise.",
     _role_is(Role.STANDBY_LEADER)),
    ("patroni_replica", "1 if this node runs as a replica, 0 otherwise.", _role_is(Role.REPLICA)),
    ("patroni_sync_standby", "1 if this node is a synchronous standby, 0 otherwise.",
     lambda s, now: _flag(is_sync_standby(s))),
    ("patroni_quorum_standby", "1 if this node is a quorum standby, 0 otherwise.",
     lambda s, now: _flag(is_quorum_standby(s))),
    ("patroni_xlog_received_location", "Received WAL location (bytes) on a standby.",
     _replica_value(lambda s: s.pg.receive_lsn)),
    ("patroni_xlog_replayed_location", "Replayed WAL location (bytes) on a standby.",
     _replica_value(lambda s: s.pg.replay_lsn)),
    ("patroni_xlog_replayed_timestamp", "Epoch seconds of the last replayed transaction on a standby.",
     _replica_value(lambda s: epoch_of(s.pg.replayed_timestamp))),
    ("patroni_xlog_paused", "1 if WAL replay is paused, 0 otherwise.",
     lambda s, now: _flag(bool(s.pg.in_recovery) and s.pg.replay_paused)),
    ("patroni_postgres_streaming", "1 if the standby streams from its upstream, 0 otherwise.",
     lambda s, now: _flag(replication_state(s) == ReplicationState.STREAMING)),
    ("patroni_postgres_in_archive_recovery", "1 if the standby replays from the archive only, 0 otherwise.",
     lambda s, now: _flag(replication_state(s) == ReplicationState.IN_ARCHIVE_RECOVERY)),
    ("patroni_postgres_server_version", "PostgreSQL version number (e.g. 150018).",
     lambda s, now: float(s.pg.server_version or 0)),
    ("patroni_cluster_unlocked", "1 if the cluster has no leader lock, 0 otherwise.",
     lambda s, now: _flag(s.cluster is not None and s.cluster.leader is None)),
    ("patroni_failsafe_mode_is_active", "1 if failsafe mode keeps the leader running without the DCS.",
     lambda s, now: _flag(s.failsafe_mode_is_active)),
    ("patroni_failsafe_mode_enabled", "1 if failsafe_mode is enabled in /config, 0 otherwise.", _failsafe_enabled),
    ("patroni_failsafe_member", "1 if this node is listed in /failsafe (may take part in failsafe mode), 0 otherwise.",
     _failsafe_member),
    ("patroni_postgres_timeline", "PostgreSQL timeline (0 when unknown).",
     lambda s, now: float(s.pg.timeline or 0) if s.pg.accepting else 0.0),
    ("patroni_postgres_state", "PostgreSQL state as an index: " + ", ".join(
        f"{i}={state}" for i, state in enumerate(POSTGRES_STATES)) + ".", _state_index),
    ("patroni_dcs_last_seen", "Epoch seconds of the last successful DCS read (0 when none).",
     lambda s, now: float(int(s.dcs_last_seen or 0))),
    ("patroni_pending_restart", "1 if a parameter change waits for a restart, 0 otherwise.",
     lambda s, now: _flag(s.pending_restart or s.pg.pending_restart)),
    ("patroni_is_paused", "1 if the cluster is in maintenance (pause) mode, 0 otherwise.",
     lambda s, now: _flag(s.paused)),
    ("patroni_failover_priority", "This node's failover priority (0: never promoted).", _failover_priority),
)  # fmt: skip

PGWARDEN_COUNTERS: tuple[tuple[str, str, Callable[[NodeState], int]], ...] = (
    ("pgwarden_failovers", "Failovers this node performed (promoted without a handing-over leader).",
     lambda s: s.metrics.failovers),
    ("pgwarden_switchovers", "Switchovers this node took part in as the old or the new leader.",
     lambda s: s.metrics.switchovers),
    ("pgwarden_promotions", "Promotions of the local PostgreSQL.", lambda s: s.metrics.promotions),
    ("pgwarden_demotions", "Demotions of the local PostgreSQL.", lambda s: s.metrics.demotions),
    ("pgwarden_ha_cycles", "HA loop cycles run.", lambda s: s.metrics.ha_cycles),
)  # fmt: skip


def _leader_lock_held(s: NodeState, now: float) -> float:
    since = s.metrics.leader_since
    return max(0.0, now - since) if since is not None and holds_lock(s, now) else 0.0


PGWARDEN_GAUGES: tuple[tuple[str, str, Value], ...] = (
    ("pgwarden_ha_cycle_duration_seconds", "Duration of the latest HA cycle.",
     lambda s, now: s.metrics.last_cycle_seconds or 0.0),
    ("pgwarden_leader_lock_held_seconds", "Seconds this node has held the leader lock (0: not the leader).",
     _leader_lock_held),
    ("pgwarden_leader_lock_remaining_seconds", "Seconds until this node's leader lease lapses (0: none).",
     lambda s, now: max(0.0, s.lock_deadline - now) if s.lock_deadline is not None else 0.0),
    ("pgwarden_lease_renew_max_seconds", "Slowest leader lock renewal so far.",
     lambda s, now: s.metrics.lease_renewals.max_seconds),
    ("pgwarden_dcs_reachable", "1 if the latest DCS operation succeeded, 0 otherwise.",
     lambda s, now: _flag(s.dcs_reachable)),
)  # fmt: skip


def node_metrics(state: NodeState, now: float) -> list[Metric]:
    """Every metric family for `state` at monotonic instant `now` (pure)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    labels = [state.scope, state.name]
    families: list[Metric] = []
    for name, documentation, gauge_value in PATRONI_GAUGES + PGWARDEN_GAUGES:
        gauge = GaugeMetricFamily(name, documentation, labels=LABELS)
        gauge.add_metric(labels, gauge_value(state, now))
        families.append(gauge)
    for name, documentation, count in PGWARDEN_COUNTERS:
        counter = CounterMetricFamily(name, documentation, labels=LABELS)
        counter.add_metric(labels, float(count(state)))
        families.append(counter)
    families.append(_slot_metrics(state, labels))
    if state.logical_slots_ready is not None:  # only in clusters with permanent logical slots
        ready = GaugeMetricFamily("pgwarden_logical_slots_ready",
                                  "1 if this node holds ready copies of every permanent logical slot (it may "
                                  "be promoted without a CDC consumer losing changes), 0 otherwise.",
                                  labels=LABELS)
        ready.add_metric(labels, _flag(state.logical_slots_ready))
        families.append(ready)
    renewals = state.metrics.lease_renewals
    summary = SummaryMetricFamily("pgwarden_lease_renew_seconds", "Latency of leader lock renewals.", labels=LABELS)
    summary.add_metric(labels, count_value=renewals.count, sum_value=renewals.total_seconds)
    families.append(summary)
    return families


def _slot_metrics(state: NodeState, labels: list[str]) -> Metric:
    """WAL each slot (physical or logical) keeps on this node: from its restart_lsn to the primary's WAL
    position (to the replayed position on a standby, where the copies of the permanent slots keep WAL too)."""
    from prometheus_client.core import GaugeMetricFamily

    gauge = GaugeMetricFamily("pgwarden_replication_slot_retained_bytes",
                              "Bytes of WAL a replication slot (physical or logical) keeps on this node.",
                              labels=(*LABELS, "slot"))
    pg = state.pg
    reference = pg.wal_lsn if pg.in_recovery is False else pg.replay_lsn
    positions = [*pg.slot_lsns, *((slot.name, slot.restart_lsn) for slot in pg.logical_slots)]
    for slot, lsn in positions:
        if reference is not None and lsn is not None:
            gauge.add_metric([*labels, slot], float(max(0, reference - lsn)))
    return gauge


class _NodeStateCollector:  # a prometheus_client Collector (duck-typed: registries only call `collect`)
    def __init__(self, holder: StateHolder, clock: Callable[[], float]) -> None:
        self._holder = holder
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        return iter(node_metrics(self._holder.get(), self._clock()))


def metrics_registry(holder: StateHolder, clock: Callable[[], float]) -> CollectorRegistry:
    """A private registry whose only collector renders `holder`'s latest state at scrape time."""
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeStateCollector(holder, clock))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) of a scrape in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
