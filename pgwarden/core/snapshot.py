"""What the decision core is shown: the settings, the observations and its own memory (Snapshot).

Everything is a frozen value. The core never sees a connection, a clock or a logger: time is the
`now` field (the agent's monotonic clock, sampled once after observation), and effects come back
only as the next snapshot's `last` outcome and observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from pgwarden.core.sync.plan import SyncMemory, SyncSettings
from pgwarden.model import LSN, ClusterView, LocalPg, Tags


class WatchdogMode(StrEnum):
    OFF = "off"
    AUTOMATIC = "automatic"
    """Arm the watchdog when there is one; go on without it (and say so) when there is none."""
    REQUIRED = "required"
    """Never lead without an armed watchdog."""


@dataclass(frozen=True, slots=True)
class WatchdogSettings:
    """Patroni's `watchdog` section, as far as the core and the executor need it (the device and the
    driver are the adapter's)."""

    mode: WatchdogMode = WatchdogMode.OFF
    safety_margin: int = 5
    """Seconds of the lease the watchdog leaves unused; -1: half the lease (Patroni's meaning)."""

    @property
    def active(self) -> bool:
        return self.mode is not WatchdogMode.OFF

    def margin(self, lease_ttl: int) -> float:
        return lease_ttl / 2 if self.safety_margin < 0 else float(self.safety_margin)

    def wanted_timeout(self, lease_ttl: int) -> int:
        """Patroni's timeout: the lease minus the safety margin, in whole seconds (rounded down)."""
        return int(lease_ttl - self.margin(lease_ttl))


@dataclass(frozen=True, slots=True)
class PermanentSlot:
    """One entry of `slots` in `/config` (Patroni's permanent slots)."""

    name: str
    type: str = "physical"  # physical | logical
    database: str | None = None
    plugin: str | None = None
    cluster_type: str | None = None
    """primary | standby: the slot exists only in a cluster of that kind; None: in any."""


@dataclass(frozen=True, slots=True)
class SlotMatcher:
    """One entry of `ignore_slots`: a slot matches when every attribute given here equals the slot's
    (Patroni's matcher); pgwarden never creates nor drops a slot that some matcher matches."""

    name: str | None = None
    type: str | None = None
    database: str | None = None
    plugin: str | None = None

    def matches(self, name: str, type: str = "physical", database: str | None = None,
                plugin: str | None = None) -> bool:
        return all(want is None or want == have for want, have in (
            (self.name, name), (self.type, type), (self.database, database), (self.plugin, plugin)))


@dataclass(frozen=True, slots=True)
class StandbyCluster:
    """`standby_cluster` in `/config`: this cluster follows a remote primary (Patroni's standby cluster).

    Its lock holder is the standby leader: PostgreSQL in recovery, streaming from `host`:`port` (through
    the slot `primary_slot_name` when set) and/or restoring WAL with `restore_command`; it never promotes
    while the section is there. The other members follow the standby leader."""

    host: str | None = None
    port: int = 5432
    primary_slot_name: str | None = None
    create_replica_methods: tuple[str, ...] = ("basebackup",)
    """How the first member copies the remote (only `basebackup` so far)."""
    restore_command: str | None = None
    archive_cleanup_command: str | None = None
    recovery_min_apply_delay: str | None = None

    @property
    def follow_name(self) -> str:
        """What a standby leader's `following` reads (and the actions name as their upstream) while it
        follows this remote. It changes with the address and the slot, so editing either re-points the
        standby leader (`Follow`), as a new leader re-points a replica. It is only ever compared with this
        exact value, never parsed, so a member named like it could at worst be mistaken for the remote
        in the standby leader's own bookkeeping."""
        return f"{REMOTE_PREFIX}{self.host or ''}:{self.port}/{self.primary_slot_name or ''}"


REMOTE_PREFIX = "@remote:"
"""The start of `StandbyCluster.follow_name`."""


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
    clone_without_leader: bool = False
    """A replica creation method has `no_leader`: a member with no data may create itself when no member
    runs to copy from (Patroni's "trying to bootstrap (without leader)")."""
    member_slots_ttl: int = 1800
    permanent_slots: tuple[PermanentSlot, ...] = ()
    """`slots` in `/config`, sorted by name."""
    ignore_slots: tuple[SlotMatcher, ...] = ()
    max_timelines_history: int = 0
    tags: Tags = field(default_factory=Tags)
    sync: SyncSettings = field(default_factory=SyncSettings)
    failsafe_mode: bool = False
    """Patroni's `failsafe_mode`: a leader that cannot reach the DCS keeps running while every member
    listed in `/failsafe` accepts its `POST /failsafe` (see `decide.guard_dcs_down`)."""
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    standby_cluster: StandbyCluster | None = None
    """`standby_cluster` in `/config`: the lock holder is a standby leader following that remote."""

    @property
    def watchdog_timeout(self) -> int:
        """The watchdog's timeout: Patroni's `lease - safety_margin`, but never shorter than the time a
        leader may go on writing without a renewal (`lock_deadline`), rounded up, nor longer than the
        lease less a second.

        The lower bound is pgwarden's: with its short lease, Patroni's default margin (5 s of a 7 s lease)
        would reset the host after a 2 s DCS stall that the lease rides out; the orderly demotion at the
        lock deadline must come first, the reset only when the agent cannot do it (frozen, hung). Safety
        does not rest on the margin: the watchdog is fed only while the renewal that feeds it proves the
        lease for longer than the timeout (`may_feed_watchdog`), so the reset always comes before the
        lease can lapse elsewhere."""
        orderly = math.ceil(self.lease_ttl - self.lease_margin)
        return max(1, min(self.lease_ttl - 1, max(self.watchdog.wanted_timeout(self.lease_ttl), orderly)))

    def may_feed_watchdog(self, renewal_sent_at: float, now: float) -> bool:
        """May a renewal (or keepalive, or accepted failsafe round) sent at `renewal_sent_at` keep the
        watchdog alive at `now`? Fed at `now`, it resets the host by `now + timeout`; the lease that
        renewal proved lapses elsewhere at `renewal_sent_at + lease_ttl` at the earliest. Only while the
        first comes before the second: an answer that took too long proves too little to feed on."""
        return now + self.watchdog_timeout <= renewal_sent_at + self.lease_ttl

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


def keepalive_period(interval: float | None, lease_ttl: float, *, leading: bool,
                     watchdog_timeout: float | None = None) -> float:
    """Seconds between two lease keepalives (`interval`: pgwarden.keepalive_interval, None: default).

    The leader's lease decides how soon a dead leader is replaced, so it is refreshed every
    `interval`, by default KEEPALIVES_PER_LEASE times per lease. Any other member's lease only keeps
    its member key alive: three refreshes per lease are plenty, and cost a fraction of the requests.
    A leader with an armed watchdog (`watchdog_timeout`) feeds it after each keepalive, so at least
    WATCHDOG_FEEDS_PER_TIMEOUT of them fall within the timeout, whatever `interval` says: one late or
    lost keepalive must not reset the host.
    """
    leader_period = interval if interval is not None else lease_ttl / KEEPALIVES_PER_LEASE
    if watchdog_timeout is not None:
        leader_period = min(leader_period, watchdog_timeout / WATCHDOG_FEEDS_PER_TIMEOUT)
    return leader_period if leading else max(leader_period, lease_ttl / 3)


WATCHDOG_FEEDS_PER_TIMEOUT = 3


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
    failsafe_active: bool = False
    """It reports `failsafe_mode_is_active`: it accepted a failsafe ping less than a lease ago (or it is a
    leader running on them)."""

    @property
    def is_running_primary(self) -> bool:
        return self.reachable and self.in_recovery is False


class ActionKind(StrEnum):
    """What an action is, and what an `Outcome` reports on: a closed set. Each action's `kind`, plus the
    outcomes that are no action of the core's: a lease keepalive (the loop sends them), a promotion the
    pre_promote hook refused, a lost initialize race (no failure of this node), and a rewind whose
    source could not be reached."""

    WAIT = "wait"
    BOOTSTRAP = "bootstrap"
    CLONE = "clone"
    ACQUIRE_LEADER = "acquire leader"
    RENEW_LEADER = "renew leader"
    PROMOTE = "promote"
    DEMOTE = "demote"
    START = "start"
    FOLLOW = "follow"
    REWIND = "rewind"
    REMOVE_DATA = "remove data directory"
    RELEASE_LEADER = "release leader"
    SHUTDOWN = "shutdown"
    ENSURE_SLOTS = "ensure slots"
    COPY_SLOTS = "copy logical slots"
    RESTART = "restart"
    REINITIALIZE = "reinitialize"
    KEEPALIVE = "keepalive"
    PRE_PROMOTE_REFUSED = "pre_promote"
    LOST_INITIALIZE_RACE = "initialize race"
    REWIND_SOURCE_UNREACHABLE = "rewind source unreachable"
    """pg_rewind could not connect to its source: nothing was tried, so it is no failed rewind (a
    partition or a restarting leader would otherwise leave the member stopped for good)."""
    REWIND_NO_SPACE = "rewind waiting for disk space"
    """pg_rewind was not started: the target's file system lacks the room it needs (a full disk). Like an
    unreachable source, no failed rewind (one that failed midway could only be re-cloned)."""
    FAILSAFE_PING = "failsafe ping"
    WATCHDOG_FAILED = "watchdog"
    """Mode `required` and the watchdog could not be armed: no promotion (the key is released), or, on
    a leader, a demotion."""


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

    action: ActionKind
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
    permanent_slots: tuple[str, ...] = ()
    """The permanent slots this node manages: those configured, and removed ones still present here (the
    next plan drops them). Only names here, in `/config` or published in `/status` are ever dropped."""
    logical_copies: tuple[tuple[str, str], ...] = ()
    """(slot, leader) of the logical copies this replica made by copying the leader's slot state: such a
    copy may be ahead of what `/status` publishes (the state file is newer than the last publication) and
    is not dropped for it until the published position has reached it once."""
    slot_copy_failures: int = 0
    """Failed copies of logical slots since the last success (each one restarted PostgreSQL, or tried)."""
    slot_copy_retry_at: float | None = None
    """After a failed or waiting copy of logical slots: no new attempt before this instant."""
    logical_slots_ready: bool | None = None
    """This replica's copies of the permanent logical slots are ready (published in the member JSON as
    `logical_slots_ready`); None: the cluster has no permanent logical slots."""
    logical_blocked: bool = False
    """Logical slots are configured but the running wal_level is not logical: said once (an error line),
    not every cycle, until that changes."""
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
    failsafe_members: tuple[tuple[str, str], ...] = ()
    """The other members a leader must reach while the DCS is unreachable (failsafe mode): `/failsafe`
    (name, api_url) as last seen, else the members with a REST address."""
    failsafe_active: bool = False
    """The leader runs on failsafe pings: the DCS is unreachable and every listed member accepted the
    last round (reset by the next successful DCS read or a failed round)."""


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
    failsafe_ping: FailsafePingSeen | None = None
    """The last `POST /failsafe` this member accepted (failsafe mode): a leader cut off from the DCS
    that still reaches us; we do not race it while it is fresh (`decide._failsafe_leader`)."""
    watchdog_failed: bool = False
    """Mode `required` and this node's watchdog device is unusable: it must not race."""

    @property
    def paused(self) -> bool:
        return self.dcs is not None and self.dcs.paused


@dataclass(frozen=True, slots=True)
class FailsafePingSeen:
    """A leader's `POST /failsafe` that this member accepted, and when (monotonic, `Snapshot.now`'s clock)."""

    leader: str
    received_at: float


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
