"""A stand-in for the kernel's watchdog, for tests: the reader of the `testing` driver's FIFO.

Usage (the tests run as root, the agents as `postgres`)::

    with KernelStandIn(node_dir / "watchdog", sigkill(lambda: [agent_pid, postmaster_pid])) as kernel:
        # the agent's configuration: watchdog: {mode: required, driver: testing, device: <that path>}
        assert kernel.wait_for("timeout", 30)
        ...
        assert kernel.resets == 0

It creates the FIFO (mode 0666, so another user can open it; its directory must be searchable by that
user), holds a read end the whole time (so the agent's nonblocking open finds a reader), and parses the
driver's protocol in a thread: `C` open, `timeout=<s>\\n`, `1` keepalive, `V` magic close. Armed is
opened, with a timeout known, and no `V` since; armed and neither fed nor (re)armed for `timeout`
seconds, it "resets the host": calls `on_reset` once (in its thread) and records a "reset". The reset
host runs nothing, so the watchdog is disarmed until the next open. A writer closing without `V` (an
agent killed) leaves it armed, as the kernel leaves a magic-close watchdog. Every event is
`(time.monotonic(), kind, value)`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

Event = tuple[float, str, int | None]

POLL_MS = 20  # how late a reset may come, and how long stopping the reader may take
JOIN_TIMEOUT = 5.0
MAX_LINE = 64  # a `timeout=` line longer than this is garbage, not an unfinished line


def sigkill(pids: Callable[[], Iterable[int]]) -> Callable[[], None]:
    """A reset callback that SIGKILLs the processes `pids()` names at the time of the reset (the
    postmaster may have been restarted since the test began); processes already gone are skipped."""

    def reset() -> None:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    return reset


class KernelStandIn:
    """The kernel side of one node's testing watchdog FIFO (a context manager)."""

    def __init__(self, path: str | os.PathLike[str], on_reset: Callable[[], None]) -> None:
        self.path = Path(path)
        self._on_reset = on_reset
        self.callback_errors: list[BaseException] = []  # what on_reset raised; the reader goes on
        self._changed = threading.Condition()
        self._events: list[Event] = []
        self._opened = False
        self._timeout: int | None = None
        self._fed_at = 0.0
        self._buffer = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_fd: int | None = None
        self._hold_fd: int | None = None

    def __enter__(self) -> KernelStandIn:
        os.mkfifo(self.path)
        try:
            os.chmod(self.path, 0o666)  # mkfifo's mode is masked by the umask
            self._read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            # A writer of our own: without one, a FIFO whose last writer closed reads as end-of-file and
            # poll() reports it readable for ever (POLLHUP), which would spin the reader.
            self._hold_fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name=f"watchdog-kernel {self.path}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
            self._thread = None
        self._release()

    def _release(self) -> None:
        for fd in (self._read_fd, self._hold_fd):
            if fd is not None:
                os.close(fd)
        self._read_fd = self._hold_fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # --- what tests read

    def events(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def wait_for(self, kind: str, timeout: float, *, since: float | None = None, count: int = 1) -> bool:
        """True as soon as `count` events of `kind` are recorded (at or after `since`, a monotonic time,
        when given); False after `timeout` seconds without them."""

        def seen() -> bool:
            return sum(1 for t, k, _ in self._events if k == kind and (since is None or t >= since)) >= count

        with self._changed:
            return self._changed.wait_for(seen, timeout)

    def count(self, kind: str) -> int:
        with self._changed:
            return sum(1 for _, k, _ in self._events if k == kind)

    @property
    def resets(self) -> int:
        return self.count("reset")

    @property
    def armed(self) -> bool:
        with self._changed:
            return self._is_armed()

    @property
    def last_timeout(self) -> int | None:
        with self._changed:
            return self._timeout

    # --- the reader thread

    def _run(self) -> None:
        assert self._read_fd is not None
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        while not self._stop.is_set():
            if poller.poll(POLL_MS):
                self._read_available(self._read_fd)
            self._check_expiry(time.monotonic())

    def _read_available(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return
            if not chunk:  # cannot happen while we hold a writer; never spin on it
                return
            self._buffer += chunk
            self._parse(time.monotonic())

    def _parse(self, now: float) -> None:
        """Consume complete messages from the buffer; an unfinished `timeout=` line waits for its end."""
        while self._buffer:
            if self._buffer.startswith(b"t"):
                end = self._buffer.find(b"\n")
                if end < 0 and len(self._buffer) <= MAX_LINE:
                    return
                end = end if end >= 0 else len(self._buffer) - 1
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                self._on_timeout_line(line, now)
                continue
            byte, self._buffer = self._buffer[:1], self._buffer[1:]
            self._on_byte(byte, now)

    def _on_timeout_line(self, line: bytes, now: float) -> None:
        key, _, value = line.partition(b"=")
        if key != b"timeout" or not value.strip().isdigit():
            self._record(now, "unknown", None)
            return
        with self._changed:
            self._timeout = int(value)
            self._fed_at = now  # setting a timeout restarts the countdown, as the kernel's ioctl does
        self._record(now, "timeout", int(value))

    def _on_byte(self, byte: bytes, now: float) -> None:
        if byte in (b"\n", b"\r", b" "):
            return
        kind = {b"C": "open", b"1": "keepalive", b"V": "close"}.get(byte, "unknown")
        with self._changed:
            if kind == "open":
                self._opened = True
            if kind in ("open", "keepalive"):
                self._fed_at = now
            if kind == "close":
                self._opened = False
        self._record(now, kind, None)

    def _check_expiry(self, now: float) -> None:
        with self._changed:
            if not self._is_armed() or self._timeout is None or now < self._fed_at + self._timeout:
                return
            self._opened = False  # the host was reset: nothing holds the watchdog any more
            timeout = self._timeout
        try:
            self._on_reset()
        except Exception as exc:  # the test's callback failing must not stop the stand-in
            self.callback_errors.append(exc)
        self._record(time.monotonic(), "reset", timeout)

    def _is_armed(self) -> bool:
        return self._opened and self._timeout is not None

    def _record(self, when: float, kind: str, value: int | None) -> None:
        with self._changed:
            self._events.append((when, kind, value))
            self._changed.notify_all()
