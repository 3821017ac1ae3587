"""The sidecar's own key, `/<namespace>/<scope>/routers/<name>`: how an agent sees that a pooler is held.

Value: `{"kinds": ["pgbouncer", ...], "primary": "node1" | null, "held_for": <failover revision> | null}`
on a lease of `ttl` seconds, so the key of a sidecar that died disappears. Before a switchover's
demotion the agent waits (bounded) until every `routers/*` key that lists "pgbouncer" says
`held_for` = the revision of the `failover` key it acts on: only then are no transactions left running
on the old primary. Patroni ignores keys it does not know, so this stays compatible.

Written through `Dcs.publish_transient`, on the store's lease (etcd v3), key TTL (etcd v2) or session
(ZooKeeper) of the sidecar's own DCS connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pgwarden.dcs import Dcs, DcsError
from pgwarden.routing.errors import RoutingError

ROUTERS = "routers/"


class RouterRegistry:
    """Publishes one router's state under the scope; `publish` is cheap when nothing changed."""

    def __init__(self, dcs: Dcs, name: str) -> None:
        self.relative = f"{ROUTERS}{name}"
        self._dcs = dcs

    async def publish(self, value: Mapping[str, Any]) -> None:
        """Write the value when it changed, and keep it alive (call at least every ttl/3 s)."""
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        try:
            await self._dcs.publish_transient(self.relative, text)
        except DcsError as exc:  # the store down, slow or refusing: all mean "not published now"
            raise RoutingError(f"cannot publish {self._dcs.prefix}{self.relative}: {exc}") from exc
