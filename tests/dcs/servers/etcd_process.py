"""What the etcd v3 and v2 stores of the contract suite share: one throw-away etcd process (`EtcdServer`),
the Patroni section that reaches it, and its faults (signals to that one process; a restart spawns it again
on the same ports and data directory)."""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.dcs.faults import wait_stopped
from tests.support.etcd import START_TIMEOUT, EtcdServer


class EtcdProcessStore:
    """The API-independent half of `tests.dcs.servers.StoreServer` for one etcd process."""

    supports_auth = True
    supports_tls = True
    USERNAME = "root"
    PASSWORD = ""
    """The root user's password when started with `auth=True` (each store sets its own, distinctive one)."""
    HOST_KEY = "hosts"
    """Which of Patroni's address forms `section()` writes (`hosts` or `host`)."""

    def __init__(self, etcd: EtcdServer, *, auth: bool, enable_v2: bool = False) -> None:
        self._etcd = etcd
        self._auth = auth
        self._enable_v2 = enable_v2

    @property
    def etcd(self) -> EtcdServer:
        """The running etcd (a new object after `restart`)."""
        return self._etcd

    # -- configuration -------------------------------------------------------------------------------
    def section(self) -> dict[str, Any]:
        """Patroni's section for this server: the address, TLS files and credentials as set."""
        section: dict[str, Any] = {self.HOST_KEY: f"127.0.0.1:{self._etcd.client_port}"}
        tls = self._etcd.tls
        if tls is not None:
            section.update(protocol="https", cacert=str(tls.ca_cert), cert=str(tls.client_cert),
                           key=str(tls.client_key))
        if self._auth:
            section.update(username=self.USERNAME, password=self.PASSWORD)
        return section

    def section_with_password(self, password: str) -> dict[str, Any]:
        """`section()` with the same user but another password (for the authentication failure test)."""
        return {**self.section(), "username": self.USERNAME, "password": password}

    # -- faults --------------------------------------------------------------------------------------
    def _signal(self, signum: int) -> None:
        if self._etcd.process.poll() is None:
            os.kill(self._etcd.pid, signum)

    def freeze(self) -> None:
        """SIGSTOP etcd; returns once every thread of it has stopped."""
        self._signal(signal.SIGSTOP)
        wait_stopped(self._etcd.pid)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        self.thaw()
        if self._etcd.process.poll() is None:
            self._etcd.process.kill()
        self._etcd.process.wait()

    def restart(self) -> None:
        old = self._etcd
        self._etcd = EtcdServer.spawn(name="test", data_dir=old.directory / "data", log_path=old.log_path,
                                      client_port=old.client_port, peer_port=old.peer_port, tls=old.tls,
                                      enable_v2=self._enable_v2)
        self._etcd.wait_healthy(START_TIMEOUT)

    def stop(self) -> None:
        """SIGCONT (a frozen etcd would ignore SIGTERM until the kill timeout), then stop it by PID."""
        self.thaw()
        self._etcd.stop()
