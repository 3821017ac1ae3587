"""The executor's steps for permanent logical slots: the copy of the leader's slot state files into a
replica (one restart for all missing slots), their creation on the primary after a renewal, and the
advance of the copies."""

from __future__ import annotations

from pgwarden.core.actions import CopyLogicalSlots, EnsureSlots, RenewLeader
from pgwarden.core.snapshot import ActionKind
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import BACKGROUND
from pgwarden.model import ClusterStatus, ClusterView, Member
from tests.engine.script import Script, context

LEADER = Member("n1", conn_url="postgres://10.0.0.1:5432/postgres", api_url="http://10.0.0.1:8008/patroni",
                role="primary", state="running")
CLUSTER = ClusterView(scope="s", members=(LEADER,), status=ClusterStatus(optime=1))
STATES = (("cdc", b"\x01" * 200), ("two", b"\x02" * 200))
COPY = CopyLogicalSlots(leader="n1", names=("cdc", "two"))


def test_the_copy_reads_from_the_leader_then_stops_writes_and_starts_once() -> None:
    script = Script(answers={fx.ReadSlotStates: fx.SlotStates(True, "read", STATES)})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert script.kinds() == ["ReadSlotStates", "RunHook", "StandbySignal", "StopPg", "WriteSlotStates", "StartPg"]
    (read,) = script.of(fx.ReadSlotStates)
    assert read.source == fx.Upstream("n1", "10.0.0.1", 5432) and read.names == ("cdc", "two")
    (stop,) = script.of(fx.StopPg)
    assert stop.mode == "fast"
    (written,) = script.of(fx.WriteSlotStates)
    assert written.states == STATES
    assert outcome.action == ActionKind.COPY_SLOTS and outcome.ok


def test_a_copy_that_must_wait_stops_nothing() -> None:
    waiting = fx.SlotStates(False, "the leader's slot cdc needs WAL from 0/1000000", waiting=True)
    script = Script(answers={fx.ReadSlotStates: waiting})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert script.kinds() == ["ReadSlotStates"]
    assert not outcome.ok and outcome.detail.startswith("waiting: ") and "needs WAL" in outcome.detail


def test_a_failed_read_is_an_error_and_stops_nothing() -> None:
    script = Script(answers={fx.ReadSlotStates: fx.SlotStates(False, "permission denied for function")})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert script.kinds() == ["ReadSlotStates"] and not outcome.ok
    assert outcome.detail == "permission denied for function"


def test_a_failed_write_still_starts_postgresql_again() -> None:
    script = Script(answers={fx.ReadSlotStates: fx.SlotStates(True, "read", STATES),
                             fx.WriteSlotStates: fx.Result(False, "No space left on device")})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert script.kinds()[-2:] == ["WriteSlotStates", "StartPg"]
    assert not outcome.ok and "No space" in outcome.detail


def test_a_failed_stop_writes_nothing() -> None:
    script = Script(answers={fx.ReadSlotStates: fx.SlotStates(True, "read", STATES),
                             fx.StopPg: fx.Result(False, "pg_ctl: server does not shut down")})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert "WriteSlotStates" not in script.kinds() and "StartPg" not in script.kinds() and not outcome.ok


def test_no_address_for_the_leader_touches_nothing() -> None:
    script = Script()
    outcome = script.run(COPY, context(ClusterView(scope="s"), me="n2"))
    assert script.kinds() == [] and not outcome.ok


def test_the_copy_runs_in_the_background() -> None:
    assert CopyLogicalSlots in BACKGROUND


def test_a_renewal_creates_the_logical_slots_after_the_lease_is_proven() -> None:
    script = Script()
    script.run(RenewLeader(optime=5, create_logical=(("cdc", "app", "pgoutput"),)), context(CLUSTER))
    kinds = script.kinds()
    assert kinds.index("UpdateLeaderKey") < kinds.index("CreateLogicalSlots")
    (create,) = script.of(fx.CreateLogicalSlots)
    assert create.specs == (("cdc", "app", "pgoutput"),)


def test_a_lost_renewal_creates_nothing() -> None:
    script = Script(answers={fx.UpdateLeaderKey: False})
    script.run(RenewLeader(optime=5, create_logical=(("cdc", "app", "pgoutput"),), error="x"), context(CLUSTER))
    assert script.of(fx.CreateLogicalSlots) == [] and script.of(fx.Log) == []


def test_a_renewal_logs_the_error_the_core_asked_for() -> None:
    script = Script()
    script.run(RenewLeader(optime=5, error="permanent logical slots cdc are not created"), context(CLUSTER))
    (line,) = script.of(fx.Log)
    assert line.level == "error" and "cdc" in line.text


def test_copies_are_advanced_with_the_physical_ones() -> None:
    script = Script()
    outcome = script.run(EnsureSlots(create=(), advance=(("barman", 80),), advance_logical=(("cdc", "app", 70),)),
                         context(CLUSTER, me="n2"))
    assert script.kinds() == ["AdvanceSlots", "AdvanceLogicalSlots"] and outcome.ok
    (advance,) = script.of(fx.AdvanceLogicalSlots)
    assert advance.targets == (("cdc", "app", 70),)
