"""Loopback TCP ports for local etcd, PostgreSQL and REST servers."""

from __future__ import annotations

import random
import socket


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


LISTEN_PORTS = range(20000, 32000)
"""Where servers' ports are drawn from: below Linux's ephemeral range (32768-60999 by default), the source
ports of outgoing connections. A port the kernel hands out for binding (port 0) lies inside that range, so
between picking it and a server binding it (seconds later for a replica started after the bootstrap) an
agent's or a test's connection could take it as its source port, and the server would never start."""

_given: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, not handed out before by this process, and
    outside the ephemeral range (above); the kernel's pick if none is found."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port not in _given and port_is_free(port):
            _given.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_ports(preferred: list[int]) -> list[int]:
    """The preferred ports if all are free, else as many free ephemeral ones (a 0 asks for that)."""
    if all(p > 0 and port_is_free(p) for p in preferred):
        return preferred
    return [free_port() for _ in preferred]
