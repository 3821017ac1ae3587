"""The `pgwarden` command: the agent, the patronictl-style cluster commands, validate-config, demo.

`pgwarden agent CONFIG` runs a node. Every other command is a client: it reads the cluster from the
DCS and acts through the members' REST API (see `pgwarden.cli.view`, `manage`, `edit_config_command`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from pgwarden import __version__
from pgwarden.cli.options import target_options

# The client commands, imported only when one of them runs: `pgwarden agent` then never loads rich,
# the drill or the CLI's REST/DCS session code, which would stay resident for the agent's lifetime
# (about 4 MB of RSS). Command name -> "module:attribute".
LAZY_COMMANDS: Mapping[str, str] = {
    "list": "pgwarden.cli.view:list_cmd",
    "topology": "pgwarden.cli.view:topology_cmd",
    "history": "pgwarden.cli.view:history_cmd",
    "show-config": "pgwarden.cli.view:show_config_cmd",
    "dsn": "pgwarden.cli.view:dsn_cmd",
    "query": "pgwarden.cli.view:query_cmd",
    "version": "pgwarden.cli.view:version_cmd",
    "switchover": "pgwarden.cli.manage:switchover_cmd",
    "failover": "pgwarden.cli.manage:failover_cmd",
    "restart": "pgwarden.cli.manage:restart_cmd",
    "reload": "pgwarden.cli.manage:reload_cmd",
    "reinit": "pgwarden.cli.manage:reinit_cmd",
    "flush": "pgwarden.cli.manage:flush_cmd",
    "pause": "pgwarden.cli.manage:pause_cmd",
    "resume": "pgwarden.cli.manage:resume_cmd",
    "remove": "pgwarden.cli.manage:remove_cmd",
    "demote-cluster": "pgwarden.cli.cluster_role:demote_cluster_cmd",
    "promote-cluster": "pgwarden.cli.cluster_role:promote_cluster_cmd",
    "edit-config": "pgwarden.cli.edit_config_command:edit_config_cmd",
    "haproxy-config": "pgwarden.cli.routing:haproxy_config",
    "route": "pgwarden.cli.routing:route",
    "drill": "pgwarden.cli.drill:drill",
    "migrate": "pgwarden.cli.migrate:migrate_cmd",
}


class LazyGroup(click.Group):
    """A click group whose `LAZY_COMMANDS` are imported on first use (help and completion import them all)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        module_name, attribute = LAZY_COMMANDS[cmd_name].split(":")
        loaded = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(loaded, click.Command):
            raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a click command")
        return loaded


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    from pgwarden.agent.run import run

    sys.exit(run(config))


@main.command("validate-config")
@click.argument("config", required=False, type=click.Path(dir_okay=True, path_type=Path))
def validate_config(config: Path | None) -> None:
    """Check a configuration without touching anything; exit 1 and list every problem if it is invalid."""
    from pgwarden.config import ConfigError
    from pgwarden.config.addresses import unauthenticated_api_warning
    from pgwarden.config.loader import effective, load_local_noting

    try:
        local, notes = load_local_noting(config, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    # What an agent would warn of at start: ignored keys, and its bootstrap.dcs as the dynamic config.
    exposed = unauthenticated_api_warning(local.restapi)  # as the agent warns at start (issue 20)
    for warning in notes + list(effective(local, None).warnings) + ([exposed] if exposed else []):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{config or 'environment'}: configuration is valid")


@main.command()
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("/tmp/pgwarden-demo"),
              show_default=True, help="Where the demo keeps its data, configs and logs.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the data directory on exit (a later demo reuses it).")
@click.option("--dcs", type=click.Choice(["etcd3", "etcd", "zookeeper"]), default="etcd3", show_default=True,
              help="The agents' DCS: etcd's v3 API, its v2 API (etcd), or ZooKeeper.")
def demo(workdir: Path, nodes: int, keep: bool, dcs: str) -> None:
    """Start a local etcd (or ZooKeeper) and a cluster of pgwarden-managed PostgreSQL nodes on loopback; Ctrl-C
    stops it."""
    from pgwarden.cli.demo import run_demo

    sys.exit(run_demo(workdir, nodes, keep, dcs))



if __name__ == "__main__":
    main()
