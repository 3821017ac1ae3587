"""Slots where operators look: `pgwarden list` (the permanent slots the leader publishes in `/status` and
the WAL each retains) and `/metrics` (`pgwarden_replication_slot_retained_bytes` per slot)."""

from __future__ import annotations

import dataclasses

from pgwarden.api.metrics import node_metrics
from pgwarden.cli.listing import footer_lines, slot_text
from pgwarden.model import ClusterStatus, ClusterView, LeaderKey, LocalPg, Member
from tests.unit.test_api_metrics import NOW, PRIMARY, REPLICA

MB = 1024 * 1024


def _cluster(status: ClusterStatus) -> ClusterView:
    return ClusterView("demo", leader=LeaderKey("node1"), members=(Member("node1"), Member("Node-2")), status=status)


def test_list_shows_the_permanent_slots_and_the_wal_they_retain() -> None:
    status = ClusterStatus(optime=100 * MB, slots={"node1": 100 * MB, "node_2": 99 * MB, "barman": 60 * MB,
                                                   "extra": 100 * MB})
    assert slot_text(_cluster(status)) == "barman 40 MB, extra 0 MB"  # member slots: the lag columns show them
    assert "Permanent slots (WAL retained on the primary): barman 40 MB, extra 0 MB" in footer_lines(_cluster(status))


def test_list_says_nothing_without_permanent_slots() -> None:
    status = ClusterStatus(optime=100 * MB, slots={"node1": 100 * MB})
    assert slot_text(_cluster(status)) == ""
    assert not any("slots" in line for line in footer_lines(_cluster(status)))
    assert slot_text(_cluster(ClusterStatus(slots={"barman": 1}))) == "barman unknown"


def _retained(state: object) -> dict[str, float]:
    out = {}
    for family in node_metrics(state, NOW):  # type: ignore[arg-type]
        for sample in family.samples:
            if sample.name == "pgwarden_replication_slot_retained_bytes":
                assert sample.labels["scope"] == "demo"
                out[sample.labels["slot"]] = sample.value
    return out


def test_metrics_show_the_wal_each_slot_retains() -> None:
    primary = dataclasses.replace(PRIMARY, pg=dataclasses.replace(
        PRIMARY.pg, slots=("barman", "n2", "unreserved"), slot_lsns=(("barman", 1000), ("n2", 5000),
                                                                     ("unreserved", None))))
    assert _retained(primary) == {"barman": 4000.0, "n2": 0.0}
    replica_pg: LocalPg = dataclasses.replace(REPLICA.pg, slots=("barman",), slot_lsns=(("barman", 3000),))
    assert _retained(dataclasses.replace(REPLICA, pg=replica_pg)) == {"barman": 900.0}  # from its replay position
    assert _retained(PRIMARY) == {}


def test_the_probe_reads_each_physical_slot_with_its_restart_lsn() -> None:
    from pgwarden.postgres.probe import apply_probe_row
    from tests.unit.test_pgconf import BASE, probe_row

    pg = apply_probe_row(BASE, probe_row(slots=[["node2", "0/3000000"], ["barman", None], "old_form"]))
    assert pg.slots == ("barman", "node2", "old_form")
    assert pg.slot_lsns == (("barman", None), ("node2", 0x3000000), ("old_form", None))


def test_metrics_and_list_include_logical_slots() -> None:
    from pgwarden.model import LogicalSlot

    primary = dataclasses.replace(PRIMARY, pg=dataclasses.replace(
        PRIMARY.pg, slots=("n2",), slot_lsns=(("n2", 5000),),
        logical_slots=(LogicalSlot("cdc", "app", "pgoutput", confirmed_flush=3000, restart_lsn=2000),)))
    assert _retained(primary) == {"n2": 0.0, "cdc": 3000.0}  # from its restart_lsn: the WAL it really keeps
    status = ClusterStatus(optime=100 * MB, slots={"node1": 100 * MB, "cdc": 90 * MB})
    cluster = dataclasses.replace(_cluster(status), members=(Member("node1", logical_slots_ready=True),
                                                              Member("Node-2", logical_slots_ready=False)))
    lines = footer_lines(cluster)
    assert "Permanent slots (WAL retained on the primary): cdc 10 MB" in lines
    assert "Logical slot copies ready: Node-2 no, node1 yes" in lines


def _samples(state: object, name: str) -> list[float]:
    return [sample.value for family in node_metrics(state, NOW)  # type: ignore[arg-type]
            for sample in family.samples if sample.name == name]


def test_metrics_say_whether_the_logical_slot_copies_are_ready() -> None:
    assert _samples(REPLICA, "pgwarden_logical_slots_ready") == []  # no permanent logical slots: no gauge
    assert _samples(dataclasses.replace(REPLICA, logical_slots_ready=False), "pgwarden_logical_slots_ready") == [0.0]
    assert _samples(dataclasses.replace(REPLICA, logical_slots_ready=True), "pgwarden_logical_slots_ready") == [1.0]
