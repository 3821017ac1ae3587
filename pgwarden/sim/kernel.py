"""The discrete-event kernel: one virtual clock, one heap of events, cooperative processes.

Events sit in a heap keyed by `(time, seq)`, so ties always break the same way. Nothing here reads a
real clock or sleeps: time jumps from one event to the next, which is what makes a run both fast and
a pure function of its seed.

A process is a generator that yields how long it wants to wait (in global seconds) or a `Nap`
(sleep that a `wake()` may cut short, like the agent's `asyncio.Event`). Processes belong to a node;
when that node's agent is paused (stop-the-world), its due steps are held and run on resume, and when
the host crashes they are killed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Nap:
    """Yielded by a process: sleep `seconds`, or less if the process is woken."""

    seconds: float


Step = float | Nap
ProcGen = Generator[Step, None, Any]


class ChangeFlag(Protocol):
    """Set by whatever an event changed that the per-event checks look at (`World.pg_changed`)."""

    pg_changed: bool


@dataclass(eq=False, slots=True)
class Proc:
    """A running generator owned by a node (or by the world when `owner` is None)."""

    gen: ProcGen
    owner: str | None
    name: str
    alive: bool = True
    token: int = 0
    napping: bool = False
    wake_flag: bool = False
    on_exit: Callable[[Any], None] | None = None


@dataclass(slots=True)
class Clock:
    """A node's monotonic clock: `offset + rate * global_time`, with |rate - 1| bounded by the drift."""

    offset: float
    rate: float

    def local(self, t: float) -> float:
        return self.offset + self.rate * t

    def to_global(self, local: float) -> float:
        return (local - self.offset) / self.rate


@dataclass(slots=True)
class Kernel:
    """The event loop: callbacks and process steps ordered by (time, seq).

    A heap entry is `(time, seq, callback, proc, token)`: a plain callback has `proc` None, a process
    step names the process and the token it was scheduled with (a stale token is skipped), so no
    closure is built per step.
    """

    now: float = 0.0
    seq: int = 0
    heap: list[tuple[float, int, Callable[[], object] | None, Proc | None, int]] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)
    held: dict[str, list[Proc]] = field(default_factory=dict)
    events: int = 0
    before_step: Callable[[str], None] | None = None
    """Called with the owner before each step of an owned process (the keepalive catch-up)."""

    def at(self, t: float, callback: Callable[[], object]) -> None:
        """Run `callback` at global time `t` (never in the past)."""
        self.seq += 1
        heapq.heappush(self.heap, (t if t > self.now else self.now, self.seq, callback, None, 0))

    def spawn(self, gen: ProcGen, owner: str | None, name: str,
              on_exit: Callable[[Any], None] | None = None) -> Proc:
        proc = Proc(gen, owner, name, on_exit=on_exit)
        self._schedule(proc, 0.0)
        return proc

    def kill(self, proc: Proc) -> None:
        proc.alive = False
        proc.gen.close()

    def wake(self, proc: Proc) -> None:
        """Set the process's wake flag; a running nap ends now."""
        if not proc.alive:
            return
        if proc.napping:
            # The nap ends now; like the agent's `wake.clear()` after its nap, the flag is consumed.
            proc.napping = False
            proc.wake_flag = False
            self._schedule(proc, 0.0)
        else:
            proc.wake_flag = True  # the next nap returns at once

    def pause(self, owner: str) -> None:
        self.paused.add(owner)

    def resume(self, owner: str) -> None:
        self.paused.discard(owner)
        for proc in self.held.pop(owner, []):
            if proc.alive:
                self._schedule(proc, 0.0)

    def run_until(self, end: float, after_event: Callable[[], None], changed: ChangeFlag | None = None) -> None:
        """Process events up to global time `end`, calling `after_event` after each one that did
        something (a stale process step, superseded by a wake-up, is not an event); with `changed`,
        only after those that set its flag (most events change nothing the checks look at)."""
        heap = self.heap
        pop = heapq.heappop
        step = self._step
        while heap and heap[0][0] <= end:
            t, _, callback, proc, token = pop(heap)
            if proc is not None:
                if not proc.alive or token != proc.token:
                    continue
                self.now = t
                self.events += 1
                step(proc)
            else:
                assert callback is not None
                self.now = t
                self.events += 1
                callback()
            if changed is None or changed.pg_changed:
                after_event()
        self.now = max(self.now, end)

    # -- internals ---------------------------------------------------------------------------------

    def _schedule(self, proc: Proc, delay: float) -> None:
        proc.token += 1
        self.seq += 1
        heapq.heappush(self.heap, (self.now + (delay if delay > 0.0 else 0.0), self.seq, None, proc, proc.token))

    def _step(self, proc: Proc) -> None:
        owner = proc.owner
        if owner is not None:
            if owner in self.paused:
                self.held.setdefault(owner, []).append(proc)
                return
            if self.before_step is not None:
                self.before_step(owner)
        proc.napping = False
        try:
            step = next(proc.gen)
        except StopIteration as stop:
            proc.alive = False
            if proc.on_exit is not None:
                proc.on_exit(stop.value)
            return
        if type(step) is Nap:
            if proc.wake_flag and step.seconds > 0:
                delay = 0.0
            else:
                delay = step.seconds
                proc.napping = True
            proc.wake_flag = False
        else:
            delay = step  # type: ignore[assignment]
        # _schedule, inlined: this is the hottest path of a run.
        proc.token += 1
        self.seq += 1
        heapq.heappush(self.heap, (self.now + (delay if delay > 0.0 else 0.0), self.seq, None, proc, proc.token))
