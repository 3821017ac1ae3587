"""Running PostgreSQL's binaries: asyncio subprocesses with a timeout, output kept for messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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


_SEVERITY = re.compile(r"\b(LOG|WARNING|ERROR|FATAL|PANIC):\s+(.*)$")
_SEVERE = ("ERROR", "FATAL", "PANIC")
_LOG_PREFIX = re.compile(r"\[\d+\]\s*$|^\s*$")  # log_line_prefix ending in the PID: "... UTC [123] "
_ANNOTATION = re.compile(r"\b(HINT|DETAIL|CONTEXT|STATEMENT):\s")
_ERROR_WORD = re.compile(r"\berror\b", re.IGNORECASE)
_BOILERPLATE = ("Examine the log output", "could not start server", "waiting for server to start", "stopped waiting")


def error_summary(text: str, limit: int = 400) -> str:
    """The meaningful part of a failed command's output (pg_ctl, initdb, pg_basebackup, the server's log):
    PostgreSQL's last ERROR/FATAL/PANIC line with the LOG or ERROR lines that led to it (a "configuration
    file contains errors" FATAL follows the line naming the parameter), else the last line that is not
    pg_ctl's boilerplate. One line, at most `limit` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    parsed = [_SEVERITY.search(line) for line in lines]
    last = max((i for i, m in enumerate(parsed) if m and m.group(1) in _SEVERE), default=None)
    if last is not None:
        match = parsed[last]
        assert match is not None
        prefix = lines[last][: match.start()]
        if prefix.strip() and not _LOG_PREFIX.search(prefix):
            # A client's message quoting the server ("pg_basebackup: error: connection ... failed: FATAL: ...")
            parts = [" ".join(lines[last].split())]
        else:
            parts = [f"{match.group(1)}: {match.group(2).strip()}"]
        for i in range(last - 1, max(-1, last - 6), -1):
            before = parsed[i]
            if before is None:
                if _ANNOTATION.search(lines[i]):
                    continue
                break
            if before.group(1) in ("FATAL", "PANIC"):
                break
            if before.group(1) in ("LOG", "ERROR") and before.group(2).strip() not in parts:
                parts.insert(0, before.group(2).strip())
        summary = "; ".join(parts)
    else:
        useful = [line for line in lines if not any(b in line for b in _BOILERPLATE)] or lines
        errors = [line for line in useful if _ERROR_WORD.search(line)]
        summary = (errors or useful or [""])[-1]
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."


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
