"""Why the decision core chose its action: a Why and the facts `core.render` puts into the log line."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
