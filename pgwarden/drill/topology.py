"""Finding a cluster from its configuration, and talking to its members: DCS read, REST, libpq DSN.

A drill needs to know the members (their `conn_url` and `api_url`, published in the DCS), who leads,
how to write (a libpq multi-host DSN with `target_session_attrs=read-write`, as an application would
connect) and how to ask a member how it is (its REST status document).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from psycopg.conninfo import make_conninfo

from pgwarden.aio import bounded
from pgwarden.config import LocalConfig
from pgwarden.dcs import DcsError, open_dcs
from pgwarden.rest_client import RestClient, RestReply, RestSettings, Unreachable

REST_TIMEOUT = 2.0
DCS_TIMEOUT = 3.0
# Fail fast on a dead server: libpq's defaults would let a write hang for minutes on a lost host.
CLIENT_TIMEOUTS: Mapping[str, Any] = {
    "connect_timeout": 2,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
}


class DrillError(Exception):
    """The drill cannot go on; the message says why and, where possible, what to do."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member as the DCS publishes it."""

    name: str
    conn_url: str
    api_url: str

    @property
    def pg_address(self) -> tuple[str, int] | None:
        parts = urlsplit(self.conn_url)
        if not parts.hostname:
            return None
        return parts.hostname, parts.port or 5432

    @property
    def api_address(self) -> tuple[str, int] | None:
        parts = urlsplit(self.api_url)
        if not parts.hostname:
            return None
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True, slots=True)
class Topology:
    scope: str
    leader: str | None
    members: tuple[MemberInfo, ...]

    def member(self, name: str) -> MemberInfo:
        for member in self.members:
            if member.name == name:
                return member
        raise DrillError(f"member {name!r} is not in the cluster (members: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)


async def _read_topology(local: LocalConfig) -> Topology:
    dcs = await open_dcs(local.dcs_kind, local.dcs.as_mapping(), namespace=local.namespace, scope=local.scope,
                         name=local.name, ttl=30, timeout=DCS_TIMEOUT, readonly=True)
    try:
        view = await bounded(dcs.get_cluster(), DCS_TIMEOUT * 2)
    finally:
        await dcs.close()
    members = tuple(sorted((MemberInfo(m.name, m.conn_url, m.api_url) for m in view.members),
                           key=lambda m: m.name))
    return Topology(view.scope, view.leader.name if view.leader else None, members)


def read_topology(local: LocalConfig) -> Topology:
    """The members and the leader as the DCS has them now. DrillError if the DCS cannot be read."""
    try:
        topology = asyncio.run(_read_topology(local))
    except (DcsError, TimeoutError) as exc:
        raise DrillError(f"cannot read the cluster {local.scope!r} from the DCS: {exc}") from exc
    if not topology.members:
        raise DrillError(f"cluster {local.scope!r} has no members in the DCS: is it running?")
    return topology


def multi_host_dsn(members: Sequence[MemberInfo], *, user: str, password: str | None,
                   dbname: str = "postgres", options: Mapping[str, str] | None = None) -> str:
    """A libpq DSN that lists every member and connects only to the one accepting writes; `options` are
    further libpq options (the configured superuser's sslmode, sslcert, ...)."""
    addresses = [m.pg_address for m in members if m.pg_address is not None]
    if not addresses:
        raise DrillError("no member publishes a usable conn_url in the DCS")
    params: dict[str, Any] = {
        "host": ",".join(h for h, _ in addresses),
        "port": ",".join(str(p) for _, p in addresses),
        "user": user,
        "dbname": dbname,
        "target_session_attrs": "read-write",
        "application_name": "pgwarden-drill",
        **CLIENT_TIMEOUTS,
        **(options or {}),
    }
    if password:
        params["password"] = password
    return make_conninfo("", **params)


def with_client_timeouts(dsn: str) -> str:
    """A user's `--dsn` with the drill's timeouts added where the DSN does not set its own."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(dsn)
    extra = {k: v for k, v in CLIENT_TIMEOUTS.items() if k not in given}
    return make_conninfo(dsn, **extra)


# --------------------------------------------------------------------------------------------------
# REST


def rest_call(member: MemberInfo, method: str, path: str, settings: RestSettings, body: Any = None,
              timeout: float = REST_TIMEOUT) -> RestReply | Unreachable:
    """`method path` on `member` through the members' REST client. The drill's threads are plain
    synchronous code, so each call runs in a short event loop of its own."""

    async def call() -> RestReply | Unreachable:
        async with RestClient(settings) as client:
            return await client.request(member.api_url, method, path, body, timeout=timeout)

    return asyncio.run(call())


def _json_if_ok(reply: RestReply | Unreachable) -> Mapping[str, Any] | None:
    """The JSON object of a 200 answer, else None."""
    return reply.json_object() if isinstance(reply, RestReply) and reply.status == 200 else None


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """What a member's `GET /patroni` says, reduced to what a drill needs."""

    name: str
    reachable: bool
    role: str | None = None
    state: str | None = None
    replication_state: str | None = None
    timeline: int | None = None
    postmaster_start_time: str | None = None

    @property
    def is_running_primary(self) -> bool:
        return self.role in ("primary", "master") and self.state == "running"

    @property
    def is_streaming_replica(self) -> bool:
        return self.role == "replica" and self.state == "running" and self.replication_state == "streaming"

    @property
    def instance(self) -> tuple[str, str | None]:
        """Identifies one PostgreSQL instance: a restart in place changes the start time."""
        return self.name, self.postmaster_start_time


def member_status(member: MemberInfo, settings: RestSettings, timeout: float = REST_TIMEOUT) -> MemberStatus:
    body = _json_if_ok(rest_call(member, "GET", "/patroni", settings, timeout=timeout))
    if body is None:
        return MemberStatus(member.name, reachable=False)
    timeline = body.get("timeline")
    return MemberStatus(
        member.name, True, role=body.get("role"), state=body.get("state"),
        replication_state=body.get("replication_state"),
        timeline=timeline if isinstance(timeline, int) else None,
        postmaster_start_time=body.get("postmaster_start_time"),
    )


def primary_instance(member: MemberInfo, settings: RestSettings, timeout: float) -> tuple[str, str | None] | None:
    """The instance behind a 200 on `GET /primary`, or None if this member is not the primary now."""
    body = _json_if_ok(rest_call(member, "GET", "/primary", settings, timeout=timeout))
    # A 200 from an agent that has not yet noticed its postmaster died shows no running PostgreSQL.
    if body is None or body.get("state") != "running":
        return None
    start = body.get("postmaster_start_time")
    return member.name, start if isinstance(start, str) else None


@dataclass(frozen=True, slots=True)
class Health:
    """One look at every member: healed means one running primary and every other member streaming."""

    statuses: tuple[MemberStatus, ...]

    @property
    def primaries(self) -> list[MemberStatus]:
        return [s for s in self.statuses if s.is_running_primary]

    @property
    def primary(self) -> MemberStatus | None:
        primaries = self.primaries
        return primaries[0] if len(primaries) == 1 else None

    @property
    def healed(self) -> bool:
        return self.primary is not None and all(
            s.is_streaming_replica for s in self.statuses if not s.is_running_primary)

    def describe(self) -> str:
        parts = []
        for s in self.statuses:
            if not s.reachable:
                parts.append(f"{s.name}: no answer")
            else:
                parts.append(f"{s.name}: {s.role}/{s.state}" + (f"/{s.replication_state}"
                                                                if s.replication_state else ""))
        return ", ".join(parts)


def cluster_health(members: Sequence[MemberInfo], settings: RestSettings, timeout: float = REST_TIMEOUT) -> Health:
    return Health(tuple(member_status(m, settings, timeout) for m in members))
