"""Knowing at once that the postmaster died, without waking up to look.

On Linux (5.3 and newer) a pidfd becomes readable the moment its process exits, so the agent's
monitor sleeps until either that happens or its next probe is due: no polling, no CPU while idle,
and no delay between the death and the restart in place. Elsewhere it falls back to checking the
process every `poll_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from pgwarden.aio import bounded
from pgwarden.postgres.datadir import process_alive


class ExitWatch:
    """Waits for one process at a time to exit; keeps its pidfd between waits for the same PID."""

    def __init__(self, poll_interval: float = 0.1) -> None:
        self._poll_interval = poll_interval
        self._pid: int | None = None
        self._fd: int | None = None
        self._pidfd_works = hasattr(os, "pidfd_open")

    async def wait(self, pid: int | None, timeout: float) -> bool:
        """True as soon as `pid` has exited (or is gone already); False once `timeout` seconds passed.

        With no PID (nothing running) it just sleeps for `timeout`.
        """
        if pid is None or pid <= 0:
            self.close()
            await asyncio.sleep(max(0.0, timeout))
            return False
        if pid != self._pid:
            self.close()
            try:
                self._open(pid)
            except ProcessLookupError:
                return True
        if self._fd is None:
            return await self._poll(pid, timeout)
        exited = await self._readable(self._fd, timeout)
        if exited:
            self.close()
        return exited

    def close(self) -> None:
        fd, self._fd, self._pid = self._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _open(self, pid: int) -> None:
        self._pid = pid
        if not self._pidfd_works:
            return
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pid = None
            raise
        except OSError:  # an old kernel, or a seccomp policy without pidfd_open: poll instead
            self._pidfd_works = False

    @staticmethod
    async def _readable(fd: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await bounded(exited, max(0.0, timeout))
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)

    async def _poll(self, pid: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            if not process_alive(pid):
                self.close()
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(self._poll_interval, left))

