"""`edit-config`: change the dynamic configuration (`/config`) the way patronictl does, with a
compare-and-swap write straight to the DCS, after showing a coloured diff and validating the result."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from pgwarden.cli.ask import confirm_or_abort
from pgwarden.cli.config_patch import (
    EditError,
    apply_assignments,
    config_problems,
    load_yaml_mapping,
    merge_patch,
    timing_warnings,
    to_yaml,
    unified_diff,
)
from pgwarden.cli.options import cluster_argument, force_option, target_options
from pgwarden.cli.session import Ctl, CtlError, console, current_target, resolve_scope, run
from pgwarden.dcs import DcsError
from pgwarden.model import ClusterView

EDITOR_TIMEOUT = 24 * 3600.0  # the operator may take a while, but not forever
FALLBACK_EDITORS = ("editor", "vim", "vi", "nano")


def diff_markup(lines: Sequence[str]) -> list[str]:
    """Rich markup for a unified diff: additions green, removals red, hunk headers cyan."""
    out = []
    for line in lines:
        text = escape(line)
        if line.startswith(("+++", "---")):
            out.append(f"[bold]{text}[/bold]")
        elif line.startswith("+"):
            out.append(f"[green]{text}[/green]")
        elif line.startswith("-"):
            out.append(f"[red]{text}[/red]")
        elif line.startswith("@@"):
            out.append(f"[cyan]{text}[/cyan]")
        else:
            out.append(text)
    return out


def _editor_command() -> list[str]:
    for variable in ("VISUAL", "EDITOR"):
        if os.environ.get(variable):
            return shlex.split(os.environ[variable])
    for name in FALLBACK_EDITORS:
        for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
            if os.access(os.path.join(directory, name), os.X_OK):
                return [name]
    raise CtlError("no editor found: set $EDITOR, or use -s/-p/--apply/--replace")


def edit_in_editor(text: str, scope: str) -> str:
    """Open `$EDITOR` on `text`; the edited text."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{scope}-config-", delete=False) as handle:
        handle.write(text)
        path = Path(handle.name)
    try:
        try:
            result = subprocess.run([*_editor_command(), str(path)], timeout=EDITOR_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CtlError(f"cannot run the editor: {exc}") from None
        if result.returncode != 0:
            raise CtlError(f"the editor exited with code {result.returncode}; nothing was changed")
        return path.read_text(encoding="utf-8")
    finally:
        path.unlink(missing_ok=True)


def _read_source(source: str) -> tuple[str, str]:
    if source == "-":
        return sys.stdin.read(), "stdin"
    try:
        return Path(source).read_text(encoding="utf-8"), source
    except OSError as exc:
        raise CtlError(f"{source}: {exc.strerror or exc}") from None


def new_config(current: Mapping[str, Any], scope: str, *, settings: Sequence[str], parameters: Sequence[str],
               apply: str | None, replace: str | None) -> dict[str, Any]:
    """The configuration the options ask for; the editor when no option gives a change."""
    try:
        if replace is not None:
            base = load_yaml_mapping(*_read_source(replace))
        elif apply is not None:
            base = merge_patch(current, load_yaml_mapping(*_read_source(apply)))
        elif not settings and not parameters:
            base = load_yaml_mapping(edit_in_editor(to_yaml(current), scope), "the edited file")
        else:
            base = dict(current)
        result: dict[str, Any] = apply_assignments(base, settings, parameters)
        return result
    except EditError as exc:
        raise CtlError(str(exc)) from None


async def _edit(ctl: Ctl, cluster: ClusterView, settings: Sequence[str], parameters: Sequence[str],
                apply: str | None, replace: str | None, force: bool, quiet: bool) -> None:
    if apply is not None and replace is not None:
        raise CtlError("give either --apply or --replace, not both")
    if "config" in cluster.unreadable and replace is None:
        # It reads as {}: an edit would store only the change and lose the rest of the configuration.
        raise CtlError("the stored /config is not valid JSON (a JSON object is required); nothing was changed. "
                       "Replace it as a whole with --replace FILE")
    current = dict(cluster.config.value) if cluster.config else {}
    updated = new_config(current, cluster.scope, settings=settings, parameters=parameters, apply=apply,
                         replace=replace)
    diff = unified_diff(current, updated, cluster.scope)
    if not diff:
        console.print("Not changed")
        return
    if not quiet:
        for line in diff_markup(diff):
            console.print(line, soft_wrap=True)
    problems = config_problems(updated) or await _server_problems(ctl, cluster, current, updated)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise CtlError(f"the new configuration is not valid, nothing was changed:\n{listed}")
    for warning in timing_warnings(updated):
        console.print(f"[yellow]Warning: {escape(warning)}[/yellow]", soft_wrap=True)
    confirm_or_abort("Apply these changes?", force, "change")
    revision = cluster.config.revision if cluster.config else 0
    try:
        written = await ctl.dcs.set_config(updated, revision)
    except DcsError as exc:
        raise CtlError(f"cannot write /config: {exc}") from None
    if not written:
        raise CtlError("/config was changed by someone else meanwhile; nothing was written, run edit-config again")
    console.print("[green]Configuration changed[/green]")


async def _server_problems(ctl: Ctl, cluster: ClusterView, current: Mapping[str, Any],
                           updated: Mapping[str, Any]) -> list[str]:
    """What the leader's PostgreSQL would refuse among the parameters the edit introduces (checked against
    its pg_settings, `config.gucs`), as PATCH /config checks them; [] when it cannot be asked (no leader,
    no superuser credentials in the configuration read): the static checks were done anyway."""
    from pgwarden.cli.view import member_dsn, run_query, superuser_options  # psycopg: only when editing
    from pgwarden.config.gucs import CATALOG_QUERY, GucCatalog, catalog_problems
    from pgwarden.postgres.versions import CHANGES

    leader = cluster.leader_member
    superuser: Any = ctl.target.raw
    for key in ("postgresql", "authentication", "superuser"):
        superuser = superuser.get(key) if isinstance(superuser, Mapping) else None
    if leader is None or not isinstance(superuser, Mapping):
        return []
    try:
        columns, rows = await run_query(member_dsn(leader), CATALOG_QUERY, user=superuser.get("username"),
                                        password=superuser.get("password"), dbname="postgres",
                                        options=superuser_options(ctl.target.raw))
    except CtlError as exc:
        console.print(f"[yellow]Warning: parameters not checked against PostgreSQL ({escape(str(exc))})[/yellow]",
                      soft_wrap=True)
        return []
    catalog = GucCatalog.from_rows([tuple(row[column] for column in columns) for row in rows])
    before = set(catalog_problems(catalog, current, skip=CHANGES))
    return [problem for problem in catalog_problems(catalog, updated, skip=CHANGES) if problem not in before]


@click.command("edit-config")
@cluster_argument
@target_options()
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Set a dotted key (e.g. postgresql.use_slots=false); VALUE is YAML, null deletes.")
@click.option("-p", "--pg", "parameters", multiple=True, metavar="PARAM=VALUE",
              help="Set postgresql.parameters.PARAM; null deletes.")
@click.option("--apply", "apply", default=None, metavar="FILE|-", help="Merge a YAML patch (null deletes).")
@click.option("--replace", "replace", default=None, metavar="FILE|-", help="Replace the whole configuration.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the diff.")
@force_option
@click.pass_context
def edit_config_cmd(ctx: click.Context, cluster_name: str | None, settings: tuple[str, ...],
                    parameters: tuple[str, ...], apply: str | None, replace: str | None, quiet: bool,
                    force: bool) -> None:
    """Change the dynamic configuration: in $EDITOR, or with -s/-p/--apply/--replace; shows the diff first."""

    async def edit() -> None:
        target = current_target(ctx)
        async with Ctl(target, resolve_scope(target, cluster_name)) as ctl:
            cluster = await ctl.existing_cluster()
            await _edit(ctl, cluster, settings, parameters, apply, replace, force, quiet)

    run(edit)
