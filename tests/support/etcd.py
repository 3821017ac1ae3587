"""A real, throw-away etcd for tests: free loopback ports, a temp data dir, stopped by PID.

Usage::

    with EtcdServer.start() as etcd:
        etcd.client_url  # http://127.0.0.1:<port>

or as the `etcd` pytest fixture from tests/conftest.py. Each server is a single-node cluster with its
own data dir, so tests never share state. Stopping kills only the PID this helper started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ETCD_BINARY = os.environ.get("PGWARDEN_TEST_ETCD", "/usr/bin/etcd")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def etcd_available() -> bool:
    return os.access(ETCD_BINARY, os.X_OK)


@dataclass
class EtcdServer:
    """One running etcd process. Create it with `EtcdServer.start()`; stop it with `stop()`."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    client_port: int
    peer_port: int
    log_path: Path

    @property
    def host(self) -> tuple[str, int]:
        return ("127.0.0.1", self.client_port)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @classmethod
    def start(cls, *, attempts: int = 3) -> EtcdServer:
        """Start etcd and wait until /health answers. Retries with new ports if a port was taken."""
        last_error: Exception | None = None
        for _ in range(attempts):
            server = cls._spawn()
            try:
                server._wait_healthy()
                return server
            except RuntimeError as exc:
                last_error = exc
                server.stop()
        raise RuntimeError(f"etcd did not start after {attempts} attempts: {last_error}")

    @classmethod
    def _spawn(cls) -> EtcdServer:
        data_dir = Path(tempfile.mkdtemp(prefix="pgwarden-etcd-"))
        client_port, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        log_path = data_dir / "etcd.log"
        args = [
            ETCD_BINARY,
            "--name", "test",
            "--data-dir", str(data_dir / "data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"test={peer_url}",
            "--log-level", "warn",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(process, data_dir, client_port, peer_port, log_path)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}: {self._log_tail()}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd not healthy within {START_TIMEOUT}s: {self._log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0) as response:
                return b'"true"' in response.read()
        except (OSError, urllib.error.URLError):
            return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self) -> None:
        """Terminate the process (by its PID), wait for it, remove the data dir. Idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running_etcd() -> Iterator[EtcdServer]:
    """Context manager form: a healthy etcd for the duration of the block."""
    server = EtcdServer.start()
    try:
        yield server
    finally:
        server.stop()
