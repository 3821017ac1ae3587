"""What a contract test works with: one backend kind, its server, a fresh scope, and the backend objects
the test opened (closed at the end). Raw access is relative to the scope's prefix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pgwarden.dcs import Dcs, DcsError, open_dcs
from pgwarden.model import ClusterView
from tests.dcs.servers import StoreServer

_T = TypeVar("_T")

NAMESPACE = "service"
DEFAULT_TTL = 10
DEFAULT_TIMEOUT = 2.0
CLOSE_TIMEOUT = 10.0
"""close() must be bounded; a backend whose close hangs longer than this fails the test's teardown."""


class Store:
    """One test's scope on one server (shared by the module, or private to the test)."""

    def __init__(self, kind: str, server: StoreServer, scope: str) -> None:
        self.kind = kind
        self.server = server
        self.scope = scope
        self.prefix = f"/{NAMESPACE}/{scope}/"
        self._opened: list[Dcs] = []

    async def open(self, name: str, *, ttl: int = DEFAULT_TTL, timeout: float = DEFAULT_TIMEOUT,
                   readonly: bool = False, scope: str | None = None) -> Dcs:
        """`open_dcs` on this server for this scope (or another one); closed at the end."""
        dcs = await open_dcs(self.kind, self.server.section(), namespace=NAMESPACE,
                             scope=self.scope if scope is None else scope, name=name, ttl=ttl, timeout=timeout,
                             readonly=readonly)
        self._opened.append(dcs)
        return dcs

    async def close(self) -> None:
        """Close every backend object opened; each close is bounded (a hang is a failure)."""
        opened, self._opened = self._opened, []
        for dcs in opened:
            await asyncio.wait_for(dcs.close(), CLOSE_TIMEOUT)

    async def close_one(self, dcs: Dcs, *, bound: float = CLOSE_TIMEOUT) -> None:
        """Close one backend object now (failing if that takes longer than `bound` seconds)."""
        self._opened.remove(dcs)
        await bounded_call(dcs.close(), bound)

    # -- raw access, relative to the scope -----------------------------------------------------------
    async def raw_get(self, relative: str) -> str | None:
        return await self.server.raw_get(self.prefix + relative)

    async def raw_put(self, relative: str, value: str) -> None:
        await self.server.raw_put(self.prefix + relative, value)

    async def raw_delete(self, relative: str) -> None:
        await self.server.raw_delete(self.prefix + relative)

    def raw_revision(self) -> Callable[[str], Awaitable[int | None]] | None:
        """The server's optional `raw_revision(key)` (a number every write moves), relative to the scope."""
        revision_of = getattr(self.server, "raw_revision", None)
        if revision_of is None:
            return None

        async def relative_revision(relative: str) -> int | None:
            result: int | None = await revision_of(self.prefix + relative)
            return result

        return relative_revision


async def eventually(read: Callable[[], Awaitable[_T]], accept: Callable[[_T], bool], *, within: float,
                     what: str, interval: float = 0.1) -> _T:
    """Poll `read()` until `accept(result)`; DcsError counts as "not yet". AssertionError after `within` s."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = await read()
            if accept(value):
                return value
            last = value
        except DcsError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f}s; last: {last!r}")
        await asyncio.sleep(interval)


async def cluster_where(dcs: Dcs, accept: Callable[[ClusterView], bool], *, within: float, what: str) -> ClusterView:
    """`dcs.get_cluster()` polled until `accept` holds (see `eventually`)."""
    return await eventually(dcs.get_cluster, accept, within=within, what=what)


async def bounded_call(call: Awaitable[_T], bound: float) -> _T:
    """Await `call`, failing (not hanging) when it takes longer than `bound` seconds."""
    try:
        return await asyncio.wait_for(call, bound)
    except TimeoutError:
        raise AssertionError(f"the call hung for more than {bound:.1f}s") from None
