"""Running real PostgreSQL 15 servers in tests, as the `postgres` OS user.

PostgreSQL refuses to run as root, and the test suite may run as root, so every adapter call goes
through a short-lived worker: `runuser -u postgres -- <venv python> -m tests.support.pg` reads one JSON
request on stdin ({settings, op, args}), runs the adapter operation as postgres, and prints the result
as JSON. When the tests already run as postgres, the worker is started directly.

`PgSandbox` owns a temporary directory under /tmp (owned by postgres) that holds every data directory,
socket and pgpass file of a test; `cleanup()` stops every postmaster it finds there by PID, then
removes the directory. The postgres user, the binaries and the free ports are pgwarden.localcluster's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.postgres import PG_USER, current_user, give_to_pg_user
from pgwarden.model import DataDirState, LocalPg, LogicalSlot, ReplicationRow, WalReceiver
from pgwarden.postgres import Credentials, PgController, PgResult, PgSettings, Upstream, probe

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT = 120.0

_PATH_FIELDS = ("data_dir", "bin_dir", "pgpass", "log_file", "config_dir", "custom_conf")
_CREDENTIAL_FIELDS = ("superuser", "replication", "rewind")
_TUPLE_FIELDS = ("pg_hba", "pg_ident", "basebackup_options", "initdb_options")


# --------------------------------------------------------------------------------------------------
# JSON codecs for the worker protocol


def settings_to_json(settings: PgSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, Credentials):
            value = dataclasses.asdict(value)  # the libpq options (sslmode, sslcert, ...) too
        elif isinstance(value, tuple):
            value = list(value)
        elif f.name == "parameters":
            value = dict(value)
        out[f.name] = value
    return out


def settings_from_json(data: dict[str, Any]) -> PgSettings:
    kwargs = dict(data)
    for name in _PATH_FIELDS:
        if kwargs.get(name) is not None:
            kwargs[name] = Path(kwargs[name])
    for name in _CREDENTIAL_FIELDS:
        if kwargs.get(name) is not None:
            kwargs[name] = Credentials(**kwargs[name])
    for name in _TUPLE_FIELDS:
        kwargs[name] = tuple(kwargs.get(name) or ())
    return PgSettings(**kwargs)


def local_pg_from_json(data: dict[str, Any]) -> LocalPg:
    kwargs = dict(data)
    kwargs["data_dir"] = DataDirState(kwargs["data_dir"])
    if kwargs.get("wal_receiver") is not None:
        kwargs["wal_receiver"] = WalReceiver(**kwargs["wal_receiver"])
    kwargs["replication"] = tuple(ReplicationRow(**row) for row in kwargs.get("replication") or ())
    kwargs["slots"] = tuple(kwargs.get("slots") or ())
    kwargs["slot_lsns"] = tuple((name, lsn) for name, lsn in kwargs.get("slot_lsns") or ())
    kwargs["logical_slots"] = tuple(LogicalSlot(**slot) for slot in kwargs.get("logical_slots") or ())
    return LocalPg(**kwargs)


# --------------------------------------------------------------------------------------------------
# The worker side (runs as postgres)


async def _execute(settings: PgSettings, statement: str) -> dict[str, Any]:
    """Test-only op: run one statement as the superuser and return its rows."""
    from pgwarden.postgres.connection import connect_local

    async with await connect_local(settings) as conn:
        cur = await conn.execute(statement)
        rows = await cur.fetchall() if cur.description else []
    return {"rows": [[_jsonable(v) for v in row] for row in rows]}


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


async def _dispatch(request: dict[str, Any]) -> Any:
    settings = settings_from_json(request["settings"])
    op, args = request["op"], dict(request.get("args") or {})
    if op == "probe":
        return dataclasses.asdict(await probe(settings))
    if op == "execute":
        return await _execute(settings, args["statement"])
    if args.get("follow") is not None:
        args["follow"] = Upstream(*args["follow"])
    result = await getattr(PgController(settings), op)(**args)
    assert isinstance(result, PgResult), f"{op} returned {result!r}"
    return {"ok": result.ok, "message": result.message}


def _worker_main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        reply: dict[str, Any] = {"result": asyncio.run(_dispatch(request))}
    except Exception as exc:
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(reply))


# --------------------------------------------------------------------------------------------------
# The test side


class WorkerError(RuntimeError):
    pass


class PgSandbox:
    """A private directory for a test's PostgreSQL servers, and a way to drive them as postgres."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pgwarden-pgtest-", dir="/tmp"))
        give_to_pg_user(self.root)
        self._pids: set[int] = set()

    def settings(self, name: str, **overrides: Any) -> PgSettings:
        """Settings for a member `name` with its data dir in the sandbox, a free port and fast test options."""
        values: dict[str, Any] = {
            "data_dir": self.root / name,
            "name": name,
            "scope": "pgtest",
            "superuser": Credentials("postgres", "super'secret:pw"),
            "replication": Credentials("replicator", "repl-pw"),
            "rewind": Credentials("rewinder", "rewind-pw"),
            "port": free_port(),
            "pgpass": self.root / f"pgpass.{name}",
            "parameters": {
                "unix_socket_directories": str(self.root),
                "shared_buffers": "16MB",
                "fsync": False,
                "wal_receiver_status_interval": 1,
                "wal_retrieve_retry_interval": "500ms",
            },
            "initdb_options": ("--no-sync",),
            "basebackup_options": ("--no-sync",),
            "pg_ctl_timeout": 30.0,
        }
        values.update(overrides)
        return PgSettings(**values)

    def call(self, settings: PgSettings, op: str, timeout: float = WORKER_TIMEOUT, **args: Any) -> Any:
        """Run one PgController method (or "probe" / "execute") as postgres; returns the JSON result."""
        request = {"settings": settings_to_json(settings), "op": op, "args": args}
        argv = [sys.executable, "-m", "tests.support.pg"]
        if current_user() != PG_USER:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(
            argv,
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )
        try:
            reply = json.loads(done.stdout)
        except ValueError:
            raise WorkerError(f"{op}: worker exited {done.returncode}: {done.stderr[-2000:]}") from None
        if "error" in reply:
            raise WorkerError(f"{op}: {reply['error']}")
        return reply["result"]

    def run(self, settings: PgSettings, op: str, **args: Any) -> PgResult:
        """A PgController method as postgres, returning its PgResult."""
        result = self.call(settings, op, **args)
        return PgResult(result["ok"], result["message"])

    def probe(self, settings: PgSettings) -> LocalPg:
        pg = local_pg_from_json(self.call(settings, "probe"))
        if pg.postmaster_pid:
            self._pids.add(pg.postmaster_pid)
        return pg

    def wait_for(
        self, settings: PgSettings, predicate: Callable[[LocalPg], bool], timeout: float = 30.0, what: str = "condition"
    ) -> LocalPg:
        """Probe until `predicate` holds; fails with the last probe after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            pg = self.probe(settings)
            if predicate(pg):
                return pg
            if time.monotonic() > deadline:
                raise AssertionError(f"{settings.name}: {what} not reached in {timeout}s; last probe: {pg}")
            time.sleep(0.3)

    def sql(self, settings: PgSettings, statement: str) -> list[list[Any]]:
        rows: list[list[Any]] = self.call(settings, "execute", statement=statement)["rows"]
        return rows

    def cleanup(self) -> None:
        """Stop every postmaster of the sandbox by PID (immediate shutdown, then SIGKILL), remove the dir."""
        pids = set(self._pids)
        for pidfile in self.root.glob("*/postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.add(int(pidfile.read_text().splitlines()[0]))
        for pid in pids:
            _stop_pid(pid)
        shutil.rmtree(self.root, ignore_errors=True)


def _stop_pid(pid: int) -> None:
    if not _is_postgres(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _is_postgres(pid):
            time.sleep(0.05)
        if _is_postgres(pid):
            os.kill(pid, signal.SIGKILL)


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith(("postgres", "postmaster"))
    except OSError:
        return False


if __name__ == "__main__":
    _worker_main()
