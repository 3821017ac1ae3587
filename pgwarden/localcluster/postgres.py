"""Local PostgreSQL: where its binaries are, and the OS user it runs as.

PostgreSQL refuses to run as root, so when this process is root, the directories PostgreSQL writes to
are given to `PG_USER` and the processes that run it (agents, the tests' workers) switch to that user.
Live postmasters are found through `pgwarden.postgres.datadir.postmaster_pid`, as the agent finds them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from pathlib import Path

from pgwarden.postgres.settings import DEFAULT_BIN_DIR

PG_BIN = str(DEFAULT_BIN_DIR)
PG_USER = "postgres"


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def pg_available() -> bool:
    """True when PostgreSQL's binaries and the postgres user exist (and we can become it)."""
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return False
    can_switch = os.geteuid() == 0 or current_user() == PG_USER
    return can_switch and (DEFAULT_BIN_DIR / "postgres").is_file()


def give_to_pg_user(path: Path) -> None:
    """As root: make `path` and everything below it PG_USER's, `path` itself private (0700)."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(PG_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    os.chmod(path, 0o700)


def kill_postmaster_group(pid: int) -> None:
    """SIGKILL a postmaster's process group (it leads one): the whole instance dies at once, as with the host."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
