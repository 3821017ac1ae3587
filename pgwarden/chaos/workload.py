"""Clients in the client namespace: each writer inserts uniquely numbered rows and logs every attempt.

One writer per host (its PostgreSQL directly) and one through the multi-host DSN with
`target_session_attrs=read-write`. All run as threads of this process on the host's clock
(`time.time()`), so every timestamp of the history is comparable. An attempt is *acknowledged* only
when the autocommit INSERT returned without error; one still running at the end is *in flight*
(indeterminate). Each attempt names its session (host and backend PID of the connection), which the
checker needs: a PostgreSQL session that stays up on a primary proves that host stayed primary.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgwarden.chaos.net import enter_netns

TABLE = "chaos_writes"
CREATE_TABLE = f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, writer text NOT NULL, " \
               "at timestamptz NOT NULL DEFAULT now())"
ERROR_BACKOFF = 0.5
"""After a failed attempt a writer waits this long: reconnecting to a replica every few ms costs CPU."""


@dataclass
class Attempt:
    """One INSERT: `ok` True (acknowledged), False (failed) or None (in flight); times are time.time()."""

    writer: str
    id: int
    start: float
    end: float | None = None
    ok: bool | None = None
    host: str = ""
    """The address of the server the session was connected to ("" when no connection was made)."""
    session: str = ""
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Ids:
    """Row numbers unique across every writer and every schedule of one cluster."""

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)


class Writer:
    """A thread in network namespace `netns` inserting rows through `dsn` every `interval` seconds."""

    def __init__(self, name: str, dsn: str, netns: str, ids: Ids, interval: float = 0.05) -> None:
        self.name, self.dsn, self.netns, self.ids, self.interval = name, dsn, netns, ids, interval
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._session = ""
        self._connections = 0
        self._thread = threading.Thread(target=self._run, name=f"chaos-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread; False if an attempt is still blocked (it stays in flight)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def history(self) -> list[Attempt]:
        with self._lock:
            return [Attempt(**asdict(a)) for a in self.attempts]

    def _run(self) -> None:
        enter_netns(self.netns)
        try:
            while not self._stop.is_set():
                ok = self._attempt()
                self._stop.wait(self.interval if ok else ERROR_BACKOFF)
        finally:
            self._close()

    def _attempt(self) -> bool:
        attempt = Attempt(self.name, self.ids.next(), time.time())
        with self._lock:
            self.attempts.append(attempt)
        try:
            conn = self._connection()
            attempt.host, attempt.session = conn.info.host, self._session
            conn.execute(f"INSERT INTO {TABLE} (id, writer) VALUES (%s, %s)", (attempt.id, self.name))
        except psycopg.Error as exc:
            self._close()
            with self._lock:
                attempt.end, attempt.ok, attempt.error = time.time(), False, " ".join(str(exc).split())[:160]
            return False
        with self._lock:
            attempt.end, attempt.ok = time.time(), True
        return True

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
            self._connections += 1
            self._session = f"{self.name}#{self._connections}@{self._conn.info.host}:{self._conn.info.backend_pid}"
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
