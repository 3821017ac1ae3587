"""Fault schedules: drawn from a seed, applied to a world, each fault healing itself.

A schedule is plain data (a tuple of `Fault`), so a failing run can be printed, replayed and shrunk.
Every fault with a duration heals before the end of the fault window, so liveness can be judged
after it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgwarden.core.snapshot import OperatorRequest, ReinitRequested, RestartRequested
from pgwarden.model import FailoverRequest, Tags
from pgwarden.sim import invariants
from pgwarden.sim.etcd import FAILOVER
from pgwarden.sim.world import DCS, WALL_EPOCH, SimOptions, World

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
    lag = rng.choice((1048576, 1048576, 4194304))
    switches = {"use_pg_rewind": rng.random() < 0.8,
                "remove_data_directory_on_rewind_failure": rng.random() < 0.2,
                "remove_data_directory_on_diverged_timelines": rng.random() < 0.2}
    return {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": lag,
            "check_timeline": rng.random() < 0.3, "postgresql": switches}


POSTGRESQL_SWITCHES = ("use_pg_rewind", "remove_data_directory_on_rewind_failure",
                       "remove_data_directory_on_diverged_timelines")
"""/config keys that live in its `postgresql` section, where Patroni (and `parse_dynamic`) reads them."""


def with_changes(value: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`value` with `changes` applied where each key lives (`POSTGRESQL_SWITCHES` under `postgresql`)."""
    changed = dict(value)
    section = dict(changed.get("postgresql") or {})
    for key, new in changes.items():
        if key in POSTGRESQL_SWITCHES:
            section[key] = new
        else:
            changed[key] = new
    if section:
        changed["postgresql"] = section
    return changed


# What operators do (with SimOptions.operations): through the DCS `failover` and `config` keys, as
# the REST API and patronictl write them, and through an agent's REST control (restart, reinitialize).
OPERATIONS = ("switchover", "failover", "pause", "restart", "reinitialize")
OPERATION_WEIGHTS = (6, 3, 4, 4, 3)

RESUME_RETRY = 5.0
"""How often an operator retries `patronictl resume` that could not be done yet."""


def make_schedule(rng: random.Random, opts: SimOptions, names: tuple[str, ...]) -> Schedule:
    count = rng.randint(1, 14)
    faults = [_draw(rng, opts, names) for _ in range(count)]
    if opts.operations:
        faults += [_draw_operation(rng, opts, names) for _ in range(rng.randint(1, 4))]
    return tuple(sorted(faults, key=lambda f: (f.at, f.kind, f.node)))


def member_tags(rng: random.Random, names: tuple[str, ...]) -> dict[str, Tags]:
    """Local member tags of a run (with SimOptions.operations): sometimes one cascading replica
    (replicatefrom), one member that must never be promoted (nofailover) or a preferred clone source."""
    tags: dict[str, Tags] = {}
    order = list(names)
    rng.shuffle(order)
    if rng.random() < 0.35:
        tags[order[0]] = replace(tags.get(order[0], Tags()), replicatefrom=order[1])
    if rng.random() < 0.25:
        tags[order[2]] = replace(tags.get(order[2], Tags()), nofailover=True)
    if rng.random() < 0.2:
        tags[order[1]] = replace(tags.get(order[1], Tags()), clonefrom=True)
    return tags


def _draw_operation(rng: random.Random, opts: SimOptions, names: tuple[str, ...]) -> Fault:
    kind = rng.choices(OPERATIONS, OPERATION_WEIGHTS)[0]
    at = round(rng.uniform(opts.warmup, opts.fault_window - 40), 3)
    room = opts.fault_window - 30 - at
    node = rng.choice(names)
    match kind:
        case "switchover":
            candidate = node if rng.random() < 0.7 else ""
            later = round(min(rng.uniform(5, 90), room), 1) if rng.random() < 0.3 else 0.0
            return Fault(at, kind, candidate, value=max(later, 0.0))
        case "failover":
            return Fault(at, kind, node)
        case "pause":
            return Fault(at, kind, duration=round(min(rng.uniform(10, 150), room + 20), 3))
        case "restart":
            role = rng.choice((None, None, None, "primary", "replica"))
            conditions: tuple[tuple[str, Any], ...] = (("role", role),) if role else ()
            if rng.random() < 0.1:
                conditions += (("restart_pending", True),)
            later = round(min(rng.uniform(5, 60), room), 1) if rng.random() < 0.2 else 0.0
            return Fault(at, kind, node, value=max(later, 0.0), config=conditions)
        case _:
            return Fault(at, kind, node, value=float(rng.random() < 0.5))


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
                world.pg_changed = True
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
        case "switchover" | "failover":
            _request_failover(world, f)
            return None
        case "pause":
            if not _set_pause(world, True):
                return None
            return lambda: _resume(world)
        case "restart" | "reinitialize":
            agent = node.agent if node is not None else None
            if node is None or agent is None or agent.finished or not node.host_up or f.node in world.kernel.paused:
                world.recorder.event(world.now, f.node, f"{f.kind} request: the REST API does not answer")
                return None
            request: OperatorRequest
            if f.kind == "restart":
                request = RestartRequested(**dict(f.config))
            else:
                request = ReinitRequested(from_leader=bool(f.value))
            due = world.wall_time(f.node) + f.value if f.kind == "restart" else 0.0
            if not agent.submit(request, due):
                world.recorder.event(world.now, f.node, f"{f.kind} request: another one is pending (409)")
            return None
        case _:
            raise ValueError(f"unknown fault kind {f.kind!r}")


def _request_failover(world: World, f: Fault) -> None:
    """POST /switchover or /failover (patronictl switchover|failover): validated by the REST API's own
    checks on a fresh read, then written to the `failover` key; the leader's loop is woken."""
    from pgwarden.api.requests import Refusal
    from pgwarden.api.switchover import check_switchover, failover_value, parse_switchover

    if not world.dcs_up:
        world.recorder.event(world.now, "*", f"{f.kind} request: the DCS does not answer (503)")
        return
    view = world.etcd.view()
    leader = view.leader.name if view.leader else None
    body: dict[str, Any] = {}
    if f.kind == "switchover":
        body["leader"] = leader
    if f.node:
        body["candidate"] = f.node
    wall = WALL_EPOCH + world.now
    if f.value:
        body["scheduled_at"] = datetime.fromtimestamp(wall + f.value, UTC).isoformat()
    try:
        request = parse_switchover(body, "failover" if f.kind == "failover" else "switchover",
                                   datetime.fromtimestamp(wall, UTC))
    except Refusal as refused:
        world.recorder.event(world.now, "*", f"{f.kind} request refused ({refused.status}): {refused.text}")
        return
    refusal = check_switchover(view, request, view.paused)
    if refusal is not None:
        world.recorder.event(world.now, "*", f"{f.kind} request refused ({refusal.status}): {refusal.text}")
        return
    value = failover_value(request)
    world.etcd.put(FAILOVER, FailoverRequest(leader=value.get("leader"), member=value.get("member"),
                                             scheduled_at=value.get("scheduled_at")), writer="operator")
    served_by = world.nodes[leader].agent if leader is not None else None
    if served_by is not None:
        served_by.wake()  # AgentControl.wakeup on the member that served the request


def _set_pause(world: World, paused: bool) -> bool:
    """patronictl pause|resume: /config's `pause`, written with compare-and-swap; False if not written."""
    if not world.dcs_up or not world.etcd.config_value:
        return False
    value = dict(world.etcd.config_value)
    value["pause"] = paused
    world.etcd.put("config", value, writer="operator")
    world.recorder.event(world.now, "*", "maintenance mode " + ("on" if paused else "off"))
    return True


def _resume(world: World) -> None:
    """The operator resumes once every member's agent runs again (an agent stopped in maintenance mode
    leaves its PostgreSQL running unmanaged: resuming before it is back would let the others take over
    from a server nobody fences), and retries while the DCS does not answer."""
    unmanaged = [n for n, node in world.nodes.items()
                 if node.pg.running and (node.agent is None or node.agent.finished)]
    if unmanaged or not _set_pause(world, False):
        world.kernel.at(world.now + RESUME_RETRY, lambda: _resume(world))


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
    if "maximum_lag_on_failover" in changes and "maximum_lag_on_failover" in value:
        invariants.on_lag_limit_replaced(world, int(value["maximum_lag_on_failover"]))
    store.put("config", with_changes(value, changes), writer="operator")
    invariants.on_config_written(world)


def crash_host(world: World, name: str) -> None:
    from pgwarden.sim import fencing

    node = world.nodes[name]
    fencing.forget(world, name)
    world.refresh()
    node.pg.crash(world.now)
    world.pg_changed = True
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
