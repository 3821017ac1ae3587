"""The etcd v2 store of the DCS contract suite: a throw-away `EtcdServer` (tests/support/etcd.py) serving
the v2 keys API (`--enable-v2`, etcd 3.4).

Raw access goes through the v2 HTTP API with one short-lived aiohttp session per call, so the server object
is not bound to any test's event loop; faults are signals to the one etcd process this module started, and
a restart spawns it again on the same ports and data directory.

Optional capabilities of the contract suite (tests/dcs/test_contract.py) this server offers:
`supports_auth` (`start(auth=True)`: etcd's v2 authentication on, the guest role without rights, `section()`
carries the root user's credentials, `section_with_password(p)` the same user with another password),
`supports_tls` (`start(tls=True)`: HTTPS with client certificates, `section()` names `cacert`, `cert` and
`key`). It does not offer `raw_revision`: a key's modifiedIndex moves with TTL refreshes too (which rewrite
no value and wake no watcher), so the suite sees skipped writes through a planted value instead;
`raw_index(key)` gives the modifiedIndex to this backend's own tests.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any
from urllib.parse import quote

import aiohttp

from pgwarden.dcs.etcd2 import basic_auth
from pgwarden.dcs.etcd_http import ssl_context_from_config
from tests.dcs.servers.etcd_process import EtcdProcessStore
from tests.support.etcd import EtcdServer

USERNAME = "root"
PASSWORD = "etcd2-Right-Passw0rd"
"""The root user's password when started with `auth=True` (distinctive, so a test can look for it in messages)."""

_RAW_TIMEOUT = 5.0


class Etcd2Store(EtcdProcessStore):
    """One etcd process (v2 API enabled) behind the `tests.dcs.servers.StoreServer` protocol."""

    kind = "etcd"
    PASSWORD = PASSWORD
    HOST_KEY = "host"

    # -- raw access ----------------------------------------------------------------------------------
    async def _call(self, method: str, key: str, **form: str) -> tuple[int, dict[str, Any]]:
        section = self.section()
        context = ssl_context_from_config(section)
        headers = {"Authorization": basic_auth(USERNAME, PASSWORD)} if self._auth else {}
        url = f"{self.etcd.client_url}/v2/keys{quote(key, safe='/')}"
        params = {"quorum": "true"} if method == "GET" else None
        connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
        async with (aiohttp.ClientSession(connector=connector) as session,
                    session.request(method, url, params=params, data=form or None, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=_RAW_TIMEOUT)) as response):
            body = await response.json(content_type=None)
            if response.status >= 300 and response.status != 404:
                raise RuntimeError(f"etcd {method} {key}: HTTP {response.status}: {body}")
            return response.status, body

    async def raw_get(self, key: str) -> str | None:
        status, body = await self._call("GET", key)
        node = body.get("node", {})
        return None if status == 404 or node.get("dir") else str(node.get("value", ""))

    async def raw_index(self, key: str) -> int | None:
        """The key's modifiedIndex (it moves with every write, TTL refreshes included), None when absent."""
        status, body = await self._call("GET", key)
        return None if status == 404 else int(body["node"]["modifiedIndex"])

    async def raw_ttl(self, key: str) -> int | None:
        """The key's remaining TTL in seconds (None: absent or without a TTL)."""
        status, body = await self._call("GET", key)
        ttl = body.get("node", {}).get("ttl") if status != 404 else None
        return int(ttl) if ttl is not None else None

    async def raw_put(self, key: str, value: str) -> None:
        await self._call("PUT", key, value=value)

    async def raw_delete(self, key: str) -> None:
        await self._call("DELETE", key)


def _v2_admin(etcd: EtcdServer, method: str, path: str, body: dict[str, Any] | None, *, auth: bool) -> None:
    """One request to etcd's v2 auth API (synchronous: it runs before any event loop)."""
    context = None
    if etcd.tls is not None:
        context = ssl.create_default_context(cafile=str(etcd.tls.ca_cert))
        context.load_cert_chain(str(etcd.tls.client_cert), str(etcd.tls.client_key))
    request = urllib.request.Request(f"{etcd.client_url}/v2/auth/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", basic_auth(USERNAME, PASSWORD))
    with urllib.request.urlopen(request, timeout=_RAW_TIMEOUT, context=context) as response:
        response.read()


def _enable_auth(etcd: EtcdServer) -> None:
    """The root user, v2 auth on, and the guest role (anonymous requests) stripped of its rights."""
    _v2_admin(etcd, "PUT", f"users/{USERNAME}", {"user": USERNAME, "password": PASSWORD}, auth=False)
    _v2_admin(etcd, "PUT", "enable", None, auth=False)
    _v2_admin(etcd, "PUT", "roles/guest", {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
              auth=True)


def start(*, auth: bool = False, tls: bool = False) -> Etcd2Store:
    """A started single-node etcd serving the v2 API; with `auth`, v2 user/password authentication
    required; with `tls`, HTTPS demanding client certificates."""
    etcd = EtcdServer.start(tls=tls, enable_v2=True)
    try:
        if auth:
            _enable_auth(etcd)
    except BaseException:
        etcd.stop()
        raise
    return Etcd2Store(etcd, auth=auth, enable_v2=True)
