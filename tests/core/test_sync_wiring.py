"""How decide() uses the synchronous-replication planner (pgwarden.core.sync.plan): the leader's bookkeeping
rides on RenewLeader, a replica that synchronous mode forbids never races, and a new primary puts its
synchronous state in place before promoting."""

from __future__ import annotations

from dataclasses import replace

from pgwarden.core import decide
from pgwarden.core.actions import AcquireLeader, Promote, RenewLeader, Wait
from pgwarden.core.reasons import Why
from pgwarden.core.sync.plan import SetSsn, SyncMode, SyncSettings, WriteSync
from pgwarden.model import ReplicationRow, SyncState
from tests.core import builders as b

ON = SyncSettings(mode=SyncMode.ON)


def test_primary_in_on_mode_lists_a_streaming_standby_in_synchronous_standby_names_first() -> None:
    rows = (ReplicationRow(application_name="n2", state="streaming", sync_state="async", flush_lsn=b.LSN0),)
    pg = replace(b.pg_primary(), replication=rows, synchronous_standby_names="")
    # No /sync yet: the primary claims it first (no standby listed), by compare-and-swap.
    d = decide(b.snapshot(pg=pg, settings=b.settings(sync=ON), memory=b.memory(lease_in=15)))
    assert isinstance(d.action, RenewLeader) and d.reason.why is Why.SYNC_STEP
    assert isinstance(d.action.sync_step, WriteSync) and d.action.sync_step.state.sync_standby == ()
    # Then the standby joins synchronous_standby_names, before it may ever be published in /sync.
    dcs = replace(b.cluster(), sync=SyncState(leader="n1", sync_standby=(), quorum=0, revision=3))
    d = decide(b.snapshot(pg=pg, dcs=dcs, settings=b.settings(sync=ON), memory=d.memory))
    assert isinstance(d.action, RenewLeader)
    assert isinstance(d.action.sync_step, SetSsn) and "n2" in d.action.sync_step.value


def test_replica_outside_sync_may_not_race_in_on_mode() -> None:
    sync = SyncState(leader="n1", sync_standby=("n3",), quorum=0, revision=4)
    dcs = replace(b.cluster(leader=None), sync=sync)
    d = decide(b.snapshot(me="n2", pg=b.pg_replica(), dcs=dcs, settings=b.settings(sync=ON),
                          peers=(b.peer("n1", reachable=False), b.peer("n3"))))
    assert isinstance(d.action, Wait) and d.reason.why is Why.SYNC_NOT_ALLOWED


def test_sync_standby_may_race_in_on_mode() -> None:
    sync = SyncState(leader="n1", sync_standby=("n2",), quorum=0, revision=4)
    dcs = replace(b.cluster(leader=None), sync=sync)
    d = decide(b.snapshot(me="n2", pg=b.pg_replica(), dcs=dcs, settings=b.settings(sync=ON),
                          peers=(b.peer("n1", reachable=False), b.peer("n3"))))
    assert isinstance(d.action, AcquireLeader)


def test_new_primary_writes_its_sync_state_before_promoting() -> None:
    sync = SyncState(leader="n1", sync_standby=("n2",), quorum=0, revision=4)
    dcs = replace(b.cluster(leader="n2"), sync=sync)
    pg = replace(b.pg_replica(), synchronous_standby_names="")
    first = decide(b.snapshot(me="n2", pg=pg, dcs=dcs, settings=b.settings(sync=ON), memory=b.memory(lease_in=15)))
    assert isinstance(first.action, RenewLeader) and first.reason.why is Why.SYNC_PRE_PROMOTE
    assert isinstance(first.action.sync_step, WriteSync | SetSsn)
    # Once /sync names n2 as leader and the ssn is set, it promotes.
    done = replace(dcs, sync=SyncState(leader="n2", sync_standby=(), quorum=0, revision=5))
    second = decide(b.snapshot(me="n2", pg=pg, dcs=done, settings=b.settings(sync=ON),
                               memory=b.memory(lease_in=15)))
    assert isinstance(second.action, Promote)
