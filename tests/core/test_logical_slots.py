"""Permanent logical slots in the core beyond single rows: readiness (what the member JSON publishes), the
backoff after a failed copy, the exemption of a copy just made, the wal_level error said once."""

from __future__ import annotations

from dataclasses import replace

from pgwarden.core import decide
from pgwarden.core.actions import CopyLogicalSlots, RenewLeader
from pgwarden.core.slots import COPY_BACKOFF, COPY_WAIT, copy_backoff, logical_ready
from pgwarden.core.snapshot import ActionKind, HaSettings, Outcome
from tests.core import builders as b
from tests.core.rowlang import build_snapshot

NODE = "me=n2 permanent=cdc:logical"


def test_readiness() -> None:
    assert logical_ready(build_snapshot("replica lsn=100", "published=cdc@80", "me=n2", "-")) is None
    assert logical_ready(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-")) is False  # missing
    assert logical_ready(build_snapshot("replica lsn=100 logical=cdc@80", "published=cdc@80", NODE, "-")) is True
    assert logical_ready(build_snapshot("replica lsn=100 logical=cdc@40", "published=cdc@80", NODE, "-")) is True
    ahead = build_snapshot("replica lsn=100 logical=cdc@90", "published=cdc@80", NODE, "-")
    assert logical_ready(ahead) is False
    assert logical_ready(build_snapshot("replica lsn=100 logical=cdc@90", "published=cdc@80", NODE + " copied=cdc@n1",
                                        "-")) is True
    assert logical_ready(build_snapshot("replica lsn=100 logical=cdc@80", "-", NODE, "-")) is False  # unpublished
    other = build_snapshot("replica lsn=100 logical=cdc:test_decoding@80", "published=cdc@80", NODE, "-")
    assert logical_ready(other) is False
    nofailover = build_snapshot("replica lsn=100 logical=cdc@80", "published=cdc@80", NODE + " nofailover", "-")
    assert logical_ready(nofailover) is False
    assert logical_ready(build_snapshot("primary", "-", "lease=15 permanent=cdc:logical", "-")) is True


def test_the_decision_remembers_readiness_for_the_member_json() -> None:
    decision = decide(build_snapshot("replica lsn=100 logical=cdc@80", "published=cdc@80", NODE, "-"))
    assert decision.memory.logical_slots_ready is True
    decision = decide(build_snapshot("replica lsn=100", "published=cdc@80", "me=n2", "-"))
    assert decision.memory.logical_slots_ready is None


def test_a_copy_is_remembered_with_its_leader_and_kept_until_published_reaches_it() -> None:
    decision = decide(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-"))
    assert isinstance(decision.action, CopyLogicalSlots)
    assert decision.memory.logical_copies == (("cdc", "n1"),)
    # The copy came from a newer state file than the last publication: kept, still remembered.
    later = build_snapshot("replica lsn=100 logical=cdc@90", "published=cdc@80", NODE, "-", memory=decision.memory)
    after = decide(later)
    assert after.memory.logical_copies == (("cdc", "n1"),) and after.action.kind != ActionKind.ENSURE_SLOTS
    # The published position reached it: from now on it is checked like any copy.
    reached = build_snapshot("replica lsn=100 logical=cdc@90", "published=cdc@95", NODE, "-", memory=after.memory)
    assert decide(reached).memory.logical_copies == ()


def test_a_failed_copy_backs_off_doubling() -> None:
    failed = Outcome(ActionKind.COPY_SLOTS, False, "boom", sent_at=b.NOW - 1)
    first = decide(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-", last=(failed,)))
    assert first.memory.slot_copy_failures == 1
    assert first.memory.slot_copy_retry_at == b.NOW - 1 + COPY_BACKOFF
    assert not isinstance(first.action, CopyLogicalSlots)
    second = decide(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-", memory=first.memory,
                                   last=(failed,)))
    assert second.memory.slot_copy_failures == 2
    assert second.memory.slot_copy_retry_at == b.NOW - 1 + 2 * COPY_BACKOFF
    ok = Outcome(ActionKind.COPY_SLOTS, True, "", sent_at=b.NOW - 1)
    done = decide(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-", memory=second.memory, last=(ok,)))
    assert done.memory.slot_copy_failures == 0 and done.memory.slot_copy_retry_at is None


def test_a_waiting_copy_is_retried_soon_without_doubling() -> None:
    waiting = Outcome(ActionKind.COPY_SLOTS, False, "waiting: the leader's slot cdc needs WAL", sent_at=b.NOW - 1)
    first = decide(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-", last=(waiting,)))
    again = decide(build_snapshot("replica lsn=100", "published=cdc@80", NODE, "-", memory=first.memory,
                                  last=(waiting,)))
    assert again.memory.slot_copy_failures == 0 and again.memory.slot_copy_retry_at == b.NOW - 1 + COPY_WAIT


def test_the_backoff_is_bounded() -> None:
    assert copy_backoff(HaSettings(), 1) == COPY_BACKOFF
    assert copy_backoff(HaSettings(), 30) == 600.0
    assert copy_backoff(HaSettings(loop_wait=60), 1) == 60.0


def test_the_wal_level_error_is_said_once_per_change() -> None:
    first = decide(build_snapshot("primary slots=n2,n3 wal=replica", "-", "lease=15 permanent=cdc:logical", "-"))
    assert isinstance(first.action, RenewLeader)
    assert "wal_level=replica" in first.action.error and first.memory.logical_blocked
    again = decide(build_snapshot("primary slots=n2,n3 wal=replica", "-", "lease=15 permanent=cdc:logical", "-",
                                  memory=first.memory))
    assert isinstance(again.action, RenewLeader) and again.action.error == ""
    fixed = decide(build_snapshot("primary slots=n2,n3", "-", "lease=15 permanent=cdc:logical", "-",
                                  memory=again.memory))
    assert isinstance(fixed.action, RenewLeader) and fixed.action.create_logical and not fixed.memory.logical_blocked


def test_a_cluster_without_logical_slots_decides_as_before() -> None:
    """The physical plan and the member JSON of clusters without logical slots stay what they were."""
    snapshot = build_snapshot("replica lsn=100 slots=barman@40", "published=barman@80", "me=n2 permanent=barman", "-")
    decision = decide(snapshot)
    assert decision.memory.logical_slots_ready is None and decision.memory.logical_copies == ()
    assert decide(replace(snapshot, memory=decision.memory)).action == decision.action
