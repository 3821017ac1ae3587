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
import ssl
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


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    directory.mkdir(parents=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgwarden test CA",
             "-keyout", str(ca_key), "-out", str(ca_cert))
    made: dict[str, tuple[Path, Path]] = {}
    # etcd's JSON gateway dials etcd's own gRPC port with the server certificate, so with client-cert-auth
    # that certificate must be valid for client authentication too.
    for who, extension in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                           ("client", "extendedKeyUsage=clientAuth")):
        key, csr, cert = directory / f"{who}.key", directory / f"{who}.csr", directory / f"{who}.crt"
        extfile = directory / f"{who}.ext"
        extfile.write_text(extension + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", str(key), "-out", str(csr))
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
                 "-days", "2", "-extfile", str(extfile), "-out", str(cert))
        made[who] = (cert, key)
    return TlsFiles(ca_cert, made["server"][0], made["server"][1], made["client"][0], made["client"][1])


@dataclass
class EtcdServer:
    """One running etcd process. Create it with `EtcdServer.start()`; stop it with `stop()`."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    client_port: int
    peer_port: int
    log_path: Path
    tls: TlsFiles | None = None

    @property
    def host(self) -> tuple[str, int]:
        return ("127.0.0.1", self.client_port)

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @classmethod
    def start(cls, *, attempts: int = 3, tls: bool = False) -> EtcdServer:
        """Start etcd and wait until /health answers. Retries with new ports if a port was taken."""
        last_error: Exception | None = None
        for _ in range(attempts):
            server = cls._spawn(tls)
            try:
                server._wait_healthy()
                return server
            except RuntimeError as exc:
                last_error = exc
                server.stop()
        raise RuntimeError(f"etcd did not start after {attempts} attempts: {last_error}")

    @classmethod
    def _spawn(cls, tls: bool) -> EtcdServer:
        data_dir = Path(tempfile.mkdtemp(prefix="pgwarden-etcd-"))
        client_port, peer_port = free_port(), free_port()
        files = make_tls_files(data_dir / "tls") if tls else None
        client_url = f"{'https' if files else 'http'}://127.0.0.1:{client_port}"
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
        if files is not None:  # clients must present a certificate signed by the test CA
            args += ["--cert-file", str(files.server_cert), "--key-file", str(files.server_key),
                     "--trusted-ca-file", str(files.ca_cert), "--client-cert-auth"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(process, data_dir, client_port, peer_port, log_path, files)

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
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0, context=context) as response:
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
