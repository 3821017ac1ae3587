"""Pointing PgBouncer at the primary: the `[databases]` include file and the admin console.

PgBouncer's own config keeps `%include <file>` inside its `[databases]` section; the pusher owns that
file. Its steps:
- hold (planned switchover): `PAUSE` waits until every running transaction has finished and all
  server connections are released; new queries wait inside PgBouncer, clients see a delay, no error;
- fence (the primary is gone or demoted without notice): `KILL <db>` for every database closes the
  server *and* client connections at once, so no client goes on talking to a demoted node, and leaves
  the database paused, so new clients wait for the new primary instead of failing;
- route: rewrite the file, `RELOAD`, `RECONNECT` (server connections still open to an old host are
  closed once released), then `RESUME` (and `RESUME <db>` for killed databases).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg

from pgwarden.aio import bounded
from pgwarden.routing.errors import RoutingError
from pgwarden.routing.topology import ServerAddress

_ADMIN_DB = "pgbouncer"
_NOT_PAUSED = "is not paused"  # "pooler is not paused/suspended", "database X is not paused"
_ALREADY_PAUSED = "already"  # "already suspended/paused"


def databases_section(server: ServerAddress, databases: Sequence[str], extra: str = "") -> str:
    """The include file's text: each database (`*` = any) pointed at `server`."""
    options = f" {extra.strip()}" if extra.strip() else ""
    lines = [f"# written by `pgwarden route`: the primary is {server.name}"]
    lines += [f"{db} = host={server.pg_host} port={server.pg_port}{options}" for db in databases]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one rename, keeping its owner and mode, so PgBouncer never reads half a file."""
    stat = path.stat() if path.exists() else None
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        if stat is not None:
            os.chmod(temp, stat.st_mode & 0o7777)
            os.chown(temp, stat.st_uid, stat.st_gid)
        else:
            os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class PgbouncerConsole:
    """PgBouncer's admin console (database `pgbouncer`, simple query protocol) for one conninfo."""

    def __init__(self, conninfo: str, *, timeout: float = 2.0) -> None:
        self.conninfo = conninfo
        self.timeout = timeout

    async def execute(self, command: str, *, timeout: float | None = None,
                      tolerate: str | None = None) -> list[tuple[object, ...]]:
        """Run one console command; an error containing `tolerate` is ignored."""
        return (await self.batch([(command, tolerate)], timeout=timeout))[0]

    async def batch(self, commands: Sequence[tuple[str, str | None]], *,
                    timeout: float | None = None) -> list[list[tuple[object, ...]]]:
        """Run (command, tolerated error text) pairs in order on one fresh connection; each one's rows."""
        try:
            return await bounded(self._batch(commands), timeout or self.timeout)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            what = "; ".join(c for c, _ in commands)
            raise RoutingError(f"pgbouncer: {what} failed: {str(exc).strip() or type(exc).__name__}") from exc

    async def _batch(self, commands: Sequence[tuple[str, str | None]]) -> list[list[tuple[object, ...]]]:
        connection = await psycopg.AsyncConnection.connect(
            self.conninfo, dbname=_ADMIN_DB, autocommit=True, connect_timeout=max(1, int(self.timeout)),
            cursor_factory=psycopg.AsyncClientCursor)  # the console speaks only the simple protocol
        results: list[list[tuple[object, ...]]] = []
        async with connection:
            for command, tolerate in commands:
                try:
                    cursor = await connection.execute(command)
                    results.append(await cursor.fetchall() if cursor.description else [])
                except psycopg.Error as exc:
                    if not tolerate or tolerate not in str(exc):
                        raise
                    results.append([])
        return results

    async def database_names(self) -> list[str]:
        """The databases PgBouncer knows now (autodb entries included), without its own console."""
        rows = await self.execute("SHOW DATABASES")
        return [str(row[0]) for row in rows if row[0] != _ADMIN_DB]


class PgbouncerPusher:
    """Applies the planner's steps to one PgBouncer."""

    def __init__(self, console: PgbouncerConsole, include_file: Path, databases: Sequence[str] = ("*",),
                 *, extra: str = "", pause_timeout: float = 10.0) -> None:
        self.console = console
        self.include_file = include_file
        self.databases = tuple(databases)
        self.extra = extra
        self.pause_timeout = pause_timeout
        self.name = f"pgbouncer {include_file}"

    async def hold(self, revision: int) -> None:
        """PAUSE: returns once running transactions are done and no server connection is left."""
        try:
            await self.console.execute("PAUSE", timeout=self.pause_timeout, tolerate=_ALREADY_PAUSED)
        except RoutingError:
            await self.console.execute("RESUME", tolerate=_NOT_PAUSED)  # do not stay half-paused
            raise

    async def fence(self, server: str, planned: bool) -> None:
        if planned:
            return  # held: PAUSE already closed every server connection; KILL would fail the waiting clients
        databases = await self.console.database_names()
        await self.console.batch([(f'KILL "{database}"', None) for database in databases])

    async def route(self, server: ServerAddress) -> None:
        write_atomically(self.include_file, databases_section(server, self.databases, self.extra))
        databases = await self.console.database_names()
        resumes = [(f'RESUME "{database}"', _NOT_PAUSED) for database in databases]
        await self.console.batch([("RELOAD", None), ("RECONNECT", None), *resumes, ("RESUME", _NOT_PAUSED)])

    async def release(self, server: str) -> None:
        await self.console.execute("RESUME", tolerate=_NOT_PAUSED)
