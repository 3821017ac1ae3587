"""Patroni itself as a member of a `LocalCluster`: the rolling-migration tests' other side.

Patroni is a black box here: it is run only through its command line (`patroni CONFIG`,
`patronictl -c CONFIG ...`), from the very configuration file a pgwarden node of the cluster uses, as
the same OS user, and observed through its REST API, its log and the keys it writes. It lives in its
own virtualenv (`scripts/setup.sh` installs it in /opt/patroni/venv, or `PGWARDEN_PATRONI_VENV`).

A node runs Patroni when its `Node.command` is `patroni_command()`: set it (or reset it to None, pgwarden)
between a stop and a start to migrate it, keeping its data directory and its configuration file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pgwarden.localcluster.postgres import PG_USER

PATRONI_VENV = Path(os.environ.get("PGWARDEN_PATRONI_VENV", "/opt/patroni/venv"))


def patroni_bin(name: str = "patroni") -> Path:
    """A program of Patroni's virtualenv (`patroni`, `patronictl`)."""
    return PATRONI_VENV / "bin" / name


def patroni_available() -> bool:
    """True when Patroni and patronictl are installed (the migration tests skip otherwise)."""
    return all(os.access(patroni_bin(name), os.X_OK) for name in ("patroni", "patronictl"))


def patroni_command() -> tuple[str, ...]:
    """The command that runs one Patroni member; its configuration file is appended (`LocalCluster`)."""
    return (str(patroni_bin("patroni")),)


def is_patroni(command: Sequence[str] | None) -> bool:
    """Whether a node's command runs Patroni (None is pgwarden, the cluster's default)."""
    return bool(command) and Path(command[0]).name == "patroni"  # type: ignore[index]


def patronictl(config_path: Path, *args: str, timeout: float = 60,
               input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """`patronictl -c CONFIG ARGS...` as an operator runs it, as the postgres user when we are root
    (the file is that user's), its output captured; never raises on a non-zero exit."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PAGER": "cat", "EDITOR": "true"}
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        [str(patroni_bin("patronictl")), "-c", str(config_path), *args], capture_output=True, text=True,
        timeout=timeout, check=False, env=env, input=input_text, cwd="/tmp", **kwargs)
    return done


def validate_config(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`patroni --validate-config CONFIG`: Patroni's own verdict on a configuration file."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
    return subprocess.run([str(patroni_bin("patroni")), "--validate-config", str(config_path)], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def kill_postmaster_tree(pid: int) -> None:
    """SIGKILL a postmaster and its children at once, as with the host's death, whoever started it.

    pgwarden's postmaster leads its own process group, so `kill_postmaster_group` kills the whole
    instance; Patroni's does not (it stays in the group of the process that started it), so the group
    kill misses it and the instance would outlive its agent: kill the postmaster and its children
    by PID too."""
    children = _children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for each in (pid, *children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (from /proc; empty where it cannot be read)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found
