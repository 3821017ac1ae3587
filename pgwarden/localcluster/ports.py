"""Loopback TCP ports for local etcd, PostgreSQL and REST servers."""

from __future__ import annotations

import socket


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_ports(preferred: list[int]) -> list[int]:
    """The preferred ports if all are free, else as many free ephemeral ones (a 0 asks for that)."""
    if all(p > 0 and port_is_free(p) for p in preferred):
        return preferred
    return [free_port() for _ in preferred]
