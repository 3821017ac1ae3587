"""GET / PATCH / PUT /config: the cluster-wide dynamic configuration in the DCS (contract 4.4).

A write is checked before it reaches the DCS. Readers of `/config` repair what they cannot use
(`parse_dynamic` falls back to defaults with a warning), so garbage written there would silently
become a default on every node; the API refuses it with a 400 naming the key instead (the check is
`validation.config_problems`, which the agent runs in a child process: see `ConfigProblems`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pgwarden.api.control import AgentControl
from pgwarden.api.http import Request, Response, json_response
from pgwarden.api.requests import Refusal, fresh_cluster, json_object
from pgwarden.config.checker import CheckerError
from pgwarden.dcs.base import DcsError

CONFIG_KEY = "config"  # the key's name in ClusterView.unreadable (dcs.codec.CONFIG)
UNREADABLE_CONFIG = "the stored /config is not valid JSON (a JSON object is required); replace it with PUT /config"


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


ConfigProblems = Callable[[Sequence[Mapping[str, Any]]], Awaitable[list[list[str]]]]
"""For each dynamic configuration, everything wrong with it (validation.config_problems); the agent's
runs in a child process (checker.ConfigChecker.config_problems), the default one in-process."""


async def in_process_config_problems(values: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    from pgwarden.config.validation import config_problems  # pydantic: only where this runs

    return [config_problems(value) for value in values]


async def problems_introduced(old: Mapping[str, Any], new: Mapping[str, Any], check: ConfigProblems) -> list[str]:
    """The problems of `new` that `old` did not already have.

    A PATCH is judged by what it changes: `pause: true` must work even on a cluster whose `/config`
    was already imperfect (written by an older tool), as long as the patch makes nothing worse.
    """
    before, after = await _checked(check, [old, new])
    return [problem for problem in after if problem not in set(before)]


async def _checked(check: ConfigProblems, values: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    try:
        return await check(values)
    except CheckerError as exc:
        raise Refusal(503, f"could not validate the configuration: {exc}") from None


def _invalid(problems: list[str]) -> Refusal:
    return Refusal(400, "invalid dynamic configuration: " + "; ".join(problems))


async def get_config(control: AgentControl, dcs_timeout: float) -> Response:
    """GET /config: 200 with the stored JSON; 502 when the DCS holds no `/config`, or one that is not
    a JSON object (answering `{}` would invite a PATCH that drops the whole configuration)."""
    cluster = await fresh_cluster(control.dcs, dcs_timeout)
    if cluster.config is None:
        return Response(status=502, text="the DCS holds no /config for this cluster")
    if CONFIG_KEY in cluster.unreadable:
        return Response(status=502, text=UNREADABLE_CONFIG)
    return json_response(dict(cluster.config.value))


async def patch_config(request: Request, control: AgentControl, dcs_timeout: float,
                       check: ConfigProblems = in_process_config_problems) -> Response:
    """PATCH /config: merge patch with compare-and-swap on the revision read; 200 with the result."""
    patch = await json_object(request)
    cluster = await fresh_cluster(control.dcs, dcs_timeout)
    if cluster.config is None:
        raise Refusal(503, "the DCS holds no /config to patch (the cluster is not bootstrapped yet)")
    if CONFIG_KEY in cluster.unreadable:
        raise Refusal(503, f"{UNREADABLE_CONFIG}; nothing to patch")
    updated = merge_patch(dict(cluster.config.value), patch)
    problems = await problems_introduced(cluster.config.value, updated, check)
    if problems:
        raise _invalid(problems)
    written = await _write(control, updated, cluster.config.revision, dcs_timeout, failure_status=503)
    if not written:
        raise Refusal(409, "/config was changed by somebody else meanwhile; read it again and retry")
    control.wakeup()
    return json_response(updated)


async def put_config(request: Request, control: AgentControl, dcs_timeout: float,
                     check: ConfigProblems = in_process_config_problems) -> Response:
    """PUT /config: replace `/config` unconditionally with a valid document; 200 with it."""
    value = await json_object(request)
    (problems,) = await _checked(check, [value])
    if problems:
        raise _invalid(problems)
    await _write(control, value, None, dcs_timeout, failure_status=502)
    control.wakeup()
    return json_response(value)


async def _write(
    control: AgentControl, value: Mapping[str, Any], revision: int | None, timeout: float, *, failure_status: int
) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await control.dcs.set_config(value, revision)
    except (DcsError, TimeoutError) as exc:
        raise Refusal(failure_status, f"could not write /config to the DCS: {exc or type(exc).__name__}") from None
