"""vip-manager (Debian's package, unchanged) moves a virtual IP between network namespaces on failover.

Debian 12's vip-manager 1.0.2 reads its trigger key through etcd's v2 API only, and etcd keeps v2 and
v3 keys apart, so it cannot see the v3 `leader` key pgwarden writes (nor Patroni's etcd3 backend's).
`pgwarden route --etcd2-mirror` mirrors that key, same path and value, into the v2 keyspace of an
etcd with `--enable-v2`; vip-manager runs with its usual Patroni configuration.

Topology, all inside namespaces this test creates (nothing on the host's interfaces): a "lan"
namespace with a bridge and the v2 etcd on 10.213.7.254, and one namespace per node whose `eth0`
(a veth into the bridge) is where vip-manager puts 10.213.7.100. A small relay thread lets the sidecar,
on the host's loopback, reach the v2 etcd inside "lan".
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.localcluster.cluster import LocalCluster
from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until

VIP_MANAGER = shutil.which("vip-manager") or "/usr/bin/vip-manager"
SUBNET = "10.213.7"
VIP = f"{SUBNET}.100"
ETCD2 = f"{SUBNET}.254"
CLONE_NEWNET = 0x40000000

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not all(Path(p).exists() for p in (ETCD_BIN, Path(PG_BIN, "postgres"), VIP_MANAGER))
                       or shutil.which("ip") is None, reason="needs etcd, PostgreSQL 15, vip-manager and iproute2"),
]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Lan:
    """The namespaces, bridge and veths; `close()` deletes the namespaces (and with them the veths)."""

    def __init__(self, tag: str, nodes: list[str]) -> None:
        self.lan = f"{tag}-lan"
        self.node_ns = {name: f"{tag}-{name}" for name in nodes}
        self.created: list[str] = []

    def build(self) -> None:
        for ns in (self.lan, *self.node_ns.values()):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.lan, "addr", "add", f"{ETCD2}/24", "dev", "br0")
        _ip("-n", self.lan, "link", "set", "br0", "up")
        for index, ns in enumerate(self.node_ns.values(), start=1):
            port = f"v{index}"
            _ip("-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.lan, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{index}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def holders(self) -> set[str]:
        """The nodes whose namespace has the VIP on eth0."""
        found = set()
        for name, ns in self.node_ns.items():
            out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                                 text=True, timeout=5).stdout
            if f" {VIP}/" in out:
                found.add(name)
        return found

    def close(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class Relay:
    """Host loopback port -> an address inside a namespace (the thread's later sockets live there)."""

    def __init__(self, netns: str, target: tuple[str, int]) -> None:
        self.netns, self.target = netns, target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="netns-relay", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{self.netns}") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def vip_setup() -> Iterator[tuple[LocalCluster, Lan]]:
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-vip-"))
    workdir.chmod(0o755)
    cluster = LocalCluster(workdir / "cluster", scope="vip-it", etcd_ports=(0, 0), pg_base_port=0, api_base_port=0)
    lan = Lan(f"pgw{os.getpid() % 100000}", ["node1", "node2", "node3"])
    procs: list[subprocess.Popen[bytes]] = []
    relay: Relay | None = None

    def spawn(name: str, argv: list[str]) -> None:
        log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()

    try:
        lan.build()
        spawn("etcd2", ["ip", "netns", "exec", lan.lan, ETCD_BIN, "--enable-v2", "--data-dir", str(workdir / "etcd2"),
                        "--listen-client-urls", f"http://{ETCD2}:2379", "--advertise-client-urls",
                        f"http://{ETCD2}:2379", "--listen-peer-urls", f"http://{ETCD2}:2380",
                        "--initial-advertise-peer-urls", f"http://{ETCD2}:2380",
                        "--initial-cluster", f"default=http://{ETCD2}:2380", "--listen-metrics-urls", ""])
        relay = Relay(lan.lan, (ETCD2, 2379))
        cluster.start()
        cluster.wait_healthy(120)
        for name, ns in lan.node_ns.items():
            spawn(f"vip-manager-{name}", ["ip", "netns", "exec", ns, VIP_MANAGER, "--ip", VIP, "--netmask", "24",
                                          "--interface", "eth0", "--trigger-key", f"/service/{cluster.scope}/leader",
                                          "--trigger-value", name, "--dcs-type", "etcd",
                                          "--dcs-endpoints", f"http://{ETCD2}:2379", "--interval", "200"])
        spawn("route", [sys.executable, "-c", "from pgwarden.cli.routing import route; route()",
                        "-c", str(cluster.nodes[0].config_path), "--name", "vip-router",
                        "--etcd2-mirror", f"http://127.0.0.1:{relay.port}"])
        yield cluster, lan
    except BaseException:
        for log in sorted(workdir.glob("*.log")):
            print(f"==== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        raise
    finally:
        for proc in reversed(procs):  # vip-manager removes the VIP on SIGTERM; the namespaces go anyway
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if relay is not None:
            relay.close()
        cluster.stop()
        lan.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_vip_follows_the_primary_across_namespaces_on_failover(vip_setup: tuple[LocalCluster, Lan]) -> None:
    cluster, lan = vip_setup
    old = cluster.wait_healthy(60)
    wait_until(lambda: lan.holders() == {old.name}, 30, f"the VIP on {old.name}'s namespace only")
    killed = time.monotonic()
    cluster.kill_host(old)  # the host's vip-manager keeps running: it must drop the VIP by itself
    wait_until(lambda: cluster.leader() not in (None, old), 60, "a new primary")
    new = cluster.leader()
    assert new is not None
    wait_until(lambda: lan.holders() == {new.name}, 15, f"the VIP to move to {new.name}")
    print(f"\nVIP moved from {old.name} to {new.name} {time.monotonic() - killed:.1f}s after the host loss")
    for _ in range(10):  # and it stays on exactly one namespace
        assert lan.holders() == {new.name}
        time.sleep(0.1)
