"""The write workload: one client inserting a numbered row at a fixed rate, as an application would.

It connects through the multi-host DSN (`target_session_attrs=read-write`), so libpq itself finds the
primary; after any error it drops the connection and the next attempt reconnects. Each attempt
(reconnect included) is logged as an `Attempt`; an attempt counts as acknowledged only when the
INSERT's autocommit returned without error. Runs in its own thread so that the display, the REST
watcher and the fault injection never delay a write.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg

from pgwarden.drill.measure import Attempt

TABLE = "pgwarden_drill"
CREATE_TABLE = f"CREATE TABLE IF NOT EXISTS {TABLE} (run text NOT NULL, id bigint NOT NULL, " \
               "at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, id))"
ERROR_TEXT_LIMIT = 200


class Writer:
    """Inserts `(run, id)` every `interval` seconds until `stop()`; `attempts()` is the log so far."""

    def __init__(self, dsn: str, run: str, interval: float = 0.01) -> None:
        self.dsn = dsn
        self.run = run
        self.interval = interval
        self._log: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._thread = threading.Thread(target=self._loop, name="drill-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._close()

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._log)

    def counts(self) -> tuple[int, int, Attempt | None]:
        """(acknowledged, failed, last attempt): cheap enough for a progress display."""
        with self._lock:
            ok = sum(1 for a in self._log if a.ok)
            return ok, len(self._log) - ok, self._log[-1] if self._log else None

    def _loop(self) -> None:
        next_id = 1
        due = time.monotonic()
        while not self._stop.is_set():
            attempt = self._attempt(next_id)
            with self._lock:
                self._log.append(attempt)
            next_id += 1
            # A fixed cadence, but no burst to catch up after a blocked write: a real client would not.
            due = max(due + self.interval, time.monotonic())
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _attempt(self, row_id: int) -> Attempt:
        started = time.monotonic()
        try:
            conn = self._connection()
            conn.execute(f"INSERT INTO {TABLE} (run, id) VALUES (%s, %s)", (self.run, row_id))
        except psycopg.Error as exc:
            self._close()
            return Attempt(row_id, started, time.monotonic(), ok=False, error=_short(exc))
        return Attempt(row_id, started, time.monotonic(), ok=True)

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:ERROR_TEXT_LIMIT]}"


def prepare_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CREATE_TABLE)


def drop_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def stored_ids(dsn: str, run: str) -> list[int]:
    """Every id of `run` the current primary has."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT id FROM {TABLE} WHERE run = %s", (run,)).fetchall()
    return [int(r[0]) for r in rows]


def current_timeline(dsn: str) -> int:
    """The primary's timeline, from the name of the WAL file it writes now (valid right after promotion)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int").fetchone()
    if row is None:
        raise psycopg.DataError("no timeline returned")
    return int(row[0])


def server_address(dsn: str) -> str:
    """host:port of the server the DSN reaches (the primary, with target_session_attrs=read-write)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return f"{conn.info.host}:{conn.info.port}"
