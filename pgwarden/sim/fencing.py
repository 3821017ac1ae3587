"""Fencing in the simulated world: each host's watchdog device, and failsafe pings between agents.

The watchdog is the kernel's, not the agent's: armed and fed by the agent's effects (`sim.effects`) and
its lease keepalives (`sim.agent`), it counts global (real) seconds, whatever the agent's clock says, and
when it fires it resets the host: PostgreSQL dies with it, the agent too, and the host boots again after
`REBOOT_SECONDS`. One kernel timer per host is pending at a time; when it fires, the virtual keepalives
are replayed first (they may have fed the device meanwhile) and the timer moves to the new expiry.

A failsafe ping reaches a member's REST API like a status request (`World.peer_answers`); the member
decides at the instant the request arrives, with its own loop's rule (`LoopBook.accept_failsafe_ping`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pgwarden.engine.effects import PingAnswer
from pgwarden.sim.kernel import Step

if TYPE_CHECKING:
    from pgwarden.sim.agent import SimAgent
    from pgwarden.sim.world import World

REBOOT_SECONDS = 30.0
"""How long a host reset by its watchdog takes to come back (the agent then starts again)."""


def arm(agent: SimAgent, timeout: int) -> None:
    """Open the device if closed, set `timeout`, keep it alive."""
    node = agent.world.nodes[agent.name]
    if node.watchdog_timeout is None:
        agent.world.recorder.event(agent.world.now, agent.name, f"watchdog armed ({timeout}s)")
    node.watchdog_timeout = timeout
    feed(agent.world, agent.name, agent.world.now)


def feed(world: World, name: str, at: float) -> None:
    """A keepalive at global time `at` (a replayed keepalive's answer may lie in the past)."""
    node = world.nodes[name]
    if node.watchdog_timeout is None:
        return
    expiry = at + node.watchdog_timeout
    if node.watchdog_expiry is not None and expiry <= node.watchdog_expiry:
        return
    node.watchdog_expiry = expiry
    if node.watchdog_timer is None:
        _schedule(world, name, expiry)


def _schedule(world: World, name: str, at: float) -> None:
    world.nodes[name].watchdog_timer = at
    world.kernel.at(at, lambda: _expired(world, name, at))


def disarm(world: World, name: str) -> None:
    """The magic close: the device stops counting."""
    node = world.nodes[name]
    if node.watchdog_timeout is not None:
        world.recorder.event(world.now, name, "watchdog disarmed")
    node.watchdog_timeout = node.watchdog_expiry = None


def _expired(world: World, name: str, at: float) -> None:
    node = world.nodes[name]
    if node.watchdog_timer != at:
        return  # a timer of an earlier life of this host
    node.watchdog_timer = None
    if node.watchdog_expiry is None:
        return  # disarmed meanwhile
    world.catch_up(name)  # virtual keepalives may have fed it
    expiry = node.watchdog_expiry
    if expiry is None:
        return
    if expiry > world.now:
        _schedule(world, name, expiry)
        return
    _reset_host(world, name)


def _reset_host(world: World, name: str) -> None:
    from pgwarden.sim.faults import crash_host, restart_host

    node = world.nodes[name]
    agent = node.agent
    decide = agent.decide if agent is not None else None
    world.recorder.event(world.now, name, "watchdog reset the host")
    node.watchdog_resets += 1
    crash_host(world, name)
    if decide is not None:
        world.kernel.at(world.now + REBOOT_SECONDS, lambda: restart_host(world, name, decide))


def forget(world: World, name: str) -> None:
    """The host went down: the device's state goes with it."""
    node = world.nodes[name]
    node.watchdog_timeout = node.watchdog_expiry = node.watchdog_timer = None


def ping(agent: SimAgent, targets: tuple[tuple[str, str], ...],
         timeout: float) -> Generator[Step, None, tuple[PingAnswer, ...]]:
    """`POST /failsafe` to every target at once: each decides when the request arrives; a member whose
    REST API does not answer is refused once `timeout` has passed (the slowest answer sets the pace)."""
    world, me = agent.world, agent.name
    answering = [name for name, _ in targets if name in world.nodes and world.peer_answers(me, name)]
    yield world.peer_delay
    answers = []
    for name, _ in targets:
        if name not in answering:
            answers.append(PingAnswer(name, False, "no answer"))
            continue
        target = world.nodes[name].agent
        accepted = target is not None and not target.finished and _accepts(target, me)
        answers.append(PingAnswer(name, accepted, "" if accepted else "500 Running as a leader"))
    missing = len(answering) < len(targets)
    yield (timeout - world.peer_delay) if missing else world.peer_delay
    return tuple(answers)


def _accepts(target: SimAgent, leader: str) -> bool:
    """The target's REST handler: its loop's rule, on its last probe and its task in flight."""
    target.catch_up()
    pg = target.pg
    task = target.background[1] if target.background is not None else None
    return target.book.accept_failsafe_ping(leader, target.name, target.local_now(),
                                            enabled=target.settings.failsafe_mode,
                                            primary=pg is not None and pg.is_primary, task=task)
