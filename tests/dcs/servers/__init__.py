"""Real DCS servers for the DCS contract suite, one module per backend, behind one protocol.

`StoreServer` is what a test needs from a running store: the Patroni config section that reaches it (as a
user writes it), raw access to keys (to inspect and to plant values behind the adapter's back), and faults
(freeze, kill, restart). `running(kind)` starts a throw-away server of that kind and stops it (by PID) and
removes its directory afterwards.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

KINDS = ("etcd3", "etcd", "zookeeper")
"""The config section names of the implemented backends; also the module names below (etcd -> etcd2)."""

_MODULES = {"etcd3": "etcd3", "etcd": "etcd2", "zookeeper": "zookeeper"}


class StoreServer(Protocol):
    kind: str
    """The config section name: "etcd3", "etcd" (the v2 API) or "zookeeper"."""

    def section(self) -> dict[str, Any]:
        """Patroni's configuration section reaching this server, in a form users write
        (e.g. {"hosts": "127.0.0.1:2379"} or {"hosts": ["127.0.0.1:2181"]})."""

    async def raw_get(self, key: str) -> str | None:
        """The value at an absolute key path ("/service/scope/leader"), None when absent."""

    async def raw_put(self, key: str, value: str) -> None:
        """Write a plain (not leased, not ephemeral) value at an absolute key path, parents created."""

    async def raw_delete(self, key: str) -> None:
        """Delete the key at an absolute path (no error when absent)."""

    def freeze(self) -> None:
        """SIGSTOP the server process(es): connections stay open, nothing answers."""

    def thaw(self) -> None:
        """SIGCONT what freeze() stopped."""

    def kill(self) -> None:
        """SIGKILL the server, keeping its data."""

    def restart(self) -> None:
        """Start the server again (after kill) on the same ports and data; wait until it serves."""

    def stop(self) -> None:
        """Stop the server by its PID and remove its directory. Idempotent."""


@contextmanager
def running(kind: str, **options: Any) -> Iterator[StoreServer]:
    """A started server of `kind` (each backend module's `start(**options)`), stopped afterwards."""
    module = importlib.import_module(f"tests.dcs.servers.{_MODULES[kind]}")
    server: StoreServer = module.start(**options)
    try:
        yield server
    finally:
        server.stop()
