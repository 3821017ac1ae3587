"""Running PostgreSQL's binaries: asyncio subprocesses with a timeout, output kept for messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgwarden.aio import bounded


@dataclass(frozen=True, slots=True)
class PgResult:
    """How one adapter operation went. Expected failures are values, not exceptions."""

    ok: bool
    message: str = ""

    @classmethod
    def failed(cls, message: str) -> PgResult:
        return cls(False, message)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    returncode: int | None
    """None when the command timed out and was killed."""
    output: str
    """stdout and stderr, interleaved."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 5) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def child_env(extra: Mapping[str, str] | None = None, *, c_locale: bool = True) -> dict[str, str]:
    """The environment for PostgreSQL binaries: C locale so their output parses the same everywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRONI_")}
    if c_locale:
        env.update({"LC_ALL": "C", "LANG": "C"})
    if extra:
        env.update(extra)
    return env


async def run_command(
    argv: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    kill_group: bool = True,
    c_locale: bool = True,
) -> CommandOutcome:
    """Run `argv`, wait at most `timeout` seconds, and kill it (and, with `kill_group`, its children) after.

    pg_ctl start must use kill_group=False: the postmaster it launches lives in the same process group.
    initdb uses c_locale=False: the new cluster's locale comes from the environment.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(env, c_locale=c_locale),
            start_new_session=True,  # a Ctrl-C aimed at pgwarden must not reach PostgreSQL
        )
    except OSError as exc:
        return CommandOutcome(127, f"cannot run {argv[0]}: {exc}")
    try:
        stdout, _ = await bounded(proc.communicate(), timeout)
    except TimeoutError:
        _kill(proc, kill_group)
        with contextlib.suppress(TimeoutError):
            await bounded(proc.wait(), 5)
        return CommandOutcome(None, f"{os.path.basename(argv[0])} timed out after {timeout:g}s")
    return CommandOutcome(proc.returncode, stdout.decode(errors="replace"))


def _kill(proc: asyncio.subprocess.Process, kill_group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if kill_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
