"""GET /metrics: every contract metric name, labels, values from NodeState, and the text format."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from aiohttp.test_utils import RawTestServer, TestClient
from prometheus_client.parser import text_string_to_metric_families

from pgwarden.api.control import AgentControl
from pgwarden.api.management import ManagementSettings, management_routes
from pgwarden.api.metrics import POSTGRES_STATES, epoch_of, node_metrics, version_number
from pgwarden.api.server import build_app
from pgwarden.api.state import AgentMetrics, DurationSummary, NodeState, StateHolder
from pgwarden.model import (
    ClusterView,
    DataDirState,
    LeaderKey,
    LocalPg,
    Member,
    PgState,
    SyncState,
    Tags,
    Versioned,
    WalReceiver,
)

NOW = 1000.0
CONTRACT_NAMES = [
    "patroni_version",
    "patroni_postgres_running",
    "patroni_postmaster_start_time",
    "patroni_primary",
    "patroni_xlog_location",
    "patroni_standby_leader",
    "patroni_replica",
    "patroni_sync_standby",
    "patroni_quorum_standby",
    "patroni_xlog_received_location",
    "patroni_xlog_replayed_location",
    "patroni_xlog_replayed_timestamp",
    "patroni_xlog_paused",
    "patroni_postgres_streaming",
    "patroni_postgres_in_archive_recovery",
    "patroni_postgres_server_version",
    "patroni_cluster_unlocked",
    "patroni_failsafe_mode_is_active",
    "patroni_failsafe_mode_enabled",
    "patroni_postgres_timeline",
    "patroni_postgres_state",
    "patroni_dcs_last_seen",
    "patroni_pending_restart",
    "patroni_is_paused",
    "patroni_failover_priority",
]

PRIMARY = NodeState(
    name="n1", scope="demo", version="1.2.3", api_url="http://127.0.0.1:8008/patroni",
    conn_url="postgres://127.0.0.1:5432/postgres",
    pg=LocalPg(DataDirState.VALID, running=True, accepting=True, in_recovery=False, wal_lsn=5000, timeline=3,
               server_version=150018, postmaster_start_time="2024-01-01 10:00:00.5+00"),
    cluster=ClusterView("demo", leader=LeaderKey("n1"), members=(Member("n1", role="primary"),),
                        config=Versioned({"failsafe_mode": True}, 1)),
    dcs_last_seen=1_700_000_000.7, lock_deadline=NOW + 20, tags=Tags(failover_priority=3), paused=False,
    maximum_lag_on_failover=1 << 20, ttl=30, loop_wait=10, next_cycle_deadline=NOW + 10,
    metrics=AgentMetrics(failovers=1, switchovers=2, promotions=3, demotions=4, ha_cycles=50,
                         last_cycle_seconds=0.25, lease_renewals=DurationSummary(10, 0.5, 0.2, 0.01),
                         leader_since=NOW - 42),
)  # fmt: skip

REPLICA = dataclasses.replace(
    PRIMARY, name="n2", lock_deadline=None, paused=True, pending_restart=True, tags=Tags(nofailover=True),
    pg=LocalPg(DataDirState.VALID, running=True, accepting=True, in_recovery=True, receive_lsn=4000,
               replay_lsn=3900, replay_paused=True, replayed_timestamp="2024-01-01 11:00:00+00", timeline=3,
               wal_receiver=WalReceiver("streaming")),
    cluster=ClusterView("demo", leader=LeaderKey("n1"), members=(), sync=SyncState("n1", ("n2",)),
                        config=Versioned({"synchronous_mode": True}, 1)),
    metrics=AgentMetrics(),
)  # fmt: skip


def _values(state: NodeState) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in node_metrics(state, NOW):
        for sample in family.samples:
            assert sample.labels == {"scope": "demo", "name": state.name}
            out[sample.name] = sample.value
    return out


def test_every_contract_metric_name_is_present_with_scope_and_name_labels() -> None:
    names = {family.name for family in node_metrics(PRIMARY, NOW)}
    assert set(CONTRACT_NAMES) <= names
    assert "patroni_master" not in names  # removed in Patroni 4.0


def test_primary_values() -> None:
    v = _values(PRIMARY)
    assert v["patroni_version"] == 10203
    assert (v["patroni_primary"], v["patroni_replica"], v["patroni_standby_leader"]) == (1, 0, 0)
    assert v["patroni_xlog_location"] == 5000
    assert v["patroni_postgres_running"] == 1
    assert v["patroni_postmaster_start_time"] == 1704103200.5
    assert v["patroni_postgres_server_version"] == 150018
    assert v["patroni_postgres_timeline"] == 3
    assert v["patroni_postgres_state"] == POSTGRES_STATES.index(PgState.RUNNING)
    assert v["patroni_dcs_last_seen"] == 1_700_000_000
    assert v["patroni_failover_priority"] == 3
    assert (v["patroni_failsafe_mode_enabled"], v["patroni_cluster_unlocked"], v["patroni_is_paused"]) == (1, 0, 0)
    assert v["pgwarden_failovers_total"] == 1 and v["pgwarden_demotions_total"] == 4
    assert v["pgwarden_leader_lock_held_seconds"] == 42
    assert v["pgwarden_leader_lock_remaining_seconds"] == 20
    assert (v["pgwarden_lease_renew_seconds_count"], v["pgwarden_lease_renew_seconds_sum"]) == (10, 0.5)


def test_replica_values() -> None:
    v = _values(REPLICA)
    assert (v["patroni_primary"], v["patroni_replica"], v["patroni_xlog_location"]) == (0, 1, 0)
    assert (v["patroni_xlog_received_location"], v["patroni_xlog_replayed_location"]) == (4000, 3900)
    assert v["patroni_xlog_replayed_timestamp"] == 1704106800
    assert (v["patroni_xlog_paused"], v["patroni_postgres_streaming"], v["patroni_sync_standby"]) == (1, 1, 1)
    assert (v["patroni_is_paused"], v["patroni_pending_restart"], v["patroni_failover_priority"]) == (1, 1, 0)
    assert v["pgwarden_leader_lock_held_seconds"] == 0


def test_stopped_postgres() -> None:
    stopped = dataclasses.replace(REPLICA, pg=LocalPg(DataDirState.VALID, cluster_state="shut down"))
    v = _values(stopped)
    assert (v["patroni_postgres_running"], v["patroni_replica"], v["patroni_postgres_timeline"]) == (0, 0, 0)
    assert v["patroni_postgres_state"] == POSTGRES_STATES.index(PgState.STOPPED)


def test_helpers() -> None:
    assert (version_number("4.0.2"), version_number("0.1.0.dev3"), version_number("x")) == (40002, 100, 0)
    assert (epoch_of(None), epoch_of("garbage")) == (0.0, 0.0)


async def test_scrape_through_the_server_in_text_format() -> None:
    holder = StateHolder(PRIMARY)
    control = cast(AgentControl, object())  # /metrics never touches the agent
    routes = management_routes(control, ManagementSettings(monotonic=lambda: NOW))
    app = build_app(holder, routes=routes, clock=lambda: NOW)
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
        holder.publish(REPLICA)
        second = await (await client.get("/metrics")).text()
    families: dict[str, Any] = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(CONTRACT_NAMES) <= families.keys()
    assert families["patroni_primary"].samples[0].value == 1
    assert families["pgwarden_switchovers"].type == "counter"
    assert 'patroni_replica{name="n2",scope="demo"} 1.0' in second
