"""`patroni.dynamic.json` in the data directory: the last `/config` this agent adopted.

As Patroni does, the agent keeps a copy of the cluster's dynamic configuration next to the data it
describes and uses it when the DCS holds no `/config` (the DCS was wiped or replaced): the cluster
keeps its `ttl`, `loop_wait`, PostgreSQL parameters, ... instead of falling back to this node's
`bootstrap.dcs`, and the leader writes it back as `/config`. The file is written atomically (a
temporary file, fsync, rename), mode 0600, by the agent's user (the data directory's owner), and
only into an initialized data directory (`PG_VERSION` present): an empty one must stay empty for
initdb and pg_basebackup.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("pgwarden")

CACHE_NAME = "patroni.dynamic.json"


def cache_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / CACHE_NAME


def read_cache(data_dir: str | Path) -> dict[str, Any] | None:
    """The cached dynamic configuration, or None when there is none or it is unreadable."""
    path = cache_path(data_dir)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


def write_cache(data_dir: str | Path, value: Mapping[str, Any]) -> bool:
    """Replace the cache with `value` atomically; False (nothing written) when the data directory is
    not an initialized one or the write failed (logged)."""
    directory = Path(data_dir)
    if not (directory / "PG_VERSION").is_file():
        return False
    path = cache_path(directory)
    tmp = directory / f".{CACHE_NAME}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dict(value), out, separators=(",", ":"), sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True
