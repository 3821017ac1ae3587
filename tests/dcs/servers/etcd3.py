"""The etcd v3 store of the DCS contract suite: a throw-away `EtcdServer` (tests/support/etcd.py).

Raw access goes through etcd's JSON gateway (`pgwarden.dcs.etcd_http.EtcdClient`, one short-lived client
per call, so the server object is not bound to any test's event loop); faults are signals to the one etcd
process this module started, and a restart spawns it again on the same ports and data directory.

Optional capabilities of the contract suite (tests/dcs/test_contract.py) this server offers:
`supports_auth` (`start(auth=True)`: etcd's user/password auth on, `section()` carries the right
credentials, `section_with_password(p)` the same user with another password), `supports_tls`
(`start(tls=True)`: HTTPS with client certificates, `section()` names `cacert`, `cert` and `key`) and
`raw_revision(key)`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pgwarden.dcs.etcd_http import EtcdClient, ssl_context_from_config
from tests.dcs.servers.etcd_process import EtcdProcessStore
from tests.support.etcd import EtcdServer

_T = TypeVar("_T")

USERNAME = "root"
PASSWORD = "etcd3-Right-Passw0rd"
"""The root user's password when started with `auth=True` (distinctive, so a test can look for it in messages)."""

_RAW_TIMEOUT = 5.0


class Etcd3Store(EtcdProcessStore):
    """One etcd process behind the `tests.dcs.servers.StoreServer` protocol, read through the v3 API."""

    kind = "etcd3"
    PASSWORD = PASSWORD

    # -- raw access ----------------------------------------------------------------------------------
    async def _with_client(self, call: Callable[[EtcdClient], Awaitable[_T]]) -> _T:
        section = self.section()
        client = EtcdClient([self.etcd.host], timeout=_RAW_TIMEOUT, username=section.get("username"),
                            password=section.get("password"), ssl_context=ssl_context_from_config(section))
        try:
            return await call(client)
        finally:
            await client.close()

    async def raw_get(self, key: str) -> str | None:
        kv = await self._with_client(lambda client: client.get(key.encode()))
        return None if kv is None else kv.value.decode("utf-8", "replace")

    async def raw_revision(self, key: str) -> int | None:
        """The key's mod_revision (it moves with every write), None when absent."""
        kv = await self._with_client(lambda client: client.get(key.encode()))
        return None if kv is None else kv.mod_revision

    async def raw_put(self, key: str, value: str) -> None:
        await self._with_client(lambda client: client.put(key.encode(), value.encode()))

    async def raw_delete(self, key: str) -> None:
        await self._with_client(lambda client: client.delete(key.encode()))


def _enable_auth(etcd: EtcdServer) -> None:
    etcdctl = ["/usr/bin/etcdctl", f"--endpoints={etcd.client_url}", "--command-timeout=5s"]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for args in (["user", "add", f"{USERNAME}:{PASSWORD}"], ["auth", "enable"]):
        subprocess.run([*etcdctl, *args], env=env, check=True, capture_output=True, timeout=15)


def start(*, auth: bool = False, tls: bool = False) -> Etcd3Store:
    """A started single-node etcd; with `auth`, user/password authentication enabled; with `tls`, HTTPS
    demanding client certificates."""
    etcd = EtcdServer.start(tls=tls)
    try:
        if auth:
            _enable_auth(etcd)
    except BaseException:
        etcd.stop()
        raise
    return Etcd3Store(etcd, auth=auth)
