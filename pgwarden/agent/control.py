"""The agent's side of the REST management endpoints (`pgwarden.api.control.AgentControl`).

A local operation (restart, reinitialize) becomes an `OperatorRequest` in the next snapshot; the
decision core carries it out or refuses it, and the HTTP answer follows from that decision. Nothing
here decides; it queues, waits and translates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from pgwarden.aio import bounded
from pgwarden.api.control import ControlResult, FailsafeAnswer, RestartRequest
from pgwarden.core import Decision, Outcome, render
from pgwarden.core.reasons import Why
from pgwarden.core.snapshot import OperatorRequest, ReinitRequested, RestartRequested
from pgwarden.dcs import Dcs, DcsError
from pgwarden.engine.loop import RequestBook
from pgwarden.model import ClusterView, FailsafePing, PgState, Role

log = logging.getLogger("pgwarden")

POLL = 0.1


@dataclass
class RequestDesk:
    """At most one operator request at a time, waiting for the next decision: the shared rules
    (`engine.loop.RequestBook`, which the simulator runs too) plus the REST answer to give."""

    book: RequestBook = field(default_factory=RequestBook)
    reply: asyncio.Future[ControlResult] | None = None
    """The REST request's answer, once the request is started or refused."""
    scheduled_restart: tuple[float, RestartRequested, str] | None = None  # (epoch, request, ISO text)
    wake: Callable[[], None] = field(default=lambda: None)

    def submit(self, request: OperatorRequest) -> asyncio.Future[ControlResult] | None:
        if not self.book.submit(request):
            return None
        self.reply = asyncio.get_running_loop().create_future()
        self.wake()
        return self.reply

    def due_request(self, wall: float) -> OperatorRequest | None:
        """The request for this snapshot: a pending one, or a scheduled restart whose time has come."""
        if self.book.request is None and self.scheduled_restart is not None and self.scheduled_restart[0] <= wall:
            _, request, _ = self.scheduled_restart
            self.scheduled_restart = None
            self.book.submit(request)
            self.reply = asyncio.get_running_loop().create_future()
            log.info("scheduled restart is due")
        return self.book.due_request(wall)

    def answer(self, request: OperatorRequest, started: bool | None, decision: Decision) -> None:
        """The core answered `request` (`RequestBook.decided`): started (a restart's answer follows its
        outcome) or refused."""
        if started is False:
            self._answer(ControlResult(503, refusal_text(decision)))
        elif started and isinstance(request, ReinitRequested):
            self._answer(ControlResult(200, "reinitialize started"))

    def finished(self, outcome: Outcome) -> None:
        if isinstance(self.book.finished(outcome), RestartRequested):
            # Patroni's texts; the agent's log says why a restart failed.
            text = "restarted successfully" if outcome.ok else "restart failed"
            self._answer(ControlResult(200 if outcome.ok else 503, text))

    def _answer(self, result: ControlResult) -> None:
        reply, self.reply = self.reply, None
        if reply is not None and not reply.done():
            reply.set_result(result)


def refusal_text(decision: Decision) -> str:
    """The 503 text of a refused restart or reinitialize, in Patroni's words (contract 4.4); the
    agent's log line (`render`) keeps pgwarden's details."""
    reason = decision.reason
    if reason.why is Why.REINITIALIZE_REFUSED:
        return reason.fact("detail")  # "I am the leader, can not reinitialize", ...
    if reason.why is Why.RESTART_REFUSED:
        detail = reason.fact("detail")
        return detail if detail == "postgres is still starting" else "restart conditions are not satisfied"
    if reason.why is Why.TASK_IN_PROGRESS:
        return f"{reason.fact('task')} already in progress"
    return render(reason)


class AgentControlImpl:
    """Implements `pgwarden.api.control.AgentControl` for one agent."""

    def __init__(self, *, dcs: Dcs, desk: RequestDesk, cluster: Callable[[], ClusterView | None],
                 paused: Callable[[], bool], reload: Callable[[], Awaitable[str]], wake: Callable[[], None],
                 failsafe: Callable[[FailsafePing], FailsafeAnswer] | None = None) -> None:
        self._dcs = dcs
        self._desk = desk
        self._cluster = cluster
        self._paused = paused
        self._reload = reload
        self._wake = wake
        self._failsafe = failsafe

    @property
    def dcs(self) -> Dcs:
        return self._dcs

    @property
    def member_names(self) -> tuple[str, ...]:
        cluster = self._cluster()
        return tuple(m.name for m in cluster.members) if cluster else ()

    async def restart(self, request: RestartRequest) -> ControlResult:
        version = _version_number(request.postgres_version) if request.postgres_version else None
        wanted = RestartRequested(role=request.role, postgres_version=version,
                                  restart_pending=request.restart_pending)
        if request.schedule:
            return self._schedule(request.schedule, wanted)
        future = self._desk.submit(wanted)
        if future is None:
            return ControlResult(503, "another operation is already in progress")
        timeout = request.timeout or 600.0
        try:
            return await bounded(asyncio.shield(future), timeout + 30)
        except TimeoutError:
            return ControlResult(503, "restart status unknown: it is still running")

    def _schedule(self, text: str, request: RestartRequested) -> ControlResult:
        if self._paused():
            return ControlResult(500, "Can't schedule restart in the paused state")
        if self._desk.scheduled_restart is not None:
            return ControlResult(409, "Another restart is already scheduled")
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return ControlResult(422, "Unable to parse scheduled timestamp. It should be in an unambiguous format")
        if when.tzinfo is None:
            return ControlResult(400, "Timezone information is mandatory for the scheduled restart")
        self._desk.scheduled_restart = (when.timestamp(), request, when.isoformat())
        return ControlResult(202, "Restart scheduled")

    async def cancel_scheduled_restart(self) -> ControlResult:
        if self._desk.scheduled_restart is None:
            return ControlResult(404, "no restarts are scheduled")
        self._desk.scheduled_restart = None
        return ControlResult(200, "scheduled restart deleted")

    async def reload(self) -> ControlResult:
        message = await self._reload()
        return ControlResult(202, f"reload scheduled{': ' + message if message else ''}")

    async def reinitialize(self, *, force: bool, from_leader: bool) -> ControlResult:
        # `force` cancels nothing here: a running task makes the core refuse with "... in progress".
        future = self._desk.submit(ReinitRequested(from_leader=from_leader))
        if future is None:
            return ControlResult(503, "another operation is already in progress")
        return await bounded(asyncio.shield(future), 60)

    def failsafe_ping(self, ping: FailsafePing) -> FailsafeAnswer:
        """Accepted or refused by the agent's loop rule (`Agent._failsafe_ping`)."""
        return self._failsafe(ping) if self._failsafe is not None else FailsafeAnswer(False, None)

    def wakeup(self) -> None:
        self._wake()

    async def wait_for_new_leader(self, old: str | None, timeout: float) -> ClusterView | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                cluster = await self._dcs.get_cluster()
            except DcsError:
                cluster = None
            if cluster is not None and cluster.leader is not None and cluster.leader.name != old:
                member = cluster.leader_member
                if member is not None and member.role == Role.PRIMARY and member.state == PgState.RUNNING:
                    return cluster
            await asyncio.sleep(POLL)
        return None


def _version_number(text: str) -> int | None:
    """'15.4' -> 150004, '9.6.2' -> 90602 (server_version_num form)."""
    parts = [int(p) for p in text.split(".") if p.isdigit()]
    if not parts:
        return None
    if parts[0] >= 10:
        return parts[0] * 10000 + (parts[1] if len(parts) > 1 else 0)
    return parts[0] * 10000 + (parts[1] if len(parts) > 1 else 0) * 100 + (parts[2] if len(parts) > 2 else 0)
