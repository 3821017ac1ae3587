"""`pgwarden route`: a sidecar next to each HAProxy / PgBouncer that pushes role changes into them.

Why a sidecar and not the agents: the routers belong to the clients' side (one HAProxy per application
host, PgBouncer next to the apps), there may be many of them and they must keep working while any
database host is down. A sidecar sees exactly what they need, the DCS, with the same watch the agents
use, and needs no credentials of the database hosts; the agents stay free of router-specific code.
The only cooperation needed from the agents is the switchover hold: see `registry`.

The loop: read the scope, check the leader's `/primary` when it is not the routed one, ask the
planner (`plan.plan`) what to do, apply the steps to every pusher, adopt the new routing only when all
succeeded. It sleeps in `wait_for_change` (woken at once when `leader` changes), and polls every
`poll_interval` seconds meanwhile, because the `failover` key does not wake the watch; while a new
leader is not yet writable it polls its `/primary` every `ready_interval` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from pgwarden.dcs import Dcs, DcsError
from pgwarden.model import ClusterView
from pgwarden.routing.errors import RoutingError
from pgwarden.routing.plan import Action, Fence, Hold, Release, Routing, observe, plan
from pgwarden.routing.registry import RouterRegistry
from pgwarden.routing.topology import ServerAddress, server_address

log = logging.getLogger(__name__)


class Pusher(Protocol):
    """One router the sidecar drives (HAProxy, PgBouncer, the etcd v2 mirror)."""

    name: str

    async def hold(self, revision: int) -> None: ...

    async def fence(self, server: str, planned: bool) -> None: ...

    async def route(self, server: ServerAddress) -> None: ...

    async def release(self, server: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SidecarTiming:
    poll_interval: float = 0.25
    """Longest sleep between two reads (the `failover` key is seen within this)."""
    ready_interval: float = 0.05
    """How often a new leader's `/primary` is polled until it answers 200."""
    hold_timeout: float = 15.0
    """A hold (PAUSE) not followed by a leader change within this is released."""
    http_timeout: float = 1.0
    tick_interval: float = 5.0
    """How often pushers with a `tick()` (TTL refresh) and the registry lease are refreshed."""


class RouteSidecar:
    """Watches one cluster scope and keeps the pushers' routing equal to the writable leader."""

    def __init__(self, dcs: Dcs, pushers: Sequence[Pusher], *, timing: SidecarTiming = SidecarTiming(),
                 registry: RouterRegistry | None = None, kinds: Sequence[str] = ()) -> None:
        self.dcs = dcs
        self.pushers = list(pushers)
        self.timing = timing
        self.registry = registry
        self.kinds = sorted(kinds)
        self.routing = Routing()
        self._http: aiohttp.ClientSession | None = None
        self._last_tick = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Route until `stop` is set."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timing.http_timeout))
        try:
            while not stop.is_set():
                waiting_for_leader = await self.step()
                await self._tick()
                if waiting_for_leader:
                    await asyncio.sleep(self.timing.ready_interval)
                else:
                    await self.dcs.wait_for_change(self.timing.poll_interval)
        finally:
            await self._http.close()

    async def step(self) -> bool:
        """One round. True when a leader exists that is not routed yet (poll again soon)."""
        try:
            view = await self.dcs.get_cluster()
        except DcsError as exc:
            log.warning("route: cannot read the DCS (%s); routing left as it is", exc)
            await asyncio.sleep(self.timing.poll_interval)
            return False
        now = asyncio.get_running_loop().time()
        leader = view.leader.name if view.leader else None
        writable = leader is not None and (leader == self.routing.primary or await self._accepts_writes(view))
        actions, after = plan(self.routing, observe(view, writable, now), hold_timeout=self.timing.hold_timeout)
        if actions and not await self._apply(actions, view):
            return True  # try again soon
        if after != self.routing:
            log.info("route: %s (was %s)", _describe(after), _describe(self.routing))
        self.routing = after
        await self._publish()
        return leader is not None and leader != self.routing.primary

    async def _accepts_writes(self, view: ClusterView) -> bool:
        member = view.leader_member
        address = server_address(member) if member is not None else None
        if address is None or self._http is None:
            return False
        try:
            async with self._http.get(address.api_base + "/primary") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _apply(self, actions: Sequence[Action], view: ClusterView) -> bool:
        for action in actions:
            results = await asyncio.gather(*(self._apply_one(p, action, view) for p in self.pushers),
                                           return_exceptions=True)
            failures = [(p, r) for p, r in zip(self.pushers, results, strict=True) if isinstance(r, BaseException)]
            for pusher, error in failures:
                log.error("route: %s on %s failed: %s", _action_text(action), pusher.name, error)
            if failures:
                return False
            log.info("route: %s done", _action_text(action))
        return True

    @staticmethod
    async def _apply_one(pusher: Pusher, action: Action, view: ClusterView) -> None:
        if isinstance(action, Hold):
            await pusher.hold(action.revision)
        elif isinstance(action, Fence):
            await pusher.fence(action.server, action.planned)
        elif isinstance(action, Release):
            await pusher.release(action.server)
        else:
            member = view.member(action.server)
            address = server_address(member) if member is not None else None
            if address is None:
                raise RoutingError(f"member {action.server} publishes no usable conn_url/api_url")
            await pusher.route(address)

    async def _publish(self) -> None:
        if self.registry is None:
            return
        value: dict[str, Any] = {"kinds": self.kinds, "primary": self.routing.primary,
                                 "held_for": self.routing.held_for}
        try:
            await self.registry.publish(value)
        except RoutingError as exc:
            log.warning("route: %s", exc)

    async def _tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_tick < self.timing.tick_interval:
            return
        self._last_tick = now
        for pusher in self.pushers:
            tick = getattr(pusher, "tick", None)
            if tick is not None:
                try:
                    await tick()
                except RoutingError as exc:
                    log.warning("route: %s", exc)


def _describe(routing: Routing) -> str:
    where = f"writes to {routing.primary}" if routing.primary else "writes nowhere"
    return where + (f", held for switchover {routing.held_for}" if routing.held_for else "")


def _action_text(action: Action) -> str:
    if isinstance(action, Hold):
        return f"hold for switchover (failover key revision {action.revision})"
    if isinstance(action, Fence):
        return f"fence {action.server}" + (" (planned)" if action.planned else "")
    if isinstance(action, Release):
        return f"release the hold on {action.server}"
    return f"route writes to {action.server}"
