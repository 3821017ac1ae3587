"""Facts about a data directory that need no connection: its state, pg_controldata, the postmaster."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from pgwarden.config.paths import data_dir_problem
from pgwarden.model import LSN, DataDirState, lsn_from_text
from pgwarden.postgres.process import PgResult, run_command
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


FD_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})


def out_of_file_descriptors(exc: BaseException) -> bool:
    """`exc` is "too many open files" (this process, EMFILE, or the whole system, ENFILE)."""
    return isinstance(exc, OSError) and exc.errno in FD_EXHAUSTED


def can_open_files() -> bool:
    """This process can open one more file right now (False only for EMFILE/ENFILE)."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return not out_of_file_descriptors(exc)
    os.close(fd)
    return True


def directory_state(data_dir: Path) -> DataDirState:
    """What the directory looks like before asking pg_controldata: missing, empty, or something to check.

    Returns VALID for "looks like a data directory"; the caller downgrades it to INVALID when
    pg_controldata cannot read it. Raises the OSError when this process cannot open a file at all
    (EMFILE, ENFILE): that says nothing about the directory.
    """
    try:
        if not data_dir.exists():
            return DataDirState.MISSING
        if not data_dir.is_dir():
            return DataDirState.INVALID
        entries = os.listdir(data_dir)
    except PermissionError:
        return DataDirState.INACCESSIBLE
    except OSError as exc:
        if out_of_file_descriptors(exc):
            raise
        return DataDirState.INACCESSIBLE
    if not entries:
        return DataDirState.EMPTY
    if "PG_VERSION" not in entries or not (data_dir / "global" / "pg_control").is_file():
        return DataDirState.INVALID
    return DataDirState.VALID


# ---------------------------------------------------------------------------------------------------
# Replacing a data directory's contents, safely.
#
# pgwarden never renames or deletes the data directory itself (it may be a mount point, a symlink, or
# a directory the operator made with its own owner and mode): it moves or removes what is *inside* it,
# and only when the directory is owned by the user pgwarden runs as. A symlink is followed: its
# target's contents are what counts, and the link stays. Of the copies moved aside
# (`<dir>.failed.<timestamp>`, next to the real directory) at most one is kept.

FAILED_INFIX = ".failed."


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def replace_problem(data_dir: Path) -> str | None:
    """Why pgwarden must not move or remove the contents of `data_dir`, or None when it may (also when
    there is nothing there). Refused: a system path, something that is not a directory, a directory
    owned by another user than the one pgwarden runs as."""
    problem = data_dir_problem(str(data_dir))
    if problem is None and data_dir.exists():
        problem = data_dir_problem(str(data_dir.resolve()))
    if problem is not None:
        return problem
    try:
        info = data_dir.stat()  # follows a symlink: the target is what holds the data
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot inspect the data directory {data_dir}: {exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"the data directory {data_dir} is not a directory: refusing to touch it"
    me = os.geteuid()
    if info.st_uid != me:
        return (f"the data directory {data_dir} is owned by {_user(info.st_uid)}, not by {_user(me)} that "
                "pgwarden runs as: refusing to create, move or remove anything in it (fix its owner)")
    return None


def failed_copies(data_dir: Path) -> list[Path]:
    """The copies of this data directory moved aside earlier (`<dir>.failed.*` next to the real directory),
    oldest first."""
    real = data_dir.resolve()
    found = glob.glob(glob.escape(str(real.parent / (real.name + FAILED_INFIX))) + "*")
    return sorted(Path(p) for p in found if os.path.isdir(p) and not os.path.islink(p))


def _remove_entries(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def empty_data_dir(data_dir: Path) -> PgResult:
    """Remove everything inside `data_dir` (the directory, and a symlink to it, stay)."""
    problem = replace_problem(data_dir)
    if problem is not None:
        return PgResult.failed(problem)
    if not data_dir.exists():
        return PgResult(True, f"{data_dir} does not exist")
    try:
        _remove_entries(data_dir)
    except OSError as exc:
        return PgResult.failed(f"could not empty the data directory {data_dir}: {exc}")
    return PgResult(True, f"emptied {data_dir}")


def set_data_dir_aside(data_dir: Path, stamp: str) -> PgResult:
    """Keep the contents of `data_dir` in `<dir>.failed.<stamp>` next to it and leave it empty; when a
    copy from an earlier failure is there already, the contents are removed instead: at most one copy
    is kept, the oldest (the first failure's data is the one likeliest to hold what no other member
    has; later ones are copies of the leader that failed again)."""
    problem = replace_problem(data_dir)
    if problem is not None:
        return PgResult.failed(problem)
    if not data_dir.exists():
        return PgResult(True, f"{data_dir} does not exist")
    earlier = failed_copies(data_dir)
    if earlier:
        emptied = empty_data_dir(data_dir)
        if not emptied.ok:
            return emptied
        return PgResult(True, f"emptied {data_dir} (keeping only the earlier copy {earlier[0]})")
    real = data_dir.resolve()
    copy = real.with_name(f"{real.name}{FAILED_INFIX}{stamp}")
    try:
        copy.mkdir(mode=0o700)
        for entry in sorted(os.listdir(real), key=lambda name: name != "global"):  # unusable at once
            os.rename(real / entry, copy / entry)
    except OSError as exc:
        return PgResult.failed(f"could not move the contents of {data_dir} aside to {copy}: {exc}")
    return PgResult(True, f"moved the contents of {data_dir} to {copy}")


def undo_created(data_dir: Path, existed: bool) -> PgResult:
    """After a failed bootstrap, remove what it created: the directory itself when it did not exist
    before (initdb made it: no user data in it), else what was put in the empty directory we found."""
    if existed or data_dir.is_symlink():
        return empty_data_dir(data_dir)
    problem = replace_problem(data_dir)
    if problem is not None:
        return PgResult.failed(problem)
    if not data_dir.exists():
        return PgResult(True, f"{data_dir} does not exist")
    try:
        shutil.rmtree(data_dir)
    except OSError as exc:
        return PgResult.failed(f"could not remove {data_dir}, created by the failed bootstrap: {exc}")
    return PgResult(True, f"removed {data_dir}, created by the failed bootstrap")


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
    return pid if _looks_like_postgres(pid, data_dir) else None


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
        with contextlib.suppress(ChildProcessError):  # ours (subreaper) whatever its name (bin_name)
            os.waitpid(pid, os.WNOHANG)
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


def _looks_like_postgres(pid: int, data_dir: Path | None = None) -> bool:
    """The process is a postgres (by name), or a postmaster running in `data_dir` (its working
    directory): a `postgres` renamed by `postgresql.bin_name` has another name."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # no /proc: signal 0 is all we can know
    if comm.startswith(("postgres", "postmaster")):
        return True
    try:
        return data_dir is not None and Path(os.readlink(f"/proc/{pid}/cwd")) == data_dir.resolve()
    except OSError:
        return False


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
