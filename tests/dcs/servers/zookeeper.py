"""The ZooKeeper store of the DCS contract suite: a throw-away standalone `LocalZooKeeper` in a temp dir.

Raw access goes through a short-lived kazoo client per call (run on a worker thread, so the server object
is not bound to any test's event loop); faults are signals to the one server process this module started,
and a restart spawns it again from the same zoo.cfg (same ports, same data).

Optional capabilities of the contract suite (tests/dcs/test_contract.py) this server offers:
- `supports_tls` (`start(tls=True)`): clients only over TLS with client certificates; `section()` names
  `use_ssl`, `cacert`, `cert` and `key`;
- `supports_auth` (`start(auth=True)`): `section()` carries digest `auth_data` and `set_acls` granting that
  user everything and nobody else anything; `section_with_password(p)` the same user with another
  password, who is then refused (NoAuth);
- `raw_revision(key)`: the znode's mzxid.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from pgwarden.dcs.zookeeper import auth_from_config
from pgwarden.localcluster.etcd import EtcdTls
from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.zookeeper import LocalZooKeeper, ZooKeeperStartError, ZooKeeperTls
from tests.dcs.faults import wait_stopped
from tests.support.etcd import make_tls_files

_T = TypeVar("_T")

USERNAME = "pgwarden"
PASSWORD = "zk-Right-Passw0rd"
"""The digest user's password when started with `auth=True` (distinctive, so a test can look for it)."""

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_RAW_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # a free port may be taken by someone else before the JVM binds it


class ZooKeeperStore:
    """One ZooKeeper process behind the `tests.dcs.servers.StoreServer` protocol."""

    kind = "zookeeper"
    supports_auth = True
    supports_tls = True

    def __init__(self, server: LocalZooKeeper, directory: Path, *, auth: bool, tls: EtcdTls | None = None) -> None:
        self._server = server
        self._directory = directory
        self._auth = auth
        self._tls = tls
        self._stopped = False

    @property
    def pid(self) -> int:
        return self._server.pid

    @property
    def local(self) -> LocalZooKeeper:
        return self._server

    # -- configuration -------------------------------------------------------------------------------
    def section(self) -> dict[str, Any]:
        """Patroni's `zookeeper` section for this server (`hosts` as a list; credentials and ACLs as set)."""
        return self.section_with_password(PASSWORD) if self._auth else self._plain_section()

    def _plain_section(self) -> dict[str, Any]:
        section: dict[str, Any] = {"hosts": [self._server.host]}
        if self._tls is not None:
            section.update(use_ssl=True, cacert=str(self._tls.ca_cert), cert=str(self._tls.client_cert),
                           key=str(self._tls.client_key))
        return section

    def section_with_password(self, password: str) -> dict[str, Any]:
        """The section of the digest user with `password` (for the authentication failure test); the
        ACLs grant the user with the right password everything, and nobody else anything."""
        return {
            **self._plain_section(),
            "auth_data": [f"digest:{USERNAME}:{password}"],
            "set_acls": {f"digest:{USERNAME}:{PASSWORD}": ["ALL"]},
        }

    # -- raw access ----------------------------------------------------------------------------------
    def _with_client(self, call: Callable[[KazooClient], _T]) -> _T:
        section = self.section()
        auth = auth_from_config(section.get("auth_data"))
        client = KazooClient(hosts=self._server.host, timeout=10.0, auth_data=auth or None,
                             use_ssl=bool(section.get("use_ssl")), ca=section.get("cacert"),
                             certfile=section.get("cert"), keyfile=section.get("key"))
        client.start(timeout=_RAW_TIMEOUT)
        try:
            return call(client)
        finally:
            client.stop()
            client.close()

    async def _run(self, call: Callable[[KazooClient], _T]) -> _T:
        return await asyncio.to_thread(self._with_client, call)

    async def raw_get(self, key: str) -> str | None:
        def get(client: KazooClient) -> str | None:
            try:
                data, _ = client.get(key)
            except NoNodeError:
                return None
            return (data or b"").decode("utf-8", "replace")

        return await self._run(get)

    async def raw_revision(self, key: str) -> int | None:
        """The znode's mzxid (it moves with every write), None when absent."""
        stat = await self._run(lambda client: client.exists(key))
        return None if stat is None else int(stat.mzxid)

    async def raw_put(self, key: str, value: str) -> None:
        def put(client: KazooClient) -> None:
            try:
                client.set(key, value.encode())
            except NoNodeError:
                try:
                    client.create(key, value.encode(), makepath=True)
                except NodeExistsError:
                    client.set(key, value.encode())

        await self._run(put)

    async def raw_delete(self, key: str) -> None:
        def delete(client: KazooClient) -> None:
            with contextlib.suppress(NoNodeError):
                client.delete(key)

        await self._run(delete)

    # -- faults --------------------------------------------------------------------------------------
    def freeze(self) -> None:
        """SIGSTOP the JVM; returns once every thread of it has stopped (it has many)."""
        self._server.signal(signal.SIGSTOP)
        wait_stopped(self._server.pid)

    def thaw(self) -> None:
        self._server.signal(signal.SIGCONT)

    def kill(self) -> None:
        self._server.kill()

    def restart(self) -> None:
        self._server.kill()  # idempotent: the old process must be gone before the new one binds its ports
        self._server = self._server.restarted()
        self._server.wait_healthy(START_TIMEOUT)

    def stop(self) -> None:
        """Stop the server by PID (SIGCONT first: a frozen JVM cannot act on SIGTERM), remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        self._server.stop(STOP_TIMEOUT)
        shutil.rmtree(self._directory, ignore_errors=True)


def start(*, auth: bool = False, tls: bool = False, tick_time: int = 1000) -> ZooKeeperStore:
    """A started standalone ZooKeeper in a new temp dir; with `auth`, `section()` sets digest credentials
    and ACLs so that every znode pgwarden creates is this user's alone; with `tls`, clients connect over
    TLS only, with certificates signed by a throw-away CA."""
    directory = Path(tempfile.mkdtemp(prefix="pgwarden-zk-"))
    error: Exception | None = None
    try:
        files = make_tls_files(directory / "tls") if tls else None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    for attempt in range(_START_ATTEMPTS):
        server_tls = None if files is None else ZooKeeperTls(files.ca_cert, files.server_cert, files.server_key,
                                                             secure_port=free_port())
        server = LocalZooKeeper.spawn(data_dir=directory / f"data{attempt}", log_path=directory / "zookeeper.log",
                                      client_port=free_port(), tick_time=tick_time, tls=server_tls)
        try:
            server.wait_healthy(START_TIMEOUT)
            return ZooKeeperStore(server, directory, auth=auth, tls=files)
        except ZooKeeperStartError as exc:  # most likely the port was taken meanwhile: another port
            error = exc
            server.stop(STOP_TIMEOUT)
        except BaseException:
            server.stop(STOP_TIMEOUT)
            shutil.rmtree(directory, ignore_errors=True)
            raise
    shutil.rmtree(directory, ignore_errors=True)
    raise ZooKeeperStartError(f"zookeeper did not start in {_START_ATTEMPTS} attempts: {error}")
