"""User scripts around PostgreSQL's life, as Patroni runs them.

* `postgresql.callbacks.{on_start,on_stop,on_restart,on_reload,on_role_change}`: notifications, run
  as `<command> <action> <role> <scope>` in the background. A callback still running when the next
  one of any kind fires is killed first (Patroni does the same), so a slow script never reorders events.
* `postgresql.pre_promote`: a fencing hook run before `pg_ctl promote` with the leader key held; a
  non-zero exit (or a timeout) cancels the promotion.
* `postgresql.before_stop`: run before PostgreSQL is stopped (its exit code is only logged).

Commands are split like a shell would (shlex), never run through a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Mapping

from pgwarden.aio import bounded
from pgwarden.core.snapshot import StandbyCluster
from pgwarden.engine.steps import HOOK_TIMEOUT
from pgwarden.postgres.process import child_env

log = logging.getLogger("pgwarden")

CALLBACK_ACTIONS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")


def callback_role(role: str, follow: str | None, standby_cluster: StandbyCluster | None) -> str:
    """The role a callback names for a PostgreSQL started (or re-pointed) as `role` following `follow`:
    `standby_leader` when it follows the remote primary of a standby cluster, as Patroni names it."""
    if standby_cluster is not None and follow == standby_cluster.follow_name:
        return "standby_leader"
    return role


class Callbacks:
    def __init__(self, commands: Mapping[str, str | None], scope: str) -> None:
        self._commands = {k: v for k, v in commands.items() if v}
        self._scope = scope
        self._running: asyncio.subprocess.Process | None = None
        self._reaper: asyncio.Task[None] | None = None

    def fire(self, action: str, role: str) -> None:
        """Start the `action` callback (if configured) in the background; never blocks, never raises."""
        command = self._commands.get(action)
        if not command:
            return
        argv = [*shlex.split(command), action, role, self._scope]
        self._reaper = asyncio.get_running_loop().create_task(self._run(argv), name=f"callback-{action}")

    async def _run(self, argv: list[str]) -> None:
        previous, self._running = self._running, None
        if previous is not None and previous.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(previous.pid, signal.SIGKILL)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=child_env(), start_new_session=True)
        except OSError as exc:
            log.warning("callback %s could not be started: %s", argv[0], exc)
            return
        self._running = proc
        log.info("callback started: %s", " ".join(argv))
        code = await proc.wait()
        if code != 0:
            log.warning("callback %s exited with %s", " ".join(argv), code)

    async def close(self) -> None:
        """Wait briefly for a running callback, so tests and shutdown see it complete."""
        if self._reaper is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await bounded(asyncio.shield(self._reaper), 5)


async def run_hook(command: str | None, what: str, timeout: float = HOOK_TIMEOUT) -> tuple[bool, str]:
    """Run a hook (pre_promote, before_stop) to completion. (True, "") when absent or it exits 0."""
    if not command:
        return True, ""
    try:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=child_env(), start_new_session=True)
    except OSError as exc:
        return False, f"{what} could not be started: {exc}"
    try:
        output, _ = await bounded(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return False, f"{what} timed out after {timeout:g}s"
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-3:]
        return False, f"{what} exited with {proc.returncode}: {' | '.join(tail)}"
    return True, ""
