"""`list`/`topology`/`history` rows and renderings, from hand-built cluster views."""

from __future__ import annotations

import json
from dataclasses import replace

import yaml
from rich.console import Console

from pgwarden.agent.member import member_json as agent_member_json
from pgwarden.cli.listing import (
    cluster_title,
    footer_lines,
    history_rows,
    list_columns,
    member_records,
    member_rows,
    render_cluster,
    serialize,
    topology_order,
)
from pgwarden.model import (
    ClusterStatus,
    ClusterView,
    DataDirState,
    FailoverRequest,
    HistoryEntry,
    LeaderKey,
    LocalPg,
    Member,
    SyncState,
    Tags,
    Versioned,
    WalReceiver,
)

MB = 1024 * 1024


def _member(name: str, port: int, **fields: object) -> Member:
    return Member(name=name, conn_url=f"postgres://127.0.0.1:{port}/postgres",
                  api_url=f"http://127.0.0.1:{port + 1000}/patroni", state="running", **fields)  # type: ignore[arg-type]


def _cluster(**fields: object) -> ClusterView:
    members = (
        _member("a", 5432, role="primary", timeline=2, xlog_location=100 * MB),
        _member("b", 5433, role="replica", timeline=2, receive_lsn=99 * MB, replay_lsn=97 * MB,
                replication_state="streaming"),
        _member("c", 5434, role="replica", timeline=2, receive_lsn=40 * MB, replay_lsn=40 * MB,
                tags=Tags(replicatefrom="b")),  # runs, but its WAL receiver does not stream right now
    )
    values: dict[str, object] = {
        "scope": "demo", "initialize": "7312", "leader": LeaderKey("a"), "members": members,
        "status": ClusterStatus(optime=100 * MB),
        "config": Versioned({"maximum_lag_on_failover": 10 * MB}, 1),
    }
    values.update(fields)
    return ClusterView(**values)  # type: ignore[arg-type]


def test_rows_put_the_leader_first_and_show_real_streaming_and_lag_in_mb() -> None:
    rows = [r.cells for r in member_rows(_cluster())]
    assert [r["Member"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["Role"] == "Leader" and rows[0]["Receive Lag"] is None
    assert (rows[1]["State"], rows[1]["Receive Lag"], rows[1]["Replay Lag"]) == ("streaming", 1, 3)
    assert rows[1]["Receive LSN"] == "0/6300000"
    assert rows[2]["State"] == "running"  # running, but its WAL receiver does not stream right now
    assert rows[0]["Host"] == "127.0.0.1" and rows[1]["Host"] == "127.0.0.1:5433"


def test_colours_say_streaming_not_streaming_and_lagging() -> None:
    leader, streaming, stalled = member_rows(_cluster())
    assert leader.style == "bold green" and streaming.style == "green" and stalled.style == "yellow"
    assert stalled.lagging and not streaming.lagging  # 60 MB behind, more than maximum_lag_on_failover


def test_sync_standby_role_comes_from_the_sync_key() -> None:
    cluster = _cluster(sync=SyncState(leader="a", sync_standby=("b",)))
    assert [r.cells["Role"] for r in member_rows(cluster)] == ["Leader", "Sync Standby", "Replica"]


def test_topology_nests_cascading_replicas_under_their_upstream() -> None:
    assert [(depth, m.name) for depth, m in topology_order(_cluster())] == [(0, "a"), (1, "b"), (2, "c")]
    columns, records = member_records(_cluster(), topology=True)
    assert [r["Member"] for r in records] == ["a", "+ b", "  + c"]
    assert columns[0] == "Cluster"


def test_topology_without_leader_lists_everyone_at_the_top() -> None:
    cluster = _cluster(leader=None)
    assert [depth for depth, _ in topology_order(cluster)][:2] == [0, 0]
    assert len(topology_order(cluster)) == 3


def test_machine_formats() -> None:
    columns, records = member_records(_cluster())
    parsed = json.loads(serialize(records, columns, "json"))
    assert parsed[0]["Cluster"] == "demo" and parsed[0]["Receive LSN"] is None and parsed[1]["Replay Lag"] == 3
    assert yaml.safe_load(serialize(records, columns, "yaml"))[2]["State"] == "running"
    tsv = serialize(records, columns, "tsv").splitlines()
    assert tsv[0].split("\t")[:3] == ["Cluster", "Member", "Host"] and len(tsv) == 4


def test_extended_columns_appear_when_asked_or_when_something_is_pending() -> None:
    assert "Tags" in list_columns(True, _cluster())
    assert "Pending restart" not in list_columns(False, _cluster())
    pending = _cluster(members=(*_cluster().members[:2], _member("d", 5435, pending_restart=True)))
    assert "Pending restart" in list_columns(False, pending)


def test_title_and_footer() -> None:
    cluster = _cluster(config=Versioned({"pause": True}, 3),
                       failover=FailoverRequest(leader="a", member="b", scheduled_at="2030-01-01T10:00:00+00:00"))
    assert cluster_title(cluster) == "Cluster: demo (7312)"
    assert cluster_title(_cluster(initialize=None)) == "Cluster: demo (uninitialized)"
    footer = "\n".join(footer_lines(cluster))
    assert "Maintenance mode: on" in footer and "Switchover scheduled at: 2030-01-01T10:00:00+00:00" in footer
    assert "No leader" in "\n".join(footer_lines(_cluster(leader=None)))


def test_the_footer_says_failsafe_mode_and_whom_it_lists() -> None:
    from dataclasses import replace

    from pgwarden.model import Versioned

    cluster = replace(_cluster(), config=Versioned({"failsafe_mode": True}, 3), failsafe={"n2": "u", "n1": "u"})
    assert "Failsafe mode: on (/failsafe: n1, n2)" in footer_lines(cluster)
    assert not any("Failsafe" in line for line in footer_lines(_cluster()))


def test_pretty_rendering_has_title_lag_headers_and_footer() -> None:
    console = Console(record=True, width=200, color_system=None)
    render_cluster(console, _cluster(config=Versioned({"pause": True}, 3)))
    text = console.export_text()
    assert text.startswith("Cluster: demo (7312)")
    assert "Receive LSN" in text and "Lag in MB" in text and "Maintenance mode: on" in text


def test_history_rows_oldest_first() -> None:
    cluster = _cluster(history=(HistoryEntry(2, 500, "switchover", "2024-01-02", "b"),
                                HistoryEntry(1, 300, "no recovery target specified", None, "a")))
    assert [r["TL"] for r in history_rows(cluster)] == [1, 2]
    assert history_rows(cluster)[0]["Timestamp"] == ""


def test_a_replica_whose_wal_receiver_reconnects_is_running_not_stopped() -> None:
    """Issue 11: `list` showed a running standby without a WAL receiver as `stopped`. The member JSON
    carries `state: running` and no replication_state then (Patroni's shape); a "stopped" published by an
    older agent is not a replication state either, and a really stopped replica stays `stopped`."""
    standby = LocalPg(DataDirState.VALID, sysid="7312", running=True, accepting=True, in_recovery=True,
                      standby_signal=True, timeline=2, receive_lsn=40 * MB, replay_lsn=40 * MB)
    published = agent_member_json(pg=standby, conn_url="postgres://127.0.0.1:5434/postgres",
                                  api_url="http://127.0.0.1:6434/patroni", tags=Tags(), task=None)
    assert published["state"] == "running" and "replication_state" not in published
    streaming = replace(standby, wal_receiver=WalReceiver(status="streaming", received_tli=2))
    assert agent_member_json(pg=streaming, conn_url="", api_url="", tags=Tags(),
                             task=None)["replication_state"] == "streaming"

    def state_of(**fields: object) -> str:
        members = (_member("a", 5432, role="primary", timeline=2, xlog_location=100 * MB),
                   _member("c", 5434, role="replica", timeline=2, receive_lsn=40 * MB, **fields))
        return str(member_rows(_cluster(members=members))[1].cells["State"])

    assert state_of() == "running"
    assert state_of(replication_state="stopped") == "running"  # an older pgwarden agent's member JSON
    assert state_of(replication_state="in archive recovery") == "in archive recovery"
    assert state_of(replication_state="streaming") == "streaming"
    stopped = replace(_member("c", 5434, role="replica", replication_state="streaming"), state="stopped")
    cluster = _cluster(members=(_member("a", 5432, role="primary", xlog_location=100 * MB), stopped))
    row = member_rows(cluster)[1]
    assert row.cells["State"] == "stopped" and row.style == "red"
