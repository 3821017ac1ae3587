"""Keeping the long-lived agent process small."""

from __future__ import annotations

import ctypes


def trim_heap() -> None:
    """Give the free pages of the C heap back to the OS (glibc's malloc_trim); a no-op elsewhere.

    Imports and start-up leave about a megabyte free but resident; the agent calls this once it is
    running, and after rare bursts of work (a new configuration)."""
    try:
        libc = ctypes.CDLL(None)
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    malloc_trim(0)
