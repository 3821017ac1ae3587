"""A real, throw-away etcd for tests: a `LocalEtcd` on free loopback ports in its own temp dir.

Usage::

    with EtcdServer.start() as etcd:
        etcd.client_url  # http://127.0.0.1:<port>

or as the `etcd` pytest fixture from tests/conftest.py. Each server is a single-node cluster with its
own data dir, so tests never share state. Stopping kills only the PID this helper started.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from pgwarden.localcluster.etcd import EtcdStartError, EtcdTls, LocalEtcd
from pgwarden.localcluster.ports import free_port

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_tls_files(directory: Path) -> EtcdTls:
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
    return EtcdTls(ca_cert, made["server"][0], made["server"][1], made["client"][0], made["client"][1])


class EtcdServer(LocalEtcd):
    """A LocalEtcd in its own temp dir (data/, etcd.log, tls/), which `stop()` removes."""

    @classmethod
    def start(cls, *, attempts: int = 3, tls: bool = False, enable_v2: bool = False) -> EtcdServer:
        """Start etcd and wait until /health answers. Retries with new ports if a port was taken.
        `enable_v2`: serve the v2 keys API too (`LocalEtcd.spawn`)."""
        last_error: Exception | None = None
        for _ in range(attempts):
            directory = Path(tempfile.mkdtemp(prefix="pgwarden-etcd-"))
            files = make_tls_files(directory / "tls") if tls else None
            server = cls.spawn(name="test", data_dir=directory / "data", log_path=directory / "etcd.log",
                               client_port=free_port(), peer_port=free_port(), tls=files, enable_v2=enable_v2)
            try:
                server.wait_healthy(START_TIMEOUT)
                return server
            except EtcdStartError as exc:
                last_error = exc
                server.stop()
        raise RuntimeError(f"etcd did not start after {attempts} attempts: {last_error}")

    @property
    def directory(self) -> Path:
        return self.log_path.parent

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the process (by its PID), remove the temp dir. Idempotent."""
        super().stop(timeout)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
