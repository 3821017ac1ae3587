"""The agent's fencing: its watchdog device, and the failsafe pings a leader sends when the DCS is gone.

When and with what timeout the watchdog is armed, fed and closed is the executor's steps' business
(`engine.steps`: arm before promoting, keep alive after each renewal, close at the safepoint of a stop)
and the loop's (`LoopBook.may_feed_watchdog` after a lease keepalive). This module only holds the one
device for the agent's lifetime and says, once, what went wrong with it.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from pgwarden.config.schema import WatchdogConfig
from pgwarden.engine import effects as fx
from pgwarden.model import FailsafePing
from pgwarden.rest_client import RestClient, RestSettings
from pgwarden.watchdog import Watchdog

log = logging.getLogger(__name__)


class Fencing:
    """The agent's watchdog (`pgwarden.watchdog.Watchdog` for the configured mode, device and driver)."""

    def __init__(self, section: WatchdogConfig) -> None:
        self._section = section
        self._dog = Watchdog(section.mode, section.device, section.driver)
        self._said: str | None = None  # the last problem logged (each is said once, not every renewal)

    @property
    def armed(self) -> bool:
        return self._dog.armed

    def failed(self) -> bool:
        """Mode required and the device unusable: the member JSON says `watchdog_failed` and this member
        does not race (a cheap check of the path, done every cycle, so a device that appears counts)."""
        return self._section.mode == "required" and not self._dog.armed and self._dog.probe() is not None

    def arm(self, timeout: int) -> fx.Result:
        was = self._dog.timeout if self._dog.armed else None
        result = self._dog.arm(timeout)
        if result.ok:
            if was != self._dog.timeout:
                log.info("watchdog %s with a timeout of %ss (%s)", "armed" if was is None else "re-armed",
                         self._dog.timeout, self._section.device)
            if result.message:
                self._say(logging.WARNING, result.message)
            else:
                self._said = None
            return fx.Result(True, result.message)
        if self._section.mode == "automatic":
            self._say(logging.WARNING, f"watchdog could not be activated ({result.message}): running without one "
                      "(watchdog mode automatic)")
        else:
            self._say(logging.ERROR, f"watchdog could not be activated: {result.message}")
        return fx.Result(False, result.message)

    def feed(self) -> None:
        if self._dog.armed and not self._dog.keepalive():
            self._say(logging.ERROR, f"watchdog keepalive failed: {self._dog.last_error}")

    def disarm(self) -> None:
        if self._dog.armed:
            self._dog.disarm()
            log.info("watchdog disarmed")

    def reconfigure(self, section: WatchdogConfig) -> None:
        """A reloaded configuration: a changed section takes effect at once (the old device is closed
        cleanly; the next renewal arms the new one)."""
        if section == self._section:
            return
        self.disarm()
        self._section, self._dog, self._said = section, Watchdog(section.mode, section.device, section.driver), None

    def close(self) -> None:
        """The agent exits: close cleanly, so that the host is not reset for it."""
        self.disarm()

    def _say(self, level: int, text: str) -> None:
        if text != self._said:
            log.log(level, "%s", text)
            self._said = text


async def ping_failsafe(http: aiohttp.ClientSession, settings: RestSettings, ping: FailsafePing,
                        targets: tuple[tuple[str, str], ...], timeout: float) -> tuple[fx.PingAnswer, ...]:
    """`POST /failsafe` to every target at once, each bounded by `timeout`: one answer per target."""
    client = RestClient(settings, session=http)

    async def one(name: str, url: str) -> fx.PingAnswer:
        reply = await client.post_failsafe(url, ping.as_json(), timeout=timeout)
        return fx.PingAnswer(name, reply.accepted, "" if reply.accepted else reply.detail)

    return tuple(await asyncio.gather(*(one(name, url) for name, url in targets)))
