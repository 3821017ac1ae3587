"""Table-driven tests of pgwarden.api.health: status codes and the status JSON, no server involved."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pgwarden.agent.member import member_json
from pgwarden.api.health import BadQuery, effective_role, evaluate, parse_query, parse_size, status_json
from pgwarden.api.state import NodeState
from pgwarden.model import (
    ClusterStatus,
    ClusterView,
    DataDirState,
    LeaderKey,
    LocalPg,
    Member,
    ReplicationRow,
    SyncState,
    Tags,
    Versioned,
    WalReceiver,
)

NOW = 1000.0
MB = 1024 * 1024
LEADER_LSN = 0x5000000

# ---------------------------------------------------------------------------------------------------
# Builders: a healthy default for every field, so each case names only what matters.

PRIMARY_PG = LocalPg(
    data_dir=DataDirState.VALID,
    sysid="7300000000000000001",
    cluster_state="in production",
    running=True,
    accepting=True,
    in_recovery=False,
    timeline=2,
    wal_lsn=LEADER_LSN,
    server_version=150018,
    postmaster_start_time="2024-01-01 00:00:00+00",
)

REPLICA_PG = dataclasses.replace(
    PRIMARY_PG,
    cluster_state="in archive recovery",
    in_recovery=True,
    wal_lsn=None,
    receive_lsn=LEADER_LSN,
    replay_lsn=LEADER_LSN - MB,  # 1 MB behind
    wal_receiver=WalReceiver(status="streaming", sender_host="10.0.0.1", latest_end_lsn=LEADER_LSN),
)

DEAD_PG = dataclasses.replace(PRIMARY_PG, running=False, accepting=False, in_recovery=None, wal_lsn=None)


def cluster(
    leader: str | None = "n1",
    config: dict[str, Any] | None = None,
    sync: SyncState | None = None,
    optime: int | None = LEADER_LSN,
) -> ClusterView:
    return ClusterView(
        scope="demo",
        initialize="7300000000000000001",
        config=Versioned(config or {}, 1),
        leader=LeaderKey(leader) if leader else None,
        members=(Member("n1"), Member("n2")),
        status=ClusterStatus(optime=optime),
        sync=sync,
    )


def node(pg: LocalPg = PRIMARY_PG, *, name: str = "n1", lock: bool = True, **overrides: Any) -> NodeState:
    """n1 by default: the lock holder of a plain cluster, with a running primary."""
    base = NodeState(
        name=name,
        scope="demo",
        version="0.1.0",
        api_url=f"http://127.0.0.1:8008/{name}",
        conn_url="postgres://127.0.0.1:5432/postgres",
        pg=pg,
        cluster=cluster(),
        dcs_last_seen=1_700_000_000.5,
        lock_deadline=NOW + 20 if lock else None,
        tags=Tags(),
        paused=False,
        maximum_lag_on_failover=MB,
        ttl=30,
        loop_wait=10,
        next_cycle_deadline=NOW + 10,
    )
    return dataclasses.replace(base, **overrides)


def replica(pg: LocalPg = REPLICA_PG, **overrides: Any) -> NodeState:
    """n2: a streaming replica of n1, 1 MB behind on replay."""
    return node(pg, name="n2", lock=False, **overrides)


def standby_leader(pg: LocalPg = REPLICA_PG, **overrides: Any) -> NodeState:
    """n1 holding the lock of a standby cluster, replicating from a remote primary."""
    return node(pg, cluster=cluster(config={"standby_cluster": {"host": "remote"}}), standby_cluster=True,
                **overrides)


def not_streaming(receiver: WalReceiver | None) -> LocalPg:
    return dataclasses.replace(REPLICA_PG, wal_receiver=receiver)


SYNC_N2 = SyncState(leader="n1", sync_standby=("n2",))

# ---------------------------------------------------------------------------------------------------
# Status codes

CASES: list[tuple[str, NodeState, str, dict[str, str], int]] = [
    # primary paths: lock held AND PostgreSQL accepts writes right now
    ("primary root", node(), "/", {}, 200),
    ("primary", node(), "/primary", {}, 200),
    ("primary read-write", node(), "/read-write", {}, 200),
    ("primary legacy master", node(), "/master", {}, 200),
    ("primary trailing slash", node(), "/primary/", {}, 200),
    ("primary leader", node(), "/leader", {}, 200),
    ("primary read-only", node(), "/read-only", {}, 200),
    ("primary read-only-sync", node(), "/read-only-sync", {}, 200),
    ("primary read-only-quorum", node(), "/read-only-quorum", {}, 200),
    ("primary is no replica", node(), "/replica", {}, 503),
    ("primary is no standby leader", node(), "/standby-leader", {}, 503),
    ("primary health", node(), "/health", {}, 200),
    ("primary tag filters ignored", node(), "/primary", {"tag_zone": "nowhere"}, 200),
    ("lock held but postmaster dead: primary", node(DEAD_PG), "/primary", {}, 503),
    ("lock held but postmaster dead: leader", node(DEAD_PG), "/leader", {}, 503),
    ("lock held but postmaster dead: health", node(DEAD_PG), "/health", {}, 503),
    ("lock held, still in recovery (promoting)", node(REPLICA_PG), "/primary", {}, 503),
    ("lock expired", node(lock_deadline=NOW), "/primary", {}, 503),
    ("lock expired: leader", node(lock_deadline=NOW - 1), "/leader", {}, 503),
    ("primary without the lock", node(lock=False), "/primary", {}, 503),
    ("primary without the lock: leader", node(lock=False), "/leader", {}, 503),
    ("demoting", node(role_override="demoted"), "/primary", {}, 503),
    ("demoting: leader", node(role_override="demoted"), "/leader", {}, 503),
    ("paused, DCS down, primary", node(lock=False, paused=True, dcs_reachable=False), "/primary", {}, 200),
    ("paused, DCS down, leader", node(lock=False, paused=True, dcs_reachable=False), "/leader", {}, 200),
    ("paused, DCS up, no lock", node(lock=False, paused=True), "/leader", {}, 503),
    ("not paused, DCS down, no lock", node(lock=False, dcs_reachable=False), "/leader", {}, 503),
    # standby cluster
    ("standby leader", standby_leader(), "/standby-leader", {}, 200),
    ("standby leader underscore", standby_leader(), "/standby_leader", {}, 200),
    ("standby leader: leader", standby_leader(), "/leader", {}, 200),
    ("standby leader: read-only", standby_leader(), "/read-only", {}, 200),
    ("standby leader is no primary", standby_leader(), "/primary", {}, 503),
    ("standby leader is no replica", standby_leader(), "/replica", {}, 503),
    ("standby leader, postmaster dead", standby_leader(pg=DEAD_PG), "/standby-leader", {}, 503),
    ("standby cluster, no lock", standby_leader(lock_deadline=None), "/standby-leader", {}, 503),
    # replicas: only a running replica that really streams
    ("replica", replica(), "/replica", {}, 200),
    ("replica read-only", replica(), "/read-only", {}, 200),
    ("replica async", replica(), "/async", {}, 200),
    ("replica asynchronous", replica(), "/asynchronous", {}, 200),
    ("replica is no primary", replica(), "/primary", {}, 503),
    ("replica is no leader", replica(), "/leader", {}, 503),
    ("replica is no sync", replica(), "/sync", {}, 503),
    ("replica health", replica(), "/health", {}, 200),
    ("replica running, no receiver", replica(not_streaming(None)), "/replica", {}, 503),
    ("replica running, receiver waiting", replica(not_streaming(WalReceiver("waiting"))), "/replica", {}, 503),
    ("replica not streaming: read-only", replica(not_streaming(None)), "/read-only", {}, 503),
    ("replica not streaming: health", replica(not_streaming(None)), "/health", {}, 200),
    ("replica postmaster dead", replica(DEAD_PG), "/replica", {}, 503),
    ("replica noloadbalance", replica(tags=Tags(noloadbalance=True)), "/replica", {}, 503),
    ("replica demoted override", replica(role_override="demoted"), "/replica", {}, 503),
    # ?lag= (the replica is 1 MB behind on replay)
    ("lag within 16MB", replica(), "/replica", {"lag": "16MB"}, 200),
    ("lag within 1MB exactly", replica(), "/replica", {"lag": "1MB"}, 200),
    ("lag beyond 16kB", replica(), "/replica", {"lag": "16kB"}, 503),
    ("lag within bytes", replica(), "/replica", {"lag": str(2 * MB)}, 200),
    ("lag beyond bytes", replica(), "/replica", {"lag": str(MB - 1)}, 503),
    ("lag within 1GB", replica(), "/replica", {"lag": "1GB"}, 200),
    (
        "lag vs /status optime ahead of the receiver",
        replica(cluster=cluster(optime=LEADER_LSN + 10 * MB)),
        "/replica",
        {"lag": "10MB"},
        503,
    ),
    (
        "lag unknown: no replay position",
        replica(dataclasses.replace(REPLICA_PG, replay_lsn=None)),
        "/replica",
        {"lag": "1GB"},
        503,
    ),
    ("lag on async", replica(), "/async", {"lag": "16kB"}, 503),
    # ?replication_state=
    ("replication_state streaming", replica(), "/replica", {"replication_state": "streaming"}, 200),
    ("replication_state other", replica(), "/replica", {"replication_state": "in archive recovery"}, 503),
    # ?tag_<k>=<v>
    ("tag custom match", replica(tags=Tags(custom={"zone": "a"})), "/replica", {"tag_zone": "a"}, 200),
    ("tag custom mismatch", replica(tags=Tags(custom={"zone": "a"})), "/replica", {"tag_zone": "b"}, 503),
    ("tag missing", replica(), "/replica", {"tag_zone": "a"}, 503),
    ("tag default bool", replica(), "/replica", {"tag_nofailover": "false"}, 200),
    ("tag bool any case", replica(tags=Tags(nofailover=True)), "/replica", {"tag_nofailover": "True"}, 200),
    ("tag bool mismatch", replica(), "/replica", {"tag_nofailover": "true"}, 503),
    ("tag int", replica(tags=Tags(failover_priority=3)), "/replica", {"tag_failover_priority": "3"}, 200),
    (
        "two tags, one mismatch",
        replica(tags=Tags(custom={"zone": "a", "dc": "x"})),
        "/replica",
        {"tag_zone": "a", "tag_dc": "y"},
        503,
    ),
    # synchronous / quorum
    ("sync standby: sync", replica(cluster=cluster(sync=SYNC_N2)), "/sync", {}, 200),
    ("sync standby: synchronous", replica(cluster=cluster(sync=SYNC_N2)), "/synchronous", {}, 200),
    ("sync standby: read-only-sync", replica(cluster=cluster(sync=SYNC_N2)), "/read-only-sync", {}, 200),
    ("sync standby: read-only-synchronous", replica(cluster=cluster(sync=SYNC_N2)), "/read-only-synchronous", {}, 200),
    ("sync standby is not async", replica(cluster=cluster(sync=SYNC_N2)), "/async", {}, 503),
    ("sync standby is not quorum", replica(cluster=cluster(sync=SYNC_N2)), "/quorum", {}, 503),
    ("async replica: read-only-sync", replica(), "/read-only-sync", {}, 503),
    (
        "sync standby, DCS unreachable",
        replica(cluster=cluster(sync=SYNC_N2), dcs_reachable=False),
        "/sync",
        {},
        503,
    ),
    (
        "sync key of a former leader",
        replica(cluster=cluster(leader="n3", sync=SYNC_N2)),
        "/sync",
        {},
        503,
    ),
    (
        "sync standby not streaming",
        replica(not_streaming(None), cluster=cluster(sync=SYNC_N2)),
        "/sync",
        {},
        503,
    ),
    (
        "quorum standby: quorum",
        replica(cluster=cluster(sync=SYNC_N2, config={"synchronous_mode": "quorum"})),
        "/quorum",
        {},
        200,
    ),
    (
        "quorum standby: read-only-quorum",
        replica(cluster=cluster(sync=SYNC_N2, config={"synchronous_mode": "quorum"})),
        "/read-only-quorum",
        {},
        200,
    ),
    (
        "quorum standby is not sync",
        replica(cluster=cluster(sync=SYNC_N2, config={"synchronous_mode": "quorum"})),
        "/sync",
        {},
        503,
    ),
    (
        "quorum standby is not async",
        replica(cluster=cluster(sync=SYNC_N2, config={"synchronous_mode": "quorum"})),
        "/async",
        {},
        503,
    ),
    # /health
    ("health, postgres stopped", node(DEAD_PG, lock=False), "/health", {}, 503),
    # /liveness: leader gets ttl of slack, others 2*ttl
    ("liveness on time", node(), "/liveness", {}, 200),
    ("liveness leader late within ttl", node(next_cycle_deadline=NOW - 29), "/liveness", {}, 200),
    ("liveness leader late beyond ttl", node(next_cycle_deadline=NOW - 31), "/liveness", {}, 503),
    ("liveness replica late within 2*ttl", replica(next_cycle_deadline=NOW - 59), "/liveness", {}, 200),
    ("liveness replica late beyond 2*ttl", replica(next_cycle_deadline=NOW - 61), "/liveness", {}, 503),
    ("liveness paused", replica(next_cycle_deadline=NOW - 1000, paused=True), "/liveness", {}, 200),
    # /readiness
    ("readiness leader", node(), "/readiness", {}, 200),
    ("readiness leader, postmaster dead", node(DEAD_PG), "/readiness", {}, 503),
    ("readiness replica within max lag", replica(), "/readiness", {}, 200),
    ("readiness replica beyond max lag", replica(maximum_lag_on_failover=MB - 1), "/readiness", {}, 503),
    ("readiness ?lag= overrides", replica(), "/readiness", {"lag": "512kB"}, 503),
    ("readiness mode=write", replica(), "/readiness", {"lag": "512kB", "mode": "write"}, 200),
    ("readiness mode=apply", replica(), "/readiness", {"lag": "512kB", "mode": "apply"}, 503),
    ("readiness replica not streaming", replica(not_streaming(None)), "/readiness", {}, 503),
    ("readiness noloadbalance still ready", replica(tags=Tags(noloadbalance=True)), "/readiness", {}, 200),
    # anything else
    ("unknown path", node(), "/nonsense", {}, 503),
    ("unknown path on a replica", replica(), "/replicas-of-nothing", {}, 503),
]


@pytest.mark.parametrize(("state", "path", "query", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_status_code(state: NodeState, path: str, query: dict[str, str], expected: int) -> None:
    assert evaluate(path, state, NOW, query).status == expected


def test_a_streaming_replica_knows_its_lag_before_the_dcs_or_the_sender_tells_it() -> None:
    """Issue 11: on a fresh cluster, /replica?lag=1MB answered 503 where /replica answered 200: with no
    optime in the replica's view of the DCS and the sender's first message not in yet (latest_end_lsn
    NULL), the lag was unknown. The receiver's own flushed position is a position the sender had."""
    fresh = dataclasses.replace(REPLICA_PG, receive_lsn=LEADER_LSN, replay_lsn=LEADER_LSN - MB // 2,
                                wal_receiver=WalReceiver(status="streaming", sender_host="10.0.0.1"))
    no_optime = cluster(optime=None)
    assert evaluate("/replica", replica(fresh, cluster=no_optime), NOW, {}).status == 200
    assert evaluate("/replica", replica(fresh, cluster=no_optime), NOW, {"lag": "1MB"}).status == 200
    assert evaluate("/readiness", replica(fresh, cluster=no_optime), NOW, {}).status == 200
    # The replay backlog still counts, and a known optime further ahead still wins.
    assert evaluate("/replica", replica(fresh, cluster=no_optime), NOW, {"lag": "256kB"}).status == 503
    ahead = cluster(optime=LEADER_LSN + 10 * MB)
    assert evaluate("/replica", replica(fresh, cluster=ahead), NOW, {"lag": "1MB"}).status == 503
    # A receiver that does not stream proves nothing: the lag stays unknown.
    waiting = dataclasses.replace(fresh, wal_receiver=WalReceiver(status="waiting"))
    assert evaluate("/readiness", replica(waiting, cluster=no_optime), NOW, {}).status == 503


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", ["/liveness", "/readiness"])
def test_status_only_paths_have_no_body(path: str) -> None:
    assert evaluate(path, node(), NOW, {}).body is None


@pytest.mark.parametrize("path", ["/primary", "/replica", "/nonsense", "/health"])
def test_other_paths_carry_the_status_json(path: str) -> None:
    body = evaluate(path, node(), NOW, {}).body
    assert body is not None
    assert body["role"] == "primary"


# ---------------------------------------------------------------------------------------------------
# Query parsing

SIZES = [
    ("0", 0),
    ("1024", 1024),
    ("16kB", 16 * 1024),
    ("16KB", 16 * 1024),
    ("16MB", 16 * MB),
    ("16 MB", 16 * MB),
    ("1GB", 1024 * MB),
    ("1TB", 1024 * 1024 * MB),
    ("100B", 100),
    ("100bytes", 100),
    ("1.5MB", int(1.5 * MB)),
]


@pytest.mark.parametrize(("text", "expected"), SIZES)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "16XB", "MB", "1e3", "16 M B", "0x10"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BadQuery, match="invalid lag value"):
        parse_size(text)


def test_parse_query_collects_tags_and_ignores_unknown_parameters() -> None:
    q = parse_query({"tag_zone": "a", "tag_dc": "x", "tag_": "ignored", "foo": "bar"})
    assert q.tags == (("dc", "x"), ("zone", "a"))
    assert q.lag is None
    assert q.mode == "apply"


def test_parse_query_rejects_a_bad_mode() -> None:
    with pytest.raises(BadQuery, match="invalid mode"):
        parse_query({"mode": "flush"})


def test_malformed_lag_raises_even_on_paths_that_ignore_it() -> None:
    with pytest.raises(BadQuery):
        evaluate("/primary", node(), NOW, {"lag": "lots"})


# ---------------------------------------------------------------------------------------------------
# Status JSON


def test_status_json_primary() -> None:
    rows = (ReplicationRow("n2", client_addr="10.0.0.2", state="streaming", sync_state="async", usename="rep"),)
    body = status_json(node(dataclasses.replace(PRIMARY_PG, replication=rows)), NOW)
    assert body == {
        "state": "running",
        "role": "primary",
        "postmaster_start_time": "2024-01-01 00:00:00+00",
        "server_version": 150018,
        "xlog": {"location": LEADER_LSN},
        "timeline": 2,
        "replication": [
            {
                "usename": "rep",
                "application_name": "n2",
                "client_addr": "10.0.0.2",
                "state": "streaming",
                "sync_state": "async",
                "sync_priority": 0,
            }
        ],
        "dcs_last_seen": 1_700_000_000,
        "database_system_identifier": "7300000000000000001",
        "patroni": {"version": "0.1.0", "scope": "demo", "name": "n1"},
    }


def test_status_json_streaming_replica() -> None:
    body = status_json(replica(cluster=cluster(sync=SYNC_N2), tags=Tags(nofailover=True)), NOW)
    assert body["role"] == "replica"
    assert body["xlog"] == {
        "received_location": LEADER_LSN,
        "replayed_location": LEADER_LSN - MB,
        "replayed_timestamp": None,
        "paused": False,
    }
    assert body["replication_state"] == "streaming"
    assert body["sync_standby"] is True
    assert "quorum_standby" not in body
    assert body["tags"] == {"nofailover": True}
    assert body["timeline"] == 2


def test_status_json_replica_that_does_not_stream_does_not_claim_to() -> None:
    body = status_json(replica(not_streaming(WalReceiver("waiting"))), NOW)
    assert "replication_state" not in body  # as Patroni: no restore_command, no archive recovery


def test_status_json_replica_restoring_from_the_archive_says_so() -> None:
    """Issue 12 item 8: with a restore_command and no streaming WAL receiver, "in archive recovery" (as
    Patroni), in the status JSON and in the member JSON alike; a streaming one stays "streaming"."""
    for receiver in (None, WalReceiver("waiting"), WalReceiver("starting")):
        pg = dataclasses.replace(not_streaming(receiver), restore_command=True)
        assert status_json(replica(pg), NOW)["replication_state"] == "in archive recovery"
        assert member_json(pg=pg, conn_url="c", api_url="a", tags=Tags(), task=None)["replication_state"] == \
            "in archive recovery"
        # pgwarden's deliberate difference: /replica is 200 only while streaming
        assert evaluate("/replica", replica(pg), NOW, {"replication_state": "in archive recovery"}).status == 503
    streaming = dataclasses.replace(REPLICA_PG, restore_command=True)
    assert status_json(replica(streaming), NOW)["replication_state"] == "streaming"
    assert member_json(pg=streaming, conn_url="c", api_url="a", tags=Tags(), task=None)["replication_state"] == \
        "streaming"
    primary = dataclasses.replace(PRIMARY_PG, restore_command=True)
    assert "replication_state" not in status_json(node(primary), NOW)
    assert "replication_state" not in member_json(pg=primary, conn_url="c", api_url="a", tags=Tags(), task=None)
    plain = not_streaming(None)
    assert "replication_state" not in member_json(pg=plain, conn_url="c", api_url="a", tags=Tags(), task=None)


def test_status_json_archive_replica_reports_replayed_as_received() -> None:
    pg = dataclasses.replace(REPLICA_PG, receive_lsn=None, wal_receiver=None)
    body = status_json(replica(pg), NOW)
    assert body["xlog"]["received_location"] == body["xlog"]["replayed_location"] == LEADER_LSN - MB


def test_status_json_postgres_down_has_only_state_and_role_of_postgres() -> None:
    body = status_json(replica(DEAD_PG, tags=Tags(nosync=True), pending_restart=True), NOW)
    assert body == {
        "state": "crashed",  # pg_control says in production, but no postmaster
        "role": "primary",
        "tags": {"nosync": True},
        "database_system_identifier": "7300000000000000001",
        "pending_restart": True,
        "patroni": {"version": "0.1.0", "scope": "demo", "name": "n2"},
    }


@pytest.mark.parametrize(
    ("pg", "overrides", "state", "role"),
    [
        (dataclasses.replace(DEAD_PG, cluster_state="shut down"), {}, "stopped", "replica"),
        (dataclasses.replace(DEAD_PG, cluster_state="shut down in recovery"), {}, "stopped", "replica"),
        (dataclasses.replace(DEAD_PG, running=True), {}, "unknown", "primary"),
        (LocalPg(DataDirState.EMPTY), {}, "stopped", "uninitialized"),
        (DEAD_PG, {"pg_state": "starting", "role_override": "demoted"}, "starting", "demoted"),
    ],
)
def test_status_json_state_and_role_when_postgres_does_not_answer(
    pg: LocalPg, overrides: dict[str, Any], state: str, role: str
) -> None:
    expected: dict[str, Any] = {"state": state, "role": role}
    if pg.sysid:
        expected["database_system_identifier"] = pg.sysid
    expected["patroni"] = {"version": "0.1.0", "scope": "demo", "name": "n2"}
    assert status_json(replica(pg, **overrides), NOW) == expected


def test_status_json_lock_holder_with_dead_postgres_reports_its_leader_role() -> None:
    assert status_json(node(DEAD_PG), NOW)["role"] == "primary"
    assert status_json(standby_leader(pg=DEAD_PG), NOW)["role"] == "standby_leader"


def test_status_json_standby_leader() -> None:
    body = status_json(standby_leader(), NOW)
    assert body["role"] == "standby_leader"
    assert "received_location" in body["xlog"]


def test_status_json_flags() -> None:
    body = status_json(
        replica(
            cluster=cluster(leader=None, sync=SYNC_N2, config={"synchronous_mode": "quorum"}),
            paused=True,
            watchdog_failed=True,
        ),
        NOW,
    )
    assert body["cluster_unlocked"] is True
    assert body["pause"] is True
    assert body["watchdog_failed"] is True
    assert body["quorum_standby"] is True
    assert "sync_standby" not in body


def test_status_json_before_any_dcs_read() -> None:
    body = status_json(replica(cluster=None, dcs_last_seen=None), NOW)
    assert "cluster_unlocked" not in body
    assert "dcs_last_seen" not in body
    assert "sync_standby" not in body


def test_status_json_never_contains_the_connection_url() -> None:
    secret = "postgres://admin:s3cret@127.0.0.1:5432/postgres"
    assert "s3cret" not in repr(status_json(node(conn_url=secret), NOW))


def test_a_refused_standby_cluster_in_config_does_not_make_a_primary_a_standby_leader() -> None:
    """The agent never adopts a /config with standby_cluster (config/support.py refuses it): its own
    role is what it runs, not what /config asks for."""
    state = node(PRIMARY_PG, cluster=cluster(config={"standby_cluster": {"host": "remote"}}))
    assert effective_role(state, NOW) == "primary"
