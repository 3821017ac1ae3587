"""A stand-in for each host's kernel watchdog: the reader of the agent's `testing` watchdog FIFO.

The agent (configured `watchdog: {mode: required, driver: testing, device: <fifo>}`) writes `C` on
open, `timeout=<s>\\n`, `1` per keepalive and `V` on a magic close. Armed (opened, a timeout known, no
`V` since) and not fed for `timeout` seconds, the stand-in *resets the host*: it SIGKILLs the host's
agent and its PostgreSQL's process group (SIGKILL works on stopped processes too), as a hardware
watchdog would reboot the machine. `ChaosCluster.revive()` later starts the agent again (the host is
back). Without it, nothing can stop a frozen agent's PostgreSQL from taking writes after its lease.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.05


class HostWatchdog:
    """One host's watchdog FIFO and its reader thread; `close()` stops it and removes the FIFO."""

    def __init__(self, path: Path, on_reset: Callable[[], None]) -> None:
        self.path = path
        self.on_reset = on_reset
        self.resets: list[float] = []
        """time.time() of each reset."""
        self._armed = False
        self._timeout: float | None = None
        self._fed_at = 0.0
        self._stop = threading.Event()
        os.mkfifo(path)
        os.chmod(path, 0o666)  # the agent runs as postgres; mkfifo's mode is masked by the umask
        self._read_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # A writer of our own, so that the FIFO never reads as end-of-file (and poll never spins) when the
        # agent's end closes.
        self._hold_fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name=f"watchdog {path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        while not self._stop.is_set():
            if poller.poll(POLL_SECONDS * 1000):
                with contextlib.suppress(BlockingIOError):
                    self._feed(os.read(self._read_fd, 4096))
            if self._armed and self._timeout is not None and time.monotonic() - self._fed_at > self._timeout:
                self._armed = False  # a reset host runs nothing until its agent opens the device again
                self.resets.append(time.time())
                with contextlib.suppress(Exception):
                    self.on_reset()

    def _feed(self, data: bytes) -> None:
        text = data.decode("ascii", errors="replace")
        for line in text.replace("timeout=", "\ntimeout=").splitlines():
            rest = line
            if rest.startswith("timeout="):
                number = rest[len("timeout="):].strip()
                self._timeout = float(number) if number.isdigit() else self._timeout
                self._fed_at = time.monotonic()
                continue
            for char in rest:
                if char == "C":
                    self._armed, self._fed_at = True, time.monotonic()
                elif char == "1":
                    self._fed_at = time.monotonic()
                elif char == "V":
                    self._armed = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self._read_fd, self._hold_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
