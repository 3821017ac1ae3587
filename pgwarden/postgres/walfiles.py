"""WAL segment files by name and size, and the room a file system has for them: what the logical slot
copies (`slotwal`), the rewind's free-space check (`controller.free_room`) and the timeline probe
(`timelines`) all need. Pure, except `free_space` (one statvfs)."""

from __future__ import annotations

import os
import re
from pathlib import Path

SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
"""A WAL segment file's name: timeline, then the segment number in two halves (8 hex digits each). Every name
coming from a leader is checked against it: nothing else is ever read or written."""

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
"""initdb's default --wal-segsize."""

_XLOGID = 0x100000000
_MIN_SEGMENT = 1024 * 1024
_MAX_SEGMENT = 1024 ** 3


def valid_segment_size(size: int) -> bool:
    """A WAL segment size PostgreSQL accepts (a power of two from 1 MB to 1 GB)."""
    return _MIN_SEGMENT <= size <= _MAX_SEGMENT and size & (size - 1) == 0


def segment_number(name: str, size: int) -> int:
    """The segment number of the WAL file `name` (its timeline ignored); times `size`, where it starts."""
    return int(name[8:16], 16) * (_XLOGID // size) + int(name[16:24], 16)


def segment_file(timeline: int, number: int, size: int) -> str:
    """The file name of segment `number` on `timeline` (PostgreSQL's XLogFileName)."""
    per_xlogid = _XLOGID // size
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


def free_space(path: Path) -> int:
    """Bytes available to unprivileged writers (PostgreSQL's user) on `path`'s file system."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
