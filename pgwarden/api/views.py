"""GET /cluster and GET /history bodies, as pure functions of a ClusterView.

They are built from the agent's latest DCS read (the one in NodeState), so these endpoints never do
DCS IO either; the view is at most one HA cycle old.
"""

from __future__ import annotations

from typing import Any

from pgwarden.api.health import in_sync_key, sync_mode
from pgwarden.model import LSN, ClusterView, Member, PgState, ReplicationState, lsn_to_text

_REPLICATION_STATES = frozenset({ReplicationState.STREAMING, ReplicationState.IN_ARCHIVE_RECOVERY})


def _leader_optime(cluster: ClusterView) -> LSN | None:
    """The leader's WAL position: the `status` key, else what the leader's member JSON says."""
    if cluster.status.optime is not None:
        return cluster.status.optime
    leader = cluster.leader_member
    return leader.lsn if leader else None


def _sync_role(cluster: ClusterView, name: str) -> str | None:
    if not in_sync_key(cluster, name):
        return None
    return "quorum_standby" if sync_mode(cluster) == "quorum" else "sync_standby"


def member_role(cluster: ClusterView, member: Member) -> str:
    """leader | standby_leader | sync_standby | quorum_standby | replica."""
    if cluster.leader and cluster.leader.name == member.name:
        return "standby_leader" if cluster.dynamic.standby_cluster else "leader"
    return _sync_role(cluster, member.name) or "replica"


def member_state(member: Member, role: str) -> str:
    """The member's state; for a running non-leader, its replication state (so "streaming" only when
    that member itself reports streaming). Only Patroni's replication states stand in for `running`:
    older pgwarden agents published "stopped" for a standby whose WAL receiver was reconnecting."""
    if (role not in ("leader", "standby_leader") and member.state == PgState.RUNNING
            and member.replication_state in _REPLICATION_STATES):
        return str(member.replication_state)
    return member.state


def _lag(reference: LSN | None, position: LSN | None) -> int | str:
    if reference is None or position is None:
        return "unknown"
    return max(0, reference - position)


def _wal_fields(member: Member, role: str, optime: LSN | None) -> dict[str, Any]:
    if role in ("leader", "standby_leader"):
        return {"lsn": lsn_to_text(member.lsn)} if member.lsn is not None else {}
    out: dict[str, Any] = {}
    for key, position in (("receive", member.receive_lsn), ("replay", member.replay_lsn)):
        if position is not None:
            out[f"{key}_lsn"] = lsn_to_text(position)
            out[f"{key}_lag"] = _lag(optime, position)
    if member.lsn is not None:
        out["lsn"] = lsn_to_text(member.lsn)
    out["lag"] = _lag(optime, member.lsn)
    return out


def member_json(cluster: ClusterView, member: Member, optime: LSN | None) -> dict[str, Any]:
    """One entry of `members` in GET /cluster. Never includes conn_url (it may carry credentials)."""
    role = member_role(cluster, member)
    out: dict[str, Any] = {"name": member.name, "role": role, "state": member_state(member, role)}
    out["api_url"] = member.api_url or None
    host_port = member.host_port
    if host_port:
        out["host"], out["port"] = host_port
    if member.timeline is not None:
        out["timeline"] = member.timeline
    out.update(_wal_fields(member, role, optime))
    tags = member.tags.as_json()
    if tags:
        out["tags"] = tags
    if member.pending_restart:
        out["pending_restart"] = True
    if member.logical_slots_ready is not None:
        out["logical_slots_ready"] = member.logical_slots_ready
    return out


def cluster_json(cluster: ClusterView) -> dict[str, Any]:
    """GET /cluster: members sorted by name, plus scope and pause."""
    optime = _leader_optime(cluster)
    members = sorted(cluster.members, key=lambda m: m.name)
    out: dict[str, Any] = {"members": [member_json(cluster, m, optime) for m in members]}
    out["scope"] = cluster.scope
    if cluster.paused:
        out["pause"] = True
    return out


def history_json(cluster: ClusterView) -> list[list[Any]]:
    """GET /history: `[timeline, lsn, reason, timestamp, new_leader]` rows, oldest first."""
    rows = sorted(cluster.history, key=lambda h: h.timeline)
    return [[h.timeline, h.lsn, h.reason, h.timestamp, h.new_leader] for h in rows]
