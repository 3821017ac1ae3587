"""POST /switchover, POST /failover and DELETE /switchover (contract 4.4).

The HTTP handler only validates and writes the `failover` key (compare-and-swap, exactly as
patronictl would); the leader's HA loop performs the switchover, and the handler then waits for the
new leader. The checks are the pure `parse_switchover` and `check_switchover`, so every refusal text
and code is unit-tested without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pgwarden.api.control import AgentControl, ControlResult
from pgwarden.api.health import in_sync_key
from pgwarden.api.http import Response
from pgwarden.api.requests import Refusal, fresh_cluster, optional_str, reply, schedule
from pgwarden.dcs.base import DcsError
from pgwarden.model import ClusterView, Member, PgState, Role

Action = Literal["switchover", "failover"]
FAILOVER_KEY = "failover"  # the key's name in ClusterView.unreadable (dcs.codec.FAILOVER)


@dataclass(frozen=True, slots=True)
class SwitchoverRequest:
    """A validated POST /switchover or /failover body."""

    action: Action
    leader: str | None = None
    candidate: str | None = None
    scheduled_at: datetime | None = None

    @property
    def title(self) -> str:
        return self.action.capitalize()


def parse_switchover(body: Mapping[str, Any], action: Action, now: datetime) -> SwitchoverRequest:
    """Check the body on its own (no cluster needed). Raises Refusal with the contract's 400/422 texts."""
    leader, candidate = optional_str(body, "leader"), optional_str(body, "candidate")
    if action == "failover" and candidate is None:
        raise Refusal(400, "Failover could be performed only to a specific candidate")
    if action == "switchover" and leader is None:
        raise Refusal(400, "Switchover could be performed only from a specific leader")
    if leader is not None and leader == candidate:
        raise Refusal(400, f"{action.capitalize()} target and source are the same")
    raw_schedule = body.get("scheduled_at")
    if raw_schedule in (None, ""):
        return SwitchoverRequest(action, leader, candidate)
    if action == "failover":
        raise Refusal(400, "Failover can't be scheduled; use POST /switchover with scheduled_at")
    return SwitchoverRequest(action, leader, candidate, schedule(raw_schedule, now, "switchover"))


def _candidate_refusal(cluster: ClusterView, request: SwitchoverRequest, name: str) -> ControlResult | None:
    if request.action == "switchover" and cluster.dynamic.synchronous and not in_sync_key(cluster, name):
        return ControlResult(412, "candidate name does not match with sync_standby")
    member = cluster.member(name)
    if member is None:
        return ControlResult(412, "candidate does not exists")
    if cluster.leader is not None and cluster.leader.name == name:
        return ControlResult(412, f'candidate "{name}" is already the leader')
    if not member.tags.can_promote or member.state != PgState.RUNNING:
        # Not allowed to promote (nofailover, failover_priority 0) or not running: Patroni's words.
        return ControlResult(412, f"{request.action} is not possible: no good candidates have been found")
    return None


def _good_candidate(cluster: ClusterView, member: Member) -> bool:
    """A member the leader could hand over to: promotable, running, a replica, in sync when required."""
    if not (member.tags.can_promote and member.state == PgState.RUNNING and member.role == Role.REPLICA):
        return False
    return not cluster.dynamic.synchronous or in_sync_key(cluster, member.name)


def check_switchover(cluster: ClusterView, request: SwitchoverRequest, paused: bool) -> ControlResult | None:
    """Whether the cluster allows the request: None if it does, else the contract's (code, text)."""
    title = request.title
    if paused and request.scheduled_at is not None:
        return ControlResult(400, f"Can't schedule {request.action} in the paused state")
    if paused and request.candidate is None:
        return ControlResult(400, f"{title} is possible only to a specific candidate in a paused state")
    if request.leader is not None and (cluster.leader is None or cluster.leader.name != request.leader):
        return ControlResult(412, "leader name does not match")
    if request.candidate is not None:
        return _candidate_refusal(cluster, request, request.candidate)
    leader_name = cluster.leader.name if cluster.leader else request.leader
    others = [m for m in cluster.members if m.name != leader_name]
    if not others:
        return ControlResult(412, f"{request.action} is not possible: cluster does not have members except leader")
    if not any(_good_candidate(cluster, m) for m in others):
        return ControlResult(412, f"{request.action} is not possible: no good candidates have been found")
    return None


def failover_value(request: SwitchoverRequest) -> dict[str, str]:
    """The `failover` key's JSON: only the fields that are set (as Patroni writes it)."""
    value: dict[str, str] = {}
    if request.leader is not None:
        value["leader"] = request.leader
    if request.candidate is not None:
        value["member"] = request.candidate
    if request.scheduled_at is not None:
        value["scheduled_at"] = request.scheduled_at.isoformat()
    return value


def success_text(request: SwitchoverRequest, new_leader: str) -> str:
    """200 text once `new_leader` runs as primary."""
    if request.candidate is not None and request.candidate != new_leader:
        done = "Switched over" if request.action == "switchover" else "Failed over"
        return f'{done} to "{new_leader}" instead of "{request.candidate}"'
    done = "switched over" if request.action == "switchover" else "failed over"
    return f'Successfully {done} to "{new_leader}"'


def wait_timeout(loop_wait: int) -> float:
    """How long POST /switchover waits for the new leader (contract: 2 x max(10, loop_wait))."""
    return 2.0 * max(10, loop_wait)


async def post_switchover(
    body: Mapping[str, Any], action: Action, control: AgentControl, *, loop_wait: int, now: datetime,
    dcs_timeout: float, wait: float | None = None,
) -> Response:  # fmt: skip
    """Validate, write `failover` (CAS), wake the loop, and (unless scheduled) wait for the outcome."""
    request = parse_switchover(body, action, now)
    cluster = await fresh_cluster(control.dcs, dcs_timeout)
    refusal = check_switchover(cluster, request, cluster.paused)
    if refusal is not None:
        return reply(refusal)
    # An unreadable failover key (garbage) is replaced, with compare-and-swap on its revision.
    revision = cluster.failover.revision if cluster.failover is not None else cluster.unreadable.get(FAILOVER_KEY, 0)
    if not await _write_failover(control, failover_value(request), revision, dcs_timeout):
        raise Refusal(409, "the failover key was changed by somebody else meanwhile; retry")
    control.wakeup()
    if request.scheduled_at is not None:
        return Response(status=202, text=f"{request.title} scheduled")
    old_leader = cluster.leader.name if cluster.leader else None
    view = await control.wait_for_new_leader(old_leader, wait if wait is not None else wait_timeout(loop_wait))
    if view is not None and view.leader is not None:
        return Response(status=200, text=success_text(request, view.leader.name))
    return Response(status=503, text=await _unfinished_text(request, control, dcs_timeout))


async def _write_failover(control: AgentControl, value: Mapping[str, str], revision: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await control.dcs.set_failover(value, revision)
    except (DcsError, TimeoutError) as exc:
        raise Refusal(503, f"could not write the failover key to the DCS: {exc or type(exc).__name__}") from None


async def _unfinished_text(request: SwitchoverRequest, control: AgentControl, timeout: float) -> str:
    """No new leader in time: "failed" if the leader already dropped the request, else "unknown"."""
    try:
        cluster = await fresh_cluster(control.dcs, timeout)
    except Refusal:
        return f"{request.title} status unknown"
    return f"{request.title} failed" if cluster.failover is None else f"{request.title} status unknown"


async def delete_switchover(control: AgentControl, dcs_timeout: float) -> Response:
    """DELETE /switchover: cancel a scheduled switchover. 200 / 404 when none / 409 on a lost race.

    An unreadable failover key (not JSON, not `leader:member`) is deleted too (200): every reader
    ignores it, yet it is in the way of every new switchover's compare-and-swap."""
    cluster = await fresh_cluster(control.dcs, dcs_timeout)
    failover = cluster.failover
    garbage = cluster.unreadable.get(FAILOVER_KEY) if failover is None else None
    if garbage is None and (failover is None or not failover.scheduled_at):
        return Response(status=404, text="no switchover is scheduled")
    try:
        async with asyncio.timeout(dcs_timeout):
            deleted = await control.dcs.delete_failover(failover.revision if failover is not None else garbage)
    except (DcsError, TimeoutError) as exc:
        raise Refusal(503, f"could not delete the failover key: {exc or type(exc).__name__}") from None
    if not deleted:
        return Response(status=409, text="Could not delete scheduled switchover: it changed meanwhile")
    control.wakeup()
    if garbage is not None:
        return Response(status=200, text="the failover key was unreadable (not a switchover request); deleted it")
    return Response(status=200, text="scheduled switchover deleted")
