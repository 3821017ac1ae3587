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
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from pgwarden.aio import bounded
from pgwarden.dcs.etcd_http import EtcdClient
from pgwarden.routing.errors import RoutingError

log = logging.getLogger(__name__)
ROUTERS = "routers/"


class RouterRegistry:
    """Publishes one router's state under the scope; `publish` is cheap when nothing changed."""

    def __init__(self, hosts: Sequence[tuple[str, int]], prefix: str, name: str, *, ttl: int = 30,
                 timeout: float = 2.0, username: str | None = None, password: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.key = f"{prefix}{ROUTERS}{name}".encode()
        self._ttl = ttl
        self._timeout = timeout
        self._client = EtcdClient(hosts, timeout=timeout, username=username, password=password,
                                  ssl_context=ssl_context)
        self._lease = 0
        self._written: str | None = None
        self._refreshed = 0.0

    async def publish(self, value: Mapping[str, Any]) -> None:
        """Write the value when it changed, and keep the lease alive (call at least every ttl/3 s)."""
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        now = asyncio.get_running_loop().time()
        try:
            await bounded(self._publish(text, now), self._timeout * 2)
        except Exception as exc:  # etcd down, slow or refusing: all mean "not published now"
            self._lease, self._written = 0, None
            raise RoutingError(f"etcd: cannot publish {self.key.decode()}: {exc or type(exc).__name__}") from exc

    async def _publish(self, text: str, now: float) -> None:
        if not self._lease:
            self._lease = await self._client.lease_grant(self._ttl)
            self._written = None
        elif now - self._refreshed > self._ttl / 3:
            if await self._client.lease_keepalive(self._lease) <= 0:
                self._lease = await self._client.lease_grant(self._ttl)  # it expired: start over
                self._written = None
            self._refreshed = now
        if text != self._written:
            await self._client.put(self.key, text.encode(), lease=self._lease)
            self._written, self._refreshed = text, now

    async def close(self) -> None:
        await self._client.close()
