"""Health checks and the status JSON, as pure functions of (NodeState, now, query).

No IO, no clock: `now` is the caller's monotonic time. The server turns a `HealthResponse` into HTTP.

Status codes follow Patroni's REST contract (HAProxy, vip-manager and Kubernetes probes depend on them),
with two deliberate differences where Patroni answers something that is not true:
- the primary paths (`/`, `/primary`, `/read-write`, anything with `master`) and `/leader` answer 200
  only while the local PostgreSQL accepts connections (writes, for the primary paths), not merely while
  the lock is held: a load balancer must never send writes to a dead postmaster;
- a replica is 200 on the replica paths only while it really streams from its upstream, and its
  `replication_state` says "streaming" only then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pgwarden.api.state import NodeState
from pgwarden.model import LSN, ClusterView, DataDirState, PgState, Role, Tags

LagMode = Literal["apply", "write"]


class BadQuery(ValueError):
    """A health request's query string cannot be understood (the server answers 400 with the text)."""


@dataclass(frozen=True, slots=True)
class HealthQuery:
    """The query parameters the health paths understand; unknown parameters are ignored."""

    lag: int | None = None
    """Maximum lag in bytes (`?lag=`); None: no lag filter (on /readiness: maximum_lag_on_failover)."""
    replication_state: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    """`?tag_<key>=<value>` filters, sorted by key."""
    mode: LagMode = "apply"
    """/readiness: measure lag from the replayed (apply) or the received (write) position."""


@dataclass(frozen=True, slots=True)
class HealthResponse:
    status: int
    body: Mapping[str, Any] | None
    """The status JSON, or None for the status-only paths (/liveness, /readiness)."""


# --------------------------------------------------------------------------------------------------
# Query parsing

_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """'16MB' -> 16777216. Bytes, or a number with a PostgreSQL-style unit (B, kB, MB, GB, TB; 1024-based).

    Units are matched case-insensitively ("bytes" is accepted too). Raises BadQuery on anything else.
    """
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise BadQuery(f"invalid lag value {text!r}: expected bytes or a size such as 16kB, 64MB, 1GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_query(query: Mapping[str, str]) -> HealthQuery:
    """Turn a request's query parameters into a HealthQuery; raises BadQuery on a malformed value."""
    lag = parse_size(query["lag"]) if "lag" in query else None
    mode = query.get("mode", "apply")
    if mode not in ("apply", "write"):
        raise BadQuery(f"invalid mode {mode!r}: expected 'apply' or 'write'")
    tags = tuple(sorted((k[4:], v) for k, v in query.items() if k.startswith("tag_") and len(k) > 4))
    return HealthQuery(
        lag=lag,
        replication_state=query.get("replication_state"),
        tags=tags,
        mode="write" if mode == "write" else "apply",
    )


# --------------------------------------------------------------------------------------------------
# Facts derived from the published state


def holds_lock(s: NodeState, now: float) -> bool:
    """This node holds the leader lock and its local lease has not lapsed."""
    return s.lock_deadline is not None and now < s.lock_deadline


def is_standby_cluster(s: NodeState) -> bool:
    """Whether this node runs a standby cluster: the configuration it adopted says so, not whatever
    /config holds (an agent never adopts a /config it refuses, config/support.py)."""
    return s.standby_cluster


def effective_role(s: NodeState, now: float) -> str:
    """primary | replica | standby_leader | uninitialized (or the agent's override, e.g. demoted)."""
    if s.role_override:
        return s.role_override
    pg = s.pg
    if pg.accepting:
        if pg.in_recovery is False:
            return Role.PRIMARY
        if holds_lock(s, now) and is_standby_cluster(s):
            return Role.STANDBY_LEADER
        return Role.REPLICA  # includes a lock holder still in recovery: a replica being promoted
    if holds_lock(s, now):
        return Role.STANDBY_LEADER if is_standby_cluster(s) else Role.PRIMARY
    # PostgreSQL does not answer: say what its data directory was last shut down as.
    if pg.data_dir in (DataDirState.MISSING, DataDirState.EMPTY):
        return Role.UNINITIALIZED
    return Role.PRIMARY if pg.cluster_state == "in production" else Role.REPLICA


_CRASHED_CLUSTER_STATES = frozenset({"in production", "in archive recovery", "in crash recovery"})


def pg_state(s: NodeState) -> str:
    """The PostgreSQL state string (member JSON / status JSON `state`)."""
    if s.pg_state:
        return s.pg_state
    pg = s.pg
    if pg.accepting:
        return PgState.RUNNING
    if pg.running:
        return PgState.UNKNOWN  # a postmaster is alive but a query failed
    if pg.cluster_state in _CRASHED_CLUSTER_STATES:
        return PgState.CRASHED  # pg_control says it was not shut down cleanly
    return PgState.STOPPED


def replication_state(s: NodeState) -> str | None:
    """Published replication state, the member JSON's too (`LocalPg.replication_state`): "streaming"
    only while the WAL receiver really streams, else "in archive recovery" when a restore_command is
    set (as Patroni), else None; None unless PostgreSQL runs as a standby."""
    return s.pg.replication_state


def replication_lag(s: NodeState, mode: LagMode = "apply") -> int | None:
    """Bytes behind: max(leader optime in /status, receiver's latest_end_lsn) - replayed (or received).

    While the WAL receiver streams, what it has received and flushed (pg_last_wal_receive_lsn, its
    `flushed_lsn`) is a position the sender certainly had, too: so a streaming replica's lag is known
    even before its view of the DCS has an optime and before the sender's first message fills in
    latest_end_lsn (NULL until then; a sender with nothing to send reports only every
    wal_sender_timeout / 2). It never lowers the other references, and a replica that is far behind
    gets latest_end_lsn with the very first WAL its sender sends. None when nothing is known, which
    every caller treats as "too far behind".
    """
    pg = s.pg
    known: list[LSN] = []
    if s.cluster and s.cluster.status.optime is not None:
        known.append(s.cluster.status.optime)
    if pg.wal_receiver and pg.wal_receiver.latest_end_lsn is not None:
        known.append(pg.wal_receiver.latest_end_lsn)
    if pg.streaming and pg.receive_lsn is not None:
        known.append(pg.receive_lsn)
    position = pg.replay_lsn if mode == "apply" else pg.receive_lsn
    if not known or position is None:
        return None
    return max(0, max(known) - position)


def sync_mode(cluster: ClusterView) -> str:
    """The mode: "quorum" when /config says synchronous_mode: quorum, else "sync"."""
    return "quorum" if cluster.dynamic.quorum else "sync"


def in_sync_key(cluster: ClusterView | None, name: str) -> bool:
    """The `sync` key lists `name`, and was written for the current leader."""
    if cluster is None or cluster.sync is None or name not in cluster.sync.sync_standby:
        return False
    # A sync key written by a former leader says nothing about the current one.
    sync_leader, leader = cluster.sync.leader, cluster.leader
    return not (sync_leader and leader and sync_leader != leader.name)


def _sync_role(s: NodeState) -> str | None:
    """The sync mode ("sync" or "quorum") if the `sync` key lists this node, else None."""
    if not s.dcs_reachable or s.cluster is None or not in_sync_key(s.cluster, s.name):
        return None
    return sync_mode(s.cluster)


def is_sync_standby(s: NodeState) -> bool:
    """Listed in the `sync` key in synchronous (not quorum) mode, and the DCS is reachable."""
    return _sync_role(s) == "sync"


def is_quorum_standby(s: NodeState) -> bool:
    """Listed in the `sync` key in quorum mode, and the DCS is reachable."""
    return _sync_role(s) == "quorum"


def effective_tags(tags: Tags) -> dict[str, Any]:
    """Every tag with its effective value (defaults included), for `?tag_k=v` filters."""
    known: dict[str, Any] = {
        "nofailover": tags.nofailover,
        "failover_priority": tags.failover_priority,
        "clonefrom": tags.clonefrom,
        "noloadbalance": tags.noloadbalance,
        "nosync": tags.nosync,
        "sync_priority": tags.sync_priority,
        "nostream": tags.nostream,
    }
    if tags.replicatefrom:
        known["replicatefrom"] = tags.replicatefrom
    return {**tags.custom, **known}


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tags_match(tags: Tags, wanted: tuple[tuple[str, str], ...]) -> bool:
    """Every filter names a tag this node has with that value (booleans compare case-insensitively)."""
    mine = effective_tags(tags)
    for key, value in wanted:
        if key not in mine:
            return False
        have = _tag_text(mine[key])
        if have != value and not (isinstance(mine[key], bool) and have == value.lower()):
            return False
    return True


# --------------------------------------------------------------------------------------------------
# The checks: one predicate per kind of path


def _leader_code(s: NodeState, now: float) -> bool:
    """Holds the lock; or paused with the DCS unreachable while running as primary/standby leader
    (in pause nothing demotes it, so it still is the leader in every sense that matters)."""
    if holds_lock(s, now):
        return True
    paused_offline = s.paused and not s.dcs_reachable
    return paused_offline and effective_role(s, now) in (Role.PRIMARY, Role.STANDBY_LEADER)


def leader_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/leader: the leader (primary or standby leader) and PostgreSQL answers."""
    return _leader_code(s, now) and s.pg.accepting and effective_role(s, now) != Role.DEMOTED


def primary_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/primary: the leader of a non-standby cluster whose PostgreSQL accepts writes right now."""
    return leader_ok(s, now, q) and s.pg.is_primary and not is_standby_cluster(s)


def standby_leader_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/standby-leader: the leader of a standby cluster, PostgreSQL running in recovery."""
    return leader_ok(s, now, q) and s.pg.in_recovery is True and is_standby_cluster(s)


def replica_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/replica: a running replica that streams, load-balanced, not lagging, matching the filters."""
    pg = s.pg
    if holds_lock(s, now) or effective_role(s, now) != Role.REPLICA:
        return False
    if not (pg.accepting and pg.in_recovery is True and pg.streaming) or s.tags.noloadbalance:
        return False
    if q.lag is not None:
        lag = replication_lag(s, "apply")
        if lag is None or lag > q.lag:
            return False
    if q.replication_state is not None and q.replication_state != replication_state(s):
        return False
    return tags_match(s.tags, q.tags)


def read_only_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    return primary_ok(s, now, q) or standby_leader_ok(s, now, q) or replica_ok(s, now, q)


def sync_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    return replica_ok(s, now, q) and is_sync_standby(s)


def read_only_sync_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    return primary_ok(s, now, q) or standby_leader_ok(s, now, q) or sync_ok(s, now, q)


def quorum_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    return replica_ok(s, now, q) and is_quorum_standby(s)


def read_only_quorum_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    return primary_ok(s, now, q) or standby_leader_ok(s, now, q) or quorum_ok(s, now, q)


def async_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    return replica_ok(s, now, q) and not is_sync_standby(s) and not is_quorum_standby(s)


def health_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/health: PostgreSQL is up and answering queries."""
    return s.pg.accepting


def liveness_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/liveness: the HA loop is not stuck; a leader gets `ttl` of slack, others `2*ttl`."""
    if s.paused:
        return True
    leader = effective_role(s, now) in (Role.PRIMARY, Role.STANDBY_LEADER)
    slack = s.ttl if leader else 2 * s.ttl
    return now < s.next_cycle_deadline + slack


def readiness_ok(s: NodeState, now: float, q: HealthQuery) -> bool:
    """/readiness: the leader, or a streaming replica within `lag` (default maximum_lag_on_failover)."""
    if leader_ok(s, now, q):
        return True
    pg = s.pg
    if not (pg.accepting and pg.in_recovery is True and pg.streaming):
        return False
    lag = replication_lag(s, q.mode)
    limit = q.lag if q.lag is not None else s.maximum_lag_on_failover
    return lag is not None and lag <= limit


Check = Callable[[NodeState, float, HealthQuery], bool]

HEALTH_CHECKS: Mapping[str, Check] = {
    "": primary_ok,
    "primary": primary_ok,
    "read-write": primary_ok,
    "leader": leader_ok,
    "standby-leader": standby_leader_ok,
    "standby_leader": standby_leader_ok,
    "replica": replica_ok,
    "read-only": read_only_ok,
    "synchronous": sync_ok,
    "sync": sync_ok,
    "read-only-sync": read_only_sync_ok,
    "read-only-synchronous": read_only_sync_ok,
    "quorum": quorum_ok,
    "read-only-quorum": read_only_quorum_ok,
    "asynchronous": async_ok,
    "async": async_ok,
    "health": health_ok,
}
"""Path (its first segment, no slashes) -> check; the response body is the status JSON."""

STATUS_ONLY_CHECKS: Mapping[str, Check] = {"liveness": liveness_ok, "readiness": readiness_ok}
"""Paths answered with a status code and no body."""


def check_for_path(path: str) -> tuple[Check | None, bool]:
    """(check, with_body) for a request path; (None, True) for a path that is not a health check."""
    segment = path.strip("/").split("/", 1)[0]
    if "master" in path:  # Patroni's legacy spelling of every primary path
        return primary_ok, True
    if segment in HEALTH_CHECKS:
        return HEALTH_CHECKS[segment], True
    if segment in STATUS_ONLY_CHECKS:
        return STATUS_ONLY_CHECKS[segment], False
    return None, True


def evaluate(path: str, s: NodeState, now: float, query: Mapping[str, str]) -> HealthResponse:
    """The full answer to a health GET: 200/503 and the status JSON (or no body). Raises BadQuery.

    A path that is no health check is 503 with the status JSON, as in Patroni.
    """
    q = parse_query(query)
    check, with_body = check_for_path(path)
    ok = check is not None and check(s, now, q)
    return HealthResponse(200 if ok else 503, status_json(s, now) if with_body else None)


# --------------------------------------------------------------------------------------------------
# The status JSON (GET /patroni and every health GET). Peers' leader races read xlog.*, role,
# timeline, tags and watchdog_failed from it.


def _xlog(s: NodeState) -> dict[str, Any]:
    pg = s.pg
    if pg.in_recovery is False:
        return {"location": pg.wal_lsn}
    # Archive recovery has no receive position; the replayed one is then the furthest received.
    received = pg.receive_lsn if pg.receive_lsn is not None else pg.replay_lsn
    if received is not None and pg.replay_lsn is not None:
        received = max(received, pg.replay_lsn)
    return {
        "received_location": received,
        "replayed_location": pg.replay_lsn,
        "replayed_timestamp": pg.replayed_timestamp,
        "paused": pg.replay_paused,
    }


def _replication_rows(s: NodeState) -> list[dict[str, Any]]:
    return [
        {
            "usename": r.usename,
            "application_name": r.application_name,
            "client_addr": r.client_addr,
            "state": r.state,
            "sync_state": r.sync_state,
            "sync_priority": r.sync_priority,
        }
        for r in s.pg.replication
    ]


def _postgres_fields(s: NodeState, now: float) -> dict[str, Any]:
    """What a running PostgreSQL adds to {state, role}."""
    pg = s.pg
    out: dict[str, Any] = {
        "postmaster_start_time": pg.postmaster_start_time,
        "server_version": pg.server_version,
        "xlog": _xlog(s),
        "timeline": pg.timeline,
    }
    state = replication_state(s)
    if state is not None:
        out["replication_state"] = state
    if pg.replication:
        out["replication"] = _replication_rows(s)
    if is_sync_standby(s):
        out["sync_standby"] = True
    if is_quorum_standby(s):
        out["quorum_standby"] = True
    if s.paused:
        out["pause"] = True
    if s.cluster is not None and s.cluster.leader is None:
        out["cluster_unlocked"] = True
    if s.failsafe_mode_is_active:
        out["failsafe_mode_is_active"] = True
    if s.dcs_last_seen is not None:
        out["dcs_last_seen"] = int(s.dcs_last_seen)
    return out


def status_json(s: NodeState, now: float) -> dict[str, Any]:
    """The node's status document. With PostgreSQL down: only state and role (plus node facts)."""
    out: dict[str, Any] = {"state": str(pg_state(s)), "role": str(effective_role(s, now))}
    if s.pg.accepting:
        out.update(_postgres_fields(s, now))
    tags = s.tags.as_json()
    if tags:
        out["tags"] = tags
    if s.pg.sysid:
        out["database_system_identifier"] = s.pg.sysid
    if s.pending_restart or s.pg.pending_restart:
        out["pending_restart"] = True
    if s.watchdog_failed:
        out["watchdog_failed"] = True
    out["patroni"] = {"version": s.version, "scope": s.scope, "name": s.name}
    return out
