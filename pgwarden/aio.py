"""Running a coroutine to completion, for the agent's and the CLI's entry points.

Two differences from plain `asyncio.run`:
* the process keeps ONE event loop and reuses it for every `run` (the CLI and the tests call `run` many
  times in one process); objects bound to a loop, such as an aiohttp session cached by a caller, stay
  usable from one `run` to the next;
* `asyncio.run` waits without a bound for the leftover tasks it cancels; here they get a short grace
  period, so a stuck leftover can never hang an exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_GRACE = 3.0
_loop: asyncio.AbstractEventLoop | None = None


def _process_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


def run(main: Coroutine[Any, Any, T], grace: float = EXIT_GRACE) -> T:
    loop = _process_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait(leftovers, timeout=grace))
        asyncio.set_event_loop(None)



async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """`await awaitable`, raising TimeoutError after `seconds`.

    Use this instead of `asyncio.wait_for`: on Python 3.11 (Debian 12's), `wait_for` swallows a
    cancellation of the calling task that arrives just as the awaited operation completes, so the
    caller runs on as if never cancelled, and whoever cancelled it waits for ever (found as a hang
    of the etcd watch task on close). `asyncio.timeout` delivers both the timeout and the cancellation.
    """
    async with asyncio.timeout(seconds):
        return await awaitable


async def cancel_bounded(task: asyncio.Task[Any] | None, seconds: float) -> None:
    """Cancel a background task and wait for it at most `seconds` (closing must never hang); an exception it
    ended with is retrieved, so asyncio does not log "exception never retrieved"."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task}, timeout=seconds)
    if task.done() and not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()
