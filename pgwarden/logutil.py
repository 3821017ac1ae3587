"""Logging helpers shared by the REST server and the PostgreSQL probe."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most one log line per `interval` seconds; the next line that gets through says how many
    were left out meanwhile. For errors a peer can repeat at will (bad requests, accept failures)."""

    def __init__(self, logger: logging.Logger, interval: float, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._level = level
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> bool:
        """Log `message % args` unless a line went out less than `interval` seconds ago; True if logged."""
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return False
        if self._suppressed:
            message += f" ({self._suppressed} similar in the previous {self._interval:g} s not logged)"
        self._logger.log(self._level, message, *args)
        self._next, self._suppressed = now + self._interval, 0
        return True
