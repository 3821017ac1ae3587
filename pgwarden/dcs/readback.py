"""Bookkeeping every backend keeps about what it read and wrote (no I/O of its own).

- `ScopeNotes`: the codec's notes about unreadable values in a scope, logged once per change, not once
  per read (a hostile value must not flood the log every cycle).
- `still_written`: whether a value this agent wrote is still what the store holds; when someone else
  rewrote or deleted it, the next write must not be skipped as "unchanged".
- `RetryPause`: the pause between a watch's attempts while the store fails, and the one warning it logs.
- `LeaderMarks`: the leader key's changes as the watch reported them against what the caller has seen, so
  `wait_for_change` wakes once per change that the last read did not already show (etcd v2 and v3 count
  in store revisions; ZooKeeper keeps its own marks).
"""

from __future__ import annotations

import asyncio
import logging

from pgwarden.aio import bounded

log = logging.getLogger("pgwarden.dcs")


class ScopeNotes:
    """Logs the codec's notes about one scope when they change."""

    def __init__(self, scope: str) -> None:
        self._scope = scope
        self._last: tuple[str, ...] = ()

    def report(self, notes: tuple[str, ...]) -> None:
        if notes != self._last:
            for note in notes:
                log.warning("DCS scope %s: %s", self._scope, note)
        self._last = notes


def still_written(written: str | None, stored: str | None) -> str | None:
    """`written` (what this agent wrote last) while the store still holds exactly that, else None: someone
    rewrote (say, with garbage) or deleted it, and the next write must put ours back."""
    return written if written is not None and stored == written else None


class LeaderMarks:
    """Store revisions: the last leader change the watch reported, and the last state the caller has seen
    (a read, or its own change of the leader key)."""

    def __init__(self) -> None:
        self.seen = 0
        self.reported = 0
        self._forced = False
        self._changed = asyncio.Event()

    def saw(self, revision: int) -> None:
        """The caller has seen the store at `revision` (a read, or its own write)."""
        self.seen = max(self.seen, revision)

    def report(self, revision: int) -> None:
        """The watch saw the leader key change at `revision`."""
        self.reported = max(self.reported, revision)
        self._changed.set()

    def force(self) -> None:
        """Wake the caller whatever the revisions say (the watch lost track: a re-read is due)."""
        self._forced = True
        self._changed.set()

    async def wait(self, timeout: float) -> bool:
        """True as soon as a change the caller has not seen is reported (or a wake forced); False after
        `timeout` seconds without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._forced or self.reported > self.seen:
                self._forced = False
                self.seen = max(self.seen, self.reported)
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await bounded(self._changed.wait(), remaining)
            except TimeoutError:
                return False


class RetryPause:
    """The pause before a background watch tries again: doubling from `first` to `longest` while the store
    keeps failing, and one WARNING per run of failures (the rest at DEBUG: etcd being down is normal)."""

    def __init__(self, first: float = 0.5, longest: float = 5.0) -> None:
        self._first = first
        self._longest = longest
        self.seconds = first
        self._failing = False

    def succeeded(self) -> None:
        self.seconds, self._failing = self._first, False

    def failed(self, what: str, exc: BaseException) -> None:
        log.log(logging.DEBUG if self._failing else logging.WARNING, "%s failed (%s); retrying", what, exc)
        self._failing = True

    async def sleep(self) -> None:
        await asyncio.sleep(self.seconds)
        self.seconds = min(self.seconds * 2, self._longest)
