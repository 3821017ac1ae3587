"""The routing planner: from what the DCS says to what the load balancer and the pooler must do (pure).

The sidecar observes the cluster (`Observation`), remembers what it last made the routers do
(`Routing`), and asks `plan()` for the next steps. Every step is applied by every pusher in order;
only when all succeeded does the sidecar adopt the new `Routing`, so a failed step is simply planned
and tried again on the next round. Steps, in the order they can occur around a role change:

- `Hold`:    a switchover of the routed primary was requested (the `failover` key names it as
             `leader`): hold new work and let running transactions finish (PgBouncer PAUSE), then the
             sidecar acknowledges, so the agent may stop the old primary without breaking a client;
- `Fence`:   the routed primary is no longer the leader: cut it off at once (HAProxy: health down and
             shutdown sessions; PgBouncer: KILL, unless it is already held for a switchover);
- `Route`:   the leader accepts writes: send writes there (HAProxy: health up; PgBouncer: new
             `[databases]` target, RELOAD, RESUME);
- `Release`: a held switchover did not happen (key withdrawn, or held too long): resume as before.

Writes are routed only to a leader whose `/primary` answered 200, i.e. one that really accepts
writes, never to one that merely holds the key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pgwarden.model import ClusterView


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at the cluster, plus whether its leader answered `/primary` with 200."""

    leader: str | None
    leader_writable: bool = False
    switchover_of: str | None = None
    """The member a pending switchover demotes (the `failover` key's `leader`), if any."""
    failover_revision: int = 0
    now: float = 0.0
    """Monotonic seconds (for the hold timeout)."""


@dataclass(frozen=True, slots=True)
class Routing:
    """What the sidecar has made the routers do."""

    primary: str | None = None
    """Where writes go; None: nowhere (fenced, or not routed yet)."""
    held_for: int | None = None
    """The `failover` key revision we hold (paused) for; None when not held."""
    held_since: float = 0.0
    given_up: int = 0
    """The `failover` revision whose hold timed out: not held again (the agent goes ahead without us)."""


@dataclass(frozen=True, slots=True)
class Hold:
    revision: int


@dataclass(frozen=True, slots=True)
class Fence:
    server: str
    planned: bool
    """True when the routers are already held for a switchover (nothing runs on the old primary)."""


@dataclass(frozen=True, slots=True)
class Route:
    server: str


@dataclass(frozen=True, slots=True)
class Release:
    server: str


Action = Hold | Fence | Route | Release


def observe(view: ClusterView, leader_writable: bool, now: float) -> Observation:
    """The observation for one cluster read; `leader_writable` is the leader's `/primary` answer."""
    failover = view.failover
    # Only a switchover (the key names the current leader) is announced before the demotion; a
    # failover key without `leader` is acted on only when there is no healthy leader anyway.
    switchover_of = failover.leader if failover is not None and failover.leader else None
    return Observation(
        leader=view.leader.name if view.leader else None,
        leader_writable=leader_writable,
        switchover_of=switchover_of,
        failover_revision=failover.revision if failover is not None else 0,
        now=now,
    )


def plan(routing: Routing, obs: Observation, *, hold_timeout: float) -> tuple[tuple[Action, ...], Routing]:
    """The steps to take now and the routing once they are done."""
    if routing.primary is not None and obs.leader != routing.primary:
        fenced = replace(routing, primary=None)
        steps: tuple[Action, ...] = (Fence(routing.primary, planned=routing.held_for is not None),)
        more, after = _route_if_ready(fenced, obs)
        return steps + more, after
    if routing.primary is None:
        return _route_if_ready(routing, obs)
    return _hold_or_release(routing, obs, hold_timeout)


def _route_if_ready(routing: Routing, obs: Observation) -> tuple[tuple[Action, ...], Routing]:
    if obs.leader is not None and obs.leader_writable:
        return (Route(obs.leader),), Routing(primary=obs.leader)
    return (), routing


def _hold_or_release(routing: Routing, obs: Observation, hold_timeout: float) -> tuple[tuple[Action, ...], Routing]:
    """The leader is the routed primary: hold for its switchover, or give up a hold that went stale."""
    assert routing.primary is not None
    announced = obs.switchover_of == routing.primary
    fresh = obs.failover_revision not in (0, routing.given_up)
    if announced and routing.held_for is None and fresh:
        return (Hold(obs.failover_revision),), replace(routing, held_for=obs.failover_revision, held_since=obs.now)
    if routing.held_for is None:
        return (), routing
    if not announced or obs.failover_revision != routing.held_for:
        return (Release(routing.primary),), Routing(primary=routing.primary)
    if obs.now - routing.held_since > hold_timeout:
        return (Release(routing.primary),), Routing(primary=routing.primary, given_up=routing.held_for)
    return (), routing
