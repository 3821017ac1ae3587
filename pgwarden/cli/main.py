"""The `pgwarden` command: agent, list, validate-config, demo."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from pgwarden import __version__
from pgwarden.config import ConfigError, load_local, scrub_patroni_env, validate_file

CONFIG_ENV = "PATRONICTL_CONFIG_FILE"


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
def main() -> None:
    """pgwarden: PostgreSQL high availability, a drop-in replacement for Patroni."""


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
    sys.exit(asyncio.run(Agent(local).run()))


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


@main.command("list")
@click.option("-c", "--config-file", "config", envvar=CONFIG_ENV, type=click.Path(path_type=Path),
              help="Configuration file (the agent's own works); default: PATRONI_* environment.")
@click.option("-f", "--format", "fmt", type=click.Choice(["pretty", "tsv", "json", "yaml"]), default="pretty")
@click.option("-W", "watch_forever", is_flag=True, help="Refresh every 2 seconds until interrupted.")
@click.option("-w", "--watch", "watch_seconds", type=float, default=None, help="Refresh every N seconds.")
def list_cmd(config: Path | None, fmt: str, watch_forever: bool, watch_seconds: float | None) -> None:
    """Show the cluster's members: role, state, timeline and lag, read from the DCS."""
    from pgwarden.cli.listing import run_list

    try:
        local = load_local(config, os.environ)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    interval = 2.0 if watch_forever else watch_seconds
    sys.exit(asyncio.run(run_list(local, fmt, interval)))


@main.command()
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("/tmp/pgwarden-demo"),
              show_default=True, help="Where the demo keeps its data, configs and logs.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the data directory on exit (a later demo reuses it).")
def demo(workdir: Path, nodes: int, keep: bool) -> None:
    """Start a local etcd and a cluster of pgwarden-managed PostgreSQL nodes on loopback; Ctrl-C stops it."""
    from pgwarden.cli.demo import run_demo

    sys.exit(run_demo(workdir, nodes, keep))


if __name__ == "__main__":
    main()
