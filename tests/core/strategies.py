"""Hypothesis strategies for any valid Snapshot: a small world of names (n1..n4), LSNs and timelines, so
that collisions (equal LSNs, the same leader, my own name among the peers) happen often."""

from __future__ import annotations

from hypothesis import strategies as st

from pgwarden.core.snapshot import (
    HaSettings,
    Memory,
    OperatorRequest,
    Outcome,
    PeerStatus,
    ReinitRequested,
    RestartRequested,
    Snapshot,
    TaskInFlight,
    TaskKind,
)
from pgwarden.model import ClusterView, DataDirState, FailoverRequest, LocalPg, Member, PgState, Tags, WalReceiver
from tests.core import builders as b
from tests.core.rowlang import ACTION_ALIASES

NAMES = ("n1", "n2", "n3", "n4")
names = st.sampled_from(NAMES)
lsns = st.integers(min_value=0, max_value=1000)
timelines = st.integers(min_value=1, max_value=4)
sysids = st.sampled_from([b.SYSID, b.OTHER_SYSID, None])
offsets = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False)
CONTROL_STATES = ("in production", "shut down", "shut down in recovery", "in crash recovery",
                  "in archive recovery", "shutting down", None)


def tags() -> st.SearchStrategy[Tags]:
    return st.builds(Tags, nofailover=st.booleans(), failover_priority=st.integers(0, 3),
                     clonefrom=st.booleans(), replicatefrom=st.none() | names, nostream=st.booleans())


def ha_settings() -> st.SearchStrategy[HaSettings]:
    return st.builds(
        HaSettings,
        ttl=st.integers(20, 60),
        loop_wait=st.integers(1, 10),
        retry_timeout=st.integers(3, 10),
        maximum_lag_on_failover=st.integers(0, 1000),
        primary_start_timeout=st.integers(0, 300),
        check_timeline=st.booleans(),
        use_pg_rewind=st.booleans(),
        remove_data_directory_on_rewind_failure=st.booleans(),
        remove_data_directory_on_diverged_timelines=st.booleans(),
        use_slots=st.booleans(),
        member_slots_ttl=st.integers(0, 3000),
        tags=tags(),
    )


@st.composite
def any_local_pg(draw: st.DrawFn) -> LocalPg:
    """A probe result with loosely related fields (accepting implies running, as a real probe ensures)."""
    running = draw(st.booleans())
    accepting = running and draw(st.booleans())
    in_recovery = draw(st.sampled_from([True, False, None])) if accepting else None
    streaming = draw(st.booleans())
    return LocalPg(
        data_dir=draw(st.sampled_from(DataDirState)),
        sysid=draw(sysids),
        cluster_state=draw(st.sampled_from(CONTROL_STATES)),
        controldata_timeline=draw(st.none() | timelines),
        checkpoint_lsn=draw(st.none() | lsns),
        running=running,
        accepting=accepting,
        in_recovery=in_recovery,
        timeline=draw(st.none() | timelines),
        wal_lsn=draw(st.none() | lsns),
        receive_lsn=draw(st.none() | lsns),
        replay_lsn=draw(st.none() | lsns),
        pending_restart=draw(st.booleans()),
        server_version=draw(st.none() | st.sampled_from([140000, 150000, 160000])),
        wal_receiver=WalReceiver(status="streaming") if streaming else None,
        slots=tuple(draw(st.lists(names, unique=True))),
        standby_signal=draw(st.booleans()),
        following=draw(st.none() | names),
    )


def local_pg() -> st.SearchStrategy[LocalPg]:
    """Realistic shapes from the builders, plus arbitrary probe results."""
    slots = st.lists(names, unique=True).map(tuple)
    return st.one_of(
        st.builds(b.pg_primary, lsn=lsns, tl=timelines, sysid=sysids, slots=slots),
        st.builds(b.pg_replica, lsn=lsns, tl=timelines, following=st.none() | names, streaming=st.booleans(),
                  sysid=sysids, slots=slots),
        st.builds(b.pg_stopped, state=st.sampled_from([s for s in CONTROL_STATES if s]), tl=timelines,
                  checkpoint=st.none() | lsns, sysid=sysids, standby_signal=st.none() | st.booleans()),
        st.builds(b.pg_starting, tl=timelines, sysid=sysids),
        st.builds(b.pg_empty, st.sampled_from([d for d in DataDirState if d is not DataDirState.VALID])),
        any_local_pg(),
    )


def members() -> st.SearchStrategy[Member]:
    return st.builds(b.member, names, role=st.sampled_from(["primary", "replica", "uninitialized", None]),
                     state=st.sampled_from(PgState), tl=timelines, lsn=lsns, tags=tags())


def failover_keys() -> st.SearchStrategy[FailoverRequest]:
    """Switchovers, manual failovers, scheduled ones (around builders.WALL) and a few malformed instants."""
    scheduled = st.none() | st.integers(-120, 120).map(lambda rel: b.wall_iso(float(rel))) | st.just("soon")
    return st.builds(b.failover_key, st.none() | names, st.none() | names, scheduled_at=scheduled)


@st.composite
def cluster_views(draw: st.DrawFn) -> ClusterView:
    history_len = draw(st.integers(0, 3))
    switch_points = sorted(draw(st.lists(lsns, min_size=history_len, max_size=history_len)))
    listed: list[Member] = draw(st.lists(members(), unique_by=lambda m: m.name))
    return b.cluster(
        leader=draw(st.none() | names),
        members=listed,
        initialize=draw(st.sampled_from([None, "", b.SYSID, b.OTHER_SYSID])),
        history=tuple(zip(range(1, history_len + 1), switch_points, strict=True)),
        optime=draw(st.none() | lsns),
        retain_slots=draw(st.lists(names, unique=True)),
        failover=draw(st.none() | failover_keys()),
        paused=draw(st.booleans()),
    )


def peers() -> st.SearchStrategy[list[PeerStatus]]:
    peer = st.builds(b.peer, names, lsn=st.none() | lsns, primary=st.booleans(), reachable=st.booleans(),
                     tl=timelines, nofailover=st.booleans(), priority=st.integers(0, 3),
                     watchdog_failed=st.booleans())
    return st.lists(peer, unique_by=lambda p: p.name, max_size=4)


@st.composite
def memories(draw: st.DrawFn, now: float) -> Memory:
    return Memory(
        lock_deadline=draw(st.none() | offsets.map(lambda d: now + d)),
        start_deadline=draw(st.none() | offsets.map(lambda d: now + d)),
        rewind_failed=draw(st.booleans()),
        start_failures=draw(st.integers(0, 4)),
        slot_last_seen=tuple(sorted(draw(st.dictionaries(names, st.floats(-4000.0, 0.0))).items())),
        paused_when_last_seen=draw(st.booleans()),
        bootstrap_failures=draw(st.integers(0, 4)),
        clone_failures=draw(st.integers(0, 4)),
        retry_at=draw(st.none() | offsets.map(lambda d: now + d)),
        last_failure=draw(st.sampled_from(["", 'FATAL: invalid value for parameter "shared_buffers"'])),
    )


def requests() -> st.SearchStrategy[OperatorRequest]:
    roles = st.sampled_from([None, "primary", "replica", "master", "leader", "any"])
    restart = st.builds(RestartRequested, role=roles, postgres_version=st.none() | st.just(150001),
                        restart_pending=st.booleans())
    return restart | st.builds(ReinitRequested, from_leader=st.booleans())


@st.composite
def outcomes(draw: st.DrawFn, now: float) -> Outcome:
    return Outcome(action=draw(st.sampled_from(sorted(ACTION_ALIASES.values()))), ok=draw(st.booleans()),
                   sent_at=now + draw(st.floats(-60.0, 0.0)))


@st.composite
def snapshots(draw: st.DrawFn, *, with_task: bool = True) -> Snapshot:
    now = draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
    tasks = st.builds(TaskInFlight, st.sampled_from(TaskKind), st.just(now - 5))
    task = draw(st.none() | tasks) if with_task else None
    return b.snapshot(
        me=draw(names),
        pg=draw(local_pg()),
        dcs=draw(st.none() | cluster_views()),
        peers=draw(peers()),
        memory=draw(memories(now)),
        last=draw(st.lists(outcomes(now), max_size=2)),
        now=now,
        settings=draw(ha_settings()),
        task=task,
        shutting_down=draw(st.booleans()),
        wall=b.WALL + draw(st.floats(-200.0, 200.0)),
        request=draw(st.none() | requests()),
    )
