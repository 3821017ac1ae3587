"""The vocabulary of the decision core: what it is shown (Snapshot), what it answers (Decision).

Everything is a frozen value. The core never sees a connection, a clock or a logger: time is the
`now` field (the agent's monotonic clock, sampled once after observation), and effects come back
only as the next snapshot's `last` outcome and observations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pgwarden.core.sync import SyncMemory, SyncSettings, SyncStep
from pgwarden.model import LSN, ClusterView, LocalPg, Tags

# ---------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class HaSettings:
    """The effective settings the core needs (after layering defaults, DCS /config, file and env)."""

    ttl: int = 30
    loop_wait: int = 10
    retry_timeout: int = 10
    lease_ttl: int = 30
    """The leader key's lease in the DCS (pgwarden.lease_ttl capped by ttl); a keepalive refreshes it
    apart from the HA cycle, and every renewal or keepalive outcome extends `lock_deadline`."""
    maximum_lag_on_failover: int = 1048576
    primary_start_timeout: int = 300
    check_timeline: bool = False
    use_pg_rewind: bool = False
    remove_data_directory_on_rewind_failure: bool = False
    remove_data_directory_on_diverged_timelines: bool = False
    use_slots: bool = True
    member_slots_ttl: int = 1800
    max_timelines_history: int = 0
    tags: Tags = field(default_factory=Tags)
    sync: SyncSettings = field(default_factory=SyncSettings)

    @property
    def lease_margin(self) -> float:
        """How long before the lease can expire elsewhere a leader must have stopped accepting writes.

        The lease counts from when etcd received our keepalive, which is after we sent it; measuring
        from the send instant already errs on the safe side. The margin is the time an immediate stop
        of PostgreSQL may take, with room to spare: a fifth of the lease, at least 1.5 s.
        """
        return max(1.5, self.lease_ttl / 5)

    def lock_deadline(self, renewal_sent_at: float) -> float:
        """Until when a leader whose last successful renewal (or keepalive) was sent at
        `renewal_sent_at` may accept writes."""
        return renewal_sent_at + self.lease_ttl - self.lease_margin


KEEPALIVES_PER_LEASE = 7
"""The leader's default keepalive rate: seven per lease (every second for the default 7 s lease).
A keepalive may be lost or stall (a 3 s etcd stall in the soak benchmark) with the lease still held."""


def keepalive_period(interval: float | None, lease_ttl: float, *, leading: bool) -> float:
    """Seconds between two lease keepalives (`interval`: pgwarden.keepalive_interval, None: default).

    The leader's lease decides how soon a dead leader is replaced, so it is refreshed every
    `interval`, by default KEEPALIVES_PER_LEASE times per lease. Any other member's lease only keeps
    its member key alive: three refreshes per lease are plenty, and cost a fraction of the requests.
    """
    leader_period = interval if interval is not None else lease_ttl / KEEPALIVES_PER_LEASE
    return leader_period if leading else max(leader_period, lease_ttl / 3)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What a peer's `GET /patroni` said (or that it did not answer) during this observation."""

    name: str
    reachable: bool
    role: str | None = None
    in_recovery: bool | None = None
    lsn: LSN | None = None
    timeline: int | None = None
    nofailover: bool = False
    failover_priority: int = 1
    watchdog_failed: bool = False

    @property
    def is_running_primary(self) -> bool:
        return self.reachable and self.in_recovery is False


class TaskKind(StrEnum):
    """Long actions that run in the background while the loop keeps deciding (and renewing)."""

    BOOTSTRAP = "bootstrap"
    CLONE = "clone"
    REWIND = "rewind"
    START = "start"
    STOP = "stop"
    PROMOTE = "promote"
    REMOVE_DATA = "remove data directory"
    RESTART = "restart"
    REINITIALIZE = "reinitialize"


@dataclass(frozen=True, slots=True)
class TaskInFlight:
    kind: TaskKind
    since: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the previous action went, as the executor saw it."""

    action: str  # the action's `kind`
    ok: bool
    detail: str = ""
    sent_at: float = 0.0
    """Monotonic instant at which the (first) request of the action was sent. For a lock renewal
    this is what the lease deadline is counted from."""


@dataclass(frozen=True, slots=True)
class Memory:
    """What the core chose to remember between cycles. Returned in every Decision, fed back next time."""

    lock_deadline: float | None = None
    """While this node believes it holds the leader lock: the instant by which it must have stopped
    accepting writes (last successful renewal's send time + ttl - margin)."""
    start_deadline: float | None = None  # a primary restarting in place must be up by then
    rewind_failed: bool = False
    start_failures: int = 0
    slot_last_seen: tuple[tuple[str, float], ...] = ()  # member slots and when their member was last seen
    paused_when_last_seen: bool = False  # maintenance mode as of the last successful DCS read
    sync: SyncMemory = field(default_factory=SyncMemory)  # the synchronous-replication planner's
    pooler_hold: tuple[int, float] | None = None
    """(failover key revision, deadline): how long a switchover waits for connection poolers to pause."""
    promote_backoff_until: float | None = None
    """After the pre_promote script refused a promotion: no leader race before this instant."""
    diverged: bool = False
    """This node was stopped because it holds WAL the leader's timeline does not have; it must be
    rewound (or re-cloned) before it may start again, whatever its control file suggests."""
    bootstrap_failures: int = 0
    """Bootstraps this node won the initialize race for and then failed (reset by a success or by a
    usable data directory). At MAX_BOOTSTRAP_FAILURES the agent gives up and exits."""
    clone_failures: int = 0
    """Failed clones (or reinitializations) since the last success or usable data directory."""
    retry_at: float | None = None
    """After a failed bootstrap or clone: no new attempt before this instant (exponential backoff)."""
    last_failure: str = ""
    """Why the last bootstrap or clone failed, as the executor summed it up (for the operator)."""
    start_retry_at: float | None = None
    """After PostgreSQL failed to start (or restart): no new start before this instant (`start_backoff`)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything observed for one decision."""

    me: str
    now: float
    settings: HaSettings
    pg: LocalPg
    dcs: ClusterView | None  # None: the DCS could not be read
    peers: tuple[PeerStatus, ...] = ()  # sorted by name; only collected when a race is possible
    memory: Memory = field(default_factory=Memory)
    last: tuple[Outcome, ...] = ()
    """Outcomes reported since the previous decision, oldest first: the inline action's, and any
    background task's that finished meanwhile."""
    task: TaskInFlight | None = None
    shutting_down: bool = False
    wall: float = 0.0
    """Wall-clock epoch seconds, only to compare with instants an operator scheduled (switchover).
    Never used for leases or timeouts: those use `now`."""
    request: OperatorRequest | None = None
    """A local operation an operator asked for through the REST API, awaiting this decision."""

    @property
    def paused(self) -> bool:
        return self.dcs is not None and self.dcs.paused


@dataclass(frozen=True, slots=True)
class RestartRequested:
    """POST /restart, with its conditions (all must hold, else the restart is refused)."""

    role: str | None = None
    postgres_version: int | None = None  # restart only if the running server_version_num is below
    restart_pending: bool = False


@dataclass(frozen=True, slots=True)
class ReinitRequested:
    """POST /reinitialize."""

    from_leader: bool = False


OperatorRequest = RestartRequested | ReinitRequested


# ---------------------------------------------------------------------------------------------------
# Outputs: actions. Each carries only what its executor needs; the docstring gives the step order.


@dataclass(frozen=True, slots=True)
class Wait:
    """Do nothing this cycle."""

    kind: str = "wait"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Atomically create `initialize`; if won: initdb, start, create roles, post_bootstrap, take the
    leader key, seed `/config`, then write the system identifier to `initialize`. On failure after
    winning: stop PostgreSQL, remove what this attempt created (the directory initdb made, or the
    contents of the empty one it filled: no user data), delete `initialize` so another node can try.
    A lost race (or a DCS error before winning) is reported as an outcome of kind `initialize race`:
    it is not a failure of this node's bootstrap."""

    kind: str = "bootstrap"


@dataclass(frozen=True, slots=True)
class Clone:
    """pg_basebackup from `source` into the (empty) data directory, configure as a replica of
    `follow`, start."""

    source: str
    follow: str | None
    kind: str = "clone"


@dataclass(frozen=True, slots=True)
class AcquireLeader:
    """Create the leader key if absent (atomic). Nothing else: promotion is the next decision."""

    kind: str = "acquire leader"


@dataclass(frozen=True, slots=True)
class RenewLeader:
    """Refresh the leader key's lease (owner-checked) and write `/status`; then, only if that
    succeeded, create missing member slots and drop the ones no longer wanted."""

    optime: LSN | None
    create_slots: tuple[str, ...] = ()
    drop_slots: tuple[str, ...] = ()
    write_initialize: str | None = None  # system identifier to record, when `initialize` lacks it
    clear_failover: int | None = None  # revision of a `failover` key to delete (stale or impossible)
    repair_history: bool = False
    """`history` lacks the timelines PostgreSQL reports (its write was lost, e.g. the host died during
    the post-promote checkpoint): rebuild the missing rows from PostgreSQL's own timeline history."""
    sync_step: SyncStep | None = None
    """One step of synchronous-replication bookkeeping (synchronous_standby_names or `/sync`), done
    only after the renewal succeeded: a primary that lost its lease never touches either."""
    kind: str = "renew leader"


@dataclass(frozen=True, slots=True)
class Promote:
    """Refresh the leader lease (owner-checked, so the key is still ours; its send time counts as a
    renewal), `pg_ctl promote` waiting at most until `finish_by` (if the promotion has not completed
    by then PostgreSQL is stopped at once: a promotion finishing late, after the lease may have
    passed to somebody else, would make a second writer), CHECKPOINT (so pg_rewind on the old
    primary sees the new timeline), then append to `history` and clear a `failover` key.

    Runs in the background, so the HA loop (and the keepalive) keep the lease alive meanwhile."""

    history_entry: tuple[int, LSN, str] | None  # (ending timeline, switch LSN, reason)
    finish_by: float = 0.0  # monotonic; the lock deadline at the time of the decision
    kind: str = "promote"


class DemoteMode(StrEnum):
    GRACEFUL = "graceful"  # CHECKPOINT, fast stop, release the key
    IMMEDIATE = "immediate"  # immediate stop, release the key
    IMMEDIATE_NOLOCK = "immediate-nolock"  # immediate stop; the key is not ours any more
    OFFLINE = "offline"  # fast stop, no key to release (the DCS cannot be reached; a diverged replica)


@dataclass(frozen=True, slots=True)
class Demote:
    """Stop accepting writes now: stop PostgreSQL in `mode`, then release the key if the mode says so.
    The node comes back as a replica in a later cycle (after a rewind if needed).

    A graceful demote's CHECKPOINT before the stop (and the before_stop hook) may only take until
    `finish_by` (monotonic, the lock deadline at the time of the decision) minus the time needed to
    get the stop request to PostgreSQL: past that they are cut short or skipped, so that PostgreSQL
    stops accepting writes before the lease can lapse. None: no deadline known, no bound."""

    mode: DemoteMode
    finish_by: float | None = None
    kind: str = "demote"

    @property
    def release(self) -> bool:
        return self.mode in (DemoteMode.GRACEFUL, DemoteMode.IMMEDIATE)


@dataclass(frozen=True, slots=True)
class StartPostgres:
    """Write the configuration for `role` (a replica follows `follow`, or nobody) and start."""

    role: str  # "primary" | "replica"
    follow: str | None
    kind: str = "start"


@dataclass(frozen=True, slots=True)
class Follow:
    """Point a running replica at `leader` (primary_conninfo, primary_slot_name; reload)."""

    leader: str
    kind: str = "follow"


@dataclass(frozen=True, slots=True)
class Rewind:
    """pg_rewind from `source` (PostgreSQL must be stopped). Starting as a replica is the next decision."""

    source: str
    kind: str = "rewind"


@dataclass(frozen=True, slots=True)
class RemoveDataDirectory:
    """Move the data directory's contents aside (`<dir>.failed.<timestamp>`; at most one such copy is
    kept, later ones are removed). Only decided when configuration allows."""

    kind: str = "remove data directory"


@dataclass(frozen=True, slots=True)
class ReleaseLeader:
    """Delete the leader key if it still names us (writing the last optime to `/status` first)."""

    optime: LSN | None
    kind: str = "release leader"


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The agent is stopping: fast-stop PostgreSQL (unless paused: then it is left alone), then
    delete the leader key if `release`."""

    release: bool
    optime: LSN | None
    stop_postgres: bool = True
    fatal: bool = False
    """The agent gives up (e.g. bootstrap keeps failing): it exits with a non-zero status and the
    reason is logged as CRITICAL, for the operator (or the service manager) to act on."""
    kind: str = "shutdown"


@dataclass(frozen=True, slots=True)
class EnsureSlots:
    """On a replica: create the physical slots of members that cascade from it (replicatefrom)."""

    create: tuple[str, ...]
    kind: str = "ensure slots"


@dataclass(frozen=True, slots=True)
class Restart:
    """Restart PostgreSQL in place (fast stop, start with the same role). Runs in the background; a
    leader keeps renewing its lock meanwhile."""

    role: str  # "primary" | "replica"
    follow: str | None
    kind: str = "restart"
    require_lock: bool = True
    """A primary starts only after a renewal of the leader key proved it ours. False only in maintenance
    mode for a stopped primary with the key free (the operator's restart; nobody else may take it)."""


@dataclass(frozen=True, slots=True)
class Reinitialize:
    """An operator asked to rebuild this replica: stop PostgreSQL, remove the data directory's contents
    (the request is the permission: the data is to be replaced, no copy is kept), clone from `source`,
    start following `follow`."""

    source: str
    follow: str | None
    kind: str = "reinitialize"


Action = (
    Wait
    | Bootstrap
    | Clone
    | AcquireLeader
    | RenewLeader
    | Promote
    | Demote
    | StartPostgres
    | Follow
    | Rewind
    | RemoveDataDirectory
    | ReleaseLeader
    | Shutdown
    | Restart
    | Reinitialize
    | EnsureSlots
)


# ---------------------------------------------------------------------------------------------------
# Reasons


class Why(StrEnum):
    """Why the core chose its action. Rendered into the operator's log line by `core.render`."""

    LOCK_HELD = "lock held"
    PROMOTE_WITH_LOCK = "promote with lock"
    RENEW_RETRY = "renew retry"
    LEASE_AT_RISK = "lease at risk"
    LOCK_LOST = "lock lost"
    DCS_DOWN_LEADER_WAITING = "dcs down, leader keeps running within lease"
    DCS_DOWN = "dcs down"
    FOLLOWING = "following"
    FOLLOW_NEW_LEADER = "follow new leader"
    NOT_LEADER_PRIMARY = "primary without lock"
    RACE_HEALTHIEST = "healthiest"
    RACE_PRIMARY_RECLAIM = "primary reclaims free lock"
    RACE_NOT_HEALTHIEST = "not healthiest"
    RACE_PRIMARY_ALIVE = "primary still alive"
    RACE_LAGGING = "lagging"
    RACE_TIMELINE_BEHIND = "timeline behind"
    RACE_NOFAILOVER = "nofailover"
    RACE_TIMELINE_BEHIND_PRIMARY = "stale primary behind cluster timeline"
    BOOTSTRAP = "bootstrap"
    WAIT_FOR_BOOTSTRAP = "wait for bootstrap"
    BOOTSTRAP_BACKOFF = "bootstrap failed, backing off"
    BOOTSTRAP_GAVE_UP = "bootstrap failed too often, giving up"
    CLONE_BACKOFF = "clone failed, backing off"
    CLONE_FROM_LEADER = "clone from leader"
    CLONE_FROM_REPLICA = "clone from replica"
    WAIT_FOR_LEADER_TO_CLONE = "no member to clone from"
    EMPTY_DATA_WITH_LOCK = "empty data dir with lock"
    DATA_DIR_UNUSABLE = "data dir unusable"
    SYSID_MISMATCH = "sysid mismatch"
    SYSID_MISMATCH_RELEASE = "sysid mismatch, releasing lock"
    START_PRIMARY_AFTER_CRASH = "start primary after failure"
    START_READONLY_WITH_LOCK = "start readonly with lock"
    START_REPLICA = "start replica"
    START_FAILED_RELEASE = "start failed, release"
    START_BACKOFF = "start failed, backing off"
    STARTING = "starting"
    START_TIMEOUT = "primary start timeout"
    REWIND = "rewind"
    REWIND_NOT_ALLOWED = "needs rewind, not allowed"
    REWIND_FAILED = "rewind failed"
    REWIND_FAILED_REMOVE = "rewind failed, remove data"
    DIVERGED_REMOVE = "diverged, remove data"
    TASK_IN_PROGRESS = "task in progress"
    TASK_IN_PROGRESS_RENEW = "task in progress, renew"
    SHUTDOWN_HANDOVER = "shutdown, hand over"
    SHUTDOWN_KEEP = "shutdown, keep key"
    SHUTDOWN_RELEASE = "shutdown, release key: nobody may promote"
    CRASH_FAILOVER = "primary_start_timeout 0: release the key after a crash"
    SHUTDOWN = "shutdown"
    NO_ACTION = "no action"
    PRE_PROMOTE_BACKOFF = "pre_promote failed, backing off"
    CASCADE_SLOTS = "create slots for cascading members"
    WAITING_FOR_POOLERS = "switchover: waiting for poolers to pause"
    SYNC_STEP = "synchronous replication step"
    SYNC_NOT_ALLOWED = "synchronous mode forbids promotion"
    SYNC_PRE_PROMOTE = "synchronous state before promotion"
    SWITCHOVER_DEMOTE = "switchover: demote"
    FAILOVER_IMPOSSIBLE = "failover key: not possible"
    FAILOVER_STALE = "failover key: stale"
    FAILOVER_SCHEDULED = "failover key: scheduled"
    CANDIDATE_DEFER = "defer to failover candidate"
    FORMER_LEADER_WAITS = "former leader does not race"
    PAUSED_NO_ACTION = "paused: no action"
    PAUSED_PRIMARY_WITHOUT_LOCK = "paused: primary without lock"
    PAUSED_RELEASE = "paused: release lock of a non-primary"
    PAUSED_PG_STOPPED = "paused: postgres not running"
    PAUSED_DCS_DOWN = "paused: dcs down"
    PAUSED_SHUTDOWN = "paused: shutdown leaves postgres alone"
    RESTART = "restart"
    RESTART_REFUSED = "restart refused"
    REINITIALIZE = "reinitialize"
    REINITIALIZE_REFUSED = "reinitialize refused"


@dataclass(frozen=True, slots=True)
class Reason:
    why: Why
    facts: tuple[tuple[str, str], ...] = ()

    def fact(self, key: str) -> str:
        return dict(self.facts).get(key, "")


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    wake_at: float
    """The latest instant at which the core wants to be asked again."""
    memory: Memory
    regular_wake_at: float | None = None
    """When a leader's `wake_at` was brought forward to renew before its lock deadline: the instant
    it wanted otherwise. Keepalives proving the lease meanwhile let the nap last until then
    (`core.decide.extended_wake`). None: `wake_at` does not depend on the lock deadline."""
