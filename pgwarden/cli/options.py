"""Options shared by the cluster commands (`-c`, `-d`, `-k`, `-f`, `-W`/`-w`).

`-c/--config-file`, `-d/--dcs-url` and `-k/--insecure` work before the command (as patronictl's) and
after it (`pgwarden list -c CONFIG`), the later one winning; they are stored in `ctx.meta` and read by
`pgwarden.cli.session.current_target`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

# This module is imported by `pgwarden agent` too (through the group's options): it must stay free of
# rich and of the CLI's heavier modules, so these constants live here and `listing`/`session` import them.
FORMATS = ("pretty", "tsv", "json", "yaml", "yml")
META_CONFIG, META_DCS_URL, META_INSECURE = "pgwarden.config_file", "pgwarden.dcs_url", "pgwarden.insecure"

CONFIG_ENVVARS = ["PGWARDEN_CONFIG", "PATRONICTL_CONFIG_FILE"]
DCS_URL_ENVVAR = "DCS_URL"
DEFAULT_WATCH_INTERVAL = 2.0

_F = TypeVar("_F", bound=Callable[..., Any])


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            ctx.meta[key] = value
        return value

    return callback


def target_options(*, global_level: bool = False, short_names: bool = True) -> Callable[[_F], _F]:
    """-c/--config-file, -d/--dcs-url, -k/--insecure. Only the group-level ones read the environment;
    `short_names=False` leaves -c and -d free for a command's own use (`query -c SQL -d dbname`)."""

    def names(short: str, long: str) -> list[str]:
        return [short, long] if short_names else [long]

    def decorate(function: _F) -> _F:
        options = [
            click.option(*names("-c", "--config-file"), type=click.Path(dir_okay=True), default=None,
                         envvar=CONFIG_ENVVARS if global_level else None, expose_value=False,
                         callback=_remember(META_CONFIG),
                         help="Configuration file or directory (the agent's own works too)."),
            click.option(*names("-d", "--dcs-url"), "--dcs", default=None, expose_value=False,
                         envvar=DCS_URL_ENVVAR if global_level else None, callback=_remember(META_DCS_URL),
                         help="The DCS to read, e.g. etcd3://127.0.0.1:2379/service (overrides the file)."),
            click.option("-k", "--insecure", is_flag=True, default=False, expose_value=False,
                         callback=_remember(META_INSECURE), help="Do not verify the REST API's TLS certificate."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def format_option(function: _F) -> _F:
    return click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="pretty", show_default=True,
                        help="Output format.")(function)


def watch_options(function: _F) -> _F:
    function = click.option("-w", "--watch", "watch_seconds", type=click.FloatRange(min=0.1), default=None,
                            help="Refresh every N seconds until interrupted.")(function)
    return click.option("-W", "watch_forever", is_flag=True,
                        help=f"Refresh every {DEFAULT_WATCH_INTERVAL:g} seconds until interrupted.")(function)


def watch_interval(watch_forever: bool, watch_seconds: float | None) -> float | None:
    return watch_seconds or (DEFAULT_WATCH_INTERVAL if watch_forever else None)


def cluster_argument(function: _F) -> _F:
    return click.argument("cluster_name", required=False, metavar="[CLUSTER]")(function)


def force_option(function: _F) -> _F:
    return click.option("--force", is_flag=True, help="Do not ask for confirmation.")(function)
