"""Why the synchronous-replication planner took its step, or a verdict went as it did; the operator's text."""

from __future__ import annotations

from enum import StrEnum


class SyncWhy(StrEnum):
    # planner
    NOT_PRIMARY = "not a running primary"
    OFF_DELETE_KEY = "synchronous mode off: delete /sync"
    OFF_RESET_SSN = "synchronous mode off: restore configured ssn"
    OFF = "synchronous mode off"
    CLAIM_KEY = "claim /sync"
    PREPARE_SSN_CHANGE = "make /sync safe for the next ssn"
    SET_SSN = "set ssn"
    PUBLISH = "publish /sync"
    WAIT_BARRIER = "wait for ssn change to settle"
    WAIT_STANDBYS = "wait for standbys to become synchronous"
    STRICT_BLOCKING = "strict: no synchronous standby, writes wait"
    ASYNC_NO_STANDBY = "no synchronous standby: asynchronous"
    IN_SYNC = "synchronous replication in place"
    # promotion and switchover verdicts
    ASYNC_MODE = "synchronous mode off"
    NO_SYNC_KEY = "no /sync key"
    NO_SYNC_KEY_STRICT = "strict: no /sync key"
    FORMER_LEADER = "former /sync leader"
    SYNC_STANDBY = "synchronous standby"
    QUORUM_REACHED = "quorum reached"
    NOT_SYNC_STANDBY = "not a synchronous standby"
    NOT_ENOUGH_VOTES = "not enough votes"
    CANDIDATE_NOT_SYNC = "candidate not synchronous"
    NO_SYNC_STANDBY = "no synchronous standby"


Facts = tuple[tuple[str, str], ...]


def as_facts(**facts: object) -> Facts:
    return tuple((k, _text(v)) for k, v in sorted(facts.items()))


def _text(value: object) -> str:
    if isinstance(value, (tuple, list, frozenset, set)):
        return ",".join(sorted(str(v) for v in value)) or "-"
    return str(value)


_TEMPLATES: dict[SyncWhy, str] = {
    SyncWhy.NOT_PRIMARY: "synchronous replication: not a running primary, nothing to manage",
    SyncWhy.OFF_DELETE_KEY: "synchronous_mode is off: removing the /sync key",
    SyncWhy.OFF_RESET_SSN: "synchronous_mode is off: setting synchronous_standby_names to {value}",
    SyncWhy.OFF: "synchronous_mode is off",
    SyncWhy.CLAIM_KEY: "writing /sync with leader {leader} and no synchronous standby yet",
    SyncWhy.PREPARE_SSN_CHANGE: "updating /sync before changing synchronous_standby_names: synchronous "
                                "standbys {voters}, quorum {quorum} (dropped: {dropped})",
    SyncWhy.SET_SSN: "changing synchronous_standby_names from {before} to {after}",
    SyncWhy.PUBLISH: "publishing synchronous standbys {voters} with quorum {quorum} in /sync",
    SyncWhy.WAIT_BARRIER: "waiting for the synchronous_standby_names change to take effect",
    SyncWhy.WAIT_STANDBYS: "waiting for {waiting} to become synchronous",
    SyncWhy.STRICT_BLOCKING: "synchronous_mode_strict: no synchronous standby available, commits wait "
                             "(synchronous_standby_names = {ssn})",
    SyncWhy.ASYNC_NO_STANDBY: "no standby can be synchronous: commits are acknowledged asynchronously and "
                              "no replica may be promoted automatically",
    SyncWhy.IN_SYNC: "synchronous standbys {voters}, quorum {quorum}",
    SyncWhy.ASYNC_MODE: "synchronous_mode is off",
    SyncWhy.NO_SYNC_KEY: "no /sync key: no synchronous guarantee to keep",
    SyncWhy.NO_SYNC_KEY_STRICT: "synchronous_mode_strict and no /sync key: refusing to promote",
    SyncWhy.FORMER_LEADER: "I was the primary named in /sync: I hold every acknowledged commit",
    SyncWhy.SYNC_STANDBY: "a synchronous standby",
    SyncWhy.QUORUM_REACHED: "other voters not ahead of me: {seen}; {needed} needed with quorum {quorum} "
                            "(I am {voter})",
    SyncWhy.NOT_SYNC_STANDBY: "not a synchronous standby (synchronous standbys: {sync_standby}): "
                              "refusing to promote",
    SyncWhy.NOT_ENOUGH_VOTES: "other voters not ahead of me: {seen}; {needed} needed with quorum {quorum} "
                              "(I am {voter}): refusing to promote",
    SyncWhy.CANDIDATE_NOT_SYNC: "candidate {candidate} is not a synchronous standby (synchronous standbys: "
                                "{sync_standby}); a switchover to it could lose acknowledged commits",
    SyncWhy.NO_SYNC_STANDBY: "there is no synchronous standby to switch over to",
}


def render_sync(why: SyncWhy, facts: Facts) -> str:
    """The operator's log line (or REST error text) for a planner reason or a verdict."""
    return _TEMPLATES[why].format_map(_Missing(facts))


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"
