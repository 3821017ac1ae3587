"""ZooKeeper servers on loopback, started by this process in a given directory and stopped by their PID.

`LocalZooKeeper` is one server: standalone, or one member of an ensemble (`spawn_ensemble`) whose quorum
and election ports are on 127.0.0.1 too. The server runs in the foreground as a child process in its own
session (Debian's `zookeeper` package: the jar and its dependencies under /usr/share/java), with the
admin HTTP server disabled (it would take port 8080), a small heap, and the four-letter words `ruok`,
`srvr` and `stat` allowed (`wait_healthy` asks `srvr`).

Session timeouts: the server grants between `minSessionTimeout` (2 ticks) and `maxSessionTimeout`
(20 ticks) and checks expiry once a tick, so with the default tickTime of 1000 ms the 7 s sessions of
the tests are allowed and expire within about a second of their timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pgwarden.localcluster.ports import free_port
from pgwarden.localcluster.processes import terminate, wait_until

JAVA_BIN = "/usr/bin/java"
ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
"""Its manifest's Class-Path names the other jars it needs (netty, jute, slf4j-api...) under /usr/share/java."""
SLF4J_BINDING = "/usr/share/java/slf4j-simple.jar"
"""A logger writing to stderr (so to the log file); without a binding ZooKeeper logs nothing at all."""
NETTY_JARS = tuple(f"/usr/share/java/netty-{name}.jar"
                   for name in ("codec", "resolver", "transport-native-unix-common"))
"""Missing from that Class-Path but needed by the Netty connection factory, which serves TLS (`ZooKeeperTls`)."""
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
"""Runs standalone when the config names no other server, as a quorum peer otherwise."""

JVM_OPTIONS = (
    "-Xmx128m",
    "-Xms16m",
    "-Xss512k",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # the C1 compiler only: a faster start for a short-lived test server
    "-Djava.net.preferIPv4Stack=true",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dzookeeper.jmx.log4j.disable=true",
)


class ZooKeeperStartError(RuntimeError):
    """ZooKeeper exited, or did not serve in time; the message ends with its log's tail."""


def zookeeper_available() -> bool:
    return os.access(JAVA_BIN, os.X_OK) and os.path.exists(ZOOKEEPER_JAR)


@dataclass(frozen=True)
class ZooKeeperTls:
    """Serve clients over TLS on `secure_port` (Netty, PEM files), requiring client certificates signed
    by `ca_cert` unless `client_auth` says otherwise ("need", "want" or "none")."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    secure_port: int
    client_auth: str = "need"

    def settings(self, directory: Path) -> dict[str, str]:
        """The zoo.cfg settings; ZooKeeper's PEM key store is one file with the key and the certificate."""
        key_store = directory / "server-keystore.pem"
        key_store.write_text(self.server_key.read_text() + self.server_cert.read_text())
        key_store.chmod(0o600)
        return {
            "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
            "secureClientPort": str(self.secure_port),
            "secureClientPortAddress": "127.0.0.1",
            "ssl.keyStore.location": str(key_store),
            "ssl.keyStore.type": "PEM",
            "ssl.trustStore.location": str(self.ca_cert),
            "ssl.trustStore.type": "PEM",
            "ssl.clientAuth": self.client_auth,
        }


@dataclass(frozen=True)
class ZooKeeperPeer:
    """One member of an ensemble: its id (1..255) and its loopback ports."""

    id: int
    client_port: int
    quorum_port: int
    election_port: int

    def server_line(self) -> str:
        return (f"server.{self.id}=127.0.0.1:{self.quorum_port}:{self.election_port}:participant;"
                f"127.0.0.1:{self.client_port}")


def peers(count: int) -> list[ZooKeeperPeer]:
    """`count` ensemble members on free loopback ports (ids 1..count)."""
    return [ZooKeeperPeer(i, free_port(), free_port(), free_port()) for i in range(1, count + 1)]


def four_letter_word(port: int, word: str, timeout: float = 1.0) -> str:
    """Ask the server on 127.0.0.1:`port` one four-letter word; its answer, "" if it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def write_config(path: Path, *, data_dir: Path, client_port: int, tick_time: int,
                 ensemble: Sequence[ZooKeeperPeer] = (), fsync: bool = False,
                 extra: Mapping[str, str] | None = None) -> None:
    """The server's zoo.cfg (and, for an ensemble member, the `myid` file is written by `spawn`)."""
    settings = {
        "tickTime": str(tick_time),
        "initLimit": "10",
        "syncLimit": "5",
        "dataDir": str(data_dir),
        "clientPort": str(client_port),
        "clientPortAddress": "127.0.0.1",
        "minSessionTimeout": str(2 * tick_time),
        "maxSessionTimeout": str(20 * tick_time),
        "admin.enableServer": "false",
        "4lw.commands.whitelist": "ruok,srvr,stat,mntr",
        "preAllocSize": "1024",  # KB; the default preallocates 64 MB of transaction log per file
        # A throw-away test server: no fsync per write (the machine is shared and its disk slow).
        "forceSync": "yes" if fsync else "no",
        "maxCnxns": "0",
        "cnxTimeout": "1000",
        **(extra or {}),
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [peer.server_line() for peer in ensemble]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class LocalZooKeeper:
    """One running ZooKeeper server. Create it with `LocalZooKeeper.spawn()`; stop it with `stop()`."""

    process: subprocess.Popen[bytes]
    client_port: int
    config_path: Path
    log_path: Path
    secure_port: int | None = None
    """The TLS client port when started with `tls` (the plain `client_port` still answers four-letter words)."""

    @classmethod
    def spawn(cls, *, data_dir: Path, log_path: Path, client_port: int, tick_time: int = 1000,
              ensemble: Sequence[ZooKeeperPeer] = (), my_id: int = 1, fsync: bool = False,
              tls: ZooKeeperTls | None = None, extra: Mapping[str, str] | None = None) -> Self:
        """Start a server, its data in `data_dir` (its zoo.cfg too) and its output appended to `log_path`.

        `ensemble` (all members, this one included, `my_id` naming this one) makes it a quorum peer;
        empty, it runs standalone. `extra` adds or overrides zoo.cfg settings (say, TLS)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        if ensemble:
            (data_dir / "myid").write_text(f"{my_id}\n")
        config_path = data_dir / "zoo.cfg"
        settings = {**(tls.settings(data_dir) if tls else {}), **(extra or {})}
        write_config(config_path, data_dir=data_dir, client_port=client_port, tick_time=tick_time,
                     ensemble=ensemble, fsync=fsync, extra=settings)
        return cls.start(config_path, log_path, client_port, tls.secure_port if tls else None)

    @classmethod
    def start(cls, config_path: Path, log_path: Path, client_port: int, secure_port: int | None = None) -> Self:
        """Start a server from an existing config (`spawn` writes one; a restart reuses it)."""
        classpath = ":".join([ZOOKEEPER_JAR, SLF4J_BINDING, *(jar for jar in NETTY_JARS if os.path.exists(jar))])
        args = [JAVA_BIN, *JVM_OPTIONS, "-cp", classpath, MAIN_CLASS, str(config_path)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, cwd=config_path.parent)
        return cls(process, client_port, config_path, log_path, secure_port)

    def restarted(self) -> Self:
        """A new process with the same config, ports and data (after `kill` or `stop`)."""
        return type(self).start(self.config_path, self.log_path, self.client_port, self.secure_port)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host(self) -> str:
        """`127.0.0.1:<client port>` (the TLS one when it serves TLS), as a `hosts` entry of the `zookeeper` section."""
        return f"127.0.0.1:{self.secure_port or self.client_port}"

    def mode(self) -> str | None:
        """"standalone", "leader" or "follower" while it serves; None when it does not (no quorum, down)."""
        for line in four_letter_word(self.client_port, "srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def healthy(self) -> bool:
        return self.mode() is not None

    def wait_healthy(self, timeout: float) -> None:
        """Wait until it serves clients; ZooKeeperStartError when it exits first or `timeout` passes."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise ZooKeeperStartError(f"zookeeper exited with {self.process.returncode}: {self.log_tail()}")
            return self.healthy()

        try:
            wait_until(ready, timeout, "zookeeper to serve", interval=0.05)
        except TimeoutError as exc:
            raise ZooKeeperStartError(f"{exc}: {self.log_tail()}") from None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def signal(self, signum: int) -> None:
        """Send `signum` to the server (by its PID) if it still runs."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL (by PID), keeping its data; waits for the process to go."""
        self.signal(signal.SIGCONT)  # a stopped process dies on SIGKILL too, but do not leave it stopped
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def stop(self, timeout: float) -> None:
        """SIGTERM the server (by its PID), SIGKILL it after `timeout` seconds. Idempotent."""
        self.signal(signal.SIGCONT)  # a frozen (SIGSTOPped) JVM cannot act on SIGTERM
        terminate(self.process, timeout)


def spawn_ensemble(base_dir: Path, count: int, *, tick_time: int = 1000, fsync: bool = False,
                   members: Sequence[ZooKeeperPeer] | None = None) -> list[LocalZooKeeper]:
    """Start `count` members of one ensemble on loopback, each in `base_dir/zk<id>` (its log `zk<id>.log`).

    Not waited for: call `wait_healthy` on each (an ensemble serves once a majority has elected a leader)."""
    members = list(members) if members is not None else peers(count)
    servers = []
    try:
        for peer in members:
            servers.append(LocalZooKeeper.spawn(
                data_dir=base_dir / f"zk{peer.id}", log_path=base_dir / f"zk{peer.id}.log",
                client_port=peer.client_port, tick_time=tick_time, ensemble=members, my_id=peer.id, fsync=fsync))
    except BaseException:
        for server in servers:
            server.stop(5)
        raise
    return servers
