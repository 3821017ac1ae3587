"""Builders for the decision core's inputs: every field gets a healthy default, so a test names only
what matters for its situation.

The default world: a three-node cluster n1, n2, n3; n1 holds the leader key and runs a primary at
LSN `LSN0` on timeline 1; n2 and n3 are streaming replicas of n1 at the same position; the DCS
`initialize` key carries `SYSID`, as does every data directory. `now` is `NOW`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from pgwarden.core.snapshot import (
    FailsafePingSeen,
    HaSettings,
    Memory,
    OperatorRequest,
    Outcome,
    PeerStatus,
    Snapshot,
    TaskInFlight,
    TaskKind,
)
from pgwarden.model import (
    LSN,
    ClusterStatus,
    ClusterView,
    DataDirState,
    FailoverRequest,
    HistoryEntry,
    LeaderKey,
    LocalPg,
    Member,
    PgState,
    Role,
    Tags,
    Versioned,
    WalReceiver,
)

NOW = 1000.0
WALL = 1_700_000_000.0
"""The wall clock (epoch seconds) of every snapshot unless told: 2023-11-14T22:13:20+00:00."""
FAILOVER_REVISION = 7
SYSID = "7000000000000000001"
OTHER_SYSID = "7999999999999999999"
LSN0: LSN = 100
NAMES = ("n1", "n2", "n3")

_DEFAULT = object()
"""Marks an argument the caller did not give (None is a meaningful value for several of them)."""


# ---------------------------------------------------------------------------------------------------
# The local PostgreSQL


def pg_primary(*, lsn: LSN = LSN0, tl: int = 1, sysid: str | None = SYSID,
               slots: Sequence[str] = ()) -> LocalPg:
    """A running, accepting primary."""
    return LocalPg(
        data_dir=DataDirState.VALID,
        sysid=sysid,
        cluster_state="in production",
        controldata_timeline=tl,
        running=True,
        postmaster_pid=4242,
        accepting=True,
        in_recovery=False,
        timeline=tl,
        wal_lsn=lsn,
        slots=tuple(slots),
        server_version=150000,
    )


def pg_replica(*, lsn: LSN = LSN0, tl: int = 1, following: str | None = "n1", streaming: bool = True,
               sysid: str | None = SYSID, slots: Sequence[str] = ()) -> LocalPg:
    """A running, accepting standby; `streaming` says whether its WAL receiver is connected."""
    receiver = WalReceiver(status="streaming", received_tli=tl, latest_end_lsn=lsn) if streaming else None
    return LocalPg(
        data_dir=DataDirState.VALID,
        sysid=sysid,
        cluster_state="in archive recovery",
        controldata_timeline=tl,
        running=True,
        postmaster_pid=4242,
        accepting=True,
        in_recovery=True,
        timeline=tl,
        receive_lsn=lsn if streaming else None,
        replay_lsn=lsn,
        wal_receiver=receiver,
        slots=tuple(slots),
        server_version=150000,
        standby_signal=True,
        following=following,
    )


def pg_stopped(*, state: str = "shut down", tl: int = 1, checkpoint: LSN | None = LSN0,
               sysid: str | None = SYSID, standby_signal: bool | None = None) -> LocalPg:
    """A valid data directory with no postmaster. `state` is pg_controldata's cluster state; a standby
    signal file is assumed exactly when that state says 'in recovery' unless told otherwise."""
    signal = "recovery" in state if standby_signal is None else standby_signal
    return LocalPg(
        data_dir=DataDirState.VALID,
        sysid=sysid,
        cluster_state=state,
        controldata_timeline=tl,
        checkpoint_lsn=checkpoint,
        standby_signal=signal,
    )


def pg_starting(*, tl: int = 1, sysid: str | None = SYSID, state: str = "in crash recovery") -> LocalPg:
    """A postmaster that runs but does not accept connections yet."""
    return LocalPg(
        data_dir=DataDirState.VALID,
        sysid=sysid,
        cluster_state=state,
        controldata_timeline=tl,
        running=True,
        postmaster_pid=4242,
    )


def pg_empty(state: DataDirState = DataDirState.EMPTY) -> LocalPg:
    """No usable data: EMPTY or MISSING (nothing to lose), INVALID or INACCESSIBLE (something to keep)."""
    return LocalPg(data_dir=state)


# ---------------------------------------------------------------------------------------------------
# The DCS


def wall_iso(rel: float, wall: float = WALL) -> str:
    """The ISO 8601 text (UTC, with its offset) of the instant `rel` seconds after `wall`."""
    return datetime.fromtimestamp(wall + rel, tz=UTC).isoformat()


def failover_key(leader: str | None, candidate: str | None, *, scheduled_at: str | None = None,
                 revision: int = FAILOVER_REVISION) -> FailoverRequest:
    """The `failover` key: a switchover away from `leader` (or, without one, a manual failover) to
    `candidate` (or to any healthy member)."""
    return FailoverRequest(leader=leader, member=candidate, scheduled_at=scheduled_at, revision=revision)


def member(name: str, *, role: str | None = None, state: str = PgState.RUNNING, tl: int = 1,
           lsn: LSN = LSN0, tags: Tags | None = None) -> Member:
    """A `members/<name>` value; a replica unless told (the cluster builder makes the leader primary)."""
    return Member(
        name=name,
        conn_url=f"postgres://{name}:5432/postgres",
        api_url=f"http://{name}:8008/patroni",
        state=state,
        role=role or Role.REPLICA,
        timeline=tl,
        xlog_location=lsn if role == Role.PRIMARY else None,
        replay_lsn=None if role == Role.PRIMARY else lsn,
        tags=tags or Tags(),
    )


def cluster(*, leader: str | None = "n1", members: Iterable[str | Member] = NAMES,
            initialize: str | None = SYSID, history: Iterable[tuple[int, LSN]] = (),
            optime: LSN | None = None, retain_slots: Sequence[str] = (), revision: int = 10,
            failover: FailoverRequest | None = None, paused: bool = False,
            failsafe: Iterable[str] | None = None) -> ClusterView:
    """One DCS read. Members given by name are running; the leader's is a primary, the others replicas.
    `history` rows are (ended timeline, switch LSN), in order. `paused`: /config says `pause: true`."""
    rows = tuple(history)
    entries = tuple(HistoryEntry(timeline=tl, lsn=lsn, reason="no recovery target specified",
                                 new_leader=leader) for tl, lsn in rows)
    timeline = max((tl for tl, _ in rows), default=0) + 1
    built: list[Member] = []
    for m in members:
        if isinstance(m, Member):
            built.append(m)
        else:
            built.append(member(m, role=Role.PRIMARY if m == leader else Role.REPLICA, tl=timeline))
    return ClusterView(
        scope="demo",
        initialize=initialize,
        config=Versioned({"pause": True}, revision=revision - 2) if paused else None,
        leader=LeaderKey(leader, revision=revision - 1) if leader else None,
        members=tuple(sorted(built, key=lambda x: x.name)),
        status=ClusterStatus(optime=optime, retain_slots=tuple(retain_slots)),
        history=entries,
        failover=failover,
        revision=revision,
        failsafe=None if failsafe is None else {name: f"http://{name}:8008/patroni" for name in failsafe},
    )


# ---------------------------------------------------------------------------------------------------
# Peers, memory, outcomes, settings


def peer(name: str, *, lsn: LSN | None = LSN0, primary: bool = False, reachable: bool = True, tl: int = 1,
         nofailover: bool = False, priority: int = 1, watchdog_failed: bool = False,
         failsafe_active: bool = False) -> PeerStatus:
    """What a peer's GET /patroni said; an unreachable peer carries nothing else."""
    if not reachable:
        return PeerStatus(name=name, reachable=False)
    return PeerStatus(
        name=name,
        reachable=True,
        role=Role.PRIMARY if primary else Role.REPLICA,
        in_recovery=not primary,
        lsn=lsn,
        timeline=tl,
        nofailover=nofailover,
        failsafe_active=failsafe_active,
        failover_priority=priority,
        watchdog_failed=watchdog_failed,
    )


def memory(*, lease_in: float | None = None, start_deadline_in: float | None = None,
           rewind_failed: bool = False, start_failures: int = 0,
           slots_seen: Iterable[tuple[str, float]] = (), paused_when_last_seen: bool = False,
           bootstrap_failures: int = 0, clone_failures: int = 0, retry_in: float | None = None,
           last_failure: str = "", failsafe_members: Iterable[str] = (), failsafe_active: bool = False,
           permanent_slots: Iterable[str] = (), now: float = NOW) -> Memory:
    """Memory with instants given relative to `now` (lease_in=20 means the lock deadline is now + 20)."""
    return Memory(
        lock_deadline=None if lease_in is None else now + lease_in,
        start_deadline=None if start_deadline_in is None else now + start_deadline_in,
        rewind_failed=rewind_failed,
        start_failures=start_failures,
        slot_last_seen=tuple(sorted((name, now + rel) for name, rel in slots_seen)),
        permanent_slots=tuple(sorted(permanent_slots)),
        paused_when_last_seen=paused_when_last_seen,
        bootstrap_failures=bootstrap_failures,
        clone_failures=clone_failures,
        retry_at=None if retry_in is None else now + retry_in,
        last_failure=last_failure,
        failsafe_members=tuple(sorted((name, f"http://{name}:8008/patroni") for name in failsafe_members)),
        failsafe_active=failsafe_active,
    )


def outcome(kind: str, *, ok: bool = True, sent_in: float = -1.0, now: float = NOW,
            detail: str = "") -> Outcome:
    """The previous action's outcome; `sent_in` is its send instant relative to `now` (usually negative)."""
    return Outcome(action=kind, ok=ok, detail=detail, sent_at=now + sent_in)


def task(kind: TaskKind, *, since_in: float = -5.0, now: float = NOW) -> TaskInFlight:
    return TaskInFlight(kind=kind, since=now + since_in)


def settings(**overrides: object) -> HaSettings:
    """HaSettings with Patroni's defaults; tag overrides go through `tags=Tags(...)`."""
    return replace(HaSettings(), **overrides)  # type: ignore[arg-type]


def snapshot(*, me: str = "n1", pg: LocalPg | None = None, dcs: ClusterView | object | None = _DEFAULT,
             peers: Iterable[PeerStatus] = (), memory: Memory | None = None,
             last: Outcome | Iterable[Outcome] = (),
             now: float = NOW, settings: HaSettings | None = None, task: TaskInFlight | None = None,
             shutting_down: bool = False, wall: float = WALL,
             request: OperatorRequest | None = None, failsafe_ping: FailsafePingSeen | None = None,
             watchdog_failed: bool = False) -> Snapshot:
    """A snapshot of node `me`. `dcs=None` means the DCS could not be read; leaving it out gives the default
    cluster. The default PostgreSQL is a primary when `me` leads the default cluster, else a replica.
    `last` is one outcome or several (oldest first); `request` an operator's restart or reinitialize."""
    view = cluster() if dcs is _DEFAULT else dcs
    assert view is None or isinstance(view, ClusterView)
    if pg is None:
        leads = view is not None and view.leader is not None and view.leader.name == me
        pg = pg_primary() if leads else pg_replica()
    return Snapshot(
        me=me,
        now=now,
        settings=settings or HaSettings(),
        pg=pg,
        dcs=view,
        peers=tuple(sorted(peers, key=lambda p: p.name)),
        memory=memory or Memory(),
        last=(last,) if isinstance(last, Outcome) else tuple(last),
        task=task,
        shutting_down=shutting_down,
        wall=wall,
        request=request,
        failsafe_ping=failsafe_ping,
        watchdog_failed=watchdog_failed,
    )
