"""The management routes: one factory the agent calls, giving the server's `routes` table.

    runner = await start_api(holder, host, port, access=access_policy_from(restapi),
                             routes=management_routes(agent), ssl_context=ssl_context_from(restapi))

Each handler parses its request (pgwarden.api.requests), answers with the contract's status codes and
texts, and reaches the agent only through `AgentControl`. Access checks (allowlist, client
certificate, HTTP Basic) happen in the server before any non-read handler runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pgwarden.api import dynamic_config, failsafe, switchover
from pgwarden.api.control import AgentControl
from pgwarden.api.http import Request, Response, StreamResponse, json_response
from pgwarden.api.metrics import metrics_registry, render
from pgwarden.api.openapi import openapi_document
from pgwarden.api.operations import parse_reinitialize, parse_restart
from pgwarden.api.requests import json_object, refusing_bad_requests, reply
from pgwarden.api.server import Handler
from pgwarden.api.state import StateHolder
from pgwarden.config.schema import LocalConfig

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

DCS_TIMEOUT = 10.0  # seconds one management request may spend on one DCS read or write


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    """Knobs of the management endpoints; the defaults are right for the agent."""

    dcs_timeout: float = DCS_TIMEOUT
    switchover_wait: float | None = None
    """Seconds POST /switchover waits for the new leader; None: 2 x max(10, loop_wait) (contract)."""
    wall_clock: Callable[[], datetime] = _utc_now
    """Aware 'now' for validating schedules."""
    monotonic: Callable[[], float] = field(default=time.monotonic)
    """The agent's monotonic clock (for lock-derived metrics)."""
    config_problems: dynamic_config.ConfigProblems = dynamic_config.in_process_config_problems
    """How PATCH/PUT /config bodies are checked (the agent's: in a child process, config.checker)."""


Routes = dict[tuple[str, str], Handler]


def management_routes(control: AgentControl, settings: ManagementSettings | LocalConfig | None = None) -> Routes:
    """The server's `routes` table for every management endpoint, bound to `control`.

    `settings`: ManagementSettings, or the agent's LocalConfig (then the defaults apply: nothing in
    the local file tunes these endpoints; access rules and TLS are the server's, see security.py).
    """
    s = settings if isinstance(settings, ManagementSettings) else ManagementSettings()
    registries: dict[int, CollectorRegistry] = {}

    async def get_config(request: Request, holder: StateHolder) -> StreamResponse:
        return await dynamic_config.get_config(control, s.dcs_timeout)

    async def patch_config(request: Request, holder: StateHolder) -> StreamResponse:
        return await dynamic_config.patch_config(request, control, s.dcs_timeout, s.config_problems)

    async def put_config(request: Request, holder: StateHolder) -> StreamResponse:
        return await dynamic_config.put_config(request, control, s.dcs_timeout, s.config_problems)

    def switchover_handler(action: switchover.Action) -> Handler:
        async def post(request: Request, holder: StateHolder) -> StreamResponse:
            body = await json_object(request)
            return await switchover.post_switchover(
                body, action, control, loop_wait=holder.get().loop_wait, now=s.wall_clock(),
                dcs_timeout=s.dcs_timeout, wait=s.switchover_wait,
            )  # fmt: skip

        return post

    async def delete_switchover(request: Request, holder: StateHolder) -> StreamResponse:
        return await switchover.delete_switchover(control, s.dcs_timeout)

    async def post_restart(request: Request, holder: StateHolder) -> StreamResponse:
        body = await json_object(request, optional=True)
        return reply(await control.restart(parse_restart(body, s.wall_clock(), paused=holder.get().paused)))

    async def delete_restart(request: Request, holder: StateHolder) -> StreamResponse:
        return reply(await control.cancel_scheduled_restart())

    async def post_reload(request: Request, holder: StateHolder) -> StreamResponse:
        return reply(await control.reload())

    async def post_reinitialize(request: Request, holder: StateHolder) -> StreamResponse:
        force, from_leader = parse_reinitialize(await json_object(request, optional=True))
        return reply(await control.reinitialize(force=force, from_leader=from_leader))

    async def get_failsafe(request: Request, holder: StateHolder) -> StreamResponse:
        return failsafe.get_failsafe(holder.get())

    async def post_failsafe(request: Request, holder: StateHolder) -> StreamResponse:
        return await failsafe.post_failsafe(request, holder.get(), control)

    async def get_metrics(request: Request, holder: StateHolder) -> StreamResponse:
        registry = registries.setdefault(id(holder), metrics_registry(holder, s.monotonic))
        await holder.fresh()  # the collector renders holder.get(): make that a recent probe
        body, content_type = render(registry)
        response = Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def get_openapi(request: Request, holder: StateHolder) -> StreamResponse:
        return json_response(openapi_document(holder.get().version))

    handlers: Routes = {
        ("GET", "config"): get_config,
        ("PATCH", "config"): patch_config,
        ("PUT", "config"): put_config,
        ("POST", "switchover"): switchover_handler("switchover"),
        ("DELETE", "switchover"): delete_switchover,
        ("POST", "failover"): switchover_handler("failover"),
        ("POST", "restart"): post_restart,
        ("DELETE", "restart"): delete_restart,
        ("POST", "reload"): post_reload,
        ("POST", "reinitialize"): post_reinitialize,
        ("GET", "failsafe"): get_failsafe,
        ("POST", "failsafe"): post_failsafe,
        ("GET", "metrics"): get_metrics,
        ("GET", "openapi.json"): get_openapi,
    }
    return {key: refusing_bad_requests(handler) for key, handler in handlers.items()}
