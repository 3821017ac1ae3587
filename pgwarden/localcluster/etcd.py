"""One single-member etcd on loopback, started by this process in a given directory and stopped by its PID.

`LocalCluster` (the demo, the integration tests, the benchmarks) runs one in its work directory; the
tests' `EtcdServer` runs throw-away ones, optionally serving TLS with client certificates.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pgwarden.localcluster.processes import terminate, wait_until

ETCD_BIN = "/usr/bin/etcd"


class EtcdStartError(RuntimeError):
    """etcd exited, or did not answer /health in time; the message ends with its log's tail."""


def etcd_available() -> bool:
    return os.access(ETCD_BIN, os.X_OK)


@dataclass(frozen=True)
class EtcdTls:
    """An etcd serving HTTPS that requires client certificates signed by `ca_cert`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass
class LocalEtcd:
    """One running etcd process. Create it with `LocalEtcd.spawn()`; stop it with `stop()`."""

    process: subprocess.Popen[bytes]
    client_port: int
    peer_port: int
    log_path: Path
    tls: EtcdTls | None = None

    @classmethod
    def spawn(cls, *, name: str, data_dir: Path, log_path: Path, client_port: int, peer_port: int,
              tls: EtcdTls | None = None, enable_v2: bool = False) -> Self:
        """Start etcd, its data in `data_dir` and its output appended to `log_path` (see `wait_healthy`).

        `enable_v2` also serves etcd's v2 keys API (`--enable-v2`, etcd 3.4), for the `etcd` DCS backend."""
        client_url = f"{'https' if tls else 'http'}://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        args = [
            ETCD_BIN,
            "--name", name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}",
            "--listen-metrics-urls", "",
            "--log-level", "warn",
            "--logger", "zap",
        ]  # fmt: skip
        if tls is not None:
            args += ["--cert-file", str(tls.server_cert), "--key-file", str(tls.server_key),
                     "--trusted-ca-file", str(tls.ca_cert), "--client-cert-auth"]
        if enable_v2:
            args.append("--enable-v2")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(process, client_port, peer_port, log_path, tls)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host(self) -> tuple[str, int]:
        return ("127.0.0.1", self.client_port)

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0, context=context) as response:
                return response.status == 200 and b'"true"' in response.read()
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float) -> None:
        """Wait until /health answers; EtcdStartError when etcd exits first or `timeout` passes."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise EtcdStartError(f"etcd exited with {self.process.returncode}: {self.log_tail()}")
            return self.healthy()

        try:
            wait_until(ready, timeout, "etcd to become healthy", interval=0.05)
        except TimeoutError as exc:
            raise EtcdStartError(f"{exc}: {self.log_tail()}") from None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self, timeout: float) -> None:
        """SIGTERM etcd (by its PID), SIGKILL it after `timeout` seconds. Idempotent."""
        terminate(self.process, timeout)
