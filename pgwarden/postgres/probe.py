"""One cheap look at the local PostgreSQL, returned as `pgwarden.model.LocalPg`. Never raises."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.aio import bounded
from pgwarden.logutil import RateLimitedLog
from pgwarden.model import LSN, DataDirState, LocalPg, LogicalSlot, ReplicationRow, WalReceiver, lsn_from_text
from pgwarden.postgres.conf import STATE_FILE, following_from_state
from pgwarden.postgres.connection import connect_local, local_conninfo
from pgwarden.postgres.datadir import (
    ControlData,
    can_open_files,
    directory_state,
    out_of_file_descriptors,
    postmaster_pid,
    read_controldata,
)
from pgwarden.postgres.settings import PgSettings
from pgwarden.postgres.timelines import with_forked_timeline

log = logging.getLogger(__name__)
_fd_log = RateLimitedLog(log, 10.0)

PROBE_TIMEOUT = 4.0
PROBE_STATEMENT_TIMEOUT_MS = 2000

# One round trip. pg_current_wal_lsn() and pg_walfile_name() fail during recovery, so CASE guards them
# (pg_is_in_recovery() is volatile: the planner cannot fold the branches away).
PROBE_QUERY = """
SELECT pg_is_in_recovery(),
       current_setting('server_version_num')::int,
       pg_postmaster_start_time()::text,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
       pg_last_xact_replay_timestamp()::text,
       (SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT row_to_json(w) FROM (SELECT status, sender_host, sender_port, slot_name,
                                           latest_end_lsn::text AS latest_end_lsn, received_tli
                                      FROM pg_stat_wal_receiver) w),
       (SELECT coalesce(json_agg(r ORDER BY r.application_name), '[]')
          FROM (SELECT application_name, client_addr::text AS client_addr, state, sync_state,
                       sync_priority, usename::text AS usename, write_lsn::text AS write_lsn,
                       flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn
                  FROM pg_stat_replication) r),
       (SELECT coalesce(json_agg(json_build_array(slot_name::text, restart_lsn::text, slot_type, database::text,
                                                  plugin::text, confirmed_flush_lsn::text, catalog_xmin::text)
                                 ORDER BY slot_name), '[]')
          FROM pg_replication_slots),
       EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart),
       CASE WHEN pg_is_in_recovery() THEN
            (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir()
              WHERE name ~ '^[0-9A-F]{8}[.]history$') END,
       current_setting('synchronous_standby_names'),
       current_setting('restore_command') <> '',
       current_setting('wal_level')
"""


async def probe(settings: PgSettings) -> LocalPg:
    """Everything the local PostgreSQL tells about itself right now (a fresh connection each call)."""
    return await Prober(keep_connection=False).probe(settings)


class Prober:
    """Probes repeatedly for the agent: one kept connection, and pg_controldata only when pg_control changed.

    A probe a second must stay cheap for the machine, not only for the agent: a fresh session each
    time costs PostgreSQL a backend fork and an authentication, and pg_controldata costs a fork and
    exec. The session is re-opened when it breaks or the connection settings change; concurrent
    callers (the monitor and the HA cycle) take turns, each getting a probe of its own.
    """

    def __init__(self, *, keep_connection: bool = True) -> None:
        self._keep = keep_connection
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._settings: PgSettings | None = None  # what the kept session was opened for
        self._conninfo: str | None = None
        self._control = ControlDataCache()
        self._turn = asyncio.Lock()
        self._last: LocalPg | None = None  # the last probe taken while files could be opened

    async def probe(self, settings: PgSettings) -> LocalPg:
        """See module docstring. Any unexpected error becomes a LocalPg with what was learned so far.

        While the agent cannot open files (EMFILE/ENFILE, e.g. a flood of REST connections), a probe
        would see a missing postmaster.pid, an unreadable data directory, a pg_controldata that cannot
        start: none of it is true, and acting on it could stop a healthy primary or give up its
        leader key. Such a probe returns the last good observation instead (a transient condition)."""
        async with self._turn:
            try:
                pg = await bounded(self._probe(settings), PROBE_TIMEOUT + 6)
            except Exception as exc:  # the probe is the agent's eyes: it must never take the agent down
                if out_of_file_descriptors(exc) or not can_open_files():
                    return self._short_of_files(exc)
                log.warning("probe failed: %s", exc)
                await self._close()
                try:
                    return LocalPg(data_dir=directory_state(settings.data_dir))
                except OSError as again:  # EMFILE/ENFILE only (see directory_state)
                    return self._short_of_files(again)
            if (pg.data_dir is not DataDirState.VALID or not pg.accepting) and not can_open_files():
                return self._short_of_files(None)
            self._last = pg
            return pg

    def _short_of_files(self, exc: BaseException | None) -> LocalPg:
        _fd_log("probe: this process cannot open files (%s): keeping the last observation of PostgreSQL",
                exc or "too many open files")  # fmt: skip
        if self._last is not None:
            return self._last
        return LocalPg(data_dir=DataDirState.INACCESSIBLE)  # nothing observed yet: nothing to keep

    async def rows(self, settings: PgSettings, sql: str) -> list[tuple[Any, ...]] | None:
        """The rows of one read-only query on the kept session (taking its turn with the probes);
        None when PostgreSQL cannot answer. Used for what changes only when PostgreSQL restarts
        (the agent's copy of pg_settings, `config.gucs.GucCatalog`)."""
        async with self._turn:
            try:
                conn = await self._connection(settings)
                cur = await bounded(conn.execute(sql.encode()), PROBE_TIMEOUT)
                return list(await cur.fetchall())
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._close()
                log.debug("query failed: %s", exc)
                return None
            finally:
                if not self._keep:
                    await self._close()

    async def close(self) -> None:
        async with self._turn:
            await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _probe(self, settings: PgSettings) -> LocalPg:
        state = directory_state(settings.data_dir)
        if state is not DataDirState.VALID:
            return LocalPg(data_dir=state)
        control = await self._control.read(settings)
        if control is None:
            return LocalPg(data_dir=DataDirState.INVALID)
        pid = postmaster_pid(settings.data_dir)
        facts = LocalPg(
            data_dir=DataDirState.VALID,
            sysid=control.sysid,
            cluster_state=control.cluster_state,
            controldata_timeline=control.timeline,
            checkpoint_lsn=control.checkpoint_lsn,
            running=pid is not None,
            postmaster_pid=pid,
            standby_signal=(settings.data_dir / "standby.signal").exists(),
            following=_read_following(settings),
        )
        if pid is None:
            await self._close()
            return facts
        row = await self._query(settings)
        if row is None:
            return facts
        return with_forked_timeline(apply_probe_row(facts, row), settings.data_dir / "pg_wal")

    async def _query(self, settings: PgSettings) -> Sequence[Any] | None:
        for attempt in (1, 2):  # a kept connection may have died since the last probe: retry once, fresh
            try:
                conn = await self._connection(settings)
                cur = await bounded(conn.execute(PROBE_QUERY), PROBE_TIMEOUT)
                row = await cur.fetchone()
                if not self._keep:
                    await self._close()
                return row
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._close()
                if attempt == 2:
                    log.debug("probe query failed: %s", exc)
        return None

    async def _connection(self, settings: PgSettings) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if settings != self._settings:  # another configuration: the session may need other connection settings
            self._settings = settings
            conninfo = local_conninfo(settings, PROBE_STATEMENT_TIMEOUT_MS)
            if conninfo != self._conninfo:
                await self._close()
                self._conninfo = conninfo
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await bounded(connect_local(settings, PROBE_STATEMENT_TIMEOUT_MS), PROBE_TIMEOUT)
        self._conn = conn
        return conn


class ControlDataCache:
    """pg_controldata, re-run only when `global/pg_control` may have changed since the last run.

    The file's identity, size and timestamps say whether it changed, except within the timestamp's
    granularity (a kernel tick): a file modified less than RACY_WINDOW seconds before it was read is
    read again next time, so a second write within the same tick is never missed.
    """

    RACY_WINDOW = 2.0

    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._data: ControlData | None = None

    async def read(self, settings: PgSettings) -> ControlData | None:
        key = _file_key(settings.data_dir / "global" / "pg_control")
        if key is not None and key == self._key and self._data is not None:
            return self._data
        data = await read_controldata(settings)
        settled = key is not None and time.time() - key[-1] / 1e9 > self.RACY_WINDOW  # key[-1]: mtime
        self._key, self._data = (key, data) if settled and data is not None else (None, None)
        return data


def _file_key(path: Path) -> tuple[int, ...] | None:
    """What tells one version of a file from another: device, inode, size, then ctime and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns, st.st_mtime_ns)


def _read_following(settings: PgSettings) -> str | None:
    try:
        return following_from_state((settings.data_dir / STATE_FILE).read_text())
    except OSError:
        return None


def apply_probe_row(facts: LocalPg, row: Sequence[Any]) -> LocalPg:
    """Fold one PROBE_QUERY row into the connection-less facts."""
    (in_recovery, version, started, wal_lsn, walfile, receive_lsn, replay_lsn, paused, replay_ts,
     checkpoint_tli, receiver_json, replication_json, slots_json, pending, history_tli, ssn, restores,
     wal_level) = row
    receiver = _wal_receiver(receiver_json)
    physical = _slot_rows(slots_json)
    checkpoint_tli = max(checkpoint_tli or 0, history_tli or 0) or None
    return replace(
        facts,
        accepting=True,
        in_recovery=bool(in_recovery),
        timeline=_timeline(bool(in_recovery), walfile, checkpoint_tli, receiver),
        wal_lsn=_lsn(wal_lsn),
        receive_lsn=_lsn(receive_lsn),
        replay_lsn=_lsn(replay_lsn),
        replay_paused=bool(paused),
        replayed_timestamp=replay_ts,
        wal_receiver=receiver,
        replication=tuple(_replication_row(r) for r in replication_json or ()),
        slots=tuple(name for name, _ in physical),
        slot_lsns=physical,
        logical_slots=_logical_slot_rows(slots_json),
        wal_level=wal_level,
        server_version=int(version),
        postmaster_start_time=started,
        pending_restart=bool(pending),
        synchronous_standby_names=ssn,
        restore_command=bool(restores),
    )


def _timeline(in_recovery: bool, walfile: str | None, checkpoint_tli: int | None,
              receiver: WalReceiver | None) -> int | None:
    """A primary's timeline is in its current WAL file name; pg_control lags right after a promote.

    A standby's newest timeline is the one its WAL receiver streams; without one (its upstream just
    died), the newest of its last restartpoint's and of the timeline history files in pg_wal: a standby
    fetches `<tli>.history` when it switches to that timeline, long before its next restartpoint.
    """
    if not in_recovery and walfile:
        return int(walfile[:8], 16)
    if receiver is not None and receiver.received_tli:
        return max(receiver.received_tli, checkpoint_tli or 0)
    return checkpoint_tli


def _slot_rows(rows: Any) -> tuple[tuple[str, LSN | None], ...]:
    """The physical slots as the probe query lists them: [name, restart_lsn, type, ...] rows (a bare name: no
    LSN; no type: physical)."""
    out: list[tuple[str, LSN | None]] = []
    for row in rows or ():
        if isinstance(row, str):
            out.append((row, None))
        elif isinstance(row, list | tuple) and row and (len(row) < 3 or row[2] in (None, "physical")):
            out.append((str(row[0]), _lsn(row[1]) if len(row) > 1 else None))
    return tuple(sorted(out, key=lambda row: row[0]))


def _logical_slot_rows(rows: Any) -> tuple[LogicalSlot, ...]:
    """The logical slots of the probe query's slot rows: [name, restart_lsn, 'logical', database, plugin,
    confirmed_flush_lsn, catalog_xmin]."""
    out: list[LogicalSlot] = []
    for row in rows or ():
        if not (isinstance(row, list | tuple) and len(row) >= 7 and row[2] == "logical"):
            continue
        xmin = row[6]
        out.append(LogicalSlot(name=str(row[0]), database=_text(row[3]), plugin=_text(row[4]),
                               confirmed_flush=_lsn(row[5]), restart_lsn=_lsn(row[1]),
                               catalog_xmin=int(xmin) if isinstance(xmin, str) and xmin.isdigit() else None))
    return tuple(sorted(out, key=lambda slot: slot.name))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _lsn(text: str | None) -> LSN | None:
    if not text:
        return None
    try:
        return lsn_from_text(text)
    except ValueError:
        return None


def _wal_receiver(data: Mapping[str, Any] | None) -> WalReceiver | None:
    if not data:
        return None
    return WalReceiver(
        status=str(data.get("status")),
        sender_host=data.get("sender_host"),
        sender_port=data.get("sender_port"),
        slot_name=data.get("slot_name"),
        latest_end_lsn=_lsn(data.get("latest_end_lsn")),
        received_tli=data.get("received_tli"),
    )


def _replication_row(data: Mapping[str, Any]) -> ReplicationRow:
    return ReplicationRow(
        application_name=str(data.get("application_name") or ""),
        client_addr=data.get("client_addr"),
        state=data.get("state"),
        sync_state=data.get("sync_state"),
        sync_priority=int(data.get("sync_priority") or 0),
        usename=data.get("usename"),
        write_lsn=_lsn(data.get("write_lsn")),
        flush_lsn=_lsn(data.get("flush_lsn")),
        replay_lsn=_lsn(data.get("replay_lsn")),
    )
