"""A change-data-capture consumer for tests and benchmarks: pg_recvlogical on a logical slot, through failover.

It runs `pg_recvlogical --start --no-loop` with a multi-host DSN (`target_session_attrs=read-write`, so
libpq finds the primary) in a restart loop, as a CDC client would: each run resumes from the slot's own
position (no `--startpos`: the server starts at the slot's `confirmed_flush_lsn`) and writes into a file
of its own. pg_recvlogical confirms a position only after it fsynced the output up to it, so the files
together hold at least every change the slot was ever confirmed past: a change missing from them was
lost, one seen twice is a duplicate (expected after a reconnect, more of them after a failover).

The output plugin is `test_decoding`; `rows()` reads its INSERT lines of one table.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import terminate

PG_RECVLOGICAL = str(Path(PG_BIN, "pg_recvlogical"))
RETRY_PAUSE = 0.3
"""Seconds between two runs: a reconnect loop that does not hammer a primary being promoted."""


class LogicalConsumer:
    """pg_recvlogical on `slot` through `dsn`, restarted whenever it exits, until `stop()`.

    `runs` counts the connections attempted; `files` lists the output file of each (the current one
    last). `fsync_every` is pg_recvlogical's fsync and status interval: how often it confirms."""

    def __init__(self, dsn: str, slot: str, workdir: Path, *, fsync_every: int = 1) -> None:
        self.dsn = dsn
        self.slot = slot
        self.workdir = workdir
        self.fsync_every = fsync_every
        self.files: list[Path] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._loop, name="cdc-consumer", daemon=True)

    @property
    def runs(self) -> int:
        with self._lock:
            return len(self.files)

    def start(self) -> LogicalConsumer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __enter__(self) -> LogicalConsumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the loop; the running pg_recvlogical gets SIGINT, so it flushes its file and exits."""
        self._stop.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
            terminate(process, 5)  # by its PID, if SIGINT was not enough
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                path = self.workdir / f"changes.{len(self.files) + 1:04d}.txt"
                self.files.append(path)
                stderr = path.with_suffix(".err")
                with open(stderr, "wb") as err:
                    self._process = subprocess.Popen(self.command(path), stdout=subprocess.DEVNULL, stderr=err)
                process = self._process
            code = process.wait()
            if code != 0 and not self._stop.is_set():
                with contextlib.suppress(OSError):
                    self.errors.append(stderr.read_text(errors="replace").strip()[-300:])
            self._stop.wait(RETRY_PAUSE)

    def command(self, path: Path) -> list[str]:
        """The pg_recvlogical command line of one run (the DSN carries the password: never log it)."""
        every = str(self.fsync_every)
        return [PG_RECVLOGICAL, "--start", "--no-loop", "-S", self.slot, "-d", self.dsn, "-f", str(path),
                "-F", every, "-s", every]

    def text(self) -> str:
        """Everything received so far, every run's file in order."""
        with self._lock:
            files = list(self.files)
        out = []
        for path in files:
            with contextlib.suppress(OSError):
                out.append(path.read_text(errors="replace"))
        return "".join(out)

    def rows(self, table: str, key: str = "id", where: tuple[str, str] | None = None) -> Counter[int]:
        """How often each integer `key` of an INSERT into `table` was received (test_decoding's lines);
        `where` (column, text value) keeps only the rows with that text column."""
        return parse_inserts(self.text(), table, key, where)

    def wait_for(self, table: str, wanted: set[int], timeout: float, where: tuple[str, str] | None = None,
                 key: str = "id") -> set[int]:
        """Wait until every id of `wanted` was received; returns those still missing at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            missing = wanted - set(self.rows(table, key, where))
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.2)


def parse_inserts(text: str, table: str, key: str = "id", where: tuple[str, str] | None = None) -> Counter[int]:
    """{key value: times seen} of the INSERT lines of `table` in test_decoding's output, such as
    `table public.t: INSERT: run[text]:'a' id[bigint]:7 at[timestamp with time zone]:'...'`."""
    line_start = f"table {table}: INSERT: " if "." in table else None
    key_re = re.compile(rf"\b{re.escape(key)}\[[a-z ]+\]:(-?\d+)")
    where_re = None if where is None else re.compile(rf"\b{re.escape(where[0])}\[[a-z ]+\]:'{re.escape(where[1])}'")
    seen: Counter[int] = Counter()
    for line in text.splitlines():
        if not _is_insert_into(line, table, line_start):
            continue
        if where_re is not None and not where_re.search(line):
            continue
        match = key_re.search(line)
        if match:
            seen[int(match.group(1))] += 1
    return seen


def _is_insert_into(line: str, table: str, line_start: str | None) -> bool:
    if line_start is not None:
        return line.startswith(line_start)
    # An unqualified name: any schema.
    return line.startswith("table ") and line.split(":", 1)[0].endswith(f".{table}") and ": INSERT: " in line
