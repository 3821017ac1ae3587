"""Running a coroutine to completion, for the agent's and the CLI's entry points.

Two problems with plain `asyncio.run` in this program:
* gRPC's asyncio layer (under aetcd) binds its completion-queue poller to the event loop that created the
  first channel; once that loop is closed while a channel is still referenced, calls made on any later loop
  never complete. So the process keeps ONE event loop and reuses it for every `run` (the CLI and the tests
  call `run` many times in one process).
* `asyncio.run` waits without a bound for leftover tasks it cancelled; gRPC can leave internal tasks that
  do not finish promptly. Here leftovers get a short grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
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
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done() and not _grpc_internal(t)]
        for task in leftovers:
            task.cancel()
        if leftovers:
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait(leftovers, timeout=grace))
        asyncio.set_event_loop(None)


def _grpc_internal(task: asyncio.Task[Any]) -> bool:
    """gRPC's own bookkeeping tasks belong to its channels, which outlive one `run`."""
    return "grpc" in repr(task.get_coro()) or "_AioCall" in repr(task.get_coro())
