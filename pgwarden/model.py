"""The one model of a cluster, shared by the decision core, the DCS codecs, the REST API and the CLI.

Everything here is an immutable value: a frozen dataclass built once from what was observed (a DCS
read, a PostgreSQL probe, a peer's JSON) and never changed afterwards. Nothing here does IO.

Naming follows Patroni's wire format (see docs/ARCHITECTURE.md): a `Member` is what lives under
`members/<name>` in the DCS, `ClusterView` is one consistent read of the whole scope.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

LSN = int
"""A WAL position as a byte offset (PostgreSQL's pg_lsn as an integer)."""


def lsn_from_text(text: str) -> LSN:
    """'16/B374D848' -> integer offset. Raises ValueError on anything else."""
    high, sep, low = text.strip().partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_to_text(lsn: LSN) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class Role(StrEnum):
    """The role a member publishes (member JSON `role`, REST `role`)."""

    PRIMARY = "primary"
    REPLICA = "replica"
    STANDBY_LEADER = "standby_leader"
    DEMOTED = "demoted"
    UNINITIALIZED = "uninitialized"
    PROMOTED = "promoted"


class PgState(StrEnum):
    """PostgreSQL states as Patroni publishes them (member JSON `state`)."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    STOPPING = "stopping"
    STOP_FAILED = "stop failed"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    RESTART_FAILED = "restart failed"
    START_FAILED = "start failed"
    CREATING_REPLICA = "creating replica"
    INITIALIZING = "initializing new cluster"
    BOOTSTRAP_FAILED = "initdb failed"
    REWINDING = "running pg_rewind"
    UNKNOWN = "unknown"


class ReplicationState(StrEnum):
    STREAMING = "streaming"
    IN_ARCHIVE_RECOVERY = "in archive recovery"


@dataclass(frozen=True, slots=True)
class Tags:
    """Member tags. Unknown (custom) tags are kept verbatim in `custom` for `?tag_k=v` filters."""

    nofailover: bool = False
    failover_priority: int = 1
    clonefrom: bool = False
    noloadbalance: bool = False
    replicatefrom: str | None = None
    nosync: bool = False
    sync_priority: int = 1
    nostream: bool = False
    custom: Mapping[str, Any] = field(default_factory=dict)

    @property
    def can_promote(self) -> bool:
        return not self.nofailover and self.failover_priority > 0

    def as_json(self) -> dict[str, Any]:
        """Only the tags that differ from the defaults, as Patroni publishes them."""
        out: dict[str, Any] = dict(self.custom)
        if self.nofailover:
            out["nofailover"] = True
        if self.failover_priority != 1:
            out["failover_priority"] = self.failover_priority
        if self.clonefrom:
            out["clonefrom"] = True
        if self.noloadbalance:
            out["noloadbalance"] = True
        if self.replicatefrom:
            out["replicatefrom"] = self.replicatefrom
        if self.nosync:
            out["nosync"] = True
        if self.sync_priority != 1:
            out["sync_priority"] = self.sync_priority
        if self.nostream:
            out["nostream"] = True
        return out


@dataclass(frozen=True, slots=True)
class Member:
    """One `members/<name>` value."""

    name: str
    conn_url: str = ""
    api_url: str = ""
    state: str = PgState.UNKNOWN
    role: str = Role.UNINITIALIZED
    version: str = ""
    timeline: int | None = None
    xlog_location: LSN | None = None
    receive_lsn: LSN | None = None
    replay_lsn: LSN | None = None
    replication_state: str | None = None
    tags: Tags = field(default_factory=Tags)
    pending_restart: bool = False
    checkpoint_after_promote: bool | None = None
    logical_slots_ready: bool | None = None
    """Its copies of the permanent logical slots are ready (it may fail over without a consumer losing a
    change); None: not published (the cluster has no permanent logical slots, or an older member)."""
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The JSON as read, so fields we do not model survive a round trip and can be shown."""

    @property
    def lsn(self) -> LSN | None:
        """Best known WAL position: the primary's write LSN, or the furthest received/replayed."""
        known = [x for x in (self.xlog_location, self.receive_lsn, self.replay_lsn) if x is not None]
        return max(known) if known else None

    @property
    def host_port(self) -> tuple[str, int] | None:
        """(host, port) from conn_url `postgres://host:port/...`, or None if absent or malformed."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self.conn_url)
            if not parts.hostname:
                return None
            return parts.hostname, parts.port or 5432
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """The `leader` key: who holds the lock, and the DCS revision of that value (for owner checks)."""

    name: str
    revision: int = 0


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The `status` key, written by the leader on every renewal."""

    optime: LSN | None = None
    slots: Mapping[str, LSN] = field(default_factory=dict)
    retain_slots: tuple[str, ...] = ()
    timeline: int | None = None
    """pgwarden's own field (Patroni ignores it): the highest timeline number a leader of this cluster
    has promoted to, written *before* the promotion. Unlike the `history` row (written after it), it
    survives a new primary losing the DCS right after promoting, so the next promotion can pick a
    number nobody has used (see `engine.steps._claim_timeline`)."""


def status_with_timeline_floor(status: ClusterStatus, floor: int) -> ClusterStatus:
    """`status` with its `timeline` raised to `floor`: a DCS client never lowers the reserved timeline
    it has read or written, whatever stale view the status to write was built from (a renewal racing
    the promotion's own reservation would otherwise erase it)."""
    if floor and (status.timeline or 0) < floor:
        return replace(status, timeline=floor)
    return status


@dataclass(frozen=True, slots=True)
class FailoverRequest:
    """The `failover` key: a switchover (`leader` set) or a failover (only `member` set)."""

    leader: str | None = None
    member: str | None = None
    scheduled_at: str | None = None  # ISO 8601 with a time zone, as written
    revision: int = 0


@dataclass(frozen=True, slots=True)
class SyncState:
    """The `sync` key."""

    leader: str | None = None
    sync_standby: tuple[str, ...] = ()
    quorum: int = 0
    """Patroni's meaning: how many voters (`sync_standby`) other than a promoting candidate it must see
    not ahead of it (one more for a candidate that is not a voter); 0 in `on` mode."""
    revision: int = 0


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One row of the `history` key: the timeline that ended, where it ended, why, when, who took over."""

    timeline: int
    lsn: LSN
    reason: str
    timestamp: str | None = None
    new_leader: str | None = None


REPAIRED_REASON = "repaired from PostgreSQL's timeline history"


def _lineage_rows(current: Sequence[HistoryEntry], lineage: Sequence[tuple[int, LSN, str]],
                  stamp: str | None) -> list[HistoryEntry]:
    """A row per lineage entry: the `current` row with that timeline and switch point (its timestamp
    and leader kept), else a new one stamped `stamp`."""
    matching = {(h.timeline, h.lsn): h for h in current}
    return [matching.get((ended, lsn)) or HistoryEntry(ended, lsn, reason or REPAIRED_REASON, stamp, None)
            for ended, lsn, reason in lineage]


def history_for_lineage(current: Sequence[HistoryEntry], lineage: Sequence[tuple[int, LSN, str]], leader: str,
                        stamp: str | None, limit: int = 0) -> list[HistoryEntry] | None:
    """The `history` rows for the primary whose PostgreSQL timeline history is `lineage` (ended
    timeline, switch LSN, reason; oldest first), or None when `current` already says exactly that.

    PostgreSQL's own file is the truth: rows it lacks belong to other branches (a timeline number
    another member used, skipped by a reservation) and go; rows with another switch point for the
    same number are replaced. Rows that match keep their timestamp and leader; new ones get `stamp`,
    and a new last one (the timeline this primary ended) names `leader`.
    """
    if not lineage:
        return None
    rows = _lineage_rows(current, lineage, stamp)
    if rows[-1].new_leader is None:
        rows[-1] = replace(rows[-1], new_leader=leader)
    if limit > 0:
        rows = rows[-limit:]
    wanted = [(h.timeline, h.lsn) for h in rows]
    have = sorted((h.timeline, h.lsn) for h in current)
    return None if wanted == (have[-limit:] if limit > 0 else have) else rows


def history_after_promotion(current: Sequence[HistoryEntry], lineage: Sequence[tuple[int, LSN, str]],
                            decided: tuple[int, LSN, str], new_timeline: int | None, leader: str,
                            stamp: str | None, limit: int = 0) -> list[HistoryEntry]:
    """`history` after this member promoted to `new_timeline`: the one rule for its rows.

    `lineage` is the new timeline's own history file. PostgreSQL switches timeline where its replay
    ended, which may be later than where the decision saw it (past the old primary's shutdown
    checkpoint after a switchover), and a promotion may skip numbers reserved elsewhere, so the file
    is the truth: the rows are exactly its lineage (rows of other branches go), and the last one, the
    timeline just ended, is this promotion's, naming `leader` (even when another branch had switched
    at the same point: the replicas read "the newest row names the leader" as "history is current").
    Only when the file cannot be read does the decision's `decided` row stand, appended to the rows
    there are (replacing a row for the same timeline), its timeline taken as the one before
    `new_timeline` when the decision's idea lagged.
    """
    if lineage:
        ended, lsn, reason = lineage[-1]
        rows = _lineage_rows(current, lineage[:-1], stamp)
        rows.append(HistoryEntry(ended, lsn, reason or decided[2], stamp, leader))
    else:
        timeline, lsn, reason = decided
        if new_timeline is not None and new_timeline - 1 > timeline:
            timeline = new_timeline - 1
        rows = [h for h in current if h.timeline != timeline]
        rows.append(HistoryEntry(timeline, lsn, reason, stamp, leader))
        rows.sort(key=lambda h: h.timeline)
    return rows[-limit:] if limit > 0 else rows


@dataclass(frozen=True, slots=True)
class RouterState:
    """A traffic router's key (`routers/<name>`, written by the `pgwarden route` sidecar)."""

    name: str
    kinds: tuple[str, ...] = ()  # "haproxy", "pgbouncer", "vip"
    primary: str | None = None  # where it sends writes now
    held_for: int | None = None  # the `failover` key revision for which it holds (pauses) traffic


FAILSAFE_MAX_ENTRIES = 1000
"""At most this many members in `/failsafe`, or slots in a `POST /failsafe` body (real clusters have a
handful): more is garbage."""
FAILSAFE_MAX_NAME = 256
"""Characters of a member or slot name in `/failsafe` or a `POST /failsafe` body."""
FAILSAFE_MAX_URL = 2048
"""Characters of an api_url or conn_url there."""


def is_plain_text(text: Any, limit: int) -> bool:
    """`text` is a string of 1 to `limit` characters without control characters or lone surrogates: a
    name or URL that can be logged, compared and sent on as it is (anything else from the DCS or a
    request body is garbage)."""
    if not isinstance(text, str) or not 0 < len(text) <= limit:
        return False
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class FailsafePing:
    """A leader's `POST /failsafe` (contract 2.8): it cannot reach the DCS and asks this member to
    confirm that it may keep running. Validated by the REST API (`api.failsafe.parse_failsafe_ping`);
    `as_json` is the body the leader sends."""

    name: str
    """The leader's member name."""
    conn_url: str | None = None
    api_url: str | None = None
    slots: Mapping[str, LSN] = field(default_factory=dict)
    """The leader's replication slots -> their LSN (what the replicas may advance theirs to)."""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "conn_url": self.conn_url, "api_url": self.api_url, "slots": dict(self.slots)}


@dataclass(frozen=True, slots=True)
class Versioned:
    """A JSON value read from the DCS with its revision, so it can be written back with compare-and-swap."""

    value: Mapping[str, Any]
    revision: int


DEFAULT_TTL, DEFAULT_LOOP_WAIT, DEFAULT_MAXIMUM_LAG_ON_FAILOVER = 30, 10, 1048576
"""Patroni's defaults for these /config settings (`DynamicView`, `config.dynamic.DynamicConfig`)."""
MAX_TIMING = 3600
"""ttl, loop_wait, retry_timeout, lease_ttl, primary_race_backoff: at most an hour (see config.dynamic)."""
MAX_BYTES = 2**63 - 1
"""Byte counts (maximum_lag_on_*): what an LSN difference (int64) can be."""

SynchronousMode = Literal["off", "on", "quorum"]

_TRUE_WORDS = frozenset({"on", "true", "yes", "1"})
_FALSE_WORDS = frozenset({"off", "false", "no", "0"})


def switch_of(value: Any) -> bool | None:
    """A /config switch (`pause`, `failsafe_mode`, ...) read as Patroni reads one: a boolean, or
    on/true/yes/1 and off/false/no/0 in any case (as a number or a string, surrounding blanks
    ignored as the validator ignores them); None for anything else, which Patroni reads as off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        word = str(value).strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def synchronous_mode_of(value: Any) -> SynchronousMode | None:
    """`synchronous_mode` as Patroni reads it: "quorum", "on" for a true switch (True, "on", "true",
    "yes", 1, ...; `switch_of`), "off" for a false one; None for anything else (off for Patroni too,
    and a value the validator refuses). The one reading: `DynamicView` and the agent's validated
    `config.dynamic.DynamicConfig` both use it."""
    if isinstance(value, str) and value.strip().lower() == "quorum":
        return "quorum"
    switch = switch_of(value)
    return None if switch is None else "on" if switch else "off"


def _count_of(value: Any, default: int, maximum: int) -> int:
    """A whole number from 0 to `maximum` in /config (an int, a whole float, digits), else `default`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()  # (bounded below: int() refuses thousands of digits)
        value = int(text) if text.isascii() and text.isdigit() and len(text) <= 40 else None
    in_range = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum
    return value if in_range else default


@dataclass(frozen=True, slots=True)
class DynamicView:
    """The settings of the `config` key that the core, the REST API and the CLI read off a cluster,
    parsed once. Values in the DCS are anybody's: one of the wrong type reads as its default (Patroni's),
    never raises. The agent itself runs with the fully validated `config.dynamic.DynamicConfig`."""

    paused: bool = False
    synchronous_mode: SynchronousMode = "off"
    """`synchronous_mode_of`: garbage reads as off."""
    failsafe_mode: bool = False
    standby_cluster: bool = False
    """A non-empty `standby_cluster` section."""
    ttl: int = DEFAULT_TTL
    loop_wait: int = DEFAULT_LOOP_WAIT
    maximum_lag_on_failover: int = DEFAULT_MAXIMUM_LAG_ON_FAILOVER

    @property
    def synchronous(self) -> bool:
        """Synchronous mode is on (`on` or `quorum`)."""
        return self.synchronous_mode != "off"

    @property
    def quorum(self) -> bool:
        return self.synchronous_mode == "quorum"

    @classmethod
    def parse(cls, value: Any) -> DynamicView:
        """The view of a `config` value (defaults for anything but a mapping)."""
        if not isinstance(value, Mapping):
            return cls()
        standby = value.get("standby_cluster")
        return cls(
            paused=switch_of(value.get("pause")) is True,
            synchronous_mode=synchronous_mode_of(value.get("synchronous_mode")) or "off",
            failsafe_mode=switch_of(value.get("failsafe_mode")) is True,
            standby_cluster=isinstance(standby, Mapping) and bool(standby),
            ttl=_count_of(value.get("ttl"), DEFAULT_TTL, MAX_TIMING),
            loop_wait=_count_of(value.get("loop_wait"), DEFAULT_LOOP_WAIT, MAX_TIMING),
            maximum_lag_on_failover=_count_of(value.get("maximum_lag_on_failover"), DEFAULT_MAXIMUM_LAG_ON_FAILOVER,
                                              MAX_BYTES),
        )


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent read of everything under `/<namespace>/<scope>/`."""

    scope: str
    initialize: str | None = None
    """None: no key. "": bootstrap in progress. Otherwise the database system identifier."""
    config: Versioned | None = None
    leader: LeaderKey | None = None
    members: tuple[Member, ...] = ()
    status: ClusterStatus = field(default_factory=ClusterStatus)
    failover: FailoverRequest | None = None
    sync: SyncState | None = None
    history: tuple[HistoryEntry, ...] = ()
    routers: tuple[RouterState, ...] = ()
    revision: int = 0
    """The store's revision at the time of the read."""
    unreadable: Mapping[str, int] = field(default_factory=dict)
    """Keys that exist but hold a value that could not be decoded (`failover`, `config`, ...) -> their
    mod_revision: read as absent, yet still there to be replaced or deleted with compare-and-swap."""
    failsafe: Mapping[str, str] | None = None
    """The `failsafe` key, {member name: api_url}, which the leader keeps in failsafe mode (contract 2.8);
    None: no key (or an unreadable one)."""
    dynamic: DynamicView = field(init=False, repr=False, compare=False)
    """`config` parsed (the defaults when there is none): what everybody but `edit-config` and
    `GET /config`, which show the document itself, reads of it. Derived, so `replace` keeps it true."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dynamic", DynamicView.parse(self.config.value if self.config else None))

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    @property
    def leader_member(self) -> Member | None:
        return self.member(self.leader.name) if self.leader else None

    def led_by(self, name: str) -> bool:
        """The leader key names `name`."""
        return self.leader is not None and self.leader.name == name

    @property
    def timeline(self) -> int:
        """The cluster's current timeline as the history key implies it (Patroni: len(history) + 1)."""
        if not self.history:
            return 1
        return max(h.timeline for h in self.history) + 1

    @property
    def highest_timeline(self) -> int:
        """The highest timeline number any promotion in this cluster is known to have used."""
        return max(self.timeline, self.status.timeline or 1)

    @property
    def paused(self) -> bool:
        return self.dynamic.paused


MAX_TIMELINE = 0xFFFFFFFF
"""PostgreSQL's TimeLineID is an unsigned 32-bit number (history files are named %08X)."""

MAX_LSN = 0xFFFFFFFFFFFFFFFF


def is_system_identifier(text: str | None) -> bool:
    """Whether `initialize` holds a PostgreSQL database system identifier (decimal, unsigned 64-bit).
    Anything else there is garbage: no evidence of another cluster, and the leader writes its own back."""
    return text is not None and text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= MAX_LSN

TIMELINE_RESERVE_MARGIN = 32
"""How far a reserved timeline (`/status` "timeline") may plausibly run ahead of every timeline the
cluster otherwise shows (history, members, the local PostgreSQL). Each promotion reserves one number;
only promotions whose history row was lost (or that failed after reserving) widen the gap, so a
wider one is garbage, and trusting it would make a promotion write that many placeholder files and
jump to a timeline no replica's lineage knows. Ignoring it is what Patroni does with no reservation."""


def timeline_to_claim(cluster: ClusterView, local: int) -> tuple[int, int | None]:
    """The timeline a promotion from local timeline `local` takes, and the number ignored as
    implausible (None when none was): 1 + the highest number used in the cluster (history and
    `/status` reservation), unless that is more than TIMELINE_RESERVE_MARGIN beyond `local`: then
    1 + the history's timeline if that one is within the margin, else `local` + 1."""
    highest = max(local, cluster.highest_timeline)
    if highest <= local + TIMELINE_RESERVE_MARGIN:
        return highest + 1, None
    history = cluster.timeline if cluster.timeline <= local + TIMELINE_RESERVE_MARGIN else local
    return max(local, history) + 1, highest


# --------------------------------------------------------------------------------------------------
# The local PostgreSQL, as one probe observed it. Produced by pgwarden.postgres, consumed by the core
# (as part of its snapshot) and by the REST API (status JSON, health codes).


class DataDirState(StrEnum):
    MISSING = "missing"  # the directory does not exist
    EMPTY = "empty"  # exists and is empty
    VALID = "valid"  # PG_VERSION and global/pg_control present, pg_controldata answered
    INVALID = "invalid"  # not empty, but not a usable data directory (no/invalid pg_control)
    INACCESSIBLE = "inaccessible"  # permissions or IO error


@dataclass(frozen=True, slots=True)
class ReplicationRow:
    """One row of pg_stat_replication on this node (a downstream replica)."""

    application_name: str
    client_addr: str | None = None
    state: str | None = None  # startup | catchup | streaming | backup | stopping
    sync_state: str | None = None  # async | potential | sync | quorum
    sync_priority: int = 0
    usename: str | None = None
    write_lsn: LSN | None = None
    flush_lsn: LSN | None = None
    replay_lsn: LSN | None = None


@dataclass(frozen=True, slots=True)
class LogicalSlot:
    """One logical replication slot of the local PostgreSQL (pg_replication_slots)."""

    name: str
    database: str | None = None
    plugin: str | None = None
    confirmed_flush: LSN | None = None
    """confirmed_flush_lsn: what its consumer confirmed (what a primary publishes, what a copy has)."""
    restart_lsn: LSN | None = None
    catalog_xmin: int | None = None


@dataclass(frozen=True, slots=True)
class WalReceiver:
    """pg_stat_wal_receiver on this (standby) node; absent when no receiver process runs."""

    status: str  # streaming | starting | waiting | stopping | ...
    sender_host: str | None = None
    sender_port: int | None = None
    slot_name: str | None = None
    latest_end_lsn: LSN | None = None
    received_tli: int | None = None


@dataclass(frozen=True, slots=True)
class LocalPg:
    """Everything one probe learned about the local PostgreSQL. Fields a probe could not learn are None."""

    data_dir: DataDirState
    sysid: str | None = None
    cluster_state: str | None = None
    """pg_controldata's 'Database cluster state': 'in production', 'shut down', 'shut down in
    recovery', 'in crash recovery', 'in archive recovery', 'shutting down'."""
    controldata_timeline: int | None = None  # "Latest checkpoint's TimeLineID"
    checkpoint_lsn: LSN | None = None  # "Latest checkpoint location"
    running: bool = False  # a postmaster process is alive for this data directory
    postmaster_pid: int | None = None
    accepting: bool = False  # a query succeeded just now
    in_recovery: bool | None = None
    timeline: int | None = None
    wal_lsn: LSN | None = None  # primary: pg_current_wal_lsn()
    receive_lsn: LSN | None = None
    replay_lsn: LSN | None = None
    replay_paused: bool = False
    replayed_timestamp: str | None = None
    wal_receiver: WalReceiver | None = None
    replication: tuple[ReplicationRow, ...] = ()
    slots: tuple[str, ...] = ()  # physical replication slots present on this node
    slot_lsns: tuple[tuple[str, LSN | None], ...] = ()
    """The physical slots of `slots` -> their restart_lsn (None: the slot reserves no WAL), sorted by name:
    what a primary publishes in `/status` and how far a replica's copy of a permanent slot has come."""
    logical_slots: tuple[LogicalSlot, ...] = ()
    """The logical slots present on this node, sorted by name (not in `slots`)."""
    wal_level: str | None = None  # as the running server has it (current_setting)
    server_version: int | None = None  # e.g. 150018
    postmaster_start_time: str | None = None
    pending_restart: bool = False
    standby_signal: bool = False  # standby.signal exists
    synchronous_standby_names: str | None = None  # as the running server has it (current_setting)
    following: str | None = None
    """The member name this node's primary_conninfo points at (pgwarden writes it as application
    metadata), or None when not configured as a standby of a member."""
    forked_timeline: int | None = None
    """A standby that does not stream: the newest timeline its pg_wal has a history file of (fetched
    from its upstream) when that timeline forked off the standby's own timeline before its replay
    position, or does not descend from it at all. PostgreSQL can never follow it ("new timeline N
    forked off current database system timeline T before current recovery point"); `timeline` is
    then T, the one it replays, not N. None otherwise (see `pgwarden.postgres.timelines`)."""
    restore_command: bool = False
    """A running PostgreSQL has a `restore_command` set: a standby without a streaming WAL receiver
    then restores WAL from the archive (`replication_state` "in archive recovery")."""

    @property
    def is_primary(self) -> bool:
        return self.accepting and self.in_recovery is False

    @property
    def is_replica(self) -> bool:
        return self.accepting and self.in_recovery is True

    @property
    def lsn(self) -> LSN | None:
        """The position that matters in a leader race: write LSN on a primary, max(receive, replay)."""
        if self.in_recovery is False:
            return self.wal_lsn
        known = [x for x in (self.receive_lsn, self.replay_lsn) if x is not None]
        return max(known) if known else None

    @property
    def streaming(self) -> bool:
        return self.wal_receiver is not None and self.wal_receiver.status == "streaming"

    @property
    def replication_state(self) -> str | None:
        """What the member JSON and the REST status publish, as Patroni: "streaming" while the WAL
        receiver streams, else "in archive recovery" when a restore_command is set; None on a primary,
        a stopped server, and a standby that neither streams nor has a restore_command."""
        if not self.is_replica:
            return None
        if self.streaming:
            return ReplicationState.STREAMING
        return ReplicationState.IN_ARCHIVE_RECOVERY if self.restore_command else None
