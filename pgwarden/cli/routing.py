"""`pgwarden haproxy-config` and `pgwarden route`: traffic follows the primary (register both in main).

Only the options are parsed here; what the commands run is `pgwarden.routing.run`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from pgwarden import aio
from pgwarden.config import ConfigError, LocalConfig, load_local

CONFIG_ENV = "PATRONICTL_CONFIG_FILE"
_config_option = click.option(
    "-c", "--config-file", "config", envvar=CONFIG_ENV, type=click.Path(path_type=Path),
    help="Configuration file (an agent's own works); default: PATRONI_* environment.")


def _load(config: Path | None) -> LocalConfig:
    try:
        return load_local(config, os.environ)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


@click.command("haproxy-config")
@_config_option
@click.option("--bind", default="*", show_default=True, help="Address the listeners bind to.")
@click.option("--primary-port", type=int, default=5000, show_default=True, help="Read-write listener.")
@click.option("--replica-port", type=int, default=5001, show_default=True, help="Read-only listener.")
@click.option("--stats-port", type=int, default=7000, show_default=True, help="HTTP stats page.")
@click.option("--lag", "replica_lag", default="1MB", show_default=True,
              help="Largest replica lag served on the read-only port (bytes or 16kB/64MB; 'none': no limit).")
@click.option("--admin-socket", default="/run/haproxy/pgwarden.sock", show_default=True,
              help="HAProxy admin socket that `pgwarden route --haproxy-socket` drives.")
@click.option("--check-interval", "check_interval_ms", type=click.IntRange(100), default=1000, show_default=True,
              help="Health check interval in milliseconds.")
def haproxy_config(config: Path | None, bind: str, primary_port: int, replica_port: int, stats_port: int,
                   replica_lag: str, admin_socket: str, check_interval_ms: int) -> None:
    """Print an HAProxy configuration for the cluster's members, as read from the DCS."""
    from pgwarden.routing.haproxy_config import HaproxyOptions
    from pgwarden.routing.run import print_haproxy_config

    options = HaproxyOptions(bind=bind, primary_port=primary_port, replica_port=replica_port,
                             stats_port=stats_port, admin_socket=admin_socket,
                             replica_lag=None if replica_lag.lower() == "none" else replica_lag,
                             check_interval_ms=check_interval_ms)
    sys.exit(aio.run(print_haproxy_config(_load(config), options)))


@click.command("route")
@_config_option
@click.option("--name", default=None, help="This router's name in the DCS (routers/<name>); default: host name.")
@click.option("--haproxy-socket", "haproxy_sockets", multiple=True,
              help="HAProxy admin socket (path or host:port) to push the primary into; repeatable.")
@click.option("--pgbouncer", "pgbouncer_conninfo", default=None,
              help="PgBouncer admin console conninfo, e.g. 'host=127.0.0.1 port=6432 user=pgbouncer'.")
@click.option("--pgbouncer-databases-file", type=click.Path(path_type=Path), default=None,
              help="The file PgBouncer %include's in its [databases] section; rewritten on every switch.")
@click.option("--pgbouncer-database", "pgbouncer_databases", multiple=True,
              help="Database entry to write ('*' = any, the default); repeatable.")
@click.option("--pgbouncer-options", default="", help="Extra connection options for each entry (e.g. 'pool_size=20').")
@click.option("--etcd2-mirror", default=None,
              help="etcd endpoint (v2 API enabled) to mirror the leader key into, for vip-manager 1.x.")
@click.option("--poll-interval", type=float, default=0.25, show_default=True,
              help="Seconds between DCS reads when nothing wakes the watch.")
@click.option("--hold-timeout", type=float, default=15.0, show_default=True,
              help="Seconds a switchover may hold PgBouncer paused before it is resumed as it was.")
def route(config: Path | None, name: str | None, haproxy_sockets: tuple[str, ...], pgbouncer_conninfo: str | None,
          pgbouncer_databases_file: Path | None, pgbouncer_databases: tuple[str, ...], pgbouncer_options: str,
          etcd2_mirror: str | None, poll_interval: float, hold_timeout: float) -> None:
    """Watch the DCS and switch HAProxy / PgBouncer / the VIP key to the new primary the moment roles change."""
    from pgwarden.routing.run import RouteOptions, run_route_until_signalled

    if not haproxy_sockets and not pgbouncer_conninfo and not etcd2_mirror:
        raise click.UsageError("nothing to drive: give --haproxy-socket, --pgbouncer or --etcd2-mirror")
    if pgbouncer_conninfo and pgbouncer_databases_file is None:
        raise click.UsageError("--pgbouncer needs --pgbouncer-databases-file")
    local = _load(config)
    logging.basicConfig(level=getattr(logging, local.log.level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s: %(message)s", stream=sys.stderr)
    options = RouteOptions(name=name or os.uname().nodename, haproxy_sockets=haproxy_sockets,
                           pgbouncer_conninfo=pgbouncer_conninfo, pgbouncer_databases_file=pgbouncer_databases_file,
                           pgbouncer_databases=pgbouncer_databases or ("*",), pgbouncer_options=pgbouncer_options,
                           etcd2_mirror=etcd2_mirror, poll_interval=poll_interval, hold_timeout=hold_timeout)
    sys.exit(aio.run(run_route_until_signalled(local, options)))
