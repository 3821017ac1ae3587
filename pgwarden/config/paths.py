"""Rules for filesystem paths in the configuration (stdlib only: the agent and the adapters use them too)."""

from __future__ import annotations

import posixpath

# Anything below these is the operating system's, never a PostgreSQL data directory.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/include")
# These directories themselves are the system's (their subdirectories may hold a data directory).
SYSTEM_DIRECTORIES = ("/usr/local", "/usr/share", "/usr/src", "/var/lib", "/var/log", "/var/run", "/var/tmp",
                      "/var/cache", "/var/spool", "/var/mail", "/var/opt", "/var/backups")


def data_dir_problem(path: str) -> str | None:
    """Why `path` cannot be a data directory pgwarden manages (it may create, fill, empty or move
    aside its contents), or None. An absolute path at least two levels deep, outside the system's
    directories: `/`, `/etc`, `/var`, `/home` or `/usr/lib` by mistake would be a disaster.

    A relative path (Patroni's own sample files use `data/postgresql0`, relative to the directory the
    agent starts in) is accepted when it names a subdirectory: not `.`, not above it (`..`). The
    adapter checks the absolute path again before it moves or removes anything
    (`postgres.datadir.replace_problem`)."""
    if not path or not path.strip():
        return "expected a path for the data directory, got an empty one"
    if not path.startswith("/"):
        relative = posixpath.normpath(path)
        if relative == "." or relative == ".." or relative.startswith("../"):
            return (f"refusing {path!r} as the data directory: a relative path must name a subdirectory "
                    "of the directory the agent starts in; better, give an absolute path")
        return None
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    depth = len([part for part in normal.split("/") if part])
    if depth < 2:
        return (f"refusing {path!r} as the data directory: it must be at least two levels deep "
                "(such as /var/lib/postgresql/15/main), not / or a top-level directory")
    for tree in SYSTEM_TREES:
        if normal == tree or normal.startswith(tree + "/"):
            return f"refusing {path!r} as the data directory: {tree} belongs to the operating system"
    if normal in SYSTEM_DIRECTORIES:
        return f"refusing {path!r} as the data directory: it is a system directory; use a directory below it"
    return None


def check_data_dir(value: str) -> str:
    """Validation rule (`After`) of `postgresql.data_dir`."""
    problem = data_dir_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value
