"""Where each member's PostgreSQL and REST API listen, as read from its member key (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pgwarden.model import ClusterView, Member


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One member as a load balancer sees it: the PostgreSQL address and the health-check address."""

    name: str
    pg_host: str
    pg_port: int
    api_host: str
    api_port: int
    api_tls: bool = False

    @property
    def api_base(self) -> str:
        """`http(s)://host:port`, the root of the member's REST API."""
        scheme = "https" if self.api_tls else "http"
        return f"{scheme}://{self.api_host}:{self.api_port}"


def server_address(member: Member) -> ServerAddress | None:
    """The member's addresses from `conn_url` and `api_url`; None when either is missing or malformed."""
    pg = member.host_port
    try:
        api = urlsplit(member.api_url)
        api_port = api.port or (443 if api.scheme == "https" else 80)
    except ValueError:
        return None
    if pg is None or not api.hostname:
        return None
    return ServerAddress(member.name, pg[0], pg[1], api.hostname, api_port, api.scheme == "https")


def servers_from_view(view: ClusterView) -> tuple[ServerAddress, ...]:
    """Every member with usable addresses, sorted by name (a stable order for generated configs)."""
    found = (server_address(m) for m in sorted(view.members, key=lambda m: m.name))
    return tuple(s for s in found if s is not None)
