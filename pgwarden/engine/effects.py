"""What an executor step asks the outside world to do: a closed union of frozen dataclasses.

Each effect is answered by its interpreter with the value its docstring names. DCS failures are not
answers: the interpreter throws `DcsFailed` into the step at the effect that failed, so a step's
`try`/`except DcsFailed` reads like the code it replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pgwarden.model import ClusterStatus, HistoryEntry, SyncState

PgRole = Literal["primary", "replica"]
StopMode = Literal["fast", "immediate"]


class DcsFailed(Exception):
    """The DCS could not be reached or answered with an error (thrown into the step)."""


@dataclass(frozen=True, slots=True)
class Result:
    """How a PostgreSQL operation went. `summary` is the line worth showing (a failed command's
    meaningful line, `postgres.process.error_summary`); `message` is everything it said."""

    ok: bool
    message: str = ""
    summary: str = ""
    unreachable: bool = False
    """It failed before doing anything because the server it needed (the source to rewind or copy
    from) could not be reached: a transient failure, not the operation's."""

    @property
    def short(self) -> str:
        return self.summary or self.message


@dataclass(frozen=True, slots=True)
class Upstream:
    """A member to stream or copy from, with the PostgreSQL address the cluster view gives it; or, for a
    standby leader, the remote primary of `standby_cluster` (`remote`)."""

    member: str
    host: str
    port: int
    remote: RemoteFollow | None = None
    """Set for the remote primary a standby leader follows: how, beyond the address."""


@dataclass(frozen=True, slots=True)
class RemoteFollow:
    """What a standby leader's configuration takes from `standby_cluster` besides host and port: the slot on
    the remote ("" for none) and the recovery settings (restore_command, archive_cleanup_command,
    recovery_min_apply_delay; those absent are not written)."""

    slot: str = ""
    recovery: tuple[tuple[str, str], ...] = ()


# -- the clock and the log ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Now:
    """-> float: the agent's monotonic clock (what `Outcome.sent_at` and deadlines are measured in)."""


@dataclass(frozen=True, slots=True)
class WallStamp:
    """-> str | None: the wall-clock time as ISO 8601 for a `history` row (None where unknown)."""


@dataclass(frozen=True, slots=True)
class Log:
    """-> None: one line in the agent's log."""

    level: Literal["info", "warning", "error"]
    text: str


# -- the DCS -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcquireLeaderKey:
    """-> bool: create the leader key on this member's lease, if absent."""


@dataclass(frozen=True, slots=True)
class UpdateLeaderKey:
    """-> bool: refresh the leader key (owner-checked), writing `status` to `/status` when given."""

    status: ClusterStatus | None = None


@dataclass(frozen=True, slots=True)
class DeleteLeaderKey:
    """-> bool: release the leader key (owner-checked), writing `status` first when given."""

    status: ClusterStatus | None = None


@dataclass(frozen=True, slots=True)
class WriteInitialize:
    """-> bool: write `initialize` (create it only if absent with `create_new`)."""

    sysid: str
    create_new: bool


@dataclass(frozen=True, slots=True)
class CancelInitialization:
    """-> None: delete `initialize` (a failed bootstrap)."""


@dataclass(frozen=True, slots=True)
class SeedConfig:
    """-> bool: write `/config` if its revision is still `revision` (0: absent)."""

    value: Mapping[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class DeleteFailoverKey:
    """-> None: delete `failover` if its revision is still `revision`."""

    revision: int


@dataclass(frozen=True, slots=True)
class SetHistory:
    """-> None: replace `history` with `rows`."""

    rows: tuple[HistoryEntry, ...]


@dataclass(frozen=True, slots=True)
class SetSyncKey:
    """-> bool: write `/sync` if its revision is still `expected_revision`."""

    state: SyncState
    expected_revision: int | None


@dataclass(frozen=True, slots=True)
class DeleteSyncKey:
    """-> None: delete `/sync` if its revision is still `expected_revision`."""

    expected_revision: int | None


# -- the local PostgreSQL --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """-> model.LocalPg: what a probe of the local PostgreSQL reports now."""


@dataclass(frozen=True, slots=True)
class StandbySignal:
    """-> bool: the data directory holds `standby.signal` (PostgreSQL is, or starts as, a standby)."""


@dataclass(frozen=True, slots=True)
class StopPg:
    """-> Result: stop PostgreSQL (`pg_ctl stop -m mode`), killing it after `kill_after` seconds if set."""

    mode: StopMode
    kill_after: float | None = None


@dataclass(frozen=True, slots=True)
class StartPg:
    """-> Result: start PostgreSQL with the configuration written last and wait until it accepts connections."""


@dataclass(frozen=True, slots=True)
class WritePgConfig:
    """-> Result: write the configuration files for `role` (a replica streaming from `upstream`).

    With `recovery` (a custom bootstrap's `recovery_conf`), PostgreSQL is to start in archive recovery
    with those settings (over `postgresql.recovery_conf`): they are written, and recovery.signal too."""

    role: PgRole
    upstream: Upstream | None = None
    recovery: tuple[tuple[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class PromotePg:
    """-> Result: `pg_ctl promote`, waiting at most `timeout` seconds for it to complete."""

    timeout: float


@dataclass(frozen=True, slots=True)
class CheckpointPg:
    """-> Result: CHECKPOINT, given up after `timeout` seconds when set."""

    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class FollowUpstream:
    """-> Result: point a running replica at `upstream` (configuration written, reloaded)."""

    upstream: Upstream


@dataclass(frozen=True, slots=True)
class RewindPg:
    """-> Result: pg_rewind from `upstream` (PostgreSQL stopped); the slots are cleared afterwards, but for the
    physical ones named in `keep_slots`."""

    upstream: Upstream
    keep_slots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RewindSpace:
    """-> DiskSpace | None: the free space where pg_rewind would write (None: unknown, e.g. the data
    directory cannot be examined; the rewind is not held back for it)."""


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """Free bytes for unprivileged writers on the data directory's file system and, when `pg_wal` is on
    another one (a symlink), on that (None: the same file system); `segment_size` is the WAL segment size
    found in `pg_wal` (the default 16 MiB when none was found)."""

    data_free: int
    wal_free: int | None = None
    segment_size: int = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Pause:
    """-> None: let `seconds` pass (the agent's clock) before the step goes on; only in background steps."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Basebackup:
    """-> Result: pg_basebackup from `upstream` into the empty data directory."""

    upstream: Upstream


@dataclass(frozen=True, slots=True)
class RunReplicaMethod:
    """-> Result: run the replica creation method `method`'s command (`postgresql.<method>`) to fill the data
    directory from `source` (None: a `no_leader` method, with no member to copy from)."""

    method: str
    source: Upstream | None


@dataclass(frozen=True, slots=True)
class RunBootstrapMethod:
    """-> Result: run the custom bootstrap method's command (`bootstrap.<method>`) to fill the data directory."""


@dataclass(frozen=True, slots=True)
class SanitizeRestored:
    """-> Result: make a data directory a method's command restored ready for pgwarden's configuration:
    it must be a PostgreSQL data directory; standby.signal goes; unless `keep_recovery_conf`,
    recovery.signal and the recovery settings in postgresql.auto.conf (which would win over pgwarden's
    own) go too."""

    keep_recovery_conf: bool = False


@dataclass(frozen=True, slots=True)
class FinishRecovery:
    """-> Result: wait until PostgreSQL, started in archive recovery, has ended it (promoting it when it
    paused at its recovery target); not ok when it stopped instead or it took longer than allowed."""


@dataclass(frozen=True, slots=True)
class MoveDataAside:
    """-> Result: move the data directory aside (the configuration allows it; the decision says so)."""


@dataclass(frozen=True, slots=True)
class EmptyDataDir:
    """-> Result: empty the data directory, keeping no copy (an operator's reinitialize)."""


@dataclass(frozen=True, slots=True)
class EnsureSlots:
    """-> Result: create the physical replication slots `names` that do not exist."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DropSlots:
    """-> Result: drop the replication slots `names`."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AdvanceSlots:
    """-> Result: on a replica, advance each physical slot of `targets` (name, LSN) to its LSN
    (pg_replication_slot_advance), never past what this replica has replayed, never backwards."""

    targets: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CreateLogicalSlots:
    """-> Result: on the primary, create each logical slot of `specs` (name, database, plugin) that does not
    exist, connected to its database; one that exists with another type, plugin or database is left alone
    and named in the message."""

    specs: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True, slots=True)
class AdvanceLogicalSlots:
    """-> Result: on a replica, advance each copy of a logical slot of `targets` (name, database, LSN) to its
    LSN (pg_replication_slot_advance, connected to its database), never backwards."""

    targets: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True, slots=True)
class SlotStates:
    """The answer to `ReadSlotStates`: the state files read, or why not (`waiting`: the copy is not possible
    yet and may be later, e.g. the slot needs more WAL than this replica may fetch, or the leader lacks it)."""

    ok: bool
    message: str = ""
    states: tuple[tuple[str, bytes], ...] = ()
    waiting: bool = False
    snapshots: tuple[tuple[str, bytes], ...] = ()
    """The leader's serialized decoding snapshots at the slots' restart_lsn (`pg_logical/snapshots/<file>`),
    where it has one: without it a copy would rebuild its snapshot from WAL and become consistent only after
    the transactions in progress there ended, skipping the commits in between."""
    segments: tuple[str, ...] = ()
    """The WAL segment files the slots need from their restart_lsn on and this replica no longer had,
    fetched from the leader and staged here (not yet in pg_wal: `WriteSlotStates` moves them there)."""


@dataclass(frozen=True, slots=True)
class ReadSlotStates:
    """-> SlotStates: read `pg_replslot/<name>/state` of each logical slot of `names` from `source` (the
    leader, over a superuser connection), after checking there that it is a logical slot with a catalog_xmin;
    when its restart_lsn is older than the oldest WAL this replica still has, fetch the missing segment
    files from the leader (bounded in size and time, PostgreSQL still running) and stage them."""

    source: Upstream
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WriteSlotStates:
    """-> Result: with PostgreSQL stopped, write each (name, state file) into `pg_replslot/<name>/state`
    (directory 0700, file 0600, written to a temporary name, fsynced, renamed, the directory fsynced)."""

    states: tuple[tuple[str, bytes], ...]
    snapshots: tuple[tuple[str, bytes], ...] = ()
    """(file name, content) written into `pg_logical/snapshots` the same way."""
    segments: tuple[str, ...] = ()
    """Staged WAL segment files (`SlotStates.segments`) moved into pg_wal first, never over an existing file."""


@dataclass(frozen=True, slots=True)
class DiscardSlotWal:
    """-> Result: remove the WAL segment files `ReadSlotStates` staged, for a copy that does not go on."""


@dataclass(frozen=True, slots=True)
class WriteSsn:
    """-> Result: `synchronous_standby_names = value` (ALTER SYSTEM and reload)."""

    value: str


@dataclass(frozen=True, slots=True)
class ReadTimelineHistory:
    """-> list[(ended timeline, switch LSN, reason)]: `timeline`'s history file in pg_wal, oldest row
    first; [] when it cannot be read."""

    timeline: int


@dataclass(frozen=True, slots=True)
class ReserveTimelines:
    """-> tuple[int, ...]: write a placeholder history file for each of `timelines` that has none, so a
    promotion skips those numbers; answers the numbers actually reserved."""

    timelines: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnreserveTimelines:
    """-> None: remove the placeholders of `timelines` (the promotion did not happen)."""

    timelines: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class InspectDataDir:
    """-> tuple[bool, str]: whether the data directory exists, and why it must not be taken over by a
    new cluster ("" when it may)."""


@dataclass(frozen=True, slots=True)
class Initdb:
    """-> Result: initdb with the configured options."""


@dataclass(frozen=True, slots=True)
class CreateRoles:
    """-> Result: create the configured superuser, replication and rewind roles (a new cluster)."""


@dataclass(frozen=True, slots=True)
class PostBootstrap:
    """-> Result: run `bootstrap.post_bootstrap` if configured (ok when not)."""


@dataclass(frozen=True, slots=True)
class UndoBootstrap:
    """-> Result: remove what a failed bootstrap created (the directory if it did not exist before,
    else its contents)."""

    existed: bool


@dataclass(frozen=True, slots=True)
class RunHook:
    """-> Result: run the user's `pre_promote` or `before_stop` script (ok when none is configured),
    killed after `timeout` seconds."""

    name: Literal["pre_promote", "before_stop"]
    timeout: float


# -- fencing and failsafe ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetFailsafeKey:
    """-> bool: write `/failsafe` = {name: api_url} (None: delete it)."""

    members: tuple[tuple[str, str], ...] | None


@dataclass(frozen=True, slots=True)
class PingFailsafe:
    """-> tuple[PingAnswer, ...]: `POST /failsafe` to every target (name, api_url) at once, each
    bounded by `timeout` seconds, one answer per target (a member that did not answer is refused)."""

    targets: tuple[tuple[str, str], ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class PingAnswer:
    name: str
    accepted: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ArmWatchdog:
    """-> Result: open the watchdog if it is not open, set `timeout` if it differs, and keep it alive
    (idempotent: on a leader every renewal asks for it). Not ok: it could not be armed (the message
    says why); what was opened is closed again."""

    timeout: int


@dataclass(frozen=True, slots=True)
class DisarmWatchdog:
    """-> None: close the watchdog cleanly (magic close) if it is armed; nothing otherwise."""


Effect = (
    Now | WallStamp | Log
    | AcquireLeaderKey | UpdateLeaderKey | DeleteLeaderKey | WriteInitialize | CancelInitialization | SeedConfig
    | DeleteFailoverKey | SetHistory | SetSyncKey | DeleteSyncKey
    | Probe | StandbySignal | StopPg | StartPg | WritePgConfig | PromotePg | CheckpointPg | FollowUpstream
    | RewindSpace | Pause
    | RewindPg | Basebackup | RunReplicaMethod | RunBootstrapMethod | SanitizeRestored | FinishRecovery
    | MoveDataAside | EmptyDataDir | EnsureSlots | DropSlots | AdvanceSlots
    | CreateLogicalSlots | AdvanceLogicalSlots | ReadSlotStates | WriteSlotStates | DiscardSlotWal
    | WriteSsn
    | ReadTimelineHistory | ReserveTimelines | UnreserveTimelines | InspectDataDir | Initdb | CreateRoles
    | PostBootstrap | UndoBootstrap | RunHook
    | SetFailsafeKey | PingFailsafe | ArmWatchdog | DisarmWatchdog
)
