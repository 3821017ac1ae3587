"""Driving a generator of effects: the one loop every interpreter of steps and cycles runs.

`interpret` feeds each effect's result back into the generator until it returns, for interpreters
whose effects take (simulated) time, i.e. are generators themselves; the agent's coroutines use
`resume` the same way (`agent.execute.interpret_async`). An exception of a `failures` type raised
while doing an effect is translated (`translate`) and thrown into the generator at that effect: how
a DCS error reaches a step as `DcsFailed`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

E = TypeVar("E")
S = TypeVar("S")
R = TypeVar("R")


def resume(steps: Generator[E, Any, R], answer: Any, failure: BaseException | None) -> tuple[bool, Any]:
    """Send `answer` into `steps` (or throw `failure`): (True, the next effect) or (False, the result)."""
    try:
        return True, (steps.send(answer) if failure is None else steps.throw(failure))
    except StopIteration as done:
        return False, done.value


def _no_failures(exc: Exception) -> BaseException:
    return exc


def interpret(steps: Generator[E, Any, R], perform: Callable[[E], Generator[S, None, Any]],
              failures: tuple[type[Exception], ...] = (),
              translate: Callable[[Exception], BaseException] = _no_failures) -> Generator[S, None, R]:
    """Run `steps`, each effect done by `perform` (whose own yields pass through)."""
    answer: Any = None
    failure: BaseException | None = None
    while True:
        pending, value = resume(steps, answer, failure)
        if not pending:
            result: R = value
            return result
        answer, failure = None, None
        try:
            answer = yield from perform(value)
        except failures as exc:
            failure = translate(exc)
