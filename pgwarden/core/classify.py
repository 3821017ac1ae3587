"""Pure helpers that boil a snapshot down to the few facts the rules are keyed on."""

from __future__ import annotations

import re
from enum import StrEnum

from pgwarden.core.snapshot import Snapshot
from pgwarden.model import LSN, ClusterView, DataDirState, LocalPg


class Lock(StrEnum):
    MINE = "mine"
    OTHER = "other"
    NONE = "none"
    UNKNOWN = "unknown"  # the DCS could not be read


class PgClass(StrEnum):
    NO_DATA = "no data"  # missing or empty data directory
    UNUSABLE = "unusable"  # not empty but not a data directory we can use, or inaccessible
    STOPPED = "stopped"
    STARTING = "starting"  # postmaster alive but not accepting connections yet
    PRIMARY = "primary"
    REPLICA = "replica"


# pg_controldata states in which the data directory was last a primary (not in recovery).
_PRIMARY_CONTROL_STATES = frozenset({"in production", "shut down", "shutting down", "in crash recovery"})


def lock_state(s: Snapshot) -> Lock:
    if s.dcs is None:
        return Lock.UNKNOWN
    if s.dcs.leader is None:
        return Lock.NONE
    return Lock.MINE if s.dcs.leader.name == s.me else Lock.OTHER


def pg_class(pg: LocalPg) -> PgClass:
    if pg.data_dir in (DataDirState.MISSING, DataDirState.EMPTY):
        return PgClass.NO_DATA
    if pg.data_dir is not DataDirState.VALID:
        return PgClass.UNUSABLE
    if not pg.running:
        return PgClass.STOPPED
    if not pg.accepting or pg.in_recovery is None:
        return PgClass.STARTING
    return PgClass.REPLICA if pg.in_recovery else PgClass.PRIMARY


def was_primary(pg: LocalPg) -> bool:
    """The stopped data directory was last running as a primary (so it may hold WAL nobody else has)."""
    return pg.cluster_state in _PRIMARY_CONTROL_STATES and not pg.standby_signal


def local_timeline(pg: LocalPg) -> int | None:
    return pg.timeline if pg.timeline is not None else pg.controldata_timeline


def switch_lsn(cluster: ClusterView, timeline: int) -> LSN | None:
    """Where `timeline` ended according to the cluster's history, if it did end."""
    for entry in cluster.history:
        if entry.timeline == timeline:
            return entry.lsn
    return None


def slot_name(member: str) -> str:
    """Physical slot name for a member, as Patroni derives it: lowercase, anything else becomes '_'."""
    return re.sub(r"[^a-z0-9_]", "_", member.lower())


def needs_peer_statuses(cluster: ClusterView | None, me: str, shutting_down: bool) -> bool:
    """Whether observation must ask the peers for their WAL positions this cycle.

    Only a leader race (no leader key), a handover on shutdown or a switchover needs them; asking every cycle
    would make every cycle as slow as the slowest peer.
    """
    if cluster is None:
        return False
    if cluster.leader is None:
        return True
    mine = cluster.leader.name == me
    # The leader checks a switchover's candidate (or any replica) before it demotes.
    return mine and (shutting_down or cluster.failover is not None)
