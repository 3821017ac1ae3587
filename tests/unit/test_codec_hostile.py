"""Hostile and careless DCS values (issue 20, item 4): the codec turns garbage into "absent" with a
note (logged once by the DCS client), never a crash, and never a value that starts a cascade.

The reproduced cascade: `status.timeline: 20000` made a switchover jump to timeline 20001 (20,005
placeholder files), record a parent that never existed in `/history`, and re-clone both replicas.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgwarden.dcs import codec
from pgwarden.model import (
    MAX_TIMELINE,
    TIMELINE_RESERVE_MARGIN,
    ClusterStatus,
    ClusterView,
    HistoryEntry,
    Member,
    timeline_to_claim,
)


def member(name: str, timeline: Any = 3, **extra: Any) -> tuple[str, tuple[str, int]]:
    value = {"conn_url": f"postgres://127.0.0.1:5432/{name}", "api_url": f"http://127.0.0.1:8008/{name}",
             "state": "running", "role": "replica", "timeline": timeline, **extra}
    return f"members/{name}", (json.dumps(value), 10)


def scope(**keys: Any) -> dict[str, tuple[str, int]]:
    """A healthy 3-member scope on timeline 3 (history rows for timelines 1 and 2), with `keys`
    (relative key -> raw text) overriding or adding raw values."""
    kvs = dict([member("n1", role="primary"), member("n2"), member("n3")])
    kvs["leader"] = ("n1", 5)
    kvs["history"] = ('[[1, 50331808, "no recovery target specified"], [2, 67109024, "x", null, "n1"]]', 6)
    kvs["status"] = ('{"optime": 67109100, "slots": {}, "retain_slots": [], "timeline": 3}', 7)
    kvs["config"] = ('{"ttl": 30}', 8)
    for key, text in keys.items():
        kvs[key.replace("__", "/")] = (text, 42)
    return kvs


def decode(**keys: Any) -> codec.DecodedCluster:
    return codec.decode_cluster("pg", scope(**keys))


# -- status.timeline -----------------------------------------------------------------------------------


def test_a_plausible_reservation_is_kept() -> None:
    decoded = decode(status='{"optime": 1, "timeline": 5}')
    assert decoded.view.status.timeline == 5
    assert decoded.notes == ()


def test_an_implausible_reserved_timeline_is_ignored_with_one_note() -> None:
    decoded = decode(status='{"optime": 67109100, "slots": {}, "retain_slots": [], "timeline": 20000}')
    assert decoded.view.status.timeline is None
    assert decoded.view.status.optime == 67109100  # the rest of /status stands
    assert decoded.view.highest_timeline == 3
    (note,) = decoded.notes
    assert "implausible 'status' timeline 20000" in note and "timeline 3 at most" in note


def test_the_margin_is_counted_from_what_the_history_and_members_show() -> None:
    known = 3
    at_edge = decode(status=json.dumps({"timeline": known + TIMELINE_RESERVE_MARGIN}))
    beyond = decode(status=json.dumps({"timeline": known + TIMELINE_RESERVE_MARGIN + 1}))
    assert at_edge.view.status.timeline == known + TIMELINE_RESERVE_MARGIN
    assert beyond.view.status.timeline is None


@pytest.mark.parametrize("value", ['"7"', "true", "-4", "0", "4.5", str(MAX_TIMELINE + 1), "[7]", '{"a": 1}'])
def test_a_reserved_timeline_of_the_wrong_type_or_range_is_ignored(value: str) -> None:
    decoded = decode(status='{"optime": 5, "timeline": ' + value + "}")
    assert decoded.view.status.timeline is None
    assert decoded.view.status.optime == 5


# -- timeline_to_claim: what a promotion does with the reservation ---------------------------------------


def _view(history_tl: int | None, reserved: int | None) -> ClusterView:
    history = (HistoryEntry(history_tl - 1, 100, "r"),) if history_tl and history_tl > 1 else ()
    return ClusterView(scope="pg", history=history, status=ClusterStatus(timeline=reserved))


@pytest.mark.parametrize(
    ("history_tl", "reserved", "local", "target", "ignored"),
    [
        (None, None, 1, 2, None),  # first promotion
        (3, None, 3, 4, None),
        (3, 5, 3, 6, None),  # a reservation the history lacks (a lost row): skip 4 and 5
        (3, 3 + TIMELINE_RESERVE_MARGIN, 3, 4 + TIMELINE_RESERVE_MARGIN, None),
        (3, 20000, 3, 4, 20000),  # garbage: ignored, no placeholders
        (20000, None, 3, 4, 20000),  # a garbage history timeline too
        (6, 20000, 3, 7, 20000),  # the history is within reach: it still counts
        (3, 2, 5, 6, None),  # this server is ahead of everything the DCS says
    ],
)
def test_timeline_to_claim(history_tl: int | None, reserved: int | None, local: int, target: int,
                           ignored: int | None) -> None:
    assert timeline_to_claim(_view(history_tl, reserved), local) == (target, ignored)


def test_placeholders_are_capped_by_the_margin() -> None:
    """However large the reservation, a promotion skips at most TIMELINE_RESERVE_MARGIN numbers."""
    for reserved in (1, 10, 40, 1000, MAX_TIMELINE):
        target, _ = timeline_to_claim(_view(3, reserved), 3)
        assert target - 3 - 1 <= TIMELINE_RESERVE_MARGIN


# -- history -----------------------------------------------------------------------------------------


def test_a_history_row_far_beyond_every_member_is_ignored() -> None:
    decoded = decode(history='[[1, 50331808, "r"], [20000, 67109024, "x"]]')
    assert decoded.view.history == ()
    assert decoded.view.timeline == 1  # not 20001: nobody is "behind the cluster's timeline"
    assert any("implausible 'history'" in note for note in decoded.notes)


def test_without_members_publishing_timelines_the_history_cannot_be_judged_and_stands() -> None:
    kvs = {"history": ('[[1, 50331808, "r"], [40, 67109024, "x"]]', 3)}
    assert codec.decode_cluster("pg", kvs).view.timeline == 41


@pytest.mark.parametrize(
    "rows",
    [
        '[[-1, 5, "r"]]',
        '[[0, 5, "r"]]',
        f'[[{MAX_TIMELINE + 1}, 5, "r"]]',
        '[[1, -5, "r"]]',
        f'[[1, {2**64}, "r"]]',
        '[[1, "-0/5", "r"]]',
        '[["x", 5, "r"]]',
        '[[1, 5]]',
        '{"1": 5}',
        '"[[1, 5, \\"r\\"]]"',
    ],
)
def test_malformed_history_is_absent_with_a_note(rows: str) -> None:
    decoded = decode(history=rows)
    assert decoded.view.history == ()
    assert any("'history'" in note for note in decoded.notes)


# -- members -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeline", [-1, 0, MAX_TIMELINE + 1, "abc", True, [3], 2.5])
def test_a_member_timeline_out_of_range_is_unknown(timeline: Any) -> None:
    key, value = member("n2", timeline)
    n2 = codec.decode_cluster("pg", scope(**{key.replace("/", "__"): value[0]})).view.member("n2")
    assert n2 is not None and n2.timeline is None and n2.state == "running"


@pytest.mark.parametrize("lsn", [-1, 2**64, "-1", "1/-1", "G/0", "9" * 200, True])
def test_a_member_lsn_out_of_range_is_unknown(lsn: Any) -> None:
    key, value = member("n2", xlog_location=lsn, replay_lsn=lsn, receive_lsn=lsn)
    n2 = codec.decode_cluster("pg", scope(**{key.replace("/", "__"): value[0]})).view.member("n2")
    assert n2 is not None and (n2.xlog_location, n2.replay_lsn, n2.receive_lsn) == (None, None, None)


def test_valid_lsns_still_read() -> None:
    key, value = member("n2", xlog_location=2**64 - 1, replay_lsn="16/B374D848", receive_lsn="67109024")
    n2 = codec.decode_cluster("pg", scope(**{key.replace("/", "__"): value[0]})).view.member("n2")
    assert n2 is not None
    assert n2 == Member(name="n2", conn_url=n2.conn_url, api_url=n2.api_url, state="running", role="replica",
                        timeline=3, xlog_location=2**64 - 1, replay_lsn=0x16B374D848, receive_lsn=67109024,
                        raw=n2.raw)


# -- unreadable keys: absent, yet their revision is kept --------------------------------------------


@pytest.mark.parametrize("key", ["failover", "config", "sync", "status", "history"])
@pytest.mark.parametrize("text", ["{garbage", "", "[" * 100_000, "null", '"text"', "\x00\xff"])
def test_garbage_in_any_key_never_raises(key: str, text: str) -> None:
    decoded = decode(**{key: text})
    assert decoded.view.scope == "pg"


@pytest.mark.parametrize("text", ["{garbage", "[1, 2]", "just words", "[" * 100_000])
def test_an_unreadable_failover_key_is_absent_but_its_revision_is_kept(text: str) -> None:
    decoded = decode(failover=text)
    assert decoded.view.failover is None
    assert decoded.view.unreadable == {"failover": 42}
    assert any("'failover'" in note for note in decoded.notes)


def test_an_unreadable_config_keeps_its_revision_and_says_so() -> None:
    decoded = decode(config="{not json")
    assert decoded.view.config is not None and decoded.view.config.revision == 42
    assert decoded.view.unreadable == {"config": 42}


def test_readable_keys_are_not_listed_as_unreadable() -> None:
    decoded = decode(failover='{"leader": "n1", "member": "n2"}')
    assert decoded.view.unreadable == {}
    assert decoded.view.failover is not None and decoded.view.failover.member == "n2"


def test_a_deeply_nested_member_value_is_an_unknown_member() -> None:
    decoded = codec.decode_cluster("pg", {"members/n9": ("[" * 100_000, 3)})
    (n9,) = decoded.view.members
    assert n9.state == "unknown"


def test_notes_cut_huge_garbage_short() -> None:
    decoded = decode(history=json.dumps([[1, "1" * 10_000 + "/0", "r"]]))
    assert decoded.notes and all(len(note) < 400 for note in decoded.notes)


def test_a_member_timeline_far_beyond_the_history_is_unknown() -> None:
    """The leader's key saying 20000 must not make every replica look off the leader's lineage."""
    key, value = member("n1", 20000, role="primary")
    decoded = codec.decode_cluster("pg", scope(**{key.replace("/", "__"): value[0]}))
    n1 = decoded.view.member("n1")
    assert n1 is not None and n1.timeline is None and n1.role == "primary"
    assert decoded.view.history != ()  # the history stands: the members on timeline 3 vouch for it
    assert any("implausible timeline 20000" in note for note in decoded.notes)


def test_a_member_timeline_is_not_judged_without_history() -> None:
    key, value = member("n1", 40, role="primary")
    kvs = dict([(key, value)])
    assert codec.decode_cluster("pg", kvs).view.member("n1") == codec.member_from_json("n1", value[0])
