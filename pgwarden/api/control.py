"""What the REST management endpoints may ask of the agent, and what they get back.

The management handlers validate a request, then either write the DCS themselves (config, failover
key: plain compare-and-swap writes, exactly what patronictl does too) or hand a local operation
(restart, reload, reinitialize) to the agent through `AgentControl`. The agent turns such a request
into an input of its next decision, so the decision core, not the HTTP handler, decides whether and
how it happens (e.g. a restart is refused while a bootstrap runs). A leader's failsafe ping
(`POST /failsafe`) is answered at once by `failsafe_ping`, without waiting for a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pgwarden.dcs.base import Dcs
from pgwarden.model import LSN, ClusterView, FailsafePing


@dataclass(frozen=True, slots=True)
class RestartRequest:
    """POST /restart's body, validated. Conditions that do not hold make the restart a no-op (503)."""

    role: str | None = None  # "primary" | "replica" | ... : restart only if this node has that role
    postgres_version: str | None = None  # restart only if the running server is older than this
    restart_pending: bool = False  # restart only if a parameter change is pending a restart
    timeout: float | None = None  # seconds to wait for the restart (primary: fail over past it)
    schedule: str | None = None  # ISO 8601 instant; absent: now


@dataclass(frozen=True, slots=True)
class ControlResult:
    """The agent's answer: an HTTP status and the text Patroni would answer."""

    status: int
    text: str


@dataclass(frozen=True, slots=True)
class FailsafeAnswer:
    """This member's answer to a leader's failsafe ping (contract 2.8): `accepted` -> 200 "Accepted"
    with the header `lsn` (this replica's received/replayed position, when known); refused -> 500
    "Running as a leader"."""

    accepted: bool
    lsn: LSN | None = None


class AgentControl(Protocol):
    """Implemented by the agent (pgwarden.agent.loop.Agent); a fake in the API's unit tests."""

    @property
    def dcs(self) -> Dcs:
        """The agent's DCS connection (for /config, /switchover, /failover and fresh /cluster reads)."""
        ...

    @property
    def member_names(self) -> tuple[str, ...]:
        """Members as of the agent's last DCS read (for allowlist_include_members)."""
        ...

    async def restart(self, request: RestartRequest) -> ControlResult:
        """Restart PostgreSQL now (200 "restarted successfully" / 503 ...), or schedule it (202)."""
        ...

    async def cancel_scheduled_restart(self) -> ControlResult:
        """DELETE /restart: 200 "scheduled restart deleted" / 404 "no restarts are scheduled"."""
        ...

    async def reload(self) -> ControlResult:
        """POST /reload: re-read the local configuration files (as SIGHUP) -> 202 "reload scheduled"."""
        ...

    async def reinitialize(self, *, force: bool, from_leader: bool) -> ControlResult:
        """POST /reinitialize: wipe (move aside) and re-clone this replica. 200 "reinitialize started"."""
        ...

    def failsafe_ping(self, ping: FailsafePing) -> FailsafeAnswer:
        """POST /failsafe from a leader that lost the DCS (the body validated). Synchronous on purpose:
        whether to accept and recording the ping happen without an await in between, so two pings (or
        a ping and the HA loop) never interleave there."""
        ...

    def wakeup(self) -> None:
        """Run an HA cycle now (after a DCS write the loop should react to at once)."""
        ...

    async def wait_for_new_leader(self, old: str | None, timeout: float) -> ClusterView | None:
        """After a switchover/failover request: the first cluster view whose leader differs from `old`
        and whose leader runs as primary, or None on timeout. Answers as soon as that happens (no
        polling in whole seconds), so POST /switchover returns the moment the new primary is up."""
        ...
