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
from pgwarden.config.support import dynamic_refusals

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
        self._refused: Inputs | None = None  # the last inputs refused (said once, not retried)
        self._task: asyncio.Task[None] | None = None
        self._ready: tuple[Inputs, EffectiveConfig] | None = None
        self._on_ready = on_ready

    @property
    def running_dynamic(self) -> Mapping[str, Any] | None:
        """The /config value the running configuration was built from (None: the local bootstrap.dcs)."""
        return self._current[1]

    def want(self, inputs: Inputs) -> None:
        """Make sure a configuration for `inputs` is (being) built, unless it is the current one."""
        if same_inputs(inputs, self._current) or same_inputs(inputs, self._wanted):
            return
        if same_inputs(inputs, self._refused):
            return
        refused = dynamic_refusals(inputs[1]) if inputs[1] is not None else []
        if refused:
            # A /config asking for what pgwarden does not do: running on without it could open a
            # second writer (standby_cluster) or lose data, so the agent keeps what it runs with.
            self._refused = inputs
            log.error("configuration: /config asks for what pgwarden does not support; keeping the current "
                      "configuration until it is changed:\n  %s", "\n  ".join(refused))
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._wanted = inputs
        self._task = asyncio.create_task(self._validate(inputs), name="config-validation")

    @property
    def adopted_dynamic(self) -> Mapping[str, Any] | None:
        """The raw dynamic configuration behind the configuration in force (None: bootstrap.dcs)."""
        return self._current[1]

    @property
    def validating(self) -> bool:
        """A validation of new inputs is in flight."""
        return self._task is not None and not self._task.done() and self._wanted is not None

    async def settle(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the validation in flight (if any) to finish. For the
        rare cycle that must not decide with the configuration of before a change (a crash to handle
        right after /config changed what happens after a crash: primary_start_timeout)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

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
