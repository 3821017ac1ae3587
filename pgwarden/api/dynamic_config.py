"""GET / PATCH / PUT /config: the cluster-wide dynamic configuration in the DCS (contract 4.4).

A write is checked before it reaches the DCS. Readers of `/config` repair what they cannot use
(`parse_dynamic` falls back to defaults with a warning), so garbage written there would silently
become a default on every node; the API refuses it with a 400 naming the key instead.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pgwarden.api.control import AgentControl
from pgwarden.api.requests import Refusal, fresh_cluster, json_object
from pgwarden.config.dynamic import MIN_LOOP_WAIT, MIN_RETRY_TIMEOUT, MIN_TTL, DynamicConfig, dynamic_problems
from pgwarden.dcs.base import DcsError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _timing_problems(config: DynamicConfig) -> list[str]:
    problems = [
        f"{name}: expected a number >= {minimum}, found {value}"
        for name, value, minimum in (
            ("ttl", config.ttl, MIN_TTL),
            ("loop_wait", config.loop_wait, MIN_LOOP_WAIT),
            ("retry_timeout", config.retry_timeout, MIN_RETRY_TIMEOUT),
        )
        if value < minimum
    ]
    if not problems and config.loop_wait + 2 * config.retry_timeout > config.ttl:
        problems.append(
            f"loop_wait ({config.loop_wait}) + 2*retry_timeout ({config.retry_timeout}) must not exceed "
            f"ttl ({config.ttl}): a leader could lose its lock between two renewals"
        )
    return problems


def config_problems(value: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a dynamic configuration, one sentence per key; [] when usable as is.

    Stricter than `parse_dynamic` (which repairs): values below the timing minimums and a
    `loop_wait + 2*retry_timeout > ttl` triple are problems here, not silent adjustments.
    """
    problems = dynamic_problems(dict(value), "")
    if problems:
        return problems
    return _timing_problems(DynamicConfig.model_validate(dict(value)))


def problems_introduced(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The problems of `new` that `old` did not already have.

    A PATCH is judged by what it changes: `pause: true` must work even on a cluster whose `/config`
    was already imperfect (written by an older tool), as long as the patch makes nothing worse.
    """
    before = set(config_problems(old))
    return [problem for problem in config_problems(new) if problem not in before]


def _invalid(problems: list[str]) -> Refusal:
    return Refusal(400, "invalid dynamic configuration: " + "; ".join(problems))


async def get_config(control: AgentControl, dcs_timeout: float) -> web.Response:
    """GET /config: 200 with the stored JSON; 502 when the DCS holds no `/config`."""
    cluster = await fresh_cluster(control.dcs, dcs_timeout)
    if cluster.config is None:
        return web.Response(status=502, text="the DCS holds no /config for this cluster")
    return web.json_response(dict(cluster.config.value))


async def patch_config(request: web.Request, control: AgentControl, dcs_timeout: float) -> web.Response:
    """PATCH /config: merge patch with compare-and-swap on the revision read; 200 with the result."""
    patch = await json_object(request)
    cluster = await fresh_cluster(control.dcs, dcs_timeout)
    if cluster.config is None:
        raise Refusal(503, "the DCS holds no /config to patch (the cluster is not bootstrapped yet)")
    updated = merge_patch(dict(cluster.config.value), patch)
    problems = problems_introduced(cluster.config.value, updated)
    if problems:
        raise _invalid(problems)
    written = await _write(control, updated, cluster.config.revision, dcs_timeout, failure_status=503)
    if not written:
        raise Refusal(409, "/config was changed by somebody else meanwhile; read it again and retry")
    control.wakeup()
    return web.json_response(updated)


async def put_config(request: web.Request, control: AgentControl, dcs_timeout: float) -> web.Response:
    """PUT /config: replace `/config` unconditionally with a valid document; 200 with it."""
    value = await json_object(request)
    problems = config_problems(value)
    if problems:
        raise _invalid(problems)
    await _write(control, value, None, dcs_timeout, failure_status=502)
    control.wakeup()
    return web.json_response(value)


async def _write(
    control: AgentControl, value: Mapping[str, Any], revision: int | None, timeout: float, *, failure_status: int
) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await control.dcs.set_config(value, revision)
    except (DcsError, TimeoutError) as exc:
        raise Refusal(failure_status, f"could not write /config to the DCS: {exc or type(exc).__name__}") from None
