"""The sidecar's own key, `/<namespace>/<scope>/routers/<name>`: how an agent sees that a pooler is held.

Value: `{"kinds": ["pgbouncer", ...], "primary": "node1" | null, "held_for": <failover revision> | null}`
on a lease of `ttl` seconds, so the key of a sidecar that died disappears. Before a switchover's
demotion the agent waits (bounded) until every `routers/*` key that lists "pgbouncer" says
`held_for` = the revision of the `failover` key it acts on: only then are no transactions left running
on the old primary. Patroni ignores keys it does not know, so this stays compatible.

The `Dcs` interface has no generic write; this small etcd v3 writer lives here until it does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aetcd

from pgwarden.routing.errors import RoutingError

log = logging.getLogger(__name__)
ROUTERS = "routers/"


class RouterRegistry:
    """Publishes one router's state under the scope; `publish` is cheap when nothing changed."""

    def __init__(self, hosts: Sequence[tuple[str, int]], prefix: str, name: str, *, ttl: int = 30,
                 timeout: float = 2.0, username: str | None = None, password: str | None = None) -> None:
        self.key = f"{prefix}{ROUTERS}{name}".encode()
        self._hosts = list(hosts)
        self._ttl = ttl
        self._timeout = timeout
        self._auth = {"username": username, "password": password} if username else {}
        self._client: aetcd.Client | None = None
        self._lease: Any = None
        self._written: str | None = None
        self._refreshed = 0.0

    async def publish(self, value: Mapping[str, Any]) -> None:
        """Write the value when it changed, and keep the lease alive (call at least every ttl/3 s)."""
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        now = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self._publish(text, now), self._timeout * 2)
        except Exception as exc:  # aetcd raises many kinds; all mean "not published now"
            self._lease, self._written = None, None
            await self.close()
            raise RoutingError(f"etcd: cannot publish {self.key.decode()}: {exc or type(exc).__name__}") from exc

    async def _publish(self, text: str, now: float) -> None:
        client = await self._connected()
        if self._lease is None:
            self._lease = await client.lease(self._ttl)
            self._written = None
        elif now - self._refreshed > self._ttl / 3:
            await self._lease.refresh()
            self._refreshed = now
        if text != self._written:
            await client.put(self.key, text.encode(), lease=self._lease)
            self._written, self._refreshed = text, now

    async def _connected(self) -> aetcd.Client:
        if self._client is None:
            host, port = self._hosts[0]
            self._hosts.append(self._hosts.pop(0))  # the next connection tries the next endpoint
            client = aetcd.Client(host=host, port=port, timeout=self._timeout, **self._auth)
            await client.connect()
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), self._timeout)
            except Exception as exc:  # closing a broken channel may fail; nothing to do about it
                log.debug("closing the etcd connection failed: %s", exc)
