"""The executor's steps as tables: for each action and situation, the effects in order and the outcome.

These are the steps the agent and the simulator both run (`engine.steps`); here they run against a
scripted interpreter (`script.Script`), with no process, no clock and no sleep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pgwarden.core.actions import (
    AcquireLeader,
    Action,
    Bootstrap,
    BootstrapStandby,
    Clone,
    CopyLogicalSlots,
    Demote,
    DemoteMode,
    EnsureSlots,
    FailsafeKeyWrite,
    FailsafeRound,
    Follow,
    Promote,
    Reinitialize,
    ReleaseLeader,
    RemoveDataDirectory,
    RenewLeader,
    Restart,
    Rewind,
    Shutdown,
    StartPostgres,
    Wait,
)
from pgwarden.core.snapshot import ActionKind, HaSettings, StandbyCluster, WatchdogMode, WatchdogSettings
from pgwarden.core.sync.plan import SyncMode, SyncSettings
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import (
    BACKGROUND,
    IMMEDIATE_STOP_KILL_AFTER,
    MIN_STEP_BEFORE_STOP,
    STOP_REQUEST_RESERVE,
    primary_kill_after,
    status_document,
)
from pgwarden.model import (
    ClusterStatus,
    ClusterView,
    FailoverRequest,
    HistoryEntry,
    LocalPg,
    Member,
    history_after_promotion,
)

from .script import PRIMARY, Script, context

REASON = "no recovery target specified"
WATCHDOG_REQUIRED = HaSettings(lease_ttl=7, ttl=30, watchdog=WatchdogSettings(WatchdogMode.REQUIRED))
N2 = Member("n2", conn_url="postgres://127.0.0.2:5432/postgres")
CLUSTER = ClusterView(scope="s", members=(N2,), status=ClusterStatus(optime=90, timeline=2))
FAILED = fx.Result(False, "it failed", "failed")


@dataclass(frozen=True)
class Case:
    name: str
    action: Action
    effects: list[str]
    ok: bool = True
    detail: str | None = None
    answers: dict[type, Any] = field(default_factory=dict)
    cluster: ClusterView | None = CLUSTER
    kind: ActionKind | None = None
    settings: HaSettings | None = None


CASES = [
    Case("wait", Wait(), []),
    Case("acquire", AcquireLeader(), ["AcquireLeaderKey"]),
    Case("acquire lost", AcquireLeader(), ["AcquireLeaderKey"], ok=False, answers={fx.AcquireLeaderKey: False},
         detail="somebody else holds the leader key"),
    Case("renew, then slots, then the rest", RenewLeader(optime=100, create_slots=("n2",), drop_slots=("old",),
                                                         write_initialize="7000", clear_failover=4),
         ["UpdateLeaderKey", "DisarmWatchdog", "EnsureSlots", "DropSlots", "WriteInitialize", "DeleteFailoverKey"]),
    Case("renew arms the watchdog and writes /failsafe", RenewLeader(optime=100, watchdog=True,
                                                                    failsafe=FailsafeKeyWrite((("n1", "u1"),))),
         ["UpdateLeaderKey", "ArmWatchdog", "SetFailsafeKey"]),
    Case("renew, watchdog required and unusable", RenewLeader(optime=100, watchdog=True),
         ["UpdateLeaderKey", "ArmWatchdog"], ok=False, answers={fx.ArmWatchdog: fx.Result(False, "no device")},
         settings=WATCHDOG_REQUIRED, kind=ActionKind.WATCHDOG_FAILED,
         detail="watchdog could not be activated: no device"),
    Case("renew, watchdog automatic and unusable: goes on", RenewLeader(optime=100, watchdog=True),
         ["UpdateLeaderKey", "ArmWatchdog"], answers={fx.ArmWatchdog: fx.Result(False, "no device")}),
    Case("failsafe: every member accepts", FailsafeRound(targets=(("n2", "u2"), ("n3", "u3")), watchdog=True),
         ["PingFailsafe", "ArmWatchdog"], answers={fx.PingFailsafe: (fx.PingAnswer("n2", True),
                                                                             fx.PingAnswer("n3", True))},
         detail="accepted by 2 member(s)"),
    Case("failsafe: one refuses, no watchdog fed", FailsafeRound(targets=(("n2", "u2"), ("n3", "u3")), watchdog=True),
         ["PingFailsafe"], ok=False, answers={fx.PingFailsafe: (fx.PingAnswer("n2", True),
                                                                fx.PingAnswer("n3", False, "500"))},
         detail="not accepted by n3 (500)"),
    Case("a lost key touches nothing", RenewLeader(optime=100, create_slots=("n2",)), ["UpdateLeaderKey"],
         ok=False, answers={fx.UpdateLeaderKey: False}, detail="the leader key is no longer ours"),
    Case("promote", Promote(history_entry=(2, 0x500, REASON), finish_by=1020.0, timeline=3),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "RunHook", "PromotePg", "WritePgConfig", "CheckpointPg",
          "Probe", "ReadTimelineHistory", "WallStamp", "SetHistory"], detail="promoted"),
    Case("promote clears a failover key", Promote(history_entry=None, finish_by=1020.0, timeline=3),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "RunHook", "PromotePg", "WritePgConfig", "CheckpointPg",
          "DeleteFailoverKey"], cluster=ClusterView(scope="s", failover=FailoverRequest(member="n1", revision=3)),
         detail="promoted"),
    Case("a promotion that lost the key before promoting", Promote(history_entry=None, finish_by=1020.0, timeline=4),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "UnreserveTimelines"], ok=False,
         answers={fx.UpdateLeaderKey: False},
         detail="lost leader before promote"),
    Case("pre_promote refuses: the key goes at once", Promote(history_entry=None, finish_by=1020.0, timeline=3),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "RunHook", "DeleteLeaderKey", "DisarmWatchdog"], ok=False,
         answers={fx.RunHook: fx.Result(False, "fenced")}, kind=ActionKind.PRE_PROMOTE_REFUSED, detail="fenced"),
    Case("promote arms the watchdog first", Promote(history_entry=None, finish_by=1020.0, timeline=3,
                                                    watchdog=WatchdogMode.AUTOMATIC),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "ArmWatchdog", "RunHook", "PromotePg", "WritePgConfig",
          "CheckpointPg"], detail="promoted"),
    Case("required: no watchdog, no promotion", Promote(history_entry=None, finish_by=1020.0, timeline=3,
                                                        watchdog=WatchdogMode.REQUIRED),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "ArmWatchdog", "DeleteLeaderKey"], ok=False,
         answers={fx.ArmWatchdog: fx.Result(False, "no device")}, kind=ActionKind.WATCHDOG_FAILED,
         detail="not promoting: watchdog could not be activated: no device"),
    Case("automatic: no watchdog, promotes anyway", Promote(history_entry=None, finish_by=1020.0, timeline=3,
                                                            watchdog=WatchdogMode.AUTOMATIC),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "ArmWatchdog", "RunHook", "PromotePg",
          "WritePgConfig", "CheckpointPg"], answers={fx.ArmWatchdog: fx.Result(False, "no device")},
         detail="promoted"),
    Case("a promotion too slow is stopped", Promote(history_entry=None, finish_by=1020.0, timeline=3),
         ["Probe", "ReserveTimelines", "UpdateLeaderKey", "RunHook", "PromotePg", "StopPg", "DisarmWatchdog"],
         ok=False, answers={fx.PromotePg: FAILED}, detail="promotion abandoned and PostgreSQL stopped: it failed"),
    Case("immediate demote", Demote(DemoteMode.IMMEDIATE), ["Probe", "StandbySignal", "StopPg", "DisarmWatchdog",
                                                          "DeleteLeaderKey"],
         detail="stopped (immediate)"),
    Case("demote without the key", Demote(DemoteMode.IMMEDIATE_NOLOCK), ["Probe", "StandbySignal", "StopPg",
                                                                       "DisarmWatchdog"]),
    Case("offline demote", Demote(DemoteMode.OFFLINE), ["Probe", "StandbySignal", "StopPg", "DisarmWatchdog"],
         detail="stopped (fast)"),
    Case("graceful demote, no deadline", Demote(DemoteMode.GRACEFUL),
         ["Probe", "CheckpointPg", "RunHook", "StandbySignal", "StopPg", "DisarmWatchdog", "DeleteLeaderKey"]),
    Case("a failed stop keeps the key", Demote(DemoteMode.IMMEDIATE), ["Probe", "StandbySignal", "StopPg"], ok=False,
         answers={fx.StopPg: FAILED}),
    Case("start a replica", StartPostgres("replica", "n2"), ["WritePgConfig", "StartPg"]),
    Case("start following an unknown member", StartPostgres("replica", "n9"), [], ok=False,
         detail="no address known for n9"),
    Case("follow", Follow("n2"), ["FollowUpstream"]),
    Case("rewind", Rewind("n2"), ["RewindSpace", "RewindPg"]),
    Case("rewind from nowhere", Rewind("n9"), [], ok=False, detail="no address known for n9"),
    Case("a rewind whose source cannot be reached is no failed rewind", Rewind("n2"), ["RewindSpace", "RewindPg"],
         ok=False,
         answers={fx.RewindPg: fx.Result(False, "pg_rewind failed: could not connect to server", unreachable=True)},
         kind=ActionKind.REWIND_SOURCE_UNREACHABLE),
    Case("remove data", RemoveDataDirectory(), ["MoveDataAside"]),
    Case("release", ReleaseLeader(optime=None), ["DeleteLeaderKey", "DisarmWatchdog"]),
    Case("shutdown", Shutdown(release=True, optime=100), ["RunHook", "StandbySignal", "StopPg", "DisarmWatchdog",
                                                          "DeleteLeaderKey"]),
    Case("shutdown in maintenance mode", Shutdown(release=True, optime=None, stop_postgres=False), ["DisarmWatchdog"],
         detail="PostgreSQL left running (maintenance mode)"),
    Case("restart a primary: the key proven after the stop", Restart("primary", None),
         ["WritePgConfig", "RunHook", "StandbySignal", "StopPg", "UpdateLeaderKey", "StartPg"],
         detail="restarted successfully"),
    Case("restart a primary that lost the key", Restart("primary", None),
         ["WritePgConfig", "RunHook", "StandbySignal", "StopPg", "UpdateLeaderKey"], ok=False,
         answers={fx.UpdateLeaderKey: False},
         detail="stopped, not started as a primary: the leader key is no longer ours"),
    Case("restart a primary, the DCS gone", Restart("primary", None),
         ["WritePgConfig", "RunHook", "StandbySignal", "StopPg", "UpdateLeaderKey"], ok=False,
         answers={fx.UpdateLeaderKey: fx.DcsFailed("etcd unreachable")},
         detail="stopped, not started as a primary: leader key unconfirmed (etcd unreachable)"),
    Case("restart a replica", Restart("replica", "n2"),
         ["WritePgConfig", "RunHook", "StandbySignal", "StopPg", "StartPg"]),
    Case("restart in maintenance mode", Restart("primary", None, require_lock=False),
         ["WritePgConfig", "RunHook", "StandbySignal", "StopPg", "StartPg"]),
    Case("ensure slots", EnsureSlots(("n3",)), ["EnsureSlots"]),
    Case("slot copies: create, drop, advance", EnsureSlots(("barman",), drop=("old",), advance=(("keep", 0x500),)),
         ["EnsureSlots", "DropSlots", "AdvanceSlots"], detail="done; done; done"),
    Case("slot copies: only advance", EnsureSlots((), advance=(("barman", 0x500),)), ["AdvanceSlots"],
         detail="done"),
    Case("slot copies: a failed drop does not stop the advance", EnsureSlots((), drop=("old",),
                                                                             advance=(("barman", 0x500),)),
         ["DropSlots", "AdvanceSlots"], ok=False, answers={fx.DropSlots: FAILED}, detail="it failed"),
    Case("copy logical slots: read, stop, write, start", CopyLogicalSlots("n2", ("cdc",)),
         ["ReadSlotStates", "RunHook", "StandbySignal", "StopPg", "WriteSlotStates", "StartPg"],
         answers={fx.ReadSlotStates: fx.SlotStates(True, "read", (("cdc", b"state"),))},
         detail="copied logical slots cdc from n2"),
    Case("clone", Clone("n2", None), ["Basebackup", "WritePgConfig", "StartPg"]),
    Case("a failed clone says why in one line", Clone("n2", None), ["Basebackup"], ok=False,
         answers={fx.Basebackup: FAILED}, detail="failed"),
    Case("reinitialize", Reinitialize("n2", None),
         ["StandbySignal", "StopPg", "EmptyDataDir", "Basebackup", "WritePgConfig", "StartPg"]),
    Case("bootstrap", Bootstrap(),
         ["WriteInitialize", "InspectDataDir", "Initdb", "WritePgConfig", "StartPg", "CreateRoles", "PostBootstrap",
          "AcquireLeaderKey", "SeedConfig", "Probe", "WriteInitialize"], cluster=None,
         detail="initialized a new cluster"),
    Case("bootstrap race lost", Bootstrap(), ["WriteInitialize"], ok=False, cluster=None,
         answers={fx.WriteInitialize: False}, kind=ActionKind.LOST_INITIALIZE_RACE),
    Case("bootstrap race with the DCS gone", Bootstrap(), ["WriteInitialize"], ok=False, cluster=None,
         answers={fx.WriteInitialize: fx.DcsFailed("down")}, kind=ActionKind.LOST_INITIALIZE_RACE,
         detail="DCS error: down"),
    Case("a failed bootstrap is undone", Bootstrap(),
         ["WriteInitialize", "InspectDataDir", "Initdb", "WritePgConfig", "StartPg", "StopPg", "UndoBootstrap",
          "CancelInitialization"], ok=False, cluster=None, answers={fx.StartPg: FAILED},
         detail="bootstrap failed at start: failed"),
    Case("a directory that must not be taken over", Bootstrap(),
         ["WriteInitialize", "InspectDataDir", "CancelInitialization"], ok=False, cluster=None,
         answers={fx.InspectDataDir: (True, "owned by root")},
         detail="bootstrap failed at checking the data directory: owned by root"),
    Case("a standby leader bootstrap copies the remote", BootstrapStandby(),
         ["WriteInitialize", "InspectDataDir", "Basebackup", "WritePgConfig", "StartPg", "AcquireLeaderKey",
          "SeedConfig", "Probe", "WriteInitialize"], cluster=None, settings=HaSettings(
             standby_cluster=StandbyCluster(host="10.0.0.9", port=5433)),
         detail="bootstrapped a standby leader from the remote primary"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_steps(case: Case) -> None:
    script = Script(answers=dict(case.answers))
    outcome = script.run(case.action, context(case.cluster, settings=case.settings))
    assert script.kinds() == case.effects
    assert outcome.ok is case.ok
    assert outcome.action == (case.kind or case.action.kind)
    if case.detail is not None:
        assert outcome.detail == case.detail


def test_every_action_has_steps_and_every_long_one_runs_in_the_background() -> None:
    covered = {type(c.action) for c in CASES}
    assert covered >= set(BACKGROUND)
    assert covered == set(Action.__args__)  # type: ignore[attr-defined]


def test_a_dcs_failure_becomes_a_failed_outcome() -> None:
    script = Script(answers={fx.UpdateLeaderKey: fx.DcsFailed("timed out")})
    outcome = script.run(RenewLeader(optime=5), context(CLUSTER))
    assert not outcome.ok and outcome.detail == "DCS error: timed out"


# -- the lease bounds a graceful demote -----------------------------------------------------------------


def test_a_switchover_checkpoint_is_bounded_by_the_lease() -> None:
    script = Script(now=1000.0)
    script.run(Demote(DemoteMode.GRACEFUL, finish_by=1001.5), context(CLUSTER))
    (checkpoint,) = script.of(fx.CheckpointPg)
    assert checkpoint.timeout == pytest.approx(1.5 - STOP_REQUEST_RESERVE)
    (hook,) = script.of(fx.RunHook)
    assert hook.timeout <= 1.5 - STOP_REQUEST_RESERVE


def test_no_checkpoint_nor_hook_when_the_lease_is_almost_gone() -> None:
    script = Script(now=1000.0)
    outcome = script.run(Demote(DemoteMode.GRACEFUL, finish_by=1000.0 + STOP_REQUEST_RESERVE
                                + MIN_STEP_BEFORE_STOP / 2), context(CLUSTER))
    assert script.kinds() == ["Probe", "StandbySignal", "StopPg", "DisarmWatchdog", "DeleteLeaderKey"]
    assert outcome.ok and "checkpoint skipped" in outcome.detail


def test_an_abandoned_checkpoint_still_stops() -> None:
    script = Script(answers={fx.CheckpointPg: fx.Result(False, "checkpoint timed out after 1.0s")})
    outcome = script.run(Demote(DemoteMode.GRACEFUL, finish_by=1005.0), context(CLUSTER))
    assert outcome.ok and "checkpoint abandoned (checkpoint timed out after 1.0s)" in outcome.detail
    assert script.of(fx.StopPg) == [fx.StopPg("fast")]


def test_the_demote_releases_with_the_optime_it_saw() -> None:
    script = Script()
    script.run(Demote(DemoteMode.IMMEDIATE), context(CLUSTER))
    assert script.of(fx.DeleteLeaderKey) == [fx.DeleteLeaderKey(ClusterStatus(optime=PRIMARY.wal_lsn, timeline=2))]


# -- promotion: the timeline number, the deadline, the history row ---------------------------------------


def test_a_promotion_claims_the_next_unused_timeline_first() -> None:
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=90, timeline=4))  # 3 and 4 used elsewhere
    script = Script()
    script.run(Promote(history_entry=None, finish_by=1020.0, timeline=5), context(cluster))
    assert script.of(fx.ReserveTimelines) == [fx.ReserveTimelines((3, 4))]
    (claim, *_) = script.of(fx.UpdateLeaderKey)
    assert claim.status == ClusterStatus(optime=90, timeline=5)


def test_a_promotion_waits_at_most_until_its_lease_deadline() -> None:
    settings = HaSettings(lease_ttl=7, ttl=30)
    script = Script(now=1000.0)
    script.run(Promote(history_entry=None, finish_by=1001.0), context(CLUSTER, settings=settings))
    (promote,) = script.of(fx.PromotePg)
    # The renewal before the promotion moved the deadline on: the later of the two bounds the wait.
    assert promote.timeout == pytest.approx(settings.lock_deadline(1000.0) - 1000.0)


def test_no_promotion_without_a_second_of_lease_left() -> None:
    script = Script(now=1000.0, tick=3.0)
    outcome = script.run(Promote(history_entry=None, finish_by=0.0), context(CLUSTER))
    assert not script.of(fx.PromotePg) and script.of(fx.StopPg) == [fx.StopPg("immediate")]
    assert not outcome.ok and "no lease time left to promote" in outcome.detail


def test_the_history_row_is_postgresqls_switch_point() -> None:
    # Decided at 0x500; replay went on to the old primary's shutdown checkpoint and switched at 0x528.
    lineage = [(1, 0x300, REASON), (2, 0x528, "after the switchover")]
    history = (HistoryEntry(1, 0x300, REASON, "t0", "n0"),)
    script = Script(answers={fx.ReadTimelineHistory: lineage,
                             fx.Probe: LocalPg(data_dir=PRIMARY.data_dir, running=True, accepting=True,
                                                         in_recovery=False, timeline=3)})
    script.run(Promote(history_entry=(2, 0x500, REASON), finish_by=1020.0, timeline=3),
               context(ClusterView(scope="s", history=history), me="n2"))
    (read,) = script.of(fx.ReadTimelineHistory)
    assert read.timeline == 3
    (written,) = script.of(fx.SetHistory)
    assert [(h.timeline, h.lsn, h.reason, h.new_leader) for h in written.rows] == [
        (1, 0x300, REASON, "n0"), (2, 0x528, "after the switchover", "n2")]


def test_history_after_promotion_follows_postgresqls_lineage() -> None:
    current = (HistoryEntry(1, 0x100, REASON, "t0", "n1"), HistoryEntry(2, 0x300, REASON, "t1", "n3"))
    # Timeline 2 was another branch (reserved): this promotion went from 1 (at 0x200) to 3.
    rows = history_after_promotion(current, [(1, 0x200, "")], (1, 0x180, REASON), 3, "n2", "now")
    assert [(h.timeline, h.lsn, h.reason, h.new_leader) for h in rows] == [(1, 0x200, REASON, "n2")]


def test_history_after_promotion_without_the_file_appends_the_decided_row() -> None:
    current = (HistoryEntry(1, 0x100, REASON, "t0", "n1"),)
    # The decision's idea lagged (it saw timeline 1); PostgreSQL is on 3: the row is for 2.
    rows = history_after_promotion(current, [], (1, 0x500, REASON), 3, "n2", "now")
    assert [(h.timeline, h.lsn, h.new_leader) for h in rows] == [(1, 0x100, "n1"), (2, 0x500, "n2")]
    limited = history_after_promotion(current, [], (2, 0x500, REASON), 3, "n2", "now", limit=1)
    assert [h.timeline for h in limited] == [2]


def test_an_unreadable_history_file_is_said() -> None:
    script = Script()
    script.run(Promote(history_entry=(1, 0x500, REASON), finish_by=1020.0), context(ClusterView(scope="s")))
    assert any("history file unreadable" in e.text for e in script.of(fx.Log))


# -- what a renewal or a release publishes ------------------------------------------------------------


def test_the_status_document_keeps_the_reserved_timeline() -> None:
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=0x500, retain_slots=("n2",), timeline=5))
    assert status_document(cluster, 0x500, ("n2", "n3")) == ClusterStatus(optime=0x500, retain_slots=("n2", "n3"),
                                                                          timeline=5)
    assert status_document(cluster, 0x600) == ClusterStatus(optime=0x600, retain_slots=("n2",), timeline=5)
    assert status_document(None, None) == ClusterStatus()


def test_a_renewal_retains_the_slots_it_creates() -> None:
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=1, retain_slots=("n2",)))
    script = Script()
    script.run(RenewLeader(optime=5, create_slots=("n3",)), context(cluster))
    (renewal,) = script.of(fx.UpdateLeaderKey)
    assert renewal.status == ClusterStatus(optime=5, retain_slots=("n2", "n3"))


def test_a_renewal_publishes_the_slot_positions_the_core_chose() -> None:
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=1, slots={"old": 1}))
    script = Script()
    script.run(RenewLeader(optime=5, slots=(("barman", 3), ("n1", 5))), context(cluster))
    (renewal,) = script.of(fx.UpdateLeaderKey)
    assert renewal.status.slots == {"barman": 3, "n1": 5}


def test_a_renewal_without_positions_keeps_the_published_ones() -> None:
    """A leader whose PostgreSQL is no primary yet has nothing to publish: the replicas go on advancing
    their copies to what the DCS has (a release keeps them too)."""
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=1, slots={"barman": 3}))
    script = Script()
    script.run(RenewLeader(optime=5), context(cluster))
    script.run(ReleaseLeader(optime=5), context(cluster))
    (renewal,) = script.of(fx.UpdateLeaderKey)
    (release,) = script.of(fx.DeleteLeaderKey)
    assert renewal.status.slots == release.status.slots == {"barman": 3}


def test_a_release_keeps_the_retained_slots() -> None:
    """The next leader learns from `retain_slots` which member slots to keep for member_slots_ttl."""
    cluster = ClusterView(scope="s", status=ClusterStatus(optime=1, retain_slots=("n2", "n3")))
    script = Script()
    script.run(ReleaseLeader(optime=5), context(cluster))
    (release,) = script.of(fx.DeleteLeaderKey)
    assert release.status.retain_slots == ("n2", "n3")


def test_history_repair_rebuilds_from_postgresqls_file() -> None:
    cluster = ClusterView(scope="s", history=(HistoryEntry(1, 0x100, REASON, "t0", "n1"),))
    script = Script(answers={fx.ReadTimelineHistory: [(1, 0x100, REASON), (2, 0x200, REASON)]})
    outcome = script.run(RenewLeader(optime=5, repair_history=True), context(cluster))
    (written,) = script.of(fx.SetHistory)
    assert [h.timeline for h in written.rows] == [1, 2]
    assert outcome.ok and outcome.detail == "history repaired up to timeline 1"


# -- primary_stop_timeout ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "mode", "standby", "expected"), [
    (5, SyncMode.ON, False, 5.0),
    (5, SyncMode.QUORUM, False, 5.0),
    (5, SyncMode.OFF, False, None),  # only in synchronous mode (Patroni)
    (0, SyncMode.ON, False, None),  # 0: no limit
    (5, SyncMode.ON, True, None),  # a replica's stop never is
])
def test_primary_stop_timeout(timeout: int, mode: SyncMode, standby: bool, expected: float | None) -> None:
    ctx = context(settings=HaSettings(sync=SyncSettings(mode=mode)), primary_stop_timeout=timeout)
    assert primary_kill_after(ctx, standby) == expected
    script = Script(answers={fx.StandbySignal: standby})
    script.run(Shutdown(release=False, optime=None), ctx)
    assert script.of(fx.StopPg) == [fx.StopPg("fast", expected)]


@pytest.mark.parametrize(("timeout", "mode", "standby", "expected"), [
    (0, SyncMode.OFF, False, IMMEDIATE_STOP_KILL_AFTER),  # asynchronous: killed too, not after pg_ctl_timeout
    (30, SyncMode.ON, False, IMMEDIATE_STOP_KILL_AFTER),  # the shorter bound wins
    (1, SyncMode.QUORUM, False, 1.0),
    (0, SyncMode.OFF, True, None),  # a replica writes nothing: no kill
])
def test_an_immediate_stop_of_a_primary_is_bounded_by_a_kill(timeout: int, mode: SyncMode, standby: bool,
                                                             expected: float | None) -> None:
    """A demotion because the lease is lost: a postmaster that does not stop (frozen: its backends still
    commit) is killed after a few seconds in every mode (found by the chaos suite)."""
    ctx = context(settings=HaSettings(sync=SyncSettings(mode=mode)), primary_stop_timeout=timeout)
    script = Script(answers={fx.StandbySignal: standby})
    script.run(Demote(DemoteMode.IMMEDIATE_NOLOCK), ctx)
    assert script.of(fx.StopPg) == [fx.StopPg("immediate", expected)]
