"""What the decision core answers (Decision): one action, each carrying only what its executor needs
(the docstring gives the step order), with its reason and when to ask again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pgwarden.core.reasons import Reason
from pgwarden.core.snapshot import ActionKind, Memory, WatchdogMode
from pgwarden.core.sync.plan import SyncStep
from pgwarden.model import LSN


@dataclass(frozen=True, slots=True)
class Wait:
    """Do nothing this cycle."""

    kind: ActionKind = ActionKind.WAIT


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Atomically create `initialize`; if won: initdb, start, create roles, post_bootstrap, take the
    leader key, seed `/config`, then write the system identifier to `initialize`. On failure after
    winning: stop PostgreSQL, remove what this attempt created (the directory initdb made, or the
    contents of the empty one it filled: no user data), delete `initialize` so another node can try.
    A lost race (or a DCS error before winning) is reported as an outcome of kind `initialize race`:
    it is not a failure of this node's bootstrap."""

    kind: ActionKind = ActionKind.BOOTSTRAP


@dataclass(frozen=True, slots=True)
class BootstrapStandby:
    """The first member of a standby cluster (`standby_cluster` set, no `initialize`): atomically create
    `initialize`; if won, copy the remote primary (its `create_replica_methods`: pg_basebackup from
    host:port), configure PostgreSQL as a standby of the remote, start it, take the leader key, seed
    `/config`, then write the copied system identifier to `initialize`. Never initdb: a standby cluster
    holds the remote's database. On failure after winning: undone as a failed Bootstrap (what the copy
    created is removed, `initialize` deleted). Outcomes are a Bootstrap's (same kind)."""

    kind: ActionKind = ActionKind.BOOTSTRAP


@dataclass(frozen=True, slots=True)
class Clone:
    """Create the (empty) data directory from `source` with the replica creation methods (pg_basebackup
    by default), configure as a replica of `follow`, start. `source` None: no member runs, and a
    `no_leader` method (a backup tool) creates it alone."""

    source: str | None
    follow: str | None
    kind: ActionKind = ActionKind.CLONE


@dataclass(frozen=True, slots=True)
class AcquireLeader:
    """Create the leader key if absent (atomic). Nothing else: promotion is the next decision."""

    kind: ActionKind = ActionKind.ACQUIRE_LEADER


@dataclass(frozen=True, slots=True)
class RenewLeader:
    """Refresh the leader key's lease (owner-checked) and write `/status`; then, only if that
    succeeded, create missing member slots and drop the ones no longer wanted."""

    optime: LSN | None
    create_slots: tuple[str, ...] = ()
    drop_slots: tuple[str, ...] = ()
    retain_slots: tuple[str, ...] | None = None
    """`/status` `retain_slots` to write (`core.slots.plan_primary`); None: what the DCS has, plus
    `create_slots`."""
    slots: tuple[tuple[str, LSN], ...] | None = None
    """`/status` `slots` to write: the primary's slot positions (`core.slots.plan_primary`); None: keep
    what the DCS has (PostgreSQL is no primary yet: it has no positions to publish)."""
    write_initialize: str | None = None  # system identifier to record, when `initialize` lacks it
    clear_failover: int | None = None  # revision of a `failover` key to delete (stale or impossible)
    repair_history: bool = False
    """`history` lacks the timelines PostgreSQL reports (its write was lost, e.g. the host died during
    the post-promote checkpoint): rebuild the missing rows from PostgreSQL's own timeline history."""
    sync_step: SyncStep | None = None
    """One step of synchronous-replication bookkeeping (synchronous_standby_names or `/sync`), done
    only after the renewal succeeded: a primary that lost its lease never touches either."""
    watchdog: bool = False
    """Arm (or keep alive) the watchdog after the renewal succeeded; False: make sure it is disarmed
    (watchdog off, or maintenance mode, where Patroni disables it too)."""
    failsafe: FailsafeKeyWrite | None = None
    """Rewrite (or delete) `/failsafe` after the renewal succeeded: it differs from what it should be."""
    create_logical: tuple[tuple[str, str, str], ...] = ()
    """Permanent logical slots to create after the renewal succeeded: (name, database, plugin)."""
    error: str = ""
    """One error line to log (a configuration the primary cannot carry out, e.g. logical slots without
    wal_level logical); the core asks for it once per change, not every cycle."""
    kind: ActionKind = ActionKind.RENEW_LEADER


@dataclass(frozen=True, slots=True)
class FailsafeKeyWrite:
    """The `/failsafe` key as the leader keeps it: member name -> api_url (None: delete the key)."""

    members: tuple[tuple[str, str], ...] | None


@dataclass(frozen=True, slots=True)
class FailsafeRound:
    """Failsafe mode, the DCS unreachable: `POST /failsafe` to every member in `targets` (name, api_url)
    at once. The outcome is ok only if every one of them accepted; its send time then extends the lock
    deadline like a renewal's (`decide._absorb`): a member that accepted does not race us for a lease."""

    targets: tuple[tuple[str, str], ...]
    timeout: float = 2.0
    """Seconds each member may take to answer: Patroni's 2 s, less when the lease leaves less."""
    watchdog: bool = False
    """Keep the watchdog alive once every member accepted."""
    kind: ActionKind = ActionKind.FAILSAFE_PING


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
    timeline: int | None = None
    """The timeline number this promotion claims (`model.timeline_to_claim`): published in `/status`
    with the renewal before promoting, the numbers between reserved (see engine.steps._claim_timeline)."""
    ignored_timeline: int | None = None
    """A number the cluster used that was ignored as implausible when choosing `timeline` (logged)."""
    watchdog: WatchdogMode = WatchdogMode.OFF
    """Arm the watchdog before promoting; `required`: never promote without it (the key is released)."""
    kind: ActionKind = ActionKind.PROMOTE


class DemoteMode(StrEnum):
    GRACEFUL = "graceful"  # CHECKPOINT, fast stop, release the key
    IMMEDIATE = "immediate"  # immediate stop, release the key
    IMMEDIATE_NOLOCK = "immediate-nolock"  # immediate stop; the key is not ours any more
    OFFLINE = "offline"  # fast stop, no key to release (the DCS cannot be reached; a diverged replica)
    DEMOTE_CLUSTER = "demote-cluster"
    """A primary in a cluster that became a standby cluster: fast stop, the key kept (if held), so the
    next cycle starts it again as the standby leader following the remote."""


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
    kind: ActionKind = ActionKind.DEMOTE

    @property
    def release(self) -> bool:
        return self.mode in (DemoteMode.GRACEFUL, DemoteMode.IMMEDIATE)


@dataclass(frozen=True, slots=True)
class StartPostgres:
    """Write the configuration for `role` (a replica follows `follow`, or nobody) and start."""

    role: str  # "primary" | "replica"
    follow: str | None
    kind: ActionKind = ActionKind.START


@dataclass(frozen=True, slots=True)
class Follow:
    """Point a running replica at `leader` (primary_conninfo, primary_slot_name; reload)."""

    leader: str
    kind: ActionKind = ActionKind.FOLLOW


@dataclass(frozen=True, slots=True)
class Rewind:
    """pg_rewind from `source` (PostgreSQL must be stopped). Starting as a replica is the next decision."""

    source: str
    keep_slots: tuple[str, ...] = ()
    """The permanent physical slots whose copies survive the rewind (every other slot is cleared): recreated
    afterwards they would start at this node's position, ahead of an offline consumer, and a later
    promotion of this node would have lost the WAL that consumer needs."""
    kind: ActionKind = ActionKind.REWIND


@dataclass(frozen=True, slots=True)
class RemoveDataDirectory:
    """Move the data directory's contents aside (`<dir>.failed.<timestamp>`; at most one such copy is
    kept, later ones are removed). Only decided when configuration allows."""

    kind: ActionKind = ActionKind.REMOVE_DATA


@dataclass(frozen=True, slots=True)
class ReleaseLeader:
    """Delete the leader key if it still names us (writing the last optime to `/status` first)."""

    optime: LSN | None
    kind: ActionKind = ActionKind.RELEASE_LEADER


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
    kind: ActionKind = ActionKind.SHUTDOWN


@dataclass(frozen=True, slots=True)
class EnsureSlots:
    """On a replica: create the physical slots of members that cascade from it (replicatefrom) and the
    copies of the permanent slots (`create`), drop the copies no longer wanted (`drop`), then advance
    copies to the positions the primary published, already capped by this replica's replay position
    (`advance`)."""

    create: tuple[str, ...]
    drop: tuple[str, ...] = ()
    advance: tuple[tuple[str, LSN], ...] = ()
    advance_logical: tuple[tuple[str, str, LSN], ...] = ()
    """Copies of permanent logical slots to advance: (name, database, target confirmed_flush_lsn)."""
    kind: ActionKind = ActionKind.ENSURE_SLOTS


@dataclass(frozen=True, slots=True)
class CopyLogicalSlots:
    """On a replica (PostgreSQL before 16 cannot create a logical slot in recovery): copy the state files of
    the logical slots `names` from `leader`, stop PostgreSQL (fast), write them into pg_replslot, start it
    again as the same replica. Runs in the background (it restarts PostgreSQL)."""

    leader: str
    names: tuple[str, ...]
    kind: ActionKind = ActionKind.COPY_SLOTS


@dataclass(frozen=True, slots=True)
class Restart:
    """Restart PostgreSQL in place (fast stop, start with the same role). Runs in the background; a
    leader keeps renewing its lock meanwhile."""

    role: str  # "primary" | "replica"
    follow: str | None
    kind: ActionKind = ActionKind.RESTART
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
    kind: ActionKind = ActionKind.REINITIALIZE


Action = (
    Wait
    | Bootstrap
    | BootstrapStandby
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
    | CopyLogicalSlots
    | FailsafeRound
)


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
