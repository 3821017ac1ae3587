"""`reinit --wait`: follow a member's re-clone through GET /patroni and show it as a progress bar.

The agent may publish the base backup's progress in its status JSON as

    "progress": {"action": "basebackup", "done": <bytes>, "total": <bytes>}

(`done_kb`/`total_kb` in kilobytes, as pg_basebackup --progress counts, are accepted too). With it the
bar is determinate; without it the bar only shows the member's state until PostgreSQL runs again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pgwarden.cli.session import console
from pgwarden.model import PgState

FAILED_STATES = frozenset({PgState.START_FAILED, PgState.BOOTSTRAP_FAILED, PgState.RESTART_FAILED,
                           PgState.STOP_FAILED})
MB = 1024 * 1024
POLL_INTERVAL = 1.0  # seconds between GET /patroni calls


@dataclass(frozen=True, slots=True)
class ReinitSnapshot:
    """One reading of the member's status during a reinitialize."""

    state: str
    done: int | None = None  # bytes copied so far, when the agent reports it
    total: int | None = None
    finished: bool = False
    failed: bool = False


def _bytes(progress: Mapping[str, Any], name: str) -> int | None:
    value = progress.get(name)
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    value = progress.get(f"{name}_kb")
    if isinstance(value, int | float) and value >= 0:
        return int(value) * 1024
    return None


def reinit_snapshot(status: Mapping[str, Any], before_start_time: str | None, seen_other: bool) -> ReinitSnapshot:
    """Where the reinitialize stands, from a GET /patroni body.

    Finished when PostgreSQL runs again after it was seen doing something else, or runs with a new
    postmaster start time than before the request (a fast re-clone between two polls)."""
    state = str(status.get("state", "unknown"))
    progress = status.get("progress") or status.get("basebackup")
    done = total = None
    if isinstance(progress, Mapping):
        done, total = _bytes(progress, "done"), _bytes(progress, "total")
    restarted = status.get("postmaster_start_time") not in (None, before_start_time)
    finished = state == PgState.RUNNING and (seen_other or restarted)
    return ReinitSnapshot(state, done, total, finished, state in FAILED_STATES)


def amount_text(snapshot: ReinitSnapshot) -> str:
    """'12.5/100.0 MB' when the agent reports the copy's progress, else nothing."""
    if snapshot.done is None:
        return ""
    total = f"{snapshot.total / MB:.1f}" if snapshot.total else "?"
    return f"{snapshot.done / MB:.1f}/{total} MB"


async def follow_reinit(
    name: str,
    fetch_status: Callable[[], Awaitable[Mapping[str, Any] | None]],
    before_start_time: str | None,
    timeout: float,
) -> ReinitSnapshot:
    """Poll until finished, failed or `timeout` seconds; show a bar. `fetch_status` returns None when the
    member does not answer (it is then shown as unreachable, and polling goes on)."""
    deadline = time.monotonic() + timeout
    seen_other = False
    snapshot = ReinitSnapshot("unknown")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{name}: reinitializing", total=None, amount="")
        while time.monotonic() < deadline:
            status = await fetch_status()
            if status is not None:
                snapshot = reinit_snapshot(status, before_start_time, seen_other)
                seen_other = seen_other or snapshot.state != PgState.RUNNING
                bar.update(task, description=f"{name}: {snapshot.state}", completed=snapshot.done or 0,
                           total=snapshot.total, amount=amount_text(snapshot))
                if snapshot.finished or snapshot.failed:
                    if snapshot.finished:
                        bar.update(task, total=snapshot.total or 1, completed=snapshot.total or 1)
                    return snapshot
            else:
                bar.update(task, description=f"{name}: not answering (agent busy or restarting)")
            await asyncio.sleep(POLL_INTERVAL)
    return snapshot
