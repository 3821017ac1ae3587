"""What this node publishes about itself under `members/<name>` (Patroni's member JSON)."""

from __future__ import annotations

from typing import Any

from pgwarden.model import LocalPg, PgState, Role, Tags

PATRONI_PROTOCOL_VERSION = "4.1.5"
"""The `version` of the member key: the Patroni release whose contract pgwarden keeps. Patroni members
read it as a protocol level: for a member older than 2.1.0 (as pgwarden's own "0.1.0" reads) a Patroni
leader keeps writing the legacy `optime/leader` key, and older leaders change how Patroni treats
`checkpoint_after_promote` and slot positions. pgwarden's own version is in `GET /patroni`."""


def pg_state(pg: LocalPg, task: str | None) -> str:
    """The PostgreSQL state string Patroni would publish."""
    if task == "clone":
        return PgState.CREATING_REPLICA
    if task == "bootstrap":
        return PgState.INITIALIZING
    if task == "rewind":
        return PgState.REWINDING
    if pg.accepting:
        return PgState.RUNNING
    if pg.running:
        return PgState.STARTING
    if task == "start":
        return PgState.STARTING
    if pg.cluster_state == "in production":
        return PgState.CRASHED
    return PgState.STOPPED


def pg_role(pg: LocalPg, *, demoting: bool = False, standby_leader: bool = False) -> str:
    """The member JSON `role`; `standby_leader`: this node holds the lock of a standby cluster, so a
    PostgreSQL in recovery (or not answering) is the standby leader, as Patroni publishes it."""
    if demoting:
        return Role.DEMOTED
    if pg.in_recovery is False:
        return Role.PRIMARY
    if standby_leader and (pg.in_recovery is True or pg.standby_signal):
        return Role.STANDBY_LEADER
    if pg.in_recovery is True or pg.standby_signal:
        return Role.REPLICA
    return Role.UNINITIALIZED if pg.sysid is None else Role.REPLICA


def replication_state(pg: LocalPg) -> str | None:
    """`streaming` only while the WAL receiver really streams, else `in archive recovery` when a
    restore_command is set, else none, as Patroni (`LocalPg.replication_state`, which the REST status
    publishes too): the `state` of a standby that runs but does not stream right now (its WAL
    receiver reconnecting) stays `running`, and `list` shows it so, not as `stopped`."""
    return pg.replication_state


def member_json(*, pg: LocalPg, conn_url: str, api_url: str, tags: Tags, task: str | None,
                pending_restart: bool = False, proxy_url: str | None = None,
                standby_leader: bool = False, logical_slots_ready: bool | None = None) -> dict[str, Any]:
    """The member JSON. `logical_slots_ready`: whether this node's copies of the permanent logical slots are
    ready (`core.slots.logical_ready`); None (not published): the cluster has no permanent logical slots."""
    data: dict[str, Any] = {
        "conn_url": conn_url,
        "api_url": api_url,
        **({"proxy_url": proxy_url} if proxy_url else {}),
        "state": pg_state(pg, task),
        "role": pg_role(pg, standby_leader=standby_leader),
        "version": PATRONI_PROTOCOL_VERSION,
    }
    if task == "promote":
        # Until the post-promote CHECKPOINT our control file still names the old timeline, and a
        # pg_rewind against us would see nothing to rewind: Patroni replicas wait while this is false.
        data["checkpoint_after_promote"] = False
    if pg.in_recovery is False and pg.wal_lsn is not None:
        data["xlog_location"] = pg.wal_lsn
    if pg.is_replica:
        if pg.receive_lsn is not None:
            data["receive_lsn"] = pg.receive_lsn
        if pg.replay_lsn is not None:
            data["replay_lsn"] = pg.replay_lsn
        lsn = pg.lsn
        if lsn is not None:
            data["xlog_location"] = lsn
        state = replication_state(pg)
        if state is not None:
            data["replication_state"] = state
    if pg.timeline is not None:
        data["timeline"] = pg.timeline
    tag_json = tags.as_json()
    if tag_json:
        data["tags"] = tag_json
    if pending_restart or pg.pending_restart:
        data["pending_restart"] = True
    if logical_slots_ready is not None:
        data["logical_slots_ready"] = logical_slots_ready
    return data
