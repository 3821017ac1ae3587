"""The `pgwarden` command: the agent, the patronictl-style cluster commands, validate-config, demo.

`pgwarden agent CONFIG` runs a node. Every other command is a client: it reads the cluster from the
DCS and acts through the members' REST API (see `pgwarden.cli.view`, `manage`, `editconfig`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from pgwarden import __version__
from pgwarden.cli.drill import drill
from pgwarden.cli.editconfig import edit_config_cmd
from pgwarden.cli.manage import MANAGE_COMMANDS
from pgwarden.cli.options import target_options
from pgwarden.cli.routing import haproxy_config, route
from pgwarden.cli.view import VIEW_COMMANDS
from pgwarden.config import ConfigError, load_local, scrub_patroni_env, validate_file


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's access log would print a line per health check.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgwarden")
@target_options(global_level=True)
def main() -> None:
    """pgwarden: PostgreSQL high availability, a drop-in replacement for Patroni.

    The cluster commands find the cluster from -c/--config-file (or $PGWARDEN_CONFIG,
    $PATRONICTL_CONFIG_FILE, the PATRONI_* environment) and -d/--dcs-url etcd3://host:port/namespace.
    """


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=True, path_type=Path))
def agent(config: Path | None) -> None:
    """Run the agent on this host (CONFIG: a Patroni YAML file or a directory of them; or PATRONI_* env)."""
    from pgwarden.agent.loop import Agent

    try:
        local = load_local(config, os.environ)
    except ConfigError as exc:
        click.echo(f"pgwarden: invalid configuration:\n{exc}", err=True)
        sys.exit(2)
    scrub_patroni_env(os.environ)  # passwords must not leak into PostgreSQL or scripts we start
    _setup_logging(local.log.level)
    sys.exit(asyncio.run(Agent(local, config).run()))


@main.command("validate-config")
@click.argument("config", required=False, type=click.Path(dir_okay=True, path_type=Path))
def validate_config(config: Path | None) -> None:
    """Check a configuration without touching anything; exit 1 and list every problem if it is invalid."""
    problems = validate_file(config, os.environ)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        sys.exit(1)
    click.echo(f"{config or 'environment'}: configuration is valid")


@main.command()
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("/tmp/pgwarden-demo"),
              show_default=True, help="Where the demo keeps its data, configs and logs.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the data directory on exit (a later demo reuses it).")
def demo(workdir: Path, nodes: int, keep: bool) -> None:
    """Start a local etcd and a cluster of pgwarden-managed PostgreSQL nodes on loopback; Ctrl-C stops it."""
    from pgwarden.cli.demo import run_demo

    sys.exit(run_demo(workdir, nodes, keep))


for _command in (*VIEW_COMMANDS, *MANAGE_COMMANDS, edit_config_cmd):
    main.add_command(_command)

# Commands living in their own modules (routing sidecar and HAProxy config; the fire drill).
main.add_command(haproxy_config)
main.add_command(route)
main.add_command(drill)


if __name__ == "__main__":
    main()
