"""Helpers for the test servers' faults (tests/dcs/servers/*): signals that have taken effect."""

from __future__ import annotations

import time
from pathlib import Path

STOPPED_STATES = frozenset("tT")
"""/proc states of a stopped thread (job control stop, or traced stop)."""


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Return once every thread of `pid` is stopped (after SIGSTOP), or after `timeout` seconds.

    kill() only queues the stop; each thread stops when it next runs, which on a busy machine is a moment
    later. A test that freezes a server and at once expects silence must not race with that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _thread_states(pid)
        if not states or states <= STOPPED_STATES:
            return
        time.sleep(0.002)


def _thread_states(pid: int) -> set[str]:
    states = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            # "tid (comm) S ...": the state follows the last ')' (comm may contain anything)
            states.add(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
    return states
