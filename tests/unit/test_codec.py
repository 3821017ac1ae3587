"""pgwarden.dcs.codec: Patroni's wire format <-> model values, round trips, and malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.core.snapshot import PeerStatus
from pgwarden.core.sync.plan import SyncMode, SyncSettings
from pgwarden.core.sync.promotion import may_promote
from pgwarden.dcs import codec
from pgwarden.model import ClusterStatus, HistoryEntry, Member, PgState, SyncState, Tags

PATRONI_MEMBER = {
    "conn_url": "postgres://10.0.0.2:5432/postgres",
    "api_url": "http://10.0.0.2:8008/patroni",
    "state": "running",
    "role": "replica",
    "version": "4.0.4",
    "xlog_location": 67108960,
    "receive_lsn": 67108960,
    "replay_lsn": 67108864,
    "replication_state": "streaming",
    "timeline": 3,
    "tags": {"nofailover": True, "clonefrom": True, "dc": "east"},
    "pending_restart": True,
    "proxy_url": "postgres://proxy:6432/postgres",
}


def test_member_from_patroni_json() -> None:
    m = codec.member_from_json("n2", json.dumps(PATRONI_MEMBER))
    assert m.name == "n2"
    assert (m.state, m.role, m.version, m.timeline) == ("running", "replica", "4.0.4", 3)
    assert (m.xlog_location, m.receive_lsn, m.replay_lsn) == (67108960, 67108960, 67108864)
    assert m.replication_state == "streaming"
    assert m.tags == Tags(nofailover=True, clonefrom=True, custom={"dc": "east"})
    assert m.pending_restart is True
    assert m.host_port == ("10.0.0.2", 5432)
    assert m.raw["proxy_url"] == "postgres://proxy:6432/postgres"  # unknown fields survive


def test_member_round_trip_keeps_unknown_fields() -> None:
    m = codec.member_from_json("n2", json.dumps(PATRONI_MEMBER))
    again = json.loads(codec.member_to_json(m))
    assert again == PATRONI_MEMBER


def test_member_to_json_from_mapping_is_compact_and_stable() -> None:
    text = codec.member_to_json({"role": "primary", "api_url": "http://h:8008/patroni"})
    assert text == '{"api_url":"http://h:8008/patroni","role":"primary"}'


def test_legacy_member_url_value() -> None:
    text = "postgres://repl:secret@10.0.0.3:5433/postgres?application_name=http://10.0.0.3:8008/patroni"
    m = codec.member_from_json("old", text)
    assert m.conn_url == "postgres://repl:secret@10.0.0.3:5433/postgres"
    assert m.api_url == "http://10.0.0.3:8008/patroni"
    assert m.host_port == ("10.0.0.3", 5433)
    assert m.state == PgState.UNKNOWN


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "42", '"a string"', "null"])
def test_malformed_member_is_unknown_and_keeps_text(text: str) -> None:
    m = codec.member_from_json("bad", text)
    assert m.state == PgState.UNKNOWN
    assert m.raw == {codec.UNPARSED_KEY: text}


def test_member_bad_fields_cost_only_those_fields() -> None:
    m = codec.member_from_json(
        "n1", json.dumps({"state": "running", "role": "master", "timeline": "x", "xlog_location": [1]})
    )
    assert (m.state, m.role, m.timeline, m.xlog_location) == ("running", "primary", None, None)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"nofailover": "false"}, Tags()),
        ({"nofailover": "yes", "nosync": "on"}, Tags(nofailover=True, nosync=True)),
        ({"nofailover": "maybe"}, Tags(nofailover=True)),  # unclear intent: do not promote
        ({"failover_priority": "0", "sync_priority": 2}, Tags(failover_priority=0, sync_priority=2)),
        ({"failover_priority": "high"}, Tags()),
        ({"replicatefrom": "n3", "x": 1}, Tags(replicatefrom="n3", custom={"x": 1})),
        ("not a mapping", Tags()),
    ],
)
def test_tags(tags: Any, expected: Tags) -> None:
    assert codec.tags_from_json(tags) == expected


# -- status, failover, sync, history ---------------------------------------------------------------


def test_status_round_trip() -> None:
    status = ClusterStatus(optime=1234, slots={"n2": 1200}, retain_slots=("n2", "n3"))
    assert codec.status_from_json(codec.status_to_json(status)) == status
    assert json.loads(codec.status_to_json(status)) == {
        "optime": 1234,
        "slots": {"n2": 1200},
        "retain_slots": ["n2", "n3"],
    }


def test_status_carries_the_reserved_timeline_and_ignores_a_bad_one() -> None:
    status = ClusterStatus(optime=7, timeline=4)
    assert json.loads(codec.status_to_json(status))["timeline"] == 4
    assert codec.status_from_json(codec.status_to_json(status)) == status
    for bad in ('"4"', "0", "true", "[1]"):
        assert codec.status_from_json(f'{{"optime": 7, "timeline": {bad}}}') == ClusterStatus(optime=7)


def test_status_accepts_missing_parts() -> None:
    assert codec.status_from_json('{"optime": 5}') == ClusterStatus(optime=5)
    assert codec.status_from_json("{}") == ClusterStatus()


def test_failover_json_and_legacy() -> None:
    f = codec.failover_from_json('{"leader": "n1", "member": "n2", "scheduled_at": "2024-01-01T00:00+00:00"}', 7)
    assert (f.leader, f.member, f.scheduled_at, f.revision) == ("n1", "n2", "2024-01-01T00:00+00:00", 7)
    legacy = codec.failover_from_json("n1:n2", 3)
    assert (legacy.leader, legacy.member) == ("n1", "n2")
    assert codec.failover_from_json(":n2", 3).leader is None
    assert json.loads(codec.failover_to_json({"leader": "n1", "member": None})) == {"leader": "n1"}


def test_sync_round_trip() -> None:
    sync = SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1)
    text = codec.sync_to_json(sync)
    assert json.loads(text) == {"leader": "n1", "sync_standby": "n2,n3", "quorum": 1}
    assert codec.sync_from_json(text, 9) == SyncState("n1", ("n2", "n3"), 1, revision=9)
    assert codec.sync_from_json('{"leader": "n1", "sync_standby": null}', 1).sync_standby == ()


# (/sync as Patroni 4.1.5 writes it, candidate, peers' positions, decision): `quorum` keeps Patroni's
# meaning through the codec (voters other than the candidate that it must see), so one key gives one
# decision whichever implementation reads it.
PATRONI_SYNC = [
    ('{"leader": "n1", "sync_standby": "n2,n3", "quorum": 1}', "n2", {"n3": None}, False),  # 2 voters, ANY 1
    ('{"leader": "n1", "sync_standby": "n2,n3", "quorum": 1}', "n2", {"n3": 90}, True),
    ('{"leader": "n1", "sync_standby": "n2", "quorum": 0}', "n2", {"n3": None}, True),  # the other is nosync
    ('{"leader": "n1", "sync_standby": "n2,n3", "quorum": 0}', "n2", {"n3": None}, True),  # 2 voters, ANY 2
]


@pytest.mark.parametrize(("text", "me", "positions", "allowed"), PATRONI_SYNC)
def test_a_patroni_sync_key_keeps_its_meaning(text: str, me: str, positions: dict[str, int | None],
                                              allowed: bool) -> None:
    sync = codec.sync_from_json(text, 3)
    assert sync.quorum == json.loads(text)["quorum"]
    assert json.loads(codec.sync_to_json(sync)) == json.loads(text)
    peers = [PeerStatus(n, reachable=lsn is not None, in_recovery=True, lsn=lsn) for n, lsn in positions.items()]
    assert may_promote(me, 100, SyncSettings(mode=SyncMode.QUORUM), sync, peers).allowed is allowed


def test_history_rows_of_three_to_five() -> None:
    text = '[[1, 25165984, "no recovery target specified"], [2, 50331808, "x", "2024-01-01T00:00:00+00:00"],'
    text += ' [3, 67109024, "y", "2024-01-02T00:00:00+00:00", "n2"]]'
    history = codec.history_from_json(text)
    assert [h.timeline for h in history] == [1, 2, 3]
    assert history[2] == HistoryEntry(3, 67109024, "y", "2024-01-02T00:00:00+00:00", "n2")
    assert json.loads(codec.history_to_json(history)) == json.loads(text)


@pytest.mark.parametrize(
    ("decode", "text"),
    [
        (lambda t: codec.status_from_json(t), '{"optime": "soon"}'),
        (lambda t: codec.status_from_json(t), '{"slots": []}'),
        (lambda t: codec.status_from_json(t), "[]"),
        (lambda t: codec.failover_from_json(t, 1), "n1"),
        (lambda t: codec.failover_from_json(t, 1), '{"leader": 5}'),
        (lambda t: codec.sync_from_json(t, 1), '{"sync_standby": 5}'),
        (lambda t: codec.sync_from_json(t, 1), '{"quorum": "two"}'),
        (lambda t: codec.history_from_json(t), "[[1, 2]]"),
        (lambda t: codec.history_from_json(t), '{"a": 1}'),
        (lambda t: codec.history_from_json(t), "[[1, 2, 3, 4, 5, 6]]"),
        (lambda t: codec.config_from_json(t, 1), "[]"),
    ],
)
def test_malformed_values_raise_malformed_value(decode: Any, text: str) -> None:
    with pytest.raises(codec.MalformedValue):
        decode(text)


# -- the whole scope -----------------------------------------------------------------------------------


def test_cluster_from_kv() -> None:
    kvs = {
        "initialize": ("7301234567890123456", 2),
        "config": ('{"ttl": 30, "pause": true}', 3),
        "leader": ("n1", 10),
        "members/n1": ('{"role": "primary", "state": "running", "xlog_location": 100}', 11),
        "members/n2": (json.dumps(PATRONI_MEMBER), 12),
        "status": ('{"optime": 100, "slots": {"n2": 90}, "retain_slots": ["n2"]}', 13),
        "failover": ('{"member": "n2"}', 14),
        "sync": ('{"leader": "n1", "sync_standby": "n2", "quorum": 0}', 15),
        "history": ('[[1, 50, "reason"]]', 16),
        "failsafe": ('{"n1": "http://n1:8008/patroni"}', 17),
    }
    decoded = codec.decode_cluster("pg", kvs, revision=20)
    view = decoded.view
    assert decoded.notes == ()
    assert view.scope == "pg" and view.revision == 20
    assert view.initialize == "7301234567890123456"
    assert view.config is not None and view.config.revision == 3 and view.paused
    assert view.leader is not None and (view.leader.name, view.leader.revision) == ("n1", 10)
    assert [m.name for m in view.members] == ["n1", "n2"]
    assert view.leader_member is not None and view.leader_member.lsn == 100
    assert view.status == ClusterStatus(optime=100, slots={"n2": 90}, retain_slots=("n2",))
    assert view.failover is not None and view.failover.member == "n2" and view.failover.revision == 14
    assert view.sync == SyncState("n1", ("n2",), 0, revision=15)
    assert view.timeline == 2
    assert view.failsafe == {"n1": "http://n1:8008/patroni"}


def test_empty_scope() -> None:
    view = codec.cluster_from_kv("pg", {})
    assert view.initialize is None and view.leader is None and view.members == ()
    assert view.failover is None and view.sync is None and view.history == () and view.failsafe is None


def test_malformed_values_are_absent_with_notes() -> None:
    kvs = {
        "config": ("{broken", 3),
        "members/n1": ("garbage", 4),
        "status": ("[]", 5),
        "failover": ("???", 6),
        "sync": ('{"quorum": "x"}', 7),
        "history": ('[["a", 1, "r"]]', 8),
    }
    decoded = codec.decode_cluster("pg", kvs)
    view = decoded.view
    assert view.config is not None and view.config.value == {} and view.config.revision == 3
    assert view.members == (Member(name="n1", raw={codec.UNPARSED_KEY: "garbage"}),)
    assert view.status == ClusterStatus()
    assert view.failover is None and view.sync is None and view.history == ()
    assert len(decoded.notes) == 6
    assert any("'failover'" in note for note in decoded.notes)


def test_legacy_optime_key_used_without_status() -> None:
    assert codec.cluster_from_kv("pg", {"optime/leader": ("12345", 1)}).status.optime == 12345


def test_initialize_empty_string_means_bootstrap_in_progress() -> None:
    assert codec.cluster_from_kv("pg", {"initialize": ("", 1)}).initialize == ""


def test_nested_member_keys_are_ignored() -> None:
    view = codec.cluster_from_kv("pg", {"members/": ("{}", 1), "members/a/b": ("{}", 2)})
    assert view.members == ()


@given(st.text())
def test_decoding_never_raises(text: str) -> None:
    kvs = {key: (text, 1) for key in ("config", "leader", "members/x", "status", "failover", "sync", "history")}
    kvs["initialize"] = (text, 1)
    codec.decode_cluster("pg", kvs)
    codec.member_from_json("x", text)


@given(
    st.builds(
        SyncState,
        leader=st.one_of(st.none(), st.text(alphabet="abcdef123", min_size=1)),
        sync_standby=st.lists(st.text(alphabet="abcdef123", min_size=1), max_size=3).map(tuple),
        quorum=st.integers(0, 5),
    )
)
def test_sync_round_trip_property(sync: SyncState) -> None:
    assert codec.sync_from_json(codec.sync_to_json(sync), 0) == sync
