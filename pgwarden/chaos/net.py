"""Network namespaces for the chaos suite: one per host, one for the clients, one holding the bridge.

Everything lives inside namespaces this module creates, named `<tag>-...` with a per-run random tag,
on a private subnet that exists only behind their bridge: the host's own interfaces and firewall are
never touched. Faults are nftables tables created and deleted inside the host namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

SUBNET = "10.213.9"
"""A /24 of our own (tests/integration/test_routing_vip.py uses 10.213.7): it exists only inside our
namespaces, so parallel runs with other tags never collide."""
CLIENT_OCTET = 200
BRIDGE_OCTET = 254
CLONE_NEWNET = 0x40000000


class NetError(RuntimeError):
    """An `ip` or `nft` command failed; the message carries its stderr."""


def tools_missing() -> list[str]:
    """The commands the suite needs that this machine lacks."""
    return [tool for tool in ("ip", "nft") if shutil.which(tool) is None]


def run(argv: Sequence[str], timeout: float = 10, stdin: str | None = None) -> str:
    """Run a command; NetError with its stderr when it fails."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def new_tag() -> str:
    """A short random prefix for namespace names (ip netns names are file names: keep it short)."""
    return "pgwc" + secrets.token_hex(3)


@dataclass
class Network:
    """The namespaces and links of one chaos cluster. `build()` creates, `close()` deletes everything."""

    hosts: int
    tag: str = field(default_factory=new_tag)
    created: list[str] = field(default_factory=list)

    @property
    def lan(self) -> str:
        return f"{self.tag}-lan"

    @property
    def client(self) -> str:
        return f"{self.tag}-cl"

    def host_ns(self, index: int) -> str:
        """The namespace of host `index` (1-based)."""
        return f"{self.tag}-h{index}"

    @staticmethod
    def host_ip(index: int) -> str:
        return f"{SUBNET}.{index}"

    @property
    def client_ip(self) -> str:
        return f"{SUBNET}.{CLIENT_OCTET}"

    def build(self) -> None:
        """The bridge namespace, the host and client namespaces, a veth from each into the bridge."""
        members = [(self.host_ns(i), self.host_ip(i)) for i in range(1, self.hosts + 1)]
        members.append((self.client, self.client_ip))
        for ns in (self.lan, *(name for name, _ in members)):
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.lan, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.lan, "addr", "add", f"{SUBNET}.{BRIDGE_OCTET}/24", "dev", "br0"])
        run(["ip", "-n", self.lan, "link", "set", "br0", "up"])
        for index, (ns, address) in enumerate(members, start=1):
            port = f"v{index}"
            run(["ip", "-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            run(["ip", "-n", self.lan, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def nft(self, ns: str, script: str) -> None:
        """Load an nft script inside namespace `ns`."""
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=script)

    def drop_table(self, ns: str, table: str) -> None:
        """Delete a fault's nft table in `ns`; a table already gone is fine."""
        with contextlib.suppress(NetError):
            run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table])

    def chaos_tables(self, ns: str) -> list[str]:
        """The nft tables our faults left in `ns` (all of them are ours: the namespace is)."""
        out = run(["ip", "netns", "exec", ns, "nft", "list", "tables"])
        return [line.split()[-1] for line in out.splitlines() if line.startswith("table inet chaos")]

    def close(self) -> None:
        """Delete every namespace this network created (their veths and nft tables go with them)."""
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        self.created.clear()


def enter_netns(ns: str) -> None:
    """Move the calling thread (only it: setns acts per thread) into network namespace `ns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{ns}") as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
