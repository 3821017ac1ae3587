"""GET /cluster and GET /history bodies (pgwarden.api.views), built from a ClusterView."""

from __future__ import annotations

from typing import Any

from pgwarden.api.views import cluster_json, history_json
from pgwarden.model import (
    ClusterStatus,
    ClusterView,
    HistoryEntry,
    LeaderKey,
    Member,
    SyncState,
    Tags,
    Versioned,
)

MB = 1024 * 1024
OPTIME = 0x3000000


def member(name: str, **fields: Any) -> Member:
    defaults: dict[str, Any] = {
        "conn_url": f"postgres://replicator:s3cret@10.0.0.{name[-1]}:5432/postgres",
        "api_url": f"http://10.0.0.{name[-1]}:8008/patroni",
        "state": "running",
        "role": "replica",
        "timeline": 2,
    }
    return Member(name, **(defaults | fields))


def view(members: tuple[Member, ...], **fields: Any) -> ClusterView:
    defaults: dict[str, Any] = {
        "leader": LeaderKey("n1"),
        "status": ClusterStatus(optime=OPTIME),
        "config": Versioned({}, 1),
    }
    return ClusterView("demo", members=members, **(defaults | fields))


THREE = (
    member("n3", replay_lsn=OPTIME - MB, receive_lsn=OPTIME - MB, replication_state="in archive recovery"),
    member("n1", role="primary", xlog_location=OPTIME, tags=Tags(custom={"zone": "a"})),
    member("n2", replay_lsn=OPTIME, receive_lsn=OPTIME, replication_state="streaming", pending_restart=True),
)


def test_cluster_json_sorted_members_with_roles_states_and_lag() -> None:
    body = cluster_json(view(THREE, sync=SyncState("n1", ("n2",))))
    assert body == {
        "members": [
            {
                "name": "n1",
                "role": "leader",
                "state": "running",
                "api_url": "http://10.0.0.1:8008/patroni",
                "host": "10.0.0.1",
                "port": 5432,
                "timeline": 2,
                "lsn": "0/3000000",
                "tags": {"zone": "a"},
            },
            {
                "name": "n2",
                "role": "sync_standby",
                "state": "streaming",
                "api_url": "http://10.0.0.2:8008/patroni",
                "host": "10.0.0.2",
                "port": 5432,
                "timeline": 2,
                "receive_lsn": "0/3000000",
                "receive_lag": 0,
                "replay_lsn": "0/3000000",
                "replay_lag": 0,
                "lsn": "0/3000000",
                "lag": 0,
                "pending_restart": True,
            },
            {
                "name": "n3",
                "role": "replica",
                "state": "in archive recovery",
                "api_url": "http://10.0.0.3:8008/patroni",
                "host": "10.0.0.3",
                "port": 5432,
                "timeline": 2,
                "receive_lsn": "0/2F00000",
                "receive_lag": MB,
                "replay_lsn": "0/2F00000",
                "replay_lag": MB,
                "lsn": "0/2F00000",
                "lag": MB,
            },
        ],
        "scope": "demo",
    }


def test_cluster_json_never_shows_connection_urls() -> None:
    assert "s3cret" not in repr(cluster_json(view(THREE)))


def test_streaming_only_when_the_member_says_so() -> None:
    members = (
        member("n1", role="primary", xlog_location=OPTIME),
        member("n2", replay_lsn=OPTIME),  # no replication_state reported
        member("n3", state="stopped", replication_state="streaming"),  # stale: postgres is down
    )
    states = [m["state"] for m in cluster_json(view(members))["members"]]
    assert states == ["running", "running", "stopped"]


def test_lag_unknown_without_a_position_or_an_optime() -> None:
    members = (member("n1", role="primary"), member("n2"))
    body = cluster_json(view(members, status=ClusterStatus()))
    assert body["members"][1]["lag"] == "unknown"


def test_lag_falls_back_on_the_leader_member_position() -> None:
    members = (member("n1", role="primary", xlog_location=OPTIME), member("n2", replay_lsn=OPTIME - 100))
    body = cluster_json(view(members, status=ClusterStatus()))
    assert body["members"][1]["lag"] == 100


def test_standby_leader_quorum_and_pause() -> None:
    config = {"standby_cluster": {"host": "remote"}, "synchronous_mode": "quorum", "pause": True}
    members = (member("n1", replay_lsn=OPTIME), member("n2", replay_lsn=OPTIME))
    body = cluster_json(view(members, config=Versioned(config, 3), sync=SyncState("n1", ("n2",), 1)))
    assert [m["role"] for m in body["members"]] == ["standby_leader", "quorum_standby"]
    assert body["pause"] is True


def test_a_sync_key_written_for_another_leader_is_ignored() -> None:
    body = cluster_json(view(THREE, leader=LeaderKey("n3"), sync=SyncState("n1", ("n2",))))
    assert [m["role"] for m in body["members"]] == ["replica", "replica", "leader"]


def test_without_a_leader_the_sync_key_still_names_the_sync_standby() -> None:
    body = cluster_json(view(THREE, leader=None, sync=SyncState("n1", ("n2",))))
    assert [m["role"] for m in body["members"]] == ["replica", "sync_standby", "replica"]


def test_history_json_rows_in_timeline_order() -> None:
    history = (
        HistoryEntry(2, 0x3000060, "no recovery target specified", "2024-01-02T00:00:00+00:00", "n2"),
        HistoryEntry(1, 0x2000060, "no recovery target specified", "2024-01-01T00:00:00+00:00"),
    )
    assert history_json(view((), history=history)) == [
        [1, 0x2000060, "no recovery target specified", "2024-01-01T00:00:00+00:00", None],
        [2, 0x3000060, "no recovery target specified", "2024-01-02T00:00:00+00:00", "n2"],
    ]
    assert history_json(view(())) == []
