"""Fault schedules: drawn from a seed, applied to a world, each fault healing itself.

A schedule is plain data (a tuple of `Fault`), so a failing run can be printed, replayed and shrunk.
Every fault with a duration heals before the end of the fault window, so liveness can be judged
after it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgwarden.sim.world import DCS, SimOptions, World

if TYPE_CHECKING:
    from pgwarden.sim.agent import DecideFn


@dataclass(frozen=True, slots=True)
class Fault:
    at: float
    kind: str
    node: str = ""
    duration: float = 0.0
    value: float = 0.0
    group: tuple[str, ...] = ()
    config: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        parts = [f"t={self.at:8.2f}", self.kind]
        if self.node:
            parts.append(self.node)
        if self.group:
            parts.append("{" + " ".join(self.group) + "}")
        if self.duration:
            parts.append(f"for {self.duration:.1f}s")
        if self.value:
            parts.append(f"value={self.value:g}")
        if self.config:
            parts.append(" ".join(f"{k}={v}" for k, v in self.config))
        return " ".join(parts)


Schedule = tuple[Fault, ...]

KINDS = ("host_crash", "pg_crash", "agent_pause", "agent_stop", "partition", "dcs_outage", "dcs_slow",
         "peer_loss", "slow_promote", "slow_checkpoint", "replica_lag", "config")
WEIGHTS = (12, 10, 10, 5, 14, 6, 4, 3, 6, 4, 8, 6)

CONFIG_CHOICES: dict[str, tuple[Any, ...]] = {
    "ttl": (20, 30, 45, 60),
    "loop_wait": (2, 5, 10),
    "retry_timeout": (3, 5, 10),
    "maximum_lag_on_failover": (65536, 1048576, 16777216),
    "use_pg_rewind": (True, True, False),
    "remove_data_directory_on_rewind_failure": (False, False, True),
    "remove_data_directory_on_diverged_timelines": (False, False, True),
    "check_timeline": (False, True),
}


def initial_config(rng: random.Random) -> dict[str, Any]:
    """The bootstrap /config of a run (what `bootstrap.dcs` would hold)."""
    return {
        "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
        "maximum_lag_on_failover": rng.choice((1048576, 1048576, 4194304)),
        "use_pg_rewind": rng.random() < 0.8,
        "remove_data_directory_on_rewind_failure": rng.random() < 0.2,
        "remove_data_directory_on_diverged_timelines": rng.random() < 0.2,
        "check_timeline": rng.random() < 0.3,
    }


def make_schedule(rng: random.Random, opts: SimOptions, names: tuple[str, ...]) -> Schedule:
    count = rng.randint(1, 14)
    faults = [_draw(rng, opts, names) for _ in range(count)]
    return tuple(sorted(faults, key=lambda f: (f.at, f.kind, f.node)))


def _draw(rng: random.Random, opts: SimOptions, names: tuple[str, ...]) -> Fault:
    kind = rng.choices(KINDS, WEIGHTS)[0]
    at = round(rng.uniform(opts.warmup, opts.fault_window - 10), 3)
    room = opts.fault_window - at

    def span(low: float, high: float) -> float:
        return round(min(rng.uniform(low, high), room), 3)

    node = rng.choice(names)
    match kind:
        case "host_crash":
            return Fault(at, kind, node, span(5, 200))
        case "pg_crash":
            return Fault(at, kind, node)
        case "agent_pause":
            long = rng.random() < 0.2
            return Fault(at, kind, node, span(35, 120) if long else span(0.5, 15))
        case "agent_stop":
            return Fault(at, kind, node, span(5, 120))
        case "partition":
            size = rng.randint(1, max(1, len(names) // 2))
            group = tuple(sorted(rng.sample(names, size)))
            return Fault(at, kind, duration=span(3, 150), group=group, value=float(rng.random() < 0.3))
        case "dcs_outage":
            return Fault(at, kind, duration=span(3, 100))
        case "dcs_slow":
            return Fault(at, kind, duration=span(5, 100), value=round(rng.uniform(0.2, 2.5), 3))
        case "peer_loss":
            return Fault(at, kind, duration=span(5, 100), value=round(rng.uniform(0.2, 1.0), 2))
        case "slow_promote":
            return Fault(at, kind, node, value=round(rng.uniform(5, 90), 1))
        case "slow_checkpoint":
            return Fault(at, kind, node, value=round(rng.uniform(5, 50), 1))
        case "replica_lag":
            return Fault(at, kind, node, span(10, 300), value=round(rng.uniform(2, 60), 1))
        case _:
            keys = rng.sample(sorted(CONFIG_CHOICES), rng.randint(1, 3))
            return Fault(at, "config", config=tuple((k, rng.choice(CONFIG_CHOICES[k])) for k in sorted(keys)))


# ---------------------------------------------------------------------------------------------------
# Applying faults


def apply(world: World, fault: Fault, decide: DecideFn) -> None:
    """Inject `fault` now and schedule its healing."""
    world.recorder.event(world.now, fault.node or "*", f"FAULT {fault}")
    world.end_virtual_keepalives()
    heal = _inject(world, fault, decide)
    if heal is not None:
        def healed() -> None:
            world.recorder.event(world.now, fault.node or "*", f"HEAL {fault.kind}")
            world.end_virtual_keepalives()
            heal()
            wake_stale_watchers(world)
        world.kernel.at(world.now + fault.duration, healed)


def _inject(world: World, f: Fault, decide: DecideFn) -> Callable[[], None] | None:
    node = world.nodes.get(f.node)
    match f.kind:
        case "host_crash":
            assert node is not None
            if not node.host_up:
                return None
            crash_host(world, f.node)
            return lambda: restart_host(world, f.node, decide)
        case "pg_crash":
            assert node is not None
            if node.pg.running:
                world.refresh()
                node.pg.crash(world.now)
                if node.agent is not None:
                    node.agent.postmaster_died()
            return None
        case "agent_pause":
            assert node is not None
            if node.agent is None or f.node in world.kernel.paused:
                return None
            world.kernel.pause(f.node)
            node.pauses.append((world.now, None, node.lease_sent))

            def resume() -> None:
                start, _, lease_sent = node.pauses[-1]
                node.pauses[-1] = (start, world.now, lease_sent)
                world.kernel.resume(f.node)
            return resume
        case "agent_stop":
            assert node is not None
            if node.agent is None or node.agent.finished or f.node in world.kernel.paused:
                return None
            node.agent.request_stop()
            return lambda: restart_agent(world, f.node, decide)
        case "partition":
            inside = set(f.group)
            outside = set(world.nodes) - inside
            (inside if f.value else outside).add(DCS)
            pairs = [frozenset((a, b)) for a in inside for b in outside]
            return _block(world, pairs)
        case "dcs_outage":
            return _block(world, [frozenset((n, DCS)) for n in world.nodes])
        case "dcs_slow":
            return _override(world, world, "dcs_latency", f.value)
        case "peer_loss":
            return _override(world, world, "peer_loss", f.value)
        case "slow_promote":
            assert node is not None
            node.slow_promote = f.value
            return None
        case "slow_checkpoint":
            assert node is not None
            node.slow_checkpoint = f.value
            return None
        case "replica_lag":
            assert node is not None
            return _override(world, node.pg, "lag_seconds", f.value)
        case "config":
            _change_config(world, dict(f.config))
            return None
        case _:
            raise ValueError(f"unknown fault kind {f.kind!r}")


def _override(world: World, target: object, attribute: str, value: float) -> Callable[[], None]:
    """Set `target.attribute` for the fault's duration. Overlapping faults on the same attribute
    stack: when one heals, the latest still active one's value applies, else the original (restoring
    "the value before me" would let two overlapping faults leave the last one's value forever)."""
    key = (id(target), attribute)
    stack = world.overrides.setdefault(key, [getattr(target, attribute)])
    entry = [value]  # a fresh object: identity tells this fault's entry apart
    stack.append(entry)
    setattr(target, attribute, value)

    def heal() -> None:
        stack.remove(entry)
        top = stack[-1]
        setattr(target, attribute, top[0] if isinstance(top, list) else top)
    return heal


def _block(world: World, pairs: list[frozenset[str]]) -> Callable[[], None]:
    fresh = [p for p in pairs if p not in world.blocked]
    world.blocked.update(fresh)
    return lambda: world.blocked.difference_update(fresh)


def _change_config(world: World, changes: dict[str, Any]) -> None:
    """An operator edits /config (patronictl edit-config); lost when the DCS is down."""
    if not world.dcs_up:
        return
    store = world.etcd
    value = dict(store.config_value)
    if not value:
        return
    value.update(changes)
    store.put("config", value, writer="operator")


def crash_host(world: World, name: str) -> None:
    node = world.nodes[name]
    world.refresh()
    node.pg.crash(world.now)
    node.host_up = False
    if node.agent is not None:
        node.agent.kill()
        node.agent = None
    world.kernel.resume(name)  # a paused agent's held steps die with the host
    if node.pauses and node.pauses[-1][1] is None:
        start, _, lease_sent = node.pauses[-1]
        node.pauses[-1] = (start, world.now, lease_sent)


def restart_host(world: World, name: str, decide: DecideFn) -> None:
    world.nodes[name].host_up = True
    restart_agent(world, name, decide)


def restart_agent(world: World, name: str, decide: DecideFn) -> None:
    from pgwarden.sim.agent import SimAgent

    node = world.nodes[name]
    if not node.host_up:
        return
    if node.agent is not None and not node.agent.finished:
        if node.agent.stopping:
            # Still shutting down (a slow stop): the service manager starts it again once it exited.
            world.kernel.at(world.now + 1.0, lambda: restart_agent(world, name, decide))
        return
    if node.agent is not None:
        node.agent.kill()
    node.agent = SimAgent(world, name, decide)
    node.agent.start()
    world.recorder.event(world.now, name, "agent started")


def wake_stale_watchers(world: World) -> None:
    """A watch that reconnects replays what it missed: agents that have not seen the leader key's
    latest change wake up."""
    key = world.etcd.get("leader")
    revision = key.mod_revision if key else world.etcd.revision
    for name, node in world.nodes.items():
        agent = node.agent
        if agent is not None and world.dcs_reachable(name) and agent.dcs.seen_revision < revision:
            agent.wake()
