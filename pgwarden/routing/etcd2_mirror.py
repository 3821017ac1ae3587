"""The leader key, mirrored into etcd's v2 keyspace, for vip-manager 1.x (Debian 12 ships 1.0.2).

vip-manager 1.x reads its `trigger-key` through etcd's v2 API only, and etcd keeps v2 and v3 keys
apart: it can never see the v3 `leader` key that pgwarden (like Patroni's etcd3 backend) writes. The
sidecar therefore writes the same path, `/<namespace>/<scope>/leader` = member name, through the v2
API (etcd must run with `--enable-v2`), so vip-manager runs unchanged with its usual configuration.

The mirror is stricter than the real key: it names a member only once that member accepts writes,
and is deleted the moment the sidecar fences the old primary. Its TTL is refreshed by the sidecar,
so if the sidecar dies the key expires and vip-manager drops the VIP (fail closed).
"""

from __future__ import annotations

import aiohttp

from pgwarden.routing.errors import RoutingError
from pgwarden.routing.topology import ServerAddress


class Etcd2LeaderMirror:
    """A pusher that keeps `<base>/v2/keys/<key>` equal to the routed primary's name."""

    def __init__(self, endpoint: str, key: str, *, ttl: int = 30, timeout: float = 2.0) -> None:
        self.url = f"{endpoint.rstrip('/')}/v2/keys/{key.strip('/')}"
        self.ttl = ttl
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.name = f"etcd2 mirror {self.url}"
        self._primary: str | None = None

    async def _request(self, method: str, params: dict[str, str], ok: tuple[int, ...]) -> None:
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, \
                    session.request(method, self.url, data=params if method == "PUT" else None,
                                    params=params if method != "PUT" else None) as response:
                if response.status not in ok:
                    raise RoutingError(f"{self.name}: {method} answered {response.status}: {await response.text()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RoutingError(f"{self.name}: {exc or type(exc).__name__}") from exc

    async def hold(self, revision: int) -> None:
        """A VIP cannot hold clients."""

    async def fence(self, server: str, planned: bool) -> None:
        self._primary = None
        # 412: the key names somebody else already; 404: gone (expired) - both fine.
        await self._request("DELETE", {"prevValue": server}, (200, 404, 412))

    async def route(self, server: ServerAddress) -> None:
        await self._request("PUT", {"value": server.name, "ttl": str(self.ttl)}, (200, 201))
        self._primary = server.name

    async def release(self, server: str) -> None:
        """Nothing was held."""

    async def tick(self) -> None:
        """Refresh the TTL (called every few seconds by the sidecar)."""
        if self._primary is not None:
            await self._request("PUT", {"value": self._primary, "ttl": str(self.ttl)}, (200, 201))
