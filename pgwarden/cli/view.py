"""Read-only commands: list, topology, history, show-config, dsn, query, version."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row

from pgwarden import __version__
from pgwarden.cli.choose import ROLE_CHOICES, ChoiceError, pick_member
from pgwarden.cli.config_patch import to_yaml
from pgwarden.cli.listing import (
    HISTORY_COLUMNS,
    history_rows,
    member_records,
    plain_table,
    render_cluster,
    serialize,
)
from pgwarden.cli.options import (
    FORMATS,
    cluster_argument,
    format_option,
    target_options,
    watch_interval,
    watch_options,
)
from pgwarden.cli.session import Ctl, CtlError, console, current_target, resolve_scope, run
from pgwarden.model import ClusterView, Member
from pgwarden.rest_client import RestError

PG_CONNECT_TIMEOUT = 5  # seconds, for `query`


async def _watch(interval: float | None, show_timestamp: bool, render: Callable[[], Awaitable[None]]) -> None:
    """Render once, or every `interval` seconds (clearing the screen) until interrupted."""
    while True:
        if interval:
            console.clear()
        if show_timestamp or interval:
            console.print(datetime.now().strftime("%Y-%m-%d %H:%M:%S"))
        await render()
        if not interval:
            return
        await asyncio.sleep(interval)


def _echo_records(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, title: str) -> None:
    if fmt == "pretty":
        console.print(plain_table(rows, columns, title))
    else:
        click.echo(serialize(rows, columns, fmt))


def _render_members(cluster: ClusterView, fmt: str, *, extended: bool = False, topology: bool = False) -> None:
    if fmt == "pretty":
        render_cluster(console, cluster, extended=extended, topology=topology)
        return
    # Machine formats go through click.echo: no colour and no wrapping, whatever the terminal.
    columns, records = member_records(cluster, extended=extended, topology=topology)
    click.echo(serialize(records, columns, fmt))


async def _show_members(ctx: click.Context, names: Sequence[str], fmt: str, extended: bool, topology: bool,
                        interval: float | None, timestamp: bool) -> None:
    target = current_target(ctx)
    scopes = list(names) or [resolve_scope(target, None)]
    ctls = [Ctl(target, scope) for scope in scopes]
    try:
        for ctl in ctls:
            await ctl.__aenter__()

        async def render() -> None:
            for ctl in ctls:
                _render_members(await ctl.cluster(), fmt, extended=extended, topology=topology)

        await _watch(interval, timestamp, render)
    finally:
        for ctl in ctls:
            await ctl.__aexit__(None, None, None)


@click.command("list")
@click.argument("cluster_names", nargs=-1, metavar="[CLUSTER]...")
@target_options()
@click.option("-e", "--extended", is_flag=True, help="Add pending restart, scheduled restart and tags.")
@click.option("-t", "--timestamp", is_flag=True, help="Print the time of the read above the table.")
@format_option
@watch_options
@click.pass_context
def list_cmd(ctx: click.Context, cluster_names: tuple[str, ...], extended: bool, timestamp: bool, fmt: str,
             watch_forever: bool, watch_seconds: float | None) -> None:
    """The members: role, state (`streaming` only when the replica really streams), timeline, LSNs and lag."""
    interval = watch_interval(watch_forever, watch_seconds)
    run(lambda: _show_members(ctx, cluster_names, fmt, extended, False, interval, timestamp))


@click.command("topology")
@cluster_argument
@target_options()
@click.option("-e", "--extended", is_flag=True, help="Add pending restart, scheduled restart and tags.")
@click.option("-t", "--timestamp", is_flag=True, help="Print the time of the read above the table.")
@format_option
@watch_options
@click.pass_context
def topology_cmd(ctx: click.Context, cluster_name: str | None, extended: bool, timestamp: bool, fmt: str,
                 watch_forever: bool, watch_seconds: float | None) -> None:
    """Like `list`, with each replica indented under the member it replicates from (replicatefrom)."""
    interval = watch_interval(watch_forever, watch_seconds)
    names = (cluster_name,) if cluster_name else ()
    run(lambda: _show_members(ctx, names, fmt, extended, True, interval, timestamp))


async def _with_cluster(ctx: click.Context, cluster_name: str | None,
                        action: Callable[[Ctl, ClusterView], Awaitable[None]]) -> None:
    target = current_target(ctx)
    async with Ctl(target, resolve_scope(target, cluster_name)) as ctl:
        await action(ctl, await ctl.existing_cluster())


@click.command("history")
@cluster_argument
@target_options()
@format_option
@click.pass_context
def history_cmd(ctx: click.Context, cluster_name: str | None, fmt: str) -> None:
    """Timeline history: where each timeline ended, why, when, and who took over."""

    async def show(ctl: Ctl, cluster: ClusterView) -> None:
        _echo_records(history_rows(cluster), HISTORY_COLUMNS, fmt, f"Cluster: {cluster.scope} history")

    run(lambda: _with_cluster(ctx, cluster_name, show))


@click.command("show-config")
@cluster_argument
@target_options()
@click.pass_context
def show_config_cmd(ctx: click.Context, cluster_name: str | None) -> None:
    """Print the dynamic configuration (the DCS `/config` key) as YAML."""

    async def show(ctl: Ctl, cluster: ClusterView) -> None:
        if cluster.config is None:
            raise CtlError(f"cluster {cluster.scope} has no /config key yet")
        if "config" in cluster.unreadable:
            raise CtlError(f"cluster {cluster.scope}: the stored /config is not valid JSON (a JSON object is required)")
        click.echo(to_yaml(cluster.config.value), nl=False)

    run(lambda: _with_cluster(ctx, cluster_name, show))


def member_dsn(member: Member) -> str:
    """`host=... port=...` of a member's PostgreSQL (from its conn_url)."""
    address = member.host_port
    if address is None:
        raise CtlError(f"member {member.name} publishes no usable conn_url")
    return f"host={address[0]} port={address[1]}"


def _chosen(cluster: ClusterView, member: str | None, role: str | None) -> Member:
    try:
        return pick_member(cluster, member, role)
    except ChoiceError as exc:
        raise CtlError(str(exc)) from None


@click.command("dsn")
@cluster_argument
@target_options()
@click.option("-r", "--role", type=click.Choice(ROLE_CHOICES), default=None, help="A member with this role.")
@click.option("-m", "--member", default=None, help="This member.")
@click.pass_context
def dsn_cmd(ctx: click.Context, cluster_name: str | None, role: str | None, member: str | None) -> None:
    """Print a libpq connection string for a member (default: the leader)."""

    async def show(ctl: Ctl, cluster: ClusterView) -> None:
        click.echo(member_dsn(_chosen(cluster, member, role)))

    run(lambda: _with_cluster(ctx, cluster_name, show))


def _sql_text(command: str | None, file: Path | None) -> str:
    if bool(command) == bool(file):
        raise CtlError("give exactly one of -c/--command SQL and -f/--file FILE")
    if command:
        return command
    assert file is not None
    try:
        return click.open_file(str(file)).read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CtlError(f"{file}: {exc.strerror or exc}") from None


def superuser_options(config: Mapping[str, Any]) -> dict[str, str]:
    """The libpq options (sslmode, sslcert, ...) of `postgresql.authentication.superuser` in the
    configuration the CLI read, for `query`; {} when it has none (a ctl-only file)."""
    from pgwarden.postgres.libpq import options_of, supported  # only `query` needs the adapter's package

    section: Any = config
    for key in ("postgresql", "authentication", "superuser"):
        section = section.get(key) if isinstance(section, Mapping) else None
    return supported(options_of(section)) if isinstance(section, Mapping) else {}


async def run_query(dsn: str, sql: str, *, user: str | None, password: str | None, dbname: str,
                    options: Mapping[str, str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Run `sql` on one member; (column names, rows) of the last statement that returns rows.
    `options` are libpq connection options (the configured superuser's TLS settings)."""
    kwargs: dict[str, Any] = {**(options or {}), "dbname": dbname, "connect_timeout": PG_CONNECT_TIMEOUT,
                              "autocommit": True, "row_factory": dict_row, "application_name": "pgwarden query"}
    if user:
        kwargs["user"] = user
    if password is not None:
        kwargs["password"] = password
    try:
        async with await psycopg.AsyncConnection.connect(dsn, **kwargs) as conn, conn.cursor() as cursor:
            await cursor.execute(sql.encode())
            if cursor.description is None:
                return [], []
            columns = [c.name for c in cursor.description]
            return columns, list(await cursor.fetchall())
    except psycopg.Error as exc:
        raise CtlError(str(exc).strip()) from None


@click.command("query")
@cluster_argument
@target_options(short_names=False)
@click.option("-r", "--role", type=click.Choice(ROLE_CHOICES), default=None, help="A member with this role.")
@click.option("-m", "--member", default=None, help="This member.")
@click.option("-c", "--command", default=None, help="SQL to run.")
@click.option("-f", "--file", "file", type=click.Path(path_type=Path), default=None, help="File with SQL to run.")
@click.option("-U", "--username", default=None, help="Database user (default: libpq's).")
@click.option("--password", is_flag=True, help="Ask for the password.")
@click.option("-d", "--dbname", default="postgres", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="tsv", show_default=True)
@click.option("--delimiter", default="\t", help="Column separator for tsv output.")
@watch_options
@click.pass_context
def query_cmd(ctx: click.Context, cluster_name: str | None, role: str | None, member: str | None,
              command: str | None, file: Path | None, username: str | None, password: bool, dbname: str,
              fmt: str, delimiter: str, watch_forever: bool, watch_seconds: float | None) -> None:
    """Run SQL on a member (default: the leader) and print the result."""
    sql = _sql_text(command, file) if (command or file) else ""
    secret = click.prompt("Password", hide_input=True) if password else None

    async def query(ctl: Ctl, cluster: ClusterView) -> None:
        if not sql:
            raise CtlError("give exactly one of -c/--command SQL and -f/--file FILE")
        chosen = _chosen(cluster, member, role)

        async def render() -> None:
            columns, rows = await run_query(member_dsn(chosen), sql, user=username, password=secret, dbname=dbname,
                                            options=superuser_options(ctl.target.raw))
            if fmt == "tsv" and delimiter != "\t":
                click.echo(delimiter.join(columns))
                for row in rows:
                    click.echo(delimiter.join("" if row[c] is None else str(row[c]) for c in columns))
            elif columns:
                _echo_records(rows, columns, fmt, f"{chosen.name}")

        await _watch(watch_interval(watch_forever, watch_seconds), False, render)

    run(lambda: _with_cluster(ctx, cluster_name, query))


def _pg_version_text(server_version: Any) -> str:
    if not isinstance(server_version, int) or server_version <= 0:
        return "unknown"
    major, minor = divmod(server_version, 10000)
    return f"{major}.{minor}"


@click.command("version")
@click.argument("cluster_name", required=False, metavar="[CLUSTER")
@click.argument("member_names", nargs=-1, metavar="[MEMBER]...]")
@target_options()
@click.pass_context
def version_cmd(ctx: click.Context, cluster_name: str | None, member_names: tuple[str, ...]) -> None:
    """pgwarden's version; with CLUSTER, each member's agent and PostgreSQL versions too."""
    click.echo(f"pgwarden version {__version__}")
    if not cluster_name:
        return

    async def show(ctl: Ctl, cluster: ClusterView) -> None:
        click.echo("")
        for member in sorted(cluster.members, key=lambda m: m.name):
            if member_names and member.name not in member_names:
                continue
            try:
                status = (await ctl.call(member, "GET", "/patroni")).json()
            except (CtlError, RestError) as exc:
                click.echo(f"{member.name}: error: {exc}")
                continue
            agent = status.get("patroni", {}).get("version", "unknown") if isinstance(status, dict) else "unknown"
            pg = _pg_version_text(status.get("server_version") if isinstance(status, dict) else None)
            click.echo(f"{member.name}: pgwarden {agent} PostgreSQL {pg}")

    run(lambda: _with_cluster(ctx, cluster_name, show))


VIEW_COMMANDS = (list_cmd, topology_cmd, history_cmd, show_config_cmd, dsn_cmd, query_cmd, version_cmd)
