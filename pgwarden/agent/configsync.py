"""The agent's effective configuration kept in step with its local configuration and `/config`.

Validation runs in a child process (`config.checker`), which may take a while on a starved machine,
so it never runs inside an HA cycle: a cycle that sees new inputs (another `/config`, or a reloaded
local configuration) starts a validation in the background and goes on with the configuration it
has; the validated result is taken by the first cycle after it is ready (which it wakes). A failed
validation is logged and retried by the next cycle that still sees those inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pgwarden.config import EffectiveConfig, LocalConfig, layer
from pgwarden.config.checker import CheckerError, ConfigChecker

log = logging.getLogger("pgwarden")

Inputs = tuple[LocalConfig, Mapping[str, Any] | None]
"""What an effective configuration is made of: the local configuration and the raw /config (None:
the cluster has none yet, so the local bootstrap.dcs stands in for it)."""


def same_inputs(a: Inputs | None, b: Inputs | None) -> bool:
    """The very same local configuration object, and equal /config values."""
    return a is not None and b is not None and a[0] is b[0] and a[1] == b[1]


class ConfigSync:
    """One validation at a time; newer inputs replace (cancel) one in flight."""

    def __init__(self, checker: ConfigChecker, current: Inputs, on_ready: Callable[[], None]) -> None:
        self._checker = checker
        self._current = current  # the inputs of the configuration the agent runs with
        self._wanted: Inputs | None = None  # the inputs being validated
        self._task: asyncio.Task[None] | None = None
        self._ready: tuple[Inputs, EffectiveConfig] | None = None
        self._on_ready = on_ready

    def want(self, inputs: Inputs) -> None:
        """Make sure a configuration for `inputs` is (being) built, unless it is the current one."""
        if same_inputs(inputs, self._current) or same_inputs(inputs, self._wanted):
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._wanted = inputs
        self._task = asyncio.create_task(self._validate(inputs), name="config-validation")

    def take(self) -> EffectiveConfig | None:
        """The configuration validated since the last call, once; None if there is none."""
        ready, self._ready = self._ready, None
        if ready is None:
            return None
        self._current = ready[0]
        return ready[1]

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=2)

    async def _validate(self, inputs: Inputs) -> None:
        local, dynamic = inputs
        try:
            parsed, warnings = await self._checker.parse_dynamic(local.bootstrap.dcs if dynamic is None else dynamic)
        except CheckerError as exc:
            log.error("configuration: could not validate /config, keeping the current configuration: %s", exc)
            self._wanted = None  # the next cycle that sees these inputs tries again
            return
        if same_inputs(inputs, self._wanted):
            self._ready = (inputs, layer(local, parsed, warnings))
            self._wanted = None
            self._on_ready()
