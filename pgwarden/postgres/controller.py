"""Acting on the local PostgreSQL: initdb, config files, start/stop, promote, clone, rewind, roles, slots.

Every method has a timeout and returns a `PgResult`; an expected failure (a binary exits non-zero, the
server refuses a connection) is a result with ok=False and the reason, never an exception. The adapter
runs the binaries as the current user (pgwarden runs as the PostgreSQL OS user). Passwords reach
PostgreSQL only through the pgpass file (PGPASSFILE / passfile=) or initdb's --pwfile, never argv.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from signal import SIGKILL
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from pgwarden.aio import bounded
from pgwarden.config.schema import MethodSpec
from pgwarden.logutil import RateLimitedLog
from pgwarden.model import DataDirState, lsn_from_text, lsn_to_text
from pgwarden.postgres import conf, libpq, slotwal, walfiles
from pgwarden.postgres.connection import CONNECT_TIMEOUT, connect_local, local_conninfo
from pgwarden.postgres.datadir import (
    directory_state,
    empty_data_dir,
    postmaster_pid,
    replace_problem,
    set_data_dir_aside,
    undo_created,
    wait_for_reaped_postmaster,
)
from pgwarden.postgres.process import CommandOutcome, PgResult, run_command
from pgwarden.postgres.settings import Credentials, OptionSpec, PgSettings, Upstream, options_to_argv
from pgwarden.postgres.versions import server_major

INITDB_TIMEOUT = 300.0
BASEBACKUP_TIMEOUT = 3600.0
REWIND_TIMEOUT = 3600.0
SCRIPT_TIMEOUT = 300.0
METHOD_TIMEOUT = 86400.0
"""A replica creation or bootstrap method restores a whole backup: hours for a large one."""
RECOVERY_TIMEOUT = 86400.0
QUICK_TIMEOUT = 15.0

LOGICAL_CREATE_TIMEOUT = 2.0
"""How long the leader's renewal step waits for a logical slot's creation (which waits for the transactions in
progress): well inside the lease, so that the step never risks it."""
LOGICAL_CREATE_RETRY = 30.0
"""Seconds before a creation that timed out is tried again."""
_create_retry_at: dict[str, float] = {}

# initdb options pgwarden sets itself; accepting them from the user would bypass --pwfile or the data dir.
_MANAGED_INITDB_OPTIONS = ("--pgdata", "--pwfile", "--pwprompt", "--username")
_AUTH_OPTIONS = ("--auth", "--auth-host", "--auth-local")
# Files describing this node rather than the cluster: pg_rewind would overwrite them with the source's.
_NODE_FILES = ("postgresql.conf", conf.BASE_CONF, "pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf",
               conf.STATE_FILE)
_REWIND_GRANTS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")

AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]
log = logging.getLogger(__name__)


class PgController:
    """The local PostgreSQL instance described by `settings`."""

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def is_running(self) -> bool:
        return postmaster_pid(self.data_dir) is not None

    # ---------------------------------------------------------------------------------------------
    # Creating a data directory

    async def initdb(self, options: OptionSpec | None = None, timeout: float = INITDB_TIMEOUT) -> PgResult:
        """Create a new cluster as the configured superuser, its password passed through --pwfile.

        `options` is `bootstrap.initdb` in list or dict form (or long options); None means
        settings.initdb_options. Auth methods default to peer (local) and scram-sha-256/md5 (host).
        """
        user_options = options_to_argv(options) if options is not None else self.settings.initdb_options
        managed = [o for o in user_options if o.split("=")[0] in _MANAGED_INITDB_OPTIONS]
        if managed:
            return PgResult.failed(f"initdb options set by pgwarden may not be given: {', '.join(managed)}")
        argv = [self.settings.binary("initdb"), "-D", str(self.data_dir),
                "--username", self.settings.superuser.username]
        if not any(o.split("=")[0] in _AUTH_OPTIONS for o in user_options):
            argv += ["--auth-local=peer", f"--auth-host={conf.auth_method(self.settings)}"]
        if not any(o.split("=")[0] == "--encoding" for o in user_options):
            argv.append("--encoding=UTF8")  # a C/POSIX environment would otherwise give SQL_ASCII
        with tempfile.TemporaryDirectory(prefix="pgwarden-initdb-") as private:  # created 0700
            password = self.settings.superuser.password
            if password is not None:
                pwfile = Path(private) / "pwfile"
                _write_private(pwfile, password + "\n")
                argv.append(f"--pwfile={pwfile}")
            outcome = await run_command([*argv, *user_options], timeout, c_locale=False)
        return _result(outcome, "initdb")

    async def basebackup(
        self, from_host: str, from_port: int, source_member: str | None = None,
        timeout: float = BASEBACKUP_TIMEOUT,
    ) -> PgResult:
        """Clone the running server at from_host:from_port into a missing or EMPTY data directory.

        Never deletes anything: a non-empty directory is refused. On success the directory is
        configured as a standby of that server (standby.signal, primary_conninfo, slot).
        """
        state = directory_state(self.data_dir)
        if state not in (DataDirState.MISSING, DataDirState.EMPTY):
            return PgResult.failed(f"refusing pg_basebackup: {self.data_dir} is {state.value}, not empty")
        refused = replace_problem(self.data_dir)  # e.g. an empty directory owned by root: never taken over
        if refused:
            return PgResult.failed(f"refusing pg_basebackup: {refused}")
        pgpass = self._try_write_pgpass()
        if not pgpass.ok:
            return pgpass
        host = libpq.upstream_host(self.settings, from_host)
        options = libpq.program_options(self.settings, "replication")  # TLS options; sslpassword via service
        argv = [self.settings.binary("pg_basebackup"), "-D", str(self.data_dir),
                *(("-h", host) if host is not None else ()), "-p", str(from_port),
                "-U", self.settings.replication.username, "--no-password",
                *(("-d", psycopg.conninfo.make_conninfo(**options)) if options else ()),
                "-X", "stream", "-c", "fast", *self.settings.basebackup_options]
        outcome = await run_command(argv, timeout, env=self._client_env())
        if not outcome.ok:
            # pg_basebackup cleans up after itself, except when it is killed (a timeout): then whatever
            # it left goes too, and only that (the directory was missing or empty before).
            undone = undo_created(self.data_dir, existed=state is DataDirState.EMPTY)
            failed = _result(outcome, "pg_basebackup")
            return failed if undone.ok else PgResult.failed(f"{failed.message}; {undone.message}")
        return await self.write_config("replica", Upstream(source_member or "", from_host, from_port))

    async def run_replica_method(self, method: MethodSpec, source: Upstream | None,
                                 timeout: float = METHOD_TIMEOUT) -> PgResult:
        """Run a replica creation method's command, with Patroni's arguments: `--scope`, `--role=replica`,
        `--datadir` and `--connstring` (the source's URI with the replication user; its password is in the
        pgpass file PGPASSFILE names; empty without a source), unless `no_params`.

        The data directory must be missing or empty, unless the method keeps data (`keep_data`)."""
        state = directory_state(self.data_dir)
        if not method.keep_data and state not in (DataDirState.MISSING, DataDirState.EMPTY):
            return PgResult.failed(f"refusing replica method {method.name}: {self.data_dir} is {state.value}, "
                                   "not empty")
        refused = replace_problem(self.data_dir)
        if refused:
            return PgResult.failed(f"refusing replica method {method.name}: {refused}")
        pgpass = self._try_write_pgpass()
        if not pgpass.ok:
            return pgpass
        connstring = "" if source is None else replication_uri(
            libpq.upstream_host(self.settings, source.host) or source.host, source.port,
            self.settings.replication.username)
        ours = (f"--scope={self.settings.scope}", "--role=replica", f"--datadir={self.data_dir}",
                f"--connstring={connstring}")
        return await self._run_method(method, ours, timeout)

    async def run_bootstrap_method(self, method: MethodSpec, timeout: float = METHOD_TIMEOUT) -> PgResult:
        """Run a custom bootstrap method's command with Patroni's `--scope` and `--datadir` (unless
        `no_params`). It must leave a PostgreSQL data directory in data_dir."""
        return await self._run_method(method, (f"--scope={self.settings.scope}", f"--datadir={self.data_dir}"),
                                      timeout)

    async def _run_method(self, method: MethodSpec, ours: tuple[str, ...], timeout: float) -> PgResult:
        try:
            argv = method_argv(method, ours)
        except ValueError as exc:
            return PgResult.failed(f"cannot parse the command of method {method.name}: {exc}")
        # Only the program: options on the command line may carry a backup tool's credentials.
        log.info("running method %s (%s)", method.name, argv[0] if argv else "no command")
        outcome = await run_command(argv, timeout, env=self._client_env("replication"))
        return _result(outcome, f"method {method.name}")

    async def sanitize_restored(self, keep_recovery_conf: bool = False) -> PgResult:
        """After a method restored a data directory: it must be one; standby.signal goes (pgwarden decides
        the role); unless `keep_recovery_conf`, recovery.signal and postgresql.auto.conf's recovery settings
        go too (they would win over pgwarden's own: a primary_conninfo to the backup's source, say)."""
        if not (self.data_dir / "PG_VERSION").is_file():
            return PgResult.failed(f"the method left no PostgreSQL data directory in {self.data_dir}")
        notes = []
        try:
            if _unlink(self.data_dir / "standby.signal"):
                notes.append("removed standby.signal")
            if not keep_recovery_conf:
                if _unlink(self.data_dir / "recovery.signal"):
                    notes.append("removed recovery.signal")
                auto = self.data_dir / "postgresql.auto.conf"
                if auto.exists():
                    text, dropped = conf.strip_recovery_settings(auto.read_text(errors="surrogateescape"))
                    if dropped:
                        _write_private(auto, text)
                        notes.append(f"removed {', '.join(dropped)} from postgresql.auto.conf")
        except OSError as exc:
            return PgResult.failed(f"could not prepare the restored data directory: {exc}")
        for note in notes:
            log.info("restored data directory: %s", note)
        return PgResult(True, "; ".join(notes) or "nothing to change")

    async def finish_recovery(self, timeout: float = RECOVERY_TIMEOUT, poll: float = 0.5) -> PgResult:
        """Wait until a server started in archive recovery has ended it ("waiting for end of recovery after
        bootstrap"); one paused at its recovery target (recovery_target_action pause, PostgreSQL's default)
        is promoted. Not ok when the postmaster stops (recovery_target_action shutdown, a missing WAL file)
        or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.is_running():
                return PgResult.failed(f"PostgreSQL stopped during recovery: {_tail_of(self.settings.postmaster_log)}")
            state = await self._in_session("reading the recovery state", _recovery_step, QUICK_TIMEOUT)
            if state.ok and state.message == "done":
                return PgResult(True, "recovery ended")
            last = state.message
            await asyncio.sleep(poll)
        return PgResult.failed(f"recovery did not end within {timeout:g}s ({last})")

    async def move_data_dir_aside(self) -> PgResult:
        """Move the data directory's contents to `<data_dir>.failed.<timestamp>` (only when the config
        allows it), keeping at most one such copy (`datadir.set_data_dir_aside`: never the directory
        itself, never one pgwarden's user does not own, a symlink's target's contents)."""
        if self.is_running():
            return PgResult.failed("refusing to move a data directory aside while PostgreSQL runs")
        return set_data_dir_aside(self.data_dir, time.strftime("%Y%m%dT%H%M%S"))

    async def empty_data_dir(self) -> PgResult:
        """Remove the data directory's contents, keeping no copy (an operator's reinitialize: the data
        is to be replaced). The directory itself stays; refused on one pgwarden's user does not own."""
        if self.is_running():
            return PgResult.failed("refusing to empty a data directory while PostgreSQL runs")
        return empty_data_dir(self.data_dir)

    async def undo_bootstrap(self, existed: bool) -> PgResult:
        """After a failed bootstrap: remove what it created (`datadir.undo_created`)."""
        if self.is_running():
            return PgResult.failed("refusing to remove a data directory while PostgreSQL runs")
        return undo_created(self.data_dir, existed)

    # ---------------------------------------------------------------------------------------------
    # Configuration files

    async def write_config(self, role: conf.ConfRole, follow: Upstream | tuple[str, str, int] | None = None,
                           recovery: Mapping[str, Any] | None = None) -> PgResult:
        """Write postgresql.conf (keeping the original as postgresql.base.conf), pg_hba, pg_ident, pgpass
        and the role marker; a replica gets standby.signal and streams from `follow` (member, host, port).
        With `recovery` (a custom bootstrap's recovery settings) the server is to start in archive recovery:
        they are written and recovery.signal is created."""
        upstream = Upstream(*follow) if follow is not None else None
        if not (self.data_dir / "PG_VERSION").is_file():
            return PgResult.failed(f"{self.data_dir} is not a PostgreSQL data directory")
        s = self.settings
        try:
            major = self.server_major()
            s.conf_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._adopt_base_conf()
            files = {
                s.config_file: conf.render_postgresql_conf(s, role, upstream, major, recovery),
                self.data_dir / conf.STATE_FILE: conf.render_state(role, upstream),
            }
            if s.manages_hba:
                files[s.hba_path] = conf.render_pg_hba(s)
            if s.manages_ident and (s.pg_ident or not s.ident_path.exists()):
                files[s.ident_path] = conf.render_pg_ident(s)
            for path, text in files.items():
                _write_private(path, text)
            _log_once(conf.versioned_parameters(s, role, upstream, major)[1])
            self.write_pgpass()
            signal = self.data_dir / "standby.signal"
            if role == "replica":
                signal.touch(mode=0o600)
            else:
                signal.unlink(missing_ok=True)
            if recovery is not None:
                (self.data_dir / "recovery.signal").touch(mode=0o600)
        except OSError as exc:
            return PgResult.failed(f"could not write configuration: {exc}")
        target = f" following {upstream.member or upstream.host}" if upstream else ""
        return PgResult(True, f"configuration written for {role}{target}")

    def write_pgpass(self) -> None:
        """(Re)write the pgpass file, mode 0600 (libpq ignores a file others can read)."""
        path = self.settings.pgpass_path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(path, conf.render_pgpass(self.settings))
        # The roles' sslpassword for pg_basebackup and pg_rewind (libpq reads no such environment variable).
        service = libpq.service_file_path(self.settings)
        try:
            secrets = libpq.render_service_file(self.settings)
        except ValueError as exc:
            log.error("not writing %s: %s", service, exc)  # pg_basebackup and pg_rewind will say they lack it
            secrets = ""
        if secrets:
            _write_private(service, secrets)
        else:
            service.unlink(missing_ok=True)

    def _try_write_pgpass(self) -> PgResult:
        try:
            self.write_pgpass()
        except OSError as exc:
            return PgResult.failed(f"could not write pgpass file {self.settings.pgpass_path}: {exc}")
        return PgResult(True)

    def _adopt_base_conf(self) -> None:
        """Keep the user's postgresql.conf as postgresql.base.conf the first time pgwarden writes its own.

        With a `config_dir` holding no postgresql.conf yet, the data directory's (initdb's) is copied
        there instead; the original stays in the data directory, unused. With `custom_conf` the base
        file is still kept (the user's settings are never lost) but not included.
        """
        own, base = self.settings.config_file, self.settings.conf_dir / conf.BASE_CONF
        if base.exists():
            return
        if own.exists() and not _generated(own):
            own.rename(base)
            return
        initdb_conf = self.data_dir / "postgresql.conf"
        if initdb_conf != own and initdb_conf.exists() and not _generated(initdb_conf):
            _write_private(base, initdb_conf.read_text(encoding="utf-8", errors="surrogateescape"))
        else:
            _write_private(base, "")

    def server_major(self) -> int | None:
        """The data directory's PostgreSQL major version (its PG_VERSION file); None if unreadable."""
        try:
            return server_major((self.data_dir / "PG_VERSION").read_text())
        except OSError:
            return None

    async def set_follow(self, member: str, host: str, port: int, slot: str | None = None) -> PgResult:
        """Point a running (or stopped) standby at another upstream; PG 13+ applies it on reload. `slot`: the
        upstream's slot to stream through when it is not this member's own (a standby leader's remote)."""
        if not (self.data_dir / "standby.signal").exists():
            return PgResult.failed("not configured as a standby (no standby.signal): write_config + restart")
        written = await self.write_config("replica", Upstream(member, host, port, slot))
        if not written.ok or not self.is_running():
            return written
        return await self.reload()

    # ---------------------------------------------------------------------------------------------
    # Process control

    async def start(self, wait: bool = True, timeout: float | None = None) -> PgResult:
        """pg_ctl start with pgwarden's enforced GUCs on the command line; with `wait`, until ready."""
        if self.is_running():
            return PgResult(True, "already running")
        # WAL staged for a logical slot copy that was given up (the slot removed, the replica promoted, the
        # agent stopped between attempts) goes at the latest here; a copy in progress fetches it again.
        slotwal.clear_staging(self.data_dir / "pg_wal")
        timeout = timeout if timeout is not None else self.settings.pg_ctl_timeout
        if not await wait_for_reaped_postmaster(self.data_dir, min(timeout, 30.0)):
            return PgResult.failed("the previous postmaster has not been reaped yet (zombie process)")
        log_file = self.settings.postmaster_log
        with suppress(OSError):
            log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [self.settings.binary("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(log_file),
                "-o", conf.cmdline_options(self.settings, self.server_major())]
        if self.settings.bin_name.get("postgres"):
            argv += ["-p", self.settings.binary("postgres")]  # else pg_ctl runs the `postgres` next to it
        argv += ["-w", "-t", str(max(1, int(timeout)))] if wait else ["-W"]
        outcome = await run_command(argv, timeout + 5, kill_group=False)
        if outcome.ok:
            return PgResult(True, "started" if wait else "start requested")
        still = " (the postmaster is still running)" if self.is_running() else ""
        return PgResult.failed(f"pg_ctl start failed{still}: {outcome.tail()}\n{_tail_of(log_file)}".strip())

    async def stop(self, mode: str = "fast", timeout: float | None = None, kill_after: float | None = None
                   ) -> PgResult:
        """pg_ctl stop -m smart|fast|immediate, waiting for the postmaster to exit (pg_ctl_timeout).

        With `kill_after` (primary_stop_timeout in synchronous mode) pg_ctl waits that long instead,
        and a postmaster still running then is killed with SIGKILL, its whole process group with it.
        """
        if mode not in ("smart", "fast", "immediate"):
            return PgResult.failed(f"unknown shutdown mode {mode!r}")
        if not self.is_running():
            return PgResult(True, "not running")
        timeout = timeout if timeout is not None else self.settings.pg_ctl_timeout
        if kill_after is not None:
            timeout = kill_after
        argv = [self.settings.binary("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode,
                "-w", "-t", str(max(1, int(timeout)))]
        outcome = await run_command(argv, timeout + 5)
        if outcome.ok or not self.is_running():
            return PgResult(True, f"stopped ({mode})")
        if kill_after is not None:
            return await self._kill_postmaster(f"the {mode} stop took longer than {kill_after:g}s")
        return _result(outcome, "pg_ctl stop")

    async def _kill_postmaster(self, why: str) -> PgResult:
        """SIGKILL the postmaster and every process of its group (its backends), then wait for them."""
        pid = postmaster_pid(self.data_dir)
        if pid is None:
            return PgResult(True, "stopped")
        with suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != os.getpgid(0):
                os.killpg(group, SIGKILL)
            else:
                os.kill(pid, SIGKILL)
        deadline = time.monotonic() + QUICK_TIMEOUT
        while self.is_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.is_running():
            return PgResult.failed(f"{why}; the postmaster survived SIGKILL")
        return PgResult(True, f"killed: {why}")

    async def restart(self, mode: str = "fast", timeout: float | None = None) -> PgResult:
        stopped = await self.stop(mode, timeout)
        return stopped if not stopped.ok else await self.start(True, timeout)

    async def reload(self) -> PgResult:
        """SIGHUP through pg_ctl: re-read the configuration files."""
        outcome = await run_command([self.settings.binary("pg_ctl"), "reload", "-D", str(self.data_dir)],
                                    QUICK_TIMEOUT)
        return _result(outcome, "pg_ctl reload")

    async def promote(self, timeout: float | None = None) -> PgResult:
        """pg_ctl promote -w: end recovery and wait until the server accepts writes, at most
        pg_ctl_timeout (and `timeout`, the lease's budget, when given)."""
        limit = self.settings.pg_ctl_timeout
        timeout = limit if timeout is None else min(timeout, limit)
        argv = [self.settings.binary("pg_ctl"), "promote", "-D", str(self.data_dir),
                "-w", "-t", str(max(1, int(timeout)))]
        return _result(await run_command(argv, timeout + 5), "pg_ctl promote")

    async def rewind(
        self, from_host: str, from_port: int, source_member: str | None = None,
        timeout: float = REWIND_TIMEOUT, keep_slots: Iterable[str] = (),
    ) -> PgResult:
        """pg_rewind this stopped data directory from the server at from_host:from_port, then configure it
        as a standby of that server.

        pg_rewind (PG 13+) itself runs single-user crash recovery first when the shutdown was not clean.
        This node's own configuration files survive the rewind.
        """
        if self.is_running():
            return PgResult.failed("refusing pg_rewind: PostgreSQL is running")
        pgpass = self._try_write_pgpass()
        if not pgpass.ok:
            return pgpass
        saved = self._save_node_files()
        kept = _read_physical_states(self.data_dir / "pg_replslot", keep_slots)
        creds = self.settings.rewind_credentials
        source = psycopg.conninfo.make_conninfo(
            host=libpq.upstream_host(self.settings, from_host), port=str(from_port), user=creds.username,
            dbname="postgres", passfile=str(self.settings.pgpass_path), connect_timeout="10",
            **libpq.program_options(self.settings, "rewind"))  # no secret: sslpassword via the service file
        # --progress: its lines tell whether a failed pg_rewind had changed the target (`rewind_began`).
        argv = [self.settings.binary("pg_rewind"), "-D", str(self.data_dir), "--progress", f"--source-server={source}"]
        outcome = await run_command(argv, timeout, env=self._client_env())
        self._restore_node_files(saved)
        if not outcome.ok:
            return PgResult.failed(rewind_failure(outcome.output))
        # The old slots describe a history that is gone (pg_rewind itself empties pg_replslot, an excluded
        # directory). But a permanent physical slot's copy only holds WAL back from its position, which an
        # offline consumer still needs: recreated, it would start at this node's position, ahead of that
        # consumer. Its state file, read before the rewind, is written back.
        _clear_slot_dirs(self.data_dir / "pg_replslot")
        if kept:
            restored = write_slot_states(self.data_dir / "pg_replslot", kept)
            if not restored.ok:
                return restored
        written = await self.write_config("replica", Upstream(source_member or "", from_host, from_port))
        if not written.ok:
            return written
        return PgResult(True, f"rewound: {rewind_output_tail(outcome.output, 2)}")

    def rewind_room(self) -> FreeRoom | None:
        """The free space pg_rewind would write into (`free_room`)."""
        return free_room(self.data_dir)

    def _save_node_files(self) -> dict[str, bytes]:
        saved = {}
        for name in _NODE_FILES:
            with suppress(OSError):
                saved[name] = (self.data_dir / name).read_bytes()
        return saved

    def _restore_node_files(self, saved: dict[str, bytes]) -> None:
        for name, content in saved.items():
            with suppress(OSError):
                _write_private(self.data_dir / name, content.decode(errors="surrogateescape"))

    # ---------------------------------------------------------------------------------------------
    # SQL

    async def checkpoint(self, timeout: float = 300.0) -> PgResult:
        """CHECKPOINT (after a promote, so pg_rewind against this node sees the new timeline)."""
        async def run(conn: AsyncConn) -> str:
            await conn.execute("CHECKPOINT")
            return "checkpoint done"

        return await self._in_session("checkpoint", run, timeout)

    async def create_roles(self, timeout: float = QUICK_TIMEOUT) -> PgResult:
        """After bootstrap: the superuser's password, the replication user, the rewind user and its grants."""
        s = self.settings

        async def run(conn: AsyncConn) -> str:
            await conn.execute("SET log_statement = 'none'")  # passwords, even hashed, stay out of logs
            await conn.execute("SET log_min_duration_statement = -1")
            algorithm = await _password_algorithm(conn)
            await _alter_password(conn, s.superuser, algorithm)
            if s.replication.username != s.superuser.username:
                await _upsert_role(conn, s.replication, algorithm, replication=True)
            rewind = s.rewind
            if rewind is not None and rewind.username not in (s.superuser.username, s.replication.username):
                await _upsert_role(conn, rewind, algorithm, replication=False)
                for function in _REWIND_GRANTS:
                    await conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                        sql.SQL(function), sql.Identifier(rewind.username)))
            return "roles created"

        return await self._in_session("creating roles", run, timeout)

    async def run_post_bootstrap(self, script: str, timeout: float = SCRIPT_TIMEOUT) -> PgResult:
        """Run `script "<connection URL>"` (the URL has no password; PGPASSFILE points at pgpass)."""
        host, port = self.settings.local_connect_host(), self.settings.port
        url_host = f"[{host}]" if ":" in host else quote(host, safe="")
        url = f"postgres://{quote(self.settings.superuser.username, safe='')}@{url_host}:{port}/postgres"
        try:
            argv = [*shlex.split(script), url]
        except ValueError as exc:
            return PgResult.failed(f"cannot parse post_bootstrap command: {exc}")
        return _result(await run_command(argv, timeout, env=self._client_env("superuser")), "post_bootstrap")

    async def timeline_history(self, timeline: int) -> list[tuple[int, int, str]]:
        """PostgreSQL's own history of `timeline` (pg_wal/<tli>.history): (ended timeline, switch LSN,
        reason) rows, oldest first; [] when there is none or it cannot be read.

        Read from the data directory (the agent runs as the server's OS user), not through SQL: the
        `pg_read_file(text, boolean)` form exists only from PostgreSQL 16, so on 15 every read failed.
        The startup process writes the file before a promotion ends, so it is there when `promote` returns.
        """
        try:
            text = (self.data_dir / "pg_wal" / f"{timeline:08X}.history").read_text(errors="replace")
        except OSError:
            return []
        return parse_timeline_history(text)

    async def set_synchronous_standby_names(self, value: str, timeout: float = QUICK_TIMEOUT) -> PgResult:
        """ALTER SYSTEM SET synchronous_standby_names, then reload: it takes effect without a restart
        (also on a standby, where it waits, inert, for the promotion)."""
        async def run(conn: AsyncConn) -> str:
            await conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value)))
            await conn.execute("SELECT pg_reload_conf()")
            return f"synchronous_standby_names = {value!r}"

        return await self._in_session("setting synchronous_standby_names", run, timeout)

    async def ensure_slots(self, names: Iterable[str], timeout: float = QUICK_TIMEOUT) -> PgResult:
        """Create the physical slots in `names` that do not exist yet (reserving WAL right away)."""
        wanted = sorted(set(names))
        bad = [n for n in wanted if not _SLOT_NAME.match(n)]
        if bad:
            return PgResult.failed(f"invalid slot names: {', '.join(bad)}")

        async def run(conn: AsyncConn) -> str:
            missing = [name for name in wanted if name not in await _physical_slots(conn)]
            for name in missing:
                await conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
            return f"created slots: {', '.join(missing)}" if missing else "slots present"

        return await self._in_session("creating slots", run, timeout)

    async def drop_slots(self, names: Iterable[str], timeout: float = QUICK_TIMEOUT) -> PgResult:
        """Drop those slots in `names` that exist (physical or logical: pg_drop_replication_slot needs no
        connection to a logical slot's database, and works on a standby). The caller passes only slots
        pgwarden manages.

        An active slot's walsender is terminated first, since PostgreSQL cannot drop a slot in use.
        """
        unwanted = set(names)

        async def run(conn: AsyncConn) -> str:
            existing = await _slots_in_use(conn)
            dropped = sorted(unwanted & set(existing))
            for name in dropped:
                active_pid = existing[name]
                if active_pid is not None:
                    await conn.execute("SELECT pg_terminate_backend(%s, 2000)", (active_pid,))
                await conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            return f"dropped slots: {', '.join(dropped)}" if dropped else "nothing to drop"

        return await self._in_session("dropping slots", run, timeout)

    async def advance_slots(self, targets: Iterable[tuple[str, int]], timeout: float = QUICK_TIMEOUT) -> PgResult:
        """On a standby: advance each physical slot of `targets` to its LSN (pg_replication_slot_advance),
        capped here again by what this standby has replayed; a slot already there (or beyond) is left as it
        is, since PostgreSQL refuses to move a slot backwards."""
        wanted = sorted({(str(name), int(lsn)) for name, lsn in targets})
        bad = [n for n, _ in wanted if not _SLOT_NAME.match(n)]
        if bad:
            return PgResult.failed(f"invalid slot names: {', '.join(bad)}")

        async def run(conn: AsyncConn) -> str:
            moved: list[str] = []
            for name, lsn in wanted:
                cur = await conn.execute(_ADVANCE_SLOT, (lsn_to_text(lsn), name))
                if await cur.fetchone() is not None:
                    moved.append(name)
            return f"advanced slots: {', '.join(moved)}" if moved else "slots up to date"

        return await self._in_session("advancing slots", run, timeout)

    async def create_logical_slots(self, specs: Iterable[tuple[str, str, str]],
                                   timeout: float = LOGICAL_CREATE_TIMEOUT) -> PgResult:
        """On the primary: create each logical slot of `specs` (name, database, plugin) that does not exist,
        connected to its database. A slot of that name with another type, database or plugin is not
        pgwarden's to reuse: it is left alone and named in the (failed) result.

        This runs in the leader's renewal step, and PostgreSQL's creation waits for every transaction in
        progress to end: so it is bounded by a short statement timeout, and a slot whose creation timed out
        is tried again only after LOGICAL_CREATE_RETRY seconds, so that a long transaction on the primary
        never slows the leader's loop (and its lease renewals) cycle after cycle."""
        wanted = sorted({(str(name), str(database), str(plugin)) for name, database, plugin in specs})
        bad = [n for n, _, _ in wanted if not _SLOT_NAME.match(n)]
        if bad:
            return PgResult.failed(f"invalid slot names: {', '.join(bad)}")
        created: list[str] = []
        problems: list[str] = []
        now = time.monotonic()
        for name, database, plugin in wanted:
            retry_at = _create_retry_at.get(name)
            if retry_at is not None and now < retry_at:
                problems.append(f"creating logical slot {name} timed out before (transactions in progress on "
                                f"the primary); tried again in {retry_at - now:.0f}s")
                continue
            async def run(conn: AsyncConn, name: str = name, database: str = database, plugin: str = plugin) -> str:
                cur = await conn.execute("SELECT slot_type, database::text, plugin::text FROM pg_replication_slots "
                                         "WHERE slot_name = %s", (name,))
                row = await cur.fetchone()
                if row is None:
                    await conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (name, plugin))
                    return "created"
                if tuple(row) != ("logical", database, plugin):
                    return (f"a slot {name} exists with type {row[0]}, database {row[1]}, plugin {row[2]}; "
                            "it is not pgwarden's: left alone (drop it, or rename the permanent slot)")
                return "present"
            result = await self._in_session(f"creating logical slot {name}", run, timeout, database=database)
            if not result.ok and ("timed out" in result.message or "statement timeout" in result.message):
                _create_retry_at[name] = time.monotonic() + LOGICAL_CREATE_RETRY
            else:
                _create_retry_at.pop(name, None)
            if result.ok and result.message == "created":
                created.append(name)
            elif not result.ok or result.message != "present":
                problems.append(result.message)
        if problems:
            _log_slot_problem("%s", "; ".join(problems))
            return PgResult.failed("; ".join(problems))
        return PgResult(True, f"created logical slots: {', '.join(created)}" if created else "logical slots present")

    async def advance_logical_slots(self, targets: Iterable[tuple[str, str, int]],
                                    timeout: float = QUICK_TIMEOUT) -> PgResult:
        """On a standby: advance each copy of a logical slot of `targets` (name, database, LSN) to its LSN
        (pg_replication_slot_advance, connected to the slot's database as PostgreSQL requires), never past
        this standby's replay position, never backwards."""
        wanted = sorted({(str(name), str(db), int(lsn)) for name, db, lsn in targets})
        bad = [n for n, _, _ in wanted if not _SLOT_NAME.match(n)]
        if bad:
            return PgResult.failed(f"invalid slot names: {', '.join(bad)}")
        moved: list[str] = []
        failed: list[str] = []
        for name, database, lsn in wanted:
            async def run(conn: AsyncConn, name: str = name, lsn: int = lsn) -> str:
                cur = await conn.execute(_ADVANCE_LOGICAL_SLOT, (lsn_to_text(lsn), name))
                return "moved" if await cur.fetchone() is not None else ""
            result = await self._in_session(f"advancing logical slot {name}", run, timeout, database=database)
            if not result.ok:
                failed.append(result.message)
            elif result.message:
                moved.append(name)
        if failed:
            return PgResult.failed("; ".join(failed))
        return PgResult(True, f"advanced logical slots: {', '.join(moved)}" if moved else "logical slots up to date")

    async def read_slot_states(self, host: str, port: int, names: Iterable[str],
                               timeout: float = QUICK_TIMEOUT) -> SlotStateRead:
        """Read the state files of the logical slots `names` from the leader at host:port (the rewind
        credentials: a superuser, or a role granted pg_read_binary_file as Patroni's rewind role is), after
        checking there that each is a logical slot with a catalog_xmin. When a slot's restart_lsn is older
        than the WAL this replica still has, the missing segments are fetched from the leader into a staging
        directory under pg_wal (`slotwal`: bounded, every query with a timeout), for `write_slot_states` to
        move into pg_wal; the copy waits when they cannot be (too much WAL, the leader lacks them)."""
        wanted = sorted(set(names))
        bad = [n for n in wanted if not _SLOT_NAME.match(n)]
        if bad:
            return SlotStateRead(False, f"invalid slot names: {', '.join(bad)}")
        pgpass = self._try_write_pgpass()  # the leader's password comes from it, as for pg_rewind
        if not pgpass.ok:
            return SlotStateRead(False, pgpass.message)
        local = await self._local_wal()
        if isinstance(local, str):
            return SlotStateRead(False, local)
        creds = self.settings.rewind_credentials
        conninfo = psycopg.conninfo.make_conninfo(
            host=libpq.upstream_host(self.settings, host), port=str(port), user=creds.username, dbname="postgres",
            passfile=str(self.settings.pgpass_path), connect_timeout=str(CONNECT_TIMEOUT),
            application_name="pgwarden", options=f"-c statement_timeout={int(timeout * 1000)}",
            **libpq.connection_options(creds))
        try:
            read, leader = await bounded(_read_states(conninfo, wanted), timeout + CONNECT_TIMEOUT)
        except TimeoutError:
            return SlotStateRead(False, f"reading slot state files timed out after {timeout:g}s", unreachable=True)
        except (psycopg.Error, OSError) as exc:
            return SlotStateRead(False, f"reading slot state files from the leader failed: {exc}",
                                 unreachable=isinstance(exc, psycopg.OperationalError))
        if not read.ok:
            return read
        return await self._with_missing_wal(read, leader, local, conninfo, timeout)

    async def _with_missing_wal(self, read: SlotStateRead, leader: _LeaderWal, local: _LocalWal, conninfo: str,
                                timeout: float) -> SlotStateRead:
        """`read` with the WAL segments its slots need and this replica lacks fetched from the leader and
        staged (`segments`); or why the copy waits. What earlier attempts staged is kept when still needed
        (a fetch longer than `slotwal.FETCH_BUDGET` goes on over several attempts), else removed."""
        pg_wal = self.data_dir / "pg_wal"
        if not read.states:
            return _unstaged(pg_wal, read)
        size = local.segment_size
        slot, restart = min(((name, state_restart_lsn(state)) for name, state in read.states), key=lambda r: r[1])
        numbers = slotwal.missing_numbers(restart, local.names, local.replay_lsn, size)
        if not numbers:
            return _unstaged(pg_wal, read)
        lacking = (f"the leader's slot {slot} needs WAL from {lsn_to_text(restart)}, older than the oldest this "
                   f"replica has ({lsn_to_text(numbers.stop * size)})")
        if leader.timeline is None:
            return _unstaged(pg_wal, SlotStateRead(
                False, f"{lacking}; the leader is in recovery: waiting for its consumer to move on", waiting=True))
        history = self._history_rows(leader.timeline)
        if history is None:
            return _unstaged(pg_wal, SlotStateRead(
                False, f"{lacking}; this replica has no history file of the leader's timeline {leader.timeline} "
                       "yet: waiting", waiting=True))
        files = slotwal.missing_files(numbers, size, history, leader.timeline, local.names)
        if not files:
            return _unstaged(pg_wal, read)
        staged = slotwal.keep_staged(pg_wal, files)
        fetch = tuple(name for name in files if name not in staged)
        needed = len(files) * size
        pinned = leader.current - leader.restart.get(slot, restart) if leader.current else 0
        try:
            refusal = slotwal.fetch_refusal(needed, walfiles.free_space(pg_wal) + len(staged) * size)
        except OSError as exc:
            return _unstaged(pg_wal, SlotStateRead(False, f"{lacking}; checking pg_wal failed: {exc}"))
        sizes = f"{len(files)} WAL segments ({slotwal.mib(needed)})"
        if refusal:
            return _unstaged(pg_wal, SlotStateRead(
                False, f"{lacking}: {sizes} to fetch from the leader, where the slot pins "
                       f"{slotwal.mib(max(pinned, 0))} of WAL; refused: {refusal}; waiting for its consumer to "
                       "move on", waiting=True))
        problem = await _fetch_wal(conninfo, pg_wal, fetch, size, timeout, leader.lists_waldir) if fetch else None
        if problem is not None:
            message, waiting, unreachable = problem
            if message == slotwal.OUT_OF_TIME:  # the segments staged so far stay for the next attempt
                done = len(slotwal.keep_staged(pg_wal, files))
                return SlotStateRead(False, f"{lacking}: fetched {done} of {sizes} from the leader so far; "
                                            "going on at the next attempt", waiting=True)
            slotwal.clear_staging(pg_wal)
            return SlotStateRead(False, f"{lacking}: fetching {sizes} from the leader failed: {message}",
                                 waiting=waiting, unreachable=unreachable)
        return SlotStateRead(True, f"{read.message}; fetched {sizes} from the leader (from {lsn_to_text(restart)})",
                             read.states, snapshots=read.snapshots, segments=files)

    async def _local_wal(self) -> _LocalWal | str:
        """This replica's replay position, WAL segment size and segment files; or why not (as a message)."""
        async def session() -> _LocalWal:
            async with await connect_local(self.settings, int(QUICK_TIMEOUT * 1000)) as conn:
                cur = await conn.execute(_LOCAL_WAL)
                row = await cur.fetchone()
            replay, size, names = row if row is not None else (None, None, None)
            if not isinstance(size, int) or not walfiles.valid_segment_size(size) or not isinstance(names, list):
                raise psycopg.DataError(f"unexpected pg_wal facts: {row!r}")
            return _LocalWal(lsn_from_text(str(replay)) if replay is not None else None, size,
                             tuple(str(n) for n in names))

        try:
            return await bounded(session(), QUICK_TIMEOUT + CONNECT_TIMEOUT)
        except TimeoutError:
            return f"listing pg_wal timed out after {QUICK_TIMEOUT:g}s"
        except (psycopg.Error, OSError) as exc:
            return f"listing pg_wal failed: {exc}"

    def _history_rows(self, timeline: int) -> list[tuple[int, int]] | None:
        """(parent timeline, switch LSN) of `timeline`'s history as this replica's PostgreSQL will read it
        (pg_wal/<timeline>.history); None when it has none (or only a placeholder) for a timeline after 1."""
        if timeline <= 1:
            return []
        try:
            text = (self.data_dir / "pg_wal" / f"{timeline:08X}.history").read_text(errors="replace")
        except OSError:
            return None
        rows = [(parent, switch) for parent, switch, _reason in parse_timeline_history(text)]
        return rows or None

    def write_slot_states(self, states: Iterable[tuple[str, bytes]],
                          snapshots: Iterable[tuple[str, bytes]] = (), segments: Iterable[str] = ()) -> PgResult:
        """With PostgreSQL stopped: move the WAL segments `read_slot_states` staged into pg_wal (never over an
        existing file), then write each decoding snapshot into `pg_logical/snapshots`, then each (name, state
        file) as `pg_replslot/<name>/state` (a slot never exists here without its WAL and snapshot)."""
        pg_wal = self.data_dir / "pg_wal"
        if self.is_running():
            slotwal.clear_staging(pg_wal)
            return PgResult.failed("refusing to write slot state files: PostgreSQL is running")
        wal = ""
        names = tuple(segments)
        if names:
            try:
                installed, kept = slotwal.install(pg_wal, names)
            except OSError as exc:
                return PgResult.failed(f"installing the WAL fetched for the slots failed: {exc}")
            wal = f"; installed {len(installed)} WAL segments" + (f" ({len(kept)} already present)" if kept else "")
        written = write_snapshots(self.data_dir / "pg_logical" / "snapshots", snapshots)
        if not written.ok:
            return written
        result = write_slot_states(self.data_dir / "pg_replslot", states)
        return PgResult(result.ok, result.message + wal) if result.ok else result

    def discard_slot_wal(self) -> PgResult:
        """Remove the WAL segments `read_slot_states` staged (a copy that did not go on)."""
        slotwal.clear_staging(self.data_dir / "pg_wal")
        return PgResult(True, "discarded the WAL fetched for the slots")

    async def _in_session(
        self, what: str, work: Callable[[AsyncConn], Awaitable[str]], timeout: float, database: str | None = None
    ) -> PgResult:
        """Run `work` in a fresh superuser session (in `database`, else postgres), bounded by `timeout` on
        both sides of the wire."""
        async def session() -> str:
            if database is None:
                connecting = connect_local(self.settings, int(timeout * 1000))
            else:
                conninfo = psycopg.conninfo.make_conninfo(local_conninfo(self.settings, int(timeout * 1000)),
                                                          dbname=database)
                connecting = psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            async with await connecting as conn:
                return await work(conn)

        try:
            return PgResult(True, await bounded(session(), timeout + CONNECT_TIMEOUT))
        except TimeoutError:
            return PgResult.failed(f"{what} timed out after {timeout:g}s")
        except (psycopg.Error, OSError) as exc:
            return PgResult.failed(f"{what} failed: {exc}")

    def _client_env(self, role: libpq.Role | None = None) -> dict[str, str]:
        """PGPASSFILE and friends; PGSERVICEFILE when an sslpassword is set; with `role`, that role's libpq
        options as environment variables (for scripts, whose connections pgwarden does not build)."""
        return {"PGPASSFILE": str(self.settings.pgpass_path), "PGAPPNAME": self.settings.name,
                "PGCONNECT_TIMEOUT": "10", **libpq.program_environment(self.settings, role)}


# -------------------------------------------------------------------------------------------------
# helpers


def method_argv(method: MethodSpec, ours: tuple[str, ...]) -> list[str]:
    """A method's command line: its `command` split as a shell would (never run through one), its own
    options as `--key=value`, then pgwarden's (Patroni's) arguments `ours` unless `no_params`."""
    return [*shlex.split(method.command), *(f"--{key}={value}" for key, value in method.params),
            *(() if method.no_params else ours)]


def replication_uri(host: str, port: int, user: str) -> str:
    """`--connstring` as Patroni passes it: postgres://<replication user>@<host>:<port>/postgres."""
    shown = f"[{host}]" if ":" in host and not host.startswith("/") else quote(host, safe="/")
    return f"postgres://{quote(user, safe='')}@{shown}:{port}/postgres"


async def _recovery_step(conn: AsyncConn) -> str:
    """One look at a recovering server: "done" once out of recovery; a paused one is promoted."""
    cur = await conn.execute("SELECT pg_is_in_recovery()")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return "done"
    cur = await conn.execute("SELECT pg_get_wal_replay_pause_state()")  # an error outside recovery
    row = await cur.fetchone()
    if row is not None and row[0] == "paused":
        log.info("recovery paused at its target: promoting")
        await conn.execute("SELECT pg_promote(true, 60)")
        return "promoted"
    return "in recovery"


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _result(outcome: CommandOutcome, what: str) -> PgResult:
    if outcome.ok:
        return PgResult(True, f"{what} succeeded")
    if outcome.returncode is None:
        return PgResult.failed(outcome.output)
    return PgResult.failed(f"{what} exited with {outcome.returncode}: {outcome.tail()}")


def parse_timeline_history(text: str) -> list[tuple[int, int, str]]:
    """The rows of a timeline history file (`parent<TAB>switch LSN<TAB>reason`); comments and junk skipped."""
    found: list[tuple[int, int, str]] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].strip().isdigit():
            reason = parts[2].strip() if len(parts) > 2 else ""
            with suppress(ValueError):
                found.append((int(parts[0]), lsn_from_text(parts[1].strip()), reason))
    return found


def _generated(path: Path) -> bool:
    return path.read_text(errors="replace").startswith(conf.GENERATED_MARKER)


_logged: set[str] = set()


def _log_once(notes: Iterable[str]) -> None:
    """Warn of each configuration change or omission once per process (write_config runs often)."""
    for note in notes:
        if note not in _logged:
            _logged.add(note)
            log.warning("postgresql configuration: %s", note)


def _write_private(path: Path, text: str) -> None:
    """Write a file atomically with mode 0600 (temporary file next to it, then rename)."""
    tmp = path.with_name(f".{path.name}.pgwarden-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def _tail_of(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


NO_SPACE = "No space left on device"
"""strerror(ENOSPC), as PostgreSQL's tools print it (pgwarden runs them in the C locale's messages)."""


CONNECT_FAILURES = ("could not connect to server", "connection to server at", "connection to server on socket")
"""How libpq-based tools (pg_rewind) say they could not open a connection, PostgreSQL 12 to 16."""
CONNECTION_LOST = ("server closed the connection unexpectedly", "could not receive data from server",
                   "could not send data to server", "SSL SYSCALL error", "SSL connection has been closed unexpectedly",
                   "no connection to the server", "could not fetch remote file")
"""How libpq and pg_rewind say an open connection to the source broke (or the source stopped answering)."""
REWIND_PROGRESS = "pg_rewind: connected to server"
"""pg_rewind's first line with `--progress`: the progress lines below are there to be read."""
REWIND_BEGINS = "pg_rewind: need to copy"
"""pg_rewind's last line with `--progress` before its point of no return, its first write into the target's
files (PostgreSQL 13 to 16; tried with 15). A failure before it (the source went away while pg_rewind read
its control file or its file list) leaves the target as it found it, but for the crash recovery pg_rewind
runs first, which leaves it shut down cleanly: nothing a later rewind cannot start from."""
REWIND_DIVERGED = "rewinding from last common checkpoint"
"""Without the progress lines, the earlier line after which a failure counts as one that changed the target."""
_COPY_PROGRESS = re.compile(r"^\s*\d+/\d+ kB \(\d+%\) copied\s*$")
SOURCE_UNREACHABLE = "pg_rewind could not reach its source and changed nothing"


def rewind_failure(output: str, lines: int = 8) -> str:
    """The message of a failed pg_rewind, from its whole output (`lines`: how many of its last lines to
    quote). One that ran out of space says so first, since the data directory it leaves (possibly half
    rewound) is a casualty of the full disk, not of a divergence pg_rewind could not repair. One whose
    source went away before it began rewinding (a source cut off, stopped or demoted meanwhile: the
    chaos suite's `on` seed 2002) says that instead: the target is untouched, so it is no failed rewind
    (`rewind_unreachable`) and must not cost a re-clone."""
    tail = rewind_output_tail(output, lines)
    if NO_SPACE in output:
        return f"pg_rewind failed: the target's file system is full ({NO_SPACE}): {tail}"
    if not rewind_began(output) and any(text in output for text in CONNECT_FAILURES + CONNECTION_LOST):
        return f"{SOURCE_UNREACHABLE}: {tail}"
    return f"pg_rewind failed: {tail}"


def rewind_began(output: str) -> bool:
    """Had pg_rewind (its whole output) begun to change the target's files? On the safe side: without the
    progress lines, once it said where it rewinds from."""
    if REWIND_PROGRESS in output:
        return REWIND_BEGINS in output
    return REWIND_DIVERGED in output


def rewind_output_tail(output: str, lines: int) -> str:
    """The last `lines` lines of pg_rewind's output but for its progress counters (`--progress`)."""
    kept = [line for line in output.replace("\r", "\n").strip().splitlines() if not _COPY_PROGRESS.match(line)]
    return "\n".join(kept[-lines:])


def rewind_unreachable(message: str) -> bool:
    """Did the rewind whose failure `message` (`rewind_failure`'s) describes fail for want of its source,
    before it began?"""
    return message.startswith(SOURCE_UNREACHABLE)


@dataclass(frozen=True, slots=True)
class FreeRoom:
    """Free bytes (for unprivileged writers) on the data directory's file system and on pg_wal's when it
    is another one (None: the same); the WAL segment size found in pg_wal."""

    data_free: int
    wal_free: int | None
    segment_size: int


def free_room(data_dir: Path) -> FreeRoom | None:
    """The free space of `data_dir`'s file system, and of pg_wal's when it is another one (initdb --waldir:
    a symlink), with the WAL segment size found there; None when it cannot be examined."""
    wal = data_dir / "pg_wal"
    try:
        data_free, wal_free = walfiles.free_space(data_dir), None
        with suppress(FileNotFoundError):
            if os.stat(wal).st_dev != os.stat(data_dir).st_dev:
                wal_free = walfiles.free_space(wal)
    except OSError:
        return None
    return FreeRoom(data_free, wal_free, _segment_size(wal))


def _segment_size(wal: Path) -> int:
    """The size of a segment file in `wal` (segments are allocated in full), else the default."""
    with suppress(OSError), os.scandir(wal) as entries:
        for entry in entries:
            if walfiles.SEGMENT_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                if walfiles.valid_segment_size(size):
                    return size
    return walfiles.DEFAULT_SEGMENT_SIZE


def _clear_slot_dirs(replslot: Path) -> None:
    with suppress(OSError):
        for entry in replslot.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _read_physical_states(replslot: Path, names: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    """The state files of the physical slots among `names` in `replslot` (a logical one, or one without a
    whole state file, is left out: its history is gone with the rewind)."""
    out = []
    for name in sorted(set(names)):
        if not _SLOT_NAME.match(name):
            continue
        try:
            data = (replslot / name / "state").read_bytes()
        except OSError:
            continue
        if _physical_state(data):
            out.append((name, data))
    return tuple(out)


_STATE_DATABASE = slice(80, 84)
"""Where a slot state file keeps the slot's database OID (PostgreSQL 11-16; see _STATE_RESTART_LSN): 0 for a
physical slot."""


def _physical_state(data: bytes) -> bool:
    """Is `data` a slot state file of a physical slot?"""
    return len(data) >= _STATE_RESTART_LSN.stop and int.from_bytes(data[_STATE_DATABASE], sys.byteorder) == 0


async def _password_algorithm(conn: AsyncConn) -> bytes:
    cur = await conn.execute("SHOW password_encryption")
    row = await cur.fetchone()
    return str(row[0] if row else "scram-sha-256").encode()


def _password_clause(conn: AsyncConn, cred: Credentials,
                     algorithm: bytes) -> sql.Composable:
    """PASSWORD '<hash>': hashed client-side, so the clear text never reaches the server or its logs."""
    if cred.password is None:
        return sql.SQL("")
    hashed = conn.pgconn.encrypt_password(cred.password.encode(), cred.username.encode(), algorithm)
    return sql.SQL(" PASSWORD {}").format(sql.Literal(hashed.decode()))


async def _alter_password(conn: AsyncConn, cred: Credentials,
                          algorithm: bytes) -> None:
    if cred.password is not None:
        await conn.execute(sql.SQL("ALTER ROLE {} WITH{}").format(
            sql.Identifier(cred.username), _password_clause(conn, cred, algorithm)))


async def _upsert_role(conn: AsyncConn, cred: Credentials, algorithm: bytes,
                       *, replication: bool) -> None:
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.username,))
    verb = "ALTER" if await cur.fetchone() else "CREATE"
    attributes = " LOGIN REPLICATION" if replication else " LOGIN"
    await conn.execute(sql.SQL(verb + " ROLE {} WITH" + attributes + "{}").format(
        sql.Identifier(cred.username), _password_clause(conn, cred, algorithm)))


_ADVANCE = """
SELECT pg_replication_slot_advance(slot_name, t.target)
  FROM pg_replication_slots,
       LATERAL (SELECT least(%s::pg_lsn, pg_last_wal_replay_lsn()) AS target) t
 WHERE slot_name = %s AND slot_type = '{type}' AND pg_is_in_recovery()
   AND {position} IS NOT NULL AND t.target > {position}
"""
_ADVANCE_SLOT = _ADVANCE.format(type="physical", position="restart_lsn")
_ADVANCE_LOGICAL_SLOT = _ADVANCE.format(type="logical", position="confirmed_flush_lsn")
"""Only on a standby, only forwards (a logical slot's position is its confirmed_flush_lsn), never past the
replay position (the core capped it already)."""

_SLOT_STATE = """
SELECT slot_type, catalog_xmin IS NOT NULL, restart_lsn::text,
       CASE WHEN slot_type = 'logical' THEN pg_read_binary_file(%s::text, 0, 65536, false) END
  FROM pg_replication_slots WHERE slot_name = %s
"""
"""One slot's facts and its state file (the four-argument pg_read_binary_file: the one Patroni's rewind role
is granted)."""

_LOCAL_WAL = """
SELECT pg_last_wal_replay_lsn()::text,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       array(SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$')
"""
"""A replica's replay position, segment size and WAL segment files (the local superuser session)."""

_LEADER_WAL = """
SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       has_function_privilege('pg_catalog.pg_ls_waldir()', 'EXECUTE')
"""
"""The leader's timeline (in its current WAL file's name) and position; whether pg_ls_waldir is allowed (a
superuser, pg_monitor) or the rewind role's pg_ls_dir and pg_stat_file list pg_wal instead."""

_LEADER_SEGMENTS = "SELECT name, size FROM pg_ls_waldir() WHERE name = ANY(%s)"
_LEADER_SEGMENTS_REWIND = """
SELECT name, (pg_stat_file('pg_wal/' || name, true)).size
  FROM pg_ls_dir('pg_wal', true, false) AS name WHERE name = ANY(%s)
"""

_STATE_MIN_SIZE = 16
"""A slot state file starts with magic, checksum, version and length (4 bytes each): anything shorter is no
state file."""


@dataclass(frozen=True, slots=True)
class SlotStateRead:
    """What `read_slot_states` answers: ok and the state files, or why not (`waiting`: later it may work)."""

    ok: bool
    message: str = ""
    states: tuple[tuple[str, bytes], ...] = ()
    waiting: bool = False
    unreachable: bool = False
    snapshots: tuple[tuple[str, bytes], ...] = ()
    segments: tuple[str, ...] = ()
    """WAL segment files fetched from the leader and staged (`slotwal.STAGING`) for `write_slot_states`."""


@dataclass(frozen=True, slots=True)
class _LocalWal:
    replay_lsn: int | None
    segment_size: int
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _LeaderWal:
    timeline: int | None
    """The leader's timeline; None when it is in recovery (a standby leader)."""
    current: int | None
    restart: dict[str, int]
    """Each slot's restart_lsn as the leader holds it now (for the WAL it pins there)."""
    lists_waldir: bool = False
    """Whether the leader lets this role call pg_ls_waldir (else pg_ls_dir and pg_stat_file list pg_wal)."""


async def _read_states(conninfo: str, wanted: list[str]) -> tuple[SlotStateRead, _LeaderWal]:
    """The leader's state files (and decoding snapshots) of the slots `wanted`, and its WAL facts."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cur = await conn.execute(_LEADER_WAL)
        row = await cur.fetchone()
        walfile, current, lists = row if row is not None else (None, None, False)
        timeline = int(str(walfile)[:8], 16) if walfile and walfiles.SEGMENT_NAME.match(str(walfile)) else None
        leader = _LeaderWal(timeline, lsn_from_text(str(current)) if current else None, {}, bool(lists))
        states: list[tuple[str, bytes]] = []
        snapshots: list[tuple[str, bytes]] = []
        for name in wanted:
            cur = await conn.execute(_SLOT_STATE, (f"pg_replslot/{name}/state", name))
            row = await cur.fetchone()
            if row is None:
                return SlotStateRead(False, f"the leader has no slot {name}", waiting=True), leader
            slot_type, has_xmin, restart, data = row
            if slot_type != "logical" or not has_xmin or restart is None:
                return SlotStateRead(False, f"the leader's slot {name} is no logical slot with a catalog_xmin",
                                     waiting=True), leader
            if not isinstance(data, bytes | bytearray | memoryview) or len(bytes(data)) < _STATE_MIN_SIZE:
                return SlotStateRead(False, f"the state file of the leader's slot {name} is unreadable"), leader
            leader.restart[name] = lsn_from_text(str(restart))
            state = bytes(data)
            snapshot = await _read_snapshot(conn, state_restart_lsn(state))
            if snapshot is not None:
                snapshots.append(snapshot)
            states.append((name, state))
        return SlotStateRead(True, f"read {len(states)} slot state files and {len(snapshots)} snapshots",
                             tuple(states), snapshots=tuple(snapshots)), leader


def _unstaged(pg_wal: Path, read: SlotStateRead) -> SlotStateRead:
    """`read`, once the staging directory is removed: no WAL is fetched for this copy (what an earlier,
    interrupted attempt staged is not needed, or not now)."""
    slotwal.clear_staging(pg_wal)
    return read


async def _fetch_wal(conninfo: str, pg_wal: Path, files: tuple[str, ...], size: int, timeout: float,
                     lists_waldir: bool) -> tuple[str, bool, bool] | None:
    """Fetch the WAL segment `files` from the leader into the staging directory (`slotwal.fetch`), after
    checking there that each is a complete segment. None when done, else (why not, waiting, unreachable)."""
    try:
        async with await bounded(psycopg.AsyncConnection.connect(conninfo, autocommit=True),
                                 timeout + CONNECT_TIMEOUT) as conn:
            listing = _LEADER_SEGMENTS if lists_waldir else _LEADER_SEGMENTS_REWIND
            cur = await bounded(conn.execute(listing, (list(files),)), timeout + CONNECT_TIMEOUT)
            sizes = {str(name): int(length or 0) for name, length in await cur.fetchall()}
            lacking = [name for name in files if sizes.get(name) != size]
            if lacking:
                return f"the leader has no complete WAL file {lacking[0]}", True, False
            problem = await slotwal.fetch(conn, pg_wal, files, size, timeout + CONNECT_TIMEOUT)
            return (problem, True, False) if problem else None
    except TimeoutError:
        return f"a query timed out after {timeout:g}s", False, True
    except (psycopg.Error, OSError, ValueError) as exc:
        return str(exc), False, isinstance(exc, psycopg.OperationalError)
    except BaseException:
        slotwal.clear_staging(pg_wal)  # cancelled (the agent stops): leave nothing behind
        raise


_STATE_RESTART_LSN = slice(96, 104)
"""Where a slot state file keeps restart_lsn (PostgreSQL 11-16): after magic, checksum, version and length
(16 bytes), the slot's name (64), database, persistency, xmin and catalog_xmin (4 each). In the server's byte
order, which is this host's: a physical replica runs on the primary's architecture."""

_SNAPSHOT_MAX = 64 * 1024 * 1024
"""A serialized decoding snapshot holds the transactions in progress: a few KB, far less than this."""


def state_restart_lsn(state: bytes) -> int:
    """The restart_lsn recorded in a slot's state file (the one the copy starts decoding from)."""
    return int.from_bytes(state[_STATE_RESTART_LSN], sys.byteorder)


def snapshot_file(lsn: int) -> str:
    """The name PostgreSQL gives the decoding snapshot serialized at `lsn` in pg_logical/snapshots."""
    return f"{lsn >> 32:X}-{lsn & 0xFFFFFFFF:X}.snap"


async def _read_snapshot(conn: AsyncConn, lsn: int) -> tuple[str, bytes] | None:
    """The leader's decoding snapshot at `lsn`, None if it has none there (a slot that never moved since
    its creation: its decoding starts from WAL on the leader too, and reaches the same consistent point)."""
    name = snapshot_file(lsn)
    cur = await conn.execute("SELECT pg_read_binary_file(%s::text, 0, %s, true)",
                             (f"pg_logical/snapshots/{name}", _SNAPSHOT_MAX))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    return name, bytes(row[0])


def write_slot_states(replslot: Path, states: Iterable[tuple[str, bytes]]) -> PgResult:
    """Write each (name, state file) as `replslot/<name>/state`: the directory 0700, the file 0600, written to
    `state.tmp`, fsynced, renamed, then the slot's directory and `replslot` fsynced, so a crash leaves either
    no slot or a whole one (PostgreSQL removes a leftover `state.tmp` at start)."""
    written: list[str] = []
    try:
        for name, data in states:
            if not _SLOT_NAME.match(name):
                return PgResult.failed(f"invalid slot name: {name}")
            slot_dir = replslot / name
            slot_dir.mkdir(mode=0o700, parents=False, exist_ok=True)
            os.chmod(slot_dir, 0o700)
            _write_durably(slot_dir / "state.tmp", slot_dir / "state", data)
            _fsync_dir(slot_dir)
            written.append(name)
        _fsync_dir(replslot)
    except OSError as exc:
        return PgResult.failed(f"writing slot state files failed: {exc}")
    return PgResult(True, f"wrote slot state files: {', '.join(written)}")


_SNAPSHOT_NAME = re.compile(r"^[0-9A-F]{1,8}-[0-9A-F]{1,8}\.snap$")


def write_snapshots(directory: Path, snapshots: Iterable[tuple[str, bytes]]) -> PgResult:
    """Write each (file name, content) into `directory` (pg_logical/snapshots) as PostgreSQL does: a temporary
    file fsynced, renamed, the directory fsynced. Names are checked: they come from the leader."""
    count = 0
    try:
        for name, data in snapshots:
            if not _SNAPSHOT_NAME.match(name):
                return PgResult.failed(f"invalid decoding snapshot name: {name!r}")
            _write_durably(directory / f"{name}.tmp", directory / name, data)
            count += 1
        if count:
            _fsync_dir(directory)
    except OSError as exc:
        return PgResult.failed(f"writing decoding snapshots failed: {exc}")
    return PgResult(True, f"wrote {count} decoding snapshots")


def _write_durably(tmp: Path, final: Path, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_log_slot_problem = RateLimitedLog(logging.getLogger("pgwarden.slots"), 300.0, logging.ERROR)
"""A logical slot pgwarden cannot create: one error line every few minutes, not one per cycle."""


async def _slots_in_use(conn: AsyncConn) -> dict[str, int | None]:
    """Every slot on this node (physical or logical) -> the PID of the process using it, if any."""
    cur = await conn.execute("SELECT slot_name::text, active_pid FROM pg_replication_slots")
    return {str(name): pid if isinstance(pid, int) else None for name, pid in await cur.fetchall()}


async def _physical_slots(conn: AsyncConn) -> dict[str, int | None]:
    """Physical slots on this node -> the PID of the walsender using each, if any."""
    cur = await conn.execute(
        "SELECT slot_name::text, active_pid FROM pg_replication_slots WHERE slot_type = 'physical'")
    return {str(name): pid if isinstance(pid, int) else None for name, pid in await cur.fetchall()}
