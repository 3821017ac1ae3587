"""Pushing the primary into HAProxy through its runtime API (the admin socket), in milliseconds.

The pusher never touches a server's *administrative* state (ready/maint/drain belongs to the
operator); it forces the *operational* health instead (`set server <b>/<s> health up|down`) and cuts
sessions (`shutdown sessions server`). The HTTP checks keep running: if the sidecar were wrong or
gone, the next `rise`/`fall` checks correct the forced state, so nothing sticky is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from pgwarden.aio import bounded
from pgwarden.routing.errors import RoutingError
from pgwarden.routing.haproxy_config import PRIMARY_BACKEND
from pgwarden.routing.topology import ServerAddress


class HaproxyRuntime:
    """A client for HAProxy's stats socket at level admin (UNIX socket path, or `host:port`)."""

    def __init__(self, address: str, *, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout

    async def run(self, commands: Sequence[str]) -> str:
        """Send the commands (one round trip, `;`-separated) and return HAProxy's answer text."""
        try:
            return await bounded(self._exchange("; ".join(commands) + "\n"), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise RoutingError(f"haproxy {self.address}: {exc or type(exc).__name__}") from exc

    async def _exchange(self, text: str) -> str:
        if self.address.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(self.address)
        else:
            host, _, port = self.address.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(text.encode())
            await writer.drain()
            return (await reader.read()).decode(errors="replace")  # HAProxy closes after answering
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def server_names(self, backend: str) -> list[str]:
        """The servers HAProxy has in `backend` (from `show servers state`)."""
        answer = await self.run([f"show servers state {backend}"])
        names = []
        for line in answer.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and not line.startswith("#"):
                names.append(fields[3])
        if not names and "No such backend" in answer:
            raise RoutingError(f"haproxy {self.address}: no backend {backend!r}")
        return names

    async def checked(self, commands: Sequence[str]) -> None:
        """Run commands that answer nothing on success; any answer is an error."""
        answer = (await self.run(commands)).strip()
        if answer:
            raise RoutingError(f"haproxy {self.address}: {'; '.join(commands)}: {answer}")


class HaproxyPusher:
    """Applies the planner's steps to one HAProxy's `primary` listener."""

    def __init__(self, runtime: HaproxyRuntime, backend: str = PRIMARY_BACKEND) -> None:
        self.runtime = runtime
        self.backend = backend
        self.name = f"haproxy {runtime.address}"

    def _cut(self, server: str) -> list[str]:
        return [f"set server {self.backend}/{server} health down",
                f"shutdown sessions server {self.backend}/{server}"]

    async def hold(self, revision: int) -> None:
        """Nothing to do: HAProxy cannot hold clients; the switchover is fast instead."""

    async def fence(self, server: str, planned: bool) -> None:
        await self.runtime.checked(self._cut(server))

    async def route(self, server: ServerAddress) -> None:
        """Mark every other server down (cutting its sessions), then the new primary up."""
        others = [name for name in await self.runtime.server_names(self.backend) if name != server.name]
        commands = [c for name in others for c in self._cut(name)]
        await self.runtime.checked([*commands, f"set server {self.backend}/{server.name} health up"])

    async def release(self, server: str) -> None:
        """Nothing was held."""
