"""A DCS client in a child process, driven one JSON line at a time, so a test can freeze it (SIGSTOP).

Why a process: "the holder stops its keepalives" must mean the same for every backend. An etcd client
only refreshes its lease when asked, but a ZooKeeper client library pings in its own threads as long as
the process runs; stopping the whole process is the one fault that stops both, like a stalled host.

Parent side: `Holder.start(kind, section, ...)`, `await holder.call("acquire_leader")`, `freeze()`,
`thaw()`, `await holder.stop()`. Child side (`python -m tests.dcs.holder SPEC`): opens the backend with
`pgwarden.dcs.open_dcs`, prints `{"ready": true}`, then answers each request line
`{"method": name, "args": [...]}` with `{"result": value}` or `{"error": class name, "message": text}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pgwarden.dcs import Dcs, DcsError, open_dcs
from tests.dcs.faults import wait_stopped

ROOT = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = 30.0
"""The longest one call may take in the child (each backend call is bounded far below it)."""


class HolderError(Exception):
    """The child answered with an exception; `name` is its class name (e.g. "DcsError")."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class Holder:
    """The parent's handle on one child process holding one backend object."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._frozen = False

    @classmethod
    async def start(cls, kind: str, section: dict[str, Any], **options: Any) -> Holder:
        """Start the child with `open_dcs(kind, section, **options)` and wait until it is open."""
        spec = json.dumps({"kind": kind, "section": section, "options": options})
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.dcs.holder", spec, cwd=ROOT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        holder = cls(process)
        try:
            ready = await holder._read()
        except BaseException:
            await holder.stop()
            raise
        if "error" in ready:
            await holder.stop()
            raise HolderError(ready["error"], ready.get("message", ""))
        return holder

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), CALL_TIMEOUT)
        if not line:
            raise RuntimeError(f"the holder process exited ({await self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, method: str, *args: Any) -> Any:
        """Call `method(*args)` on the child's backend (awaited when it is a coroutine) and return the
        result; HolderError if it raised."""
        assert self._process.stdin is not None and not self._frozen
        self._process.stdin.write(json.dumps({"method": method, "args": list(args)}).encode() + b"\n")
        await self._process.stdin.drain()
        answer = await self._read()
        if "error" in answer:
            raise HolderError(answer["error"], answer.get("message", ""))
        return answer["result"]

    def freeze(self) -> None:
        """SIGSTOP the child; returns once all its threads (a client library's pinger too) have stopped."""
        self._process.send_signal(signal.SIGSTOP)
        wait_stopped(self._process.pid)
        self._frozen = True

    def thaw(self) -> None:
        self._process.send_signal(signal.SIGCONT)
        self._frozen = False

    async def stop(self) -> None:
        """Close stdin (the child closes its backend and exits); SIGKILL it (by PID) if it does not."""
        if self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.thaw()
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


# -- the child -------------------------------------------------------------------------------------------


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _serve(dcs: Dcs, requests: asyncio.StreamReader) -> None:
    while line := await requests.readline():
        request = json.loads(line)
        try:
            result = getattr(dcs, request["method"])(*request["args"])
            if inspect.isawaitable(result):
                result = await result
            _reply({"result": result})
        except Exception as exc:  # every failure goes back to the test, which decides what it means
            _reply({"error": type(exc).__name__, "message": str(exc)})


async def _child(spec: dict[str, Any]) -> None:
    requests = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    try:
        dcs = await open_dcs(spec["kind"], spec["section"], **spec["options"])
    except DcsError as exc:
        _reply({"error": type(exc).__name__, "message": str(exc)})
        return
    _reply({"ready": True})
    try:
        await _serve(dcs, requests)
    finally:
        await dcs.close()


if __name__ == "__main__":
    asyncio.run(_child(json.loads(sys.argv[1])))
