"""Ask the other members for their status (`GET <api_url>`), all in parallel, each under a short timeout.

Used only when a leader race or a handover needs WAL positions. A peer that does not answer, or
answers with something other than a status JSON we can read, is simply `reachable=False`: it neither
wins nor blocks a race (its position is unknown, and the atomic leader key settles ties). The calls go
through the members' REST client (`pgwarden.rest_client`); `peer_from_json`, the pure reading of an
answer, is shared with the simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from pgwarden.core.snapshot import PeerStatus
from pgwarden.model import Member
from pgwarden.rest_client import RestClient, RestSettings

PEER_TIMEOUT = 2.0


def peer_from_json(name: str, body: Mapping[str, Any]) -> PeerStatus:
    """Condense a peer's status JSON into what the race compares. Raises ValueError on bad shapes."""
    role = body.get("role")
    xlog = body.get("xlog") or {}
    if not isinstance(xlog, Mapping):
        raise ValueError("xlog is not an object")
    tags = body.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise ValueError("tags is not an object")
    is_primary = role in ("primary", "master") or "location" in xlog
    if is_primary:
        lsn = _int_or_none(xlog.get("location"))
    else:
        positions = [_int_or_none(xlog.get(k)) for k in ("received_location", "replayed_location")]
        known = [p for p in positions if p is not None]
        lsn = max(known) if known else None
    running = body.get("state") == "running"
    return PeerStatus(
        name=name,
        reachable=True,
        role=str(role) if role is not None else None,
        in_recovery=(not is_primary) if running else None,
        lsn=lsn,
        timeline=_int_or_none(body.get("timeline")),
        nofailover=bool(tags.get("nofailover", False)),
        failover_priority=_priority(tags),
        watchdog_failed=body.get("watchdog_failed") is True,
        failsafe_active=body.get("failsafe_mode_is_active") is True,
    )


def _priority(tags: Mapping[str, Any]) -> int:
    value = tags.get("failover_priority", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None


async def fetch_one(client: RestClient, member: Member, timeout: float) -> PeerStatus:
    body = await client.status(member.api_url, timeout=timeout) if member.api_url else None
    if body is None:
        return PeerStatus(name=member.name, reachable=False)
    try:
        return peer_from_json(member.name, body)
    except ValueError:
        return PeerStatus(name=member.name, reachable=False)


async def fetch_peers(session: aiohttp.ClientSession, members: Sequence[Member], me: str,
                      timeout: float = PEER_TIMEOUT, settings: RestSettings | None = None) -> tuple[PeerStatus, ...]:
    """Statuses of every member but `me`, sorted by name, asked over the agent's `session` with the
    REST client `settings` (the CA, client certificate and credentials of `ctl`/`restapi`, as Patroni
    asks its peers: with a private CA, peers would otherwise all look unreachable in a race)."""
    client = RestClient(settings, session=session)
    others = sorted((m for m in members if m.name != me), key=lambda m: m.name)
    results = await asyncio.gather(*(fetch_one(client, m, timeout) for m in others))
    return tuple(results)
