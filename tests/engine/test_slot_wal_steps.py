"""The copy of a logical slot with the WAL it fetched from the leader: the staged segments go into pg_wal
with the state files (PostgreSQL stopped), and are discarded when the copy does not go on."""

from __future__ import annotations

from pgwarden.engine import effects as fx
from tests.engine.script import Script, context
from tests.engine.test_logical_slot_steps import CLUSTER, COPY, STATES

SEGMENTS = ("000000010000000000000003", "000000010000000000000004")


def test_the_fetched_wal_is_written_with_the_state_files_while_postgresql_is_stopped() -> None:
    script = Script(answers={fx.ReadSlotStates: fx.SlotStates(True, "read", STATES, segments=SEGMENTS)})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    kinds = script.kinds()
    assert kinds.index("ReadSlotStates") < kinds.index("StopPg") < kinds.index("WriteSlotStates")  # fetched first
    (written,) = script.of(fx.WriteSlotStates)
    assert written.segments == SEGMENTS and written.states == STATES
    assert "DiscardSlotWal" not in kinds and outcome.ok


def test_a_failed_stop_discards_the_fetched_wal() -> None:
    script = Script(answers={fx.ReadSlotStates: fx.SlotStates(True, "read", STATES, segments=SEGMENTS),
                             fx.StopPg: fx.Result(False, "pg_ctl: server does not shut down")})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert script.kinds()[-1] == "DiscardSlotWal" and "WriteSlotStates" not in script.kinds() and not outcome.ok


def test_too_much_wal_to_fetch_waits_and_stops_nothing() -> None:
    refused = fx.SlotStates(False, "the leader's slot cdc needs WAL from 0/3000028, older than the oldest this "
                                   "replica has (0/8000000): 5 segments (80 MiB) to fetch from the leader, where the "
                                   "slot pins 96 MiB of WAL; refused: more than the 2048 MiB cap; waiting for its "
                                   "consumer to move on", waiting=True)
    script = Script(answers={fx.ReadSlotStates: refused})
    outcome = script.run(COPY, context(CLUSTER, me="n2"))
    assert script.kinds() == ["ReadSlotStates"] and not outcome.ok
    assert outcome.detail.startswith("waiting: ") and "80 MiB" in outcome.detail and "pins 96 MiB" in outcome.detail
