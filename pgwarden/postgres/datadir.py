"""Facts about a data directory that need no connection: its state, pg_controldata, the postmaster."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from pgwarden.model import LSN, DataDirState, lsn_from_text
from pgwarden.postgres.process import run_command
from pgwarden.postgres.settings import PgSettings

CONTROLDATA_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ControlData:
    """The pg_controldata fields pgwarden uses."""

    sysid: str | None = None
    cluster_state: str | None = None
    timeline: int | None = None
    checkpoint_lsn: LSN | None = None
    wal_log_hints: bool | None = None
    checksums: bool | None = None

    @property
    def cleanly_shut_down(self) -> bool:
        return self.cluster_state in ("shut down", "shut down in recovery")


def parse_controldata(text: str) -> ControlData:
    """Parse `pg_controldata` output (run with LC_ALL=C). Unknown or malformed fields stay None."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return ControlData(
        sysid=fields.get("Database system identifier") or None,
        cluster_state=fields.get("Database cluster state") or None,
        timeline=_int_or_none(fields.get("Latest checkpoint's TimeLineID")),
        checkpoint_lsn=_lsn_or_none(fields.get("Latest checkpoint location")),
        wal_log_hints=_onoff(fields.get("wal_log_hints setting")),
        checksums=_checksums(fields.get("Data page checksum version")),
    )


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _lsn_or_none(text: str | None) -> LSN | None:
    try:
        return lsn_from_text(text) if text else None
    except ValueError:
        return None


def _onoff(text: str | None) -> bool | None:
    return None if text is None else text == "on"


def _checksums(text: str | None) -> bool | None:
    version = _int_or_none(text)
    return None if version is None else version > 0


async def read_controldata(settings: PgSettings) -> ControlData | None:
    """pg_controldata of the data directory, or None if it could not be read."""
    outcome = await run_command(
        [settings.binary("pg_controldata"), "-D", str(settings.data_dir)], CONTROLDATA_TIMEOUT
    )
    if not outcome.ok:
        return None
    parsed = parse_controldata(outcome.output)
    return parsed if parsed.sysid else None


def directory_state(data_dir: Path) -> DataDirState:
    """What the directory looks like before asking pg_controldata: missing, empty, or something to check.

    Returns VALID for "looks like a data directory"; the caller downgrades it to INVALID when
    pg_controldata cannot read it.
    """
    try:
        if not data_dir.exists():
            return DataDirState.MISSING
        if not data_dir.is_dir():
            return DataDirState.INVALID
        entries = os.listdir(data_dir)
    except PermissionError:
        return DataDirState.INACCESSIBLE
    except OSError:
        return DataDirState.INACCESSIBLE
    if not entries:
        return DataDirState.EMPTY
    if "PG_VERSION" not in entries or not (data_dir / "global" / "pg_control").is_file():
        return DataDirState.INVALID
    return DataDirState.VALID


def postmaster_pid(data_dir: Path) -> int | None:
    """The PID of a live postmaster serving `data_dir`, from postmaster.pid, or None.

    A stale file (crash, reboot) or a PID reused by another program does not count.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not process_alive(pid):
        return None
    return pid if _looks_like_postgres(pid) else None


def process_alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _zombie(pid)


async def wait_for_reaped_postmaster(data_dir: Path, timeout: float) -> bool:
    """Wait until a killed postmaster named in postmaster.pid is gone even as a zombie.

    PostgreSQL refuses to start while the PID in its lock file still exists, and a SIGKILLed
    postmaster stays a zombie until its parent (init, after pg_ctl exited) reaps it, which some
    init processes do only every second or so. True when no such process is left.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return True
        if pid <= 0 or not _zombie(pid):
            return True
        reap_orphaned_postgres()
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)


def _zombie(pid: int) -> bool:
    """A killed postmaster stays a zombie until its parent (often init) reaps it: it is dead already."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _looks_like_postgres(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # no /proc: signal 0 is all we can know
    return comm.startswith(("postgres", "postmaster"))


def become_subreaper() -> bool:
    """Make orphaned descendants (a postmaster whose pg_ctl exited) children of this process.

    Then a killed postmaster can be reaped at once by `reap_orphaned_postgres` instead of staying a
    zombie until init gets round to it (some container inits take seconds), which would block the
    restart in place. Linux only; False where unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


_PR_SET_CHILD_SUBREAPER = 36


def reap_orphaned_postgres() -> int:
    """Reap zombie PostgreSQL processes that were reparented to us; returns how many.

    Only processes named postgres/postmaster are touched: the exit statuses of the commands
    pgwarden runs itself (pg_ctl, pg_basebackup, ...) belong to asyncio and must not be stolen.
    """
    me, reaped = os.getpid(), 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 2 or fields[0] != "Z" or int(fields[1]) != me:
            continue
        if not comm.startswith(("postgres", "postmaster")):
            continue
        try:
            os.waitpid(int(entry), os.WNOHANG)
            reaped += 1
        except ChildProcessError:
            pass
    return reaped
