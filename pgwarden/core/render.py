"""Reason -> the one operator-facing log line of a cycle.

Where Patroni has a well-known line for the same situation (contract section 2.3), pgwarden prints
the same words, so runbooks, log alerts and people's habits keep working.
"""

from __future__ import annotations

from pgwarden.core.reasons import Reason, Why

_TEMPLATES: dict[Why, str] = {
    Why.LOCK_HELD: "no action. I am ({name}), the leader with the lock",
    Why.PROMOTE_WITH_LOCK: "promoted self to leader because I had the session lock",
    Why.RENEW_RETRY: "retrying to update leader lock in DCS",
    Why.LEASE_AT_RISK: "demoted self because DCS is not accessible and I was a leader",
    Why.LOCK_LOST: "demoted self because failed to update leader lock in DCS",
    Why.DCS_DOWN_LEADER_WAITING:
        "DCS is not accessible; continuing as leader while the lease is safe ({left}s left)",
    Why.DCS_DOWN: "DCS is not accessible",
    Why.FAILSAFE_PING: "DCS is not accessible; failsafe mode: asking {members} member(s) to keep me as the leader "
                       "({left}s left)",
    Why.FAILSAFE_ACTIVE: "continue to run as a leader because failsafe mode is enabled and all members are "
                         "accessible",
    Why.FAILSAFE_LEADER: "no action. I am ({name}), a secondary, and the leader ({leader}) runs in failsafe mode",
    Why.FAILSAFE_NOT_LISTED: "not racing for the lock: failsafe mode is enabled and I am not listed in /failsafe",
    Why.WATCHDOG_DEMOTE: "Demoting self because watchdog could not be activated",
    Why.WATCHDOG_NO_RACE: "Not promoting self because watchdog could not be activated",
    Why.FOLLOWING: "no action. I am ({name}), a secondary, and following a leader ({leader})",
    Why.FOLLOW_NEW_LEADER: "I am ({name}), a secondary: changing upstream to ({leader})",
    Why.NOT_LEADER_PRIMARY: "demoting self because I do not have the lock and I was a leader",
    Why.RACE_HEALTHIEST: "promoted self to leader by acquiring session lock",
    Why.RACE_PRIMARY_RECLAIM: "acquired session lock as a leader",
    Why.RACE_NOT_HEALTHIEST: "following a different leader because i am not the healthiest node",
    Why.RACE_SLOTS_NOT_READY: "following a different leader because i am not the healthiest node "
                              "(my copies of the logical slots are not ready, {member}'s are)",
    Why.RACE_PRIMARY_ALIVE: "not racing for the lock: Primary ({member}) is still alive",
    Why.RACE_LAGGING: "not racing for the lock: lagging {lag} bytes behind, over maximum_lag_on_failover "
                      "({limit})",
    Why.RACE_TIMELINE_BEHIND: "not racing for the lock: my timeline {mine} is behind the cluster's {cluster}",
    Why.RACE_NOFAILOVER: "following a different leader because I am not allowed to promote",
    Why.RACE_TIMELINE_BEHIND_PRIMARY:
        "demoting self: running as primary on timeline {mine}, behind the cluster's {cluster}",
    Why.BOOTSTRAP: "trying to bootstrap a new cluster",
    Why.BOOTSTRAP_STANDBY: "trying to bootstrap a new standby leader",
    Why.WAIT_FOR_STANDBY_BOOTSTRAP: "waiting for standby_leader to bootstrap",
    Why.STANDBY_LEADER_HELD: "no action. I am ({name}), the standby leader with the lock",
    Why.STANDBY_LEADER_FOLLOW: "promoted self to a standby leader because i had the session lock",
    Why.STANDBY_DEMOTE: "cannot be a real primary in a standby cluster",
    Why.START_STANDBY_LEADER: "starting as a standby leader because i had the session lock",
    Why.RACE_HEALTHIEST_STANDBY: "promoted self to a standby leader by acquiring session lock",
    Why.FOLLOWING_STANDBY_LEADER: "no action. I am ({name}), a secondary, and following a standby leader ({leader})",
    Why.WAIT_FOR_BOOTSTRAP: "waiting for leader to bootstrap",
    Why.BOOTSTRAP_BACKOFF: "bootstrap attempt {failures} failed ({error}); trying again in {left}s",
    Why.BOOTSTRAP_GAVE_UP: "Failed to bootstrap cluster after {failures} attempts, giving up: {error}",
    Why.CLONE_BACKOFF: "clone attempt {failures} failed ({error}); trying again in {left}s",
    Why.CLONE_FROM_LEADER: "trying to bootstrap from leader '{member}'",
    Why.CLONE_FROM_REPLICA: "trying to bootstrap from replica '{member}'",
    Why.WAIT_FOR_LEADER_TO_CLONE: "waiting for leader to bootstrap",
    Why.CLONE_WITHOUT_LEADER: "trying to bootstrap (without leader)",
    Why.EMPTY_DATA_WITH_LOCK: "released leader key voluntarily as data dir {data_dir} and currently leader",
    Why.DATA_DIR_UNUSABLE: "data dir for the cluster is not usable ({data_dir}); consider doing reinitialize",
    Why.SYSID_MISMATCH: "refusing to join: database system identifier {mine} differs from the cluster's "
                        "{cluster}; the data directory is left untouched",
    Why.SYSID_RESTORED: "initialize held system identifier {cluster}, not this leader's {mine}: writing "
                        "the leader's back",
    Why.START_PRIMARY_AFTER_CRASH: "starting primary after failure",
    Why.START_READONLY_WITH_LOCK: "starting as readonly because i had the session lock",
    Why.START_REPLICA: "starting as a secondary",
    Why.START_BACKOFF: "PostgreSQL failed to start {failures} time(s) in a row; trying again in {left}s",
    Why.START_FAILED_RELEASE: "removed leader key after trying and failing to start postgres",
    Why.CRASH_FAILOVER: "stopped PostgreSQL to fail over after a crash",
    Why.STARTING: "PostgreSQL is still starting up",
    Why.START_TIMEOUT: "stopped PostgreSQL because of startup timeout",
    Why.REWIND: "running pg_rewind from {leader}",
    Why.REWIND_NOT_ALLOWED: "former primary may have diverged from {leader}; not rewinding because "
                            "use_pg_rewind is off and removing the data directory is not allowed",
    Why.REWIND_FAILED: "pg_rewind failed; staying stopped because "
                       "remove_data_directory_on_rewind_failure is off",
    Why.REWIND_FAILED_REMOVE: "pg_rewind failed; moving the data directory aside to re-clone",
    Why.DIVERGED_REMOVE: "reinitializing due to diverged timelines",
    Why.TASK_IN_PROGRESS: "{task} in progress",
    Why.TASK_IN_PROGRESS_RENEW: "updated leader lock during {task}",
    Why.SHUTDOWN_HANDOVER: "shutting down: stopping PostgreSQL and handing the leader key over",
    Why.SHUTDOWN_KEEP: "shutting down: stopping PostgreSQL; keeping the leader key (no replica can take over)",
    Why.SHUTDOWN_RELEASE: "shutting down: stopping PostgreSQL and releasing the leader key (no other member "
                          "may promote)",
    Why.SHUTDOWN: "shutting down: stopping PostgreSQL",
    Why.NO_ACTION: "no action",
    Why.PRE_PROMOTE_BACKOFF: "Promotion cancelled because the pre-promote script failed; not racing for "
                             "the lock for another {left}s",
    Why.CASCADE_SLOTS: "creating replication slots for cascading members: {slots}",
    Why.SLOT_COPIES: "copies of the members' and permanent replication slots: creating {create}, dropping {drop}",
    Why.COPY_LOGICAL_SLOTS: "copying permanent logical replication slots {slots} from {leader} (restarting "
                            "PostgreSQL)",
    Why.WAITING_FOR_POOLERS: "switchover: waiting for connection poolers to pause clients ({routers})",
    Why.SYNC_STEP: "synchronous replication: {sync}",
    Why.SYNC_NOT_ALLOWED: "not racing for the lock: {detail}",
    Why.SYNC_PRE_PROMOTE: "synchronous replication: preparing to promote ({step})",
    Why.SWITCHOVER_DEMOTE: "{op}: demoting myself",
    Why.FAILOVER_IMPOSSIBLE: "{op}: {member} cannot take over (not running, lagging, or not allowed to "
                             "promote); removing the failover key",
    Why.FAILOVER_STALE: "removing a stale failover key (it names leader {leader})",
    Why.FAILOVER_SCHEDULED: "no action. I am ({name}), the leader with the lock; awaiting switchover at {at}",
    Why.CANDIDATE_DEFER: "following a different leader because {member} is the failover candidate",
    Why.FORMER_LEADER_WAITS: "not racing for the lock: I am the former leader of a switchover",
    Why.PAUSED_NO_ACTION: "no action. I am ({name})",
    Why.PAUSED_PRIMARY_WITHOUT_LOCK: "continue to run as primary without lock",
    Why.PAUSED_RELEASE: "removed leader lock because postgres is not running as primary",
    Why.PAUSED_PG_STOPPED: "postgres is not running",
    Why.PAUSED_DCS_DOWN: "DCS is not accessible; maintenance mode: leaving PostgreSQL as it is",
    Why.PAUSED_SHUTDOWN: "shutting down in maintenance mode: leaving PostgreSQL running and the leader key alone",
    Why.RESTART: "restarting PostgreSQL",
    Why.RESTART_REFUSED: "restart conditions are not satisfied: {detail}",
    Why.REINITIALIZE: "reinitializing from '{member}'",
    Why.REINITIALIZE_REFUSED: "reinitialize refused: {detail}",
}


def render(reason: Reason) -> str:
    """The log line for a reason. Missing facts render as empty strings, never as an error."""
    facts = dict(reason.facts)
    text = _TEMPLATES[reason.why]
    try:
        line = text.format_map(_Blank(facts))
    except (ValueError, IndexError):  # a malformed template is a bug; show it rather than crash the loop
        line = text
    extra = facts.get("waiting")
    return f"{line} (waiting for {extra})" if extra else line


# A race's line waits for its outcome (AcquireLeader): a log line says what happened, not what was tried.
RACE_LOST_TO_ANOTHER = "did not acquire session lock: another member got it first"
RACE_LOST_FOLLOW = "following new leader after trying and failing to obtain lock"  # Patroni's, for a replica
RACE_FAILED = "did not acquire session lock: {detail}"
TAKEN_BY_ANOTHER = "somebody else holds the leader key"  # the executor's detail when the key exists


def render_race(reason: Reason, won: bool, detail: str = "") -> str:
    """The line of a leader race once its acquisition is done: Patroni's words when it won."""
    if won:
        return render(reason)
    if not detail or detail == TAKEN_BY_ANOTHER:
        return RACE_LOST_TO_ANOTHER if reason.why is Why.RACE_PRIMARY_RECLAIM else RACE_LOST_FOLLOW
    return RACE_FAILED.format(detail=detail)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""
