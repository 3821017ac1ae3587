"""Configuration validated in a short-lived child process: how the agent stays free of pydantic.

Validation needs pydantic, and pydantic with the validators of our configuration costs about 9 MB
of memory that a process never gives back. The agent validates rarely (at start, on SIGHUP or
POST /reload, when `/config` changes, for PATCH/PUT /config), so it runs each validation in a child
Python process, `python -m pgwarden.config.checker`, which reads one JSON request on stdin, runs the
very functions the CLI and the tests run in-process (`loader`, `validation`), and writes the result
as JSON; `plain.from_plain` turns it back into the frozen configuration dataclasses. A child costs
about 0.3 s of CPU; the agent keeps its current configuration meanwhile.

Requests and answers (one JSON object each way):
    {"local": {"path": p, "environ": {...}}} -> {"local": {...}, "dynamic": {...}, "warnings": [...]}
                                               or {"problems": [...]} (the configuration is invalid)
    {"dynamic": <raw /config>}               -> {"dynamic": {...}, "warnings": [...]}
    {"config_problems": [<value>, ...]}      -> {"results": [[problem, ...], ...]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgwarden.aio import bounded
from pgwarden.config.dynamic import DynamicConfig
from pgwarden.config.errors import ConfigError
from pgwarden.config.plain import from_plain, to_plain
from pgwarden.config.schema import LocalConfig

CHECK_TIMEOUT = 60.0  # seconds; a starved machine can take a while to start a Python process


class CheckerError(Exception):
    """The validating child could not give an answer (it failed to start, crashed or timed out)."""


class ConfigChecker:
    """The agent's validator: every call runs one child process (see the module docstring)."""

    def __init__(self, python: str = sys.executable, timeout: float = CHECK_TIMEOUT) -> None:
        self._argv = [python, "-m", "pgwarden.config.checker"]
        self._timeout = timeout

    # -- the requests ------------------------------------------------------------------------------
    def load_local(self, path: Path | None, environ: Mapping[str, str]) -> tuple[LocalConfig, DynamicConfig, list[str]]:
        """The local configuration, and its bootstrap.dcs parsed (for before the cluster's /config
        exists). Raises ConfigError listing every problem; CheckerError if no answer came."""
        return _local_answer(self._run(_local_request(path, environ)))

    async def load_local_async(
        self, path: Path | None, environ: Mapping[str, str]
    ) -> tuple[LocalConfig, DynamicConfig, list[str]]:
        """`load_local` without blocking the event loop."""
        return _local_answer(await self._run_async(_local_request(path, environ)))

    async def parse_dynamic(self, raw: Mapping[str, Any] | None) -> tuple[DynamicConfig, list[str]]:
        """validation.parse_dynamic in the child: never a ConfigError (it repairs), CheckerError if no answer."""
        answer = await self._run_async({"dynamic": raw})
        return from_plain(DynamicConfig, answer["dynamic"]), list(answer["warnings"])

    async def config_problems(self, values: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """validation.config_problems of each value, in one child."""
        answer = await self._run_async({"config_problems": list(values)})
        return [list(problems) for problems in answer["results"]]

    # -- running the child -------------------------------------------------------------------------
    def _run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            done = subprocess.run(self._argv, input=json.dumps(request).encode(), capture_output=True,
                                  timeout=self._timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckerError(f"configuration check: {exc}") from exc
        return _answer(done.returncode, done.stdout, done.stderr)

    async def _run_async(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise CheckerError(f"configuration check: cannot start {self._argv[0]}: {exc}") from exc
        try:
            stdout, stderr = await bounded(proc.communicate(json.dumps(request).encode()), self._timeout)
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise CheckerError(f"configuration check: no answer within {self._timeout:.0f} s") from exc
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        return _answer(proc.returncode, stdout, stderr)


def _local_request(path: Path | None, environ: Mapping[str, str]) -> dict[str, Any]:
    return {"local": {"path": None if path is None else str(path), "environ": dict(environ)}}


def _local_answer(answer: Mapping[str, Any]) -> tuple[LocalConfig, DynamicConfig, list[str]]:
    if "problems" in answer:
        raise ConfigError(answer["problems"])
    return (from_plain(LocalConfig, answer["local"]), from_plain(DynamicConfig, answer["dynamic"]),
            list(answer["warnings"]))


def _answer(returncode: int | None, stdout: bytes, stderr: bytes) -> dict[str, Any]:
    if returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise CheckerError(f"configuration check failed (exit {returncode}): {' / '.join(tail)}")
    try:
        answer = json.loads(stdout)
    except ValueError as exc:
        raise CheckerError("configuration check: the answer is not JSON") from exc
    if not isinstance(answer, dict):
        raise CheckerError("configuration check: unexpected answer")
    return answer


# -- the child -------------------------------------------------------------------------------------


def handle(request: Mapping[str, Any]) -> dict[str, Any]:
    """Answer one request (in the child; imports pydantic through loader and validation)."""
    from pgwarden.config import loader, validation

    if "local" in request:
        spec = request["local"]
        try:
            local, notes = loader.load_local_noting(spec["path"], spec["environ"])
        except ConfigError as exc:
            return {"problems": exc.problems}
        dynamic, warnings = loader.bootstrap_or(local, None)
        return {"local": to_plain(local), "dynamic": to_plain(dynamic), "warnings": notes + warnings}
    if "dynamic" in request:
        dynamic, warnings = validation.parse_dynamic(request["dynamic"])
        return {"dynamic": to_plain(dynamic), "warnings": warnings}
    if "config_problems" in request:
        return {"results": [validation.config_problems(value) for value in request["config_problems"]]}
    raise ValueError(f"unknown request: {sorted(request)}")


def main() -> int:
    request = json.load(sys.stdin)
    json.dump(handle(request), sys.stdout, default=str)  # YAML may give dates; JSON has none
    return 0


if __name__ == "__main__":
    sys.exit(main())
