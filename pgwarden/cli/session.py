"""One CLI invocation's connections: a read-only DCS handle for the scope and a REST client.

Commands read the cluster from the DCS (`cluster()`), choose members, and act through a member's
REST API (`call()`), as patronictl does. Every failure a user can cause or meet is a `CtlError`,
printed as "Error: ..." with exit code 1 by `run()`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from pgwarden import aio
from pgwarden.cli.options import META_CONFIG, META_DCS_URL, META_INSECURE
from pgwarden.cli.target import Target, TargetError, resolve_target
from pgwarden.dcs import Dcs, DcsError, open_dcs
from pgwarden.model import ClusterView, Member
from pgwarden.rest_client import DEFAULT_TIMEOUT, RestClient, RestReply, Unreachable

CTL_NAME = "pgwarden-ctl"  # the DCS client's own name; never written, the handle is read-only
DCS_TIMEOUT = 5.0  # seconds per DCS request

_T = TypeVar("_T")

PIPED_WIDTH = 100_000
"""Columns for output to a pipe or a file (scripts, CI logs): no width to fit there, so tables come out
full width, as patronictl prints them. Any real limit (rich assumes 80) cuts cells short: `127.0.0…`."""


def make_console(*, stderr: bool = False) -> Console:
    """A console for the CLI's output: the terminal's width on a terminal, unlimited otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else PIPED_WIDTH)


console = make_console()
err_console = make_console(stderr=True)


class CtlError(Exception):
    """A failure to report as "Error: <message>" with exit code 1."""


class Ctl:
    """The DCS and REST handles for one scope. Use as `async with Ctl(target, scope) as ctl:`."""

    def __init__(self, target: Target, scope: str) -> None:
        self.target = target
        self.scope = scope
        self._stack = AsyncExitStack()
        self._dcs: Dcs | None = None
        self.rest = RestClient(target.rest)

    async def __aenter__(self) -> Ctl:
        try:
            self._dcs = await open_dcs(self.target.dcs_kind, self.target.dcs, namespace=self.target.namespace,
                                       scope=self.scope, name=CTL_NAME, ttl=30, timeout=DCS_TIMEOUT, readonly=True)
        except (DcsError, ValueError) as exc:
            raise CtlError(f"cannot use the DCS: {exc}") from None
        self._stack.push_async_callback(self._dcs.close)
        await self._stack.enter_async_context(self.rest)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def dcs(self) -> Dcs:
        if self._dcs is None:
            raise RuntimeError("Ctl used outside 'async with'")
        return self._dcs

    async def cluster(self) -> ClusterView:
        """A fresh, consistent read of the scope; CtlError if the DCS cannot be read."""
        try:
            return await self.dcs.get_cluster()
        except DcsError as exc:
            raise CtlError(f"cannot read the DCS: {exc}") from None

    async def existing_cluster(self) -> ClusterView:
        """As `cluster()`, but an empty scope is an error (most commands need members)."""
        view = await self.cluster()
        if not view.members and view.initialize is None and view.config is None:
            raise CtlError(f"cluster {self.scope!r} not found in the DCS (namespace {self.target.namespace})")
        return view

    async def call(
        self, member: Member, method: str, path: str, body: Any = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> RestReply:
        """`method path` on `member`'s REST API; CtlError if the member cannot be reached."""
        if not member.api_url:
            raise CtlError(f"member {member.name} publishes no api_url")
        reply = await self.rest.request(member.api_url, method, path, body, timeout=timeout)
        if isinstance(reply, Unreachable):
            raise CtlError(f"member {member.name}: {reply.reason}")
        return reply


def resolve_scope(target: Target, cluster_name: str | None) -> str:
    """The scope to act on: the CLUSTER argument, else `scope` from the configuration."""
    scope = cluster_name or target.scope
    if not scope:
        raise CtlError("no cluster name: give CLUSTER, or a configuration with 'scope' (-c, PATRONI_SCOPE)")
    return scope


def current_target(ctx: click.Context, environ: Mapping[str, str] | None = None) -> Target:
    """The target from the global options (group or subcommand level) and the environment."""
    environ = os.environ if environ is None else environ
    config = ctx.meta.get(META_CONFIG)
    try:
        return resolve_target(Path(config) if config else None, ctx.meta.get(META_DCS_URL),
                              bool(ctx.meta.get(META_INSECURE)), environ)
    except TargetError as exc:
        raise CtlError(str(exc)) from None


def run(coroutine_factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run one command's coroutine; print CtlError as "Error: ..." and exit 1; Ctrl-C exits 130."""
    async def main() -> _T:
        return await coroutine_factory()

    try:
        return aio.run(main())
    except CtlError as exc:
        err_console.print(f"[red]Error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
