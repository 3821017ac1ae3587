"""Running a coroutine to completion without hanging on the way out.

`asyncio.run` cancels the tasks left over when the main coroutine returns and then waits for them
without a bound. gRPC (under aetcd) can leave internal tasks behind that do not finish promptly after
a cancellation, which made processes hang at exit. `run` gives leftovers a short grace period and then
closes the loop anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_GRACE = 3.0


def run(main: Coroutine[Any, Any, T], grace: float = EXIT_GRACE) -> T:
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.wait(leftovers, timeout=grace))
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), grace))
        finally:
            asyncio.set_event_loop(None)
            loop.close()
