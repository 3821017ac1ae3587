"""The routing processes' wiring: `pgwarden route` runs the sidecar until SIGTERM/SIGINT, and
`pgwarden haproxy-config` prints a configuration read from the DCS (the click commands: cli/routing.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from pgwarden.config import LocalConfig
from pgwarden.dcs import Dcs, DcsError, open_dcs
from pgwarden.routing.etcd2_mirror import Etcd2LeaderMirror
from pgwarden.routing.haproxy_config import HaproxyOptions, render_haproxy_config
from pgwarden.routing.haproxy_runtime import HaproxyPusher, HaproxyRuntime
from pgwarden.routing.pgbouncer import PgbouncerConsole, PgbouncerPusher
from pgwarden.routing.registry import RouterRegistry
from pgwarden.routing.sidecar import Pusher, RouteSidecar, SidecarTiming
from pgwarden.routing.topology import servers_from_view

log = logging.getLogger(__name__)


async def _dcs(local: LocalConfig) -> Dcs:
    return await open_dcs(local.dcs_kind, local.dcs.as_mapping(), namespace=local.namespace, scope=local.scope,
                          name=local.name, ttl=30, readonly=True)


async def print_haproxy_config(local: LocalConfig, options: HaproxyOptions) -> int:
    """Read the members once and print the configuration; 1 with a message when that is impossible."""
    try:
        dcs = await _dcs(local)
        try:
            view = await dcs.get_cluster()
        finally:
            await dcs.close()
    except DcsError as exc:
        print(f"Error: cannot read the DCS: {exc}")
        return 1
    servers = servers_from_view(view)
    if not servers:
        print(f"Error: cluster {local.scope!r} has no members with conn_url and api_url in the DCS")
        return 1
    try:
        print(render_haproxy_config(local.scope, servers, options), end="")
    except ValueError as exc:
        print(f"Error: {exc}")
        return 1
    return 0


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """What one `pgwarden route` drives, and how often it looks."""

    name: str
    haproxy_sockets: tuple[str, ...] = ()
    pgbouncer_conninfo: str | None = None
    pgbouncer_databases_file: Path | None = None
    pgbouncer_databases: tuple[str, ...] = ("*",)
    pgbouncer_options: str = ""
    etcd2_mirror: str | None = None
    poll_interval: float = 0.25
    hold_timeout: float = 15.0


def build_pushers(local: LocalConfig, options: RouteOptions) -> tuple[list[Pusher], list[str]]:
    """The pushers the options name, and their kinds (published in routers/<name>)."""
    pushers: list[Pusher] = [HaproxyPusher(HaproxyRuntime(s)) for s in options.haproxy_sockets]
    kinds = ["haproxy"] if options.haproxy_sockets else []
    if options.pgbouncer_conninfo and options.pgbouncer_databases_file:
        console = PgbouncerConsole(options.pgbouncer_conninfo)
        pushers.append(PgbouncerPusher(console, options.pgbouncer_databases_file, options.pgbouncer_databases,
                                       extra=options.pgbouncer_options))
        kinds.append("pgbouncer")
    if options.etcd2_mirror:
        key = f"{local.namespace.strip('/')}/{local.scope}/leader"
        pushers.append(Etcd2LeaderMirror(options.etcd2_mirror, key))
        kinds.append("vip")
    return pushers, kinds


async def run_route(local: LocalConfig, options: RouteOptions, stop: asyncio.Event) -> int:
    """Run the sidecar until `stop` is set."""
    pushers, kinds = build_pushers(local, options)
    try:
        dcs = await _dcs(local)
    except DcsError as exc:
        log.error("route: %s", exc)
        return 1
    registry = RouterRegistry(dcs, options.name)
    sidecar = RouteSidecar(dcs, pushers, registry=registry, kinds=kinds,
                           timing=SidecarTiming(poll_interval=options.poll_interval, hold_timeout=options.hold_timeout))
    log.info("route: watching %s for %s", dcs.prefix, ", ".join(p.name for p in pushers))
    try:
        await sidecar.run(stop)
    finally:
        await dcs.close()
    return 0


async def run_route_until_signalled(local: LocalConfig, options: RouteOptions) -> int:
    """`run_route` until SIGTERM or SIGINT, which stop it cleanly (its DCS and registry connections closed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    return await run_route(local, options, stop)
