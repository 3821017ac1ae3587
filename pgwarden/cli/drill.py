"""`pgwarden drill`: the operator's fire drill. Writes, one fault, and what the clients saw.

Registered in `pgwarden.cli.main` with `main.add_command(drill)`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pgwarden.config import ConfigError, LocalConfig, load_local
from pgwarden.drill import (
    AgentRestarter,
    Drill,
    DrillError,
    DrillOptions,
    Fault,
    Progress,
    Report,
    RunResult,
    read_topology,
)
from pgwarden.drill.topology import MemberInfo, multi_host_dsn, with_client_timeouts
from pgwarden.rest_client import settings_from_config

CONFIG_ENV = "PATRONICTL_CONFIG_FILE"
RESTART_TIMEOUT = 60.0


@click.command()
@click.option("-c", "--config-file", "config", envvar=CONFIG_ENV, type=click.Path(path_type=Path),
              help="A member's configuration file (finds the cluster through its DCS section).")
@click.option("--fault", type=click.Choice([f.value for f in Fault]), required=True,
              help="switchover/failover go through the REST API; the kills need the primary on this machine.")
@click.option("--repeat", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Repetitions; the cluster must heal between them. Prints median, min and max.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (no live display).")
@click.option("--yes", is_flag=True, help="Really inject the fault (the drill refuses without it).")
@click.option("--rate", type=click.FloatRange(1, 1000), default=100.0, show_default=True,
              help="Write attempts per second.")
@click.option("--settle", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds writes must keep working after recovery before a repetition ends.")
@click.option("--candidate", default=None, help="Switchover/failover target (default: the cluster picks / "
              "the first streaming replica).")
@click.option("--dsn", default=None, help="libpq DSN for the workload (default: every member's conn_url with "
              "the config's superuser and target_session_attrs=read-write).")
@click.option("--dbname", default="postgres", show_default=True, help="Database for the workload table.")
@click.option("--timeout", "fault_timeout", type=click.FloatRange(1), default=120.0, show_default=True,
              help="Seconds to wait for writes to come back after the fault.")
@click.option("--heal-timeout", type=click.FloatRange(1), default=180.0, show_default=True,
              help="Seconds to wait for a healthy cluster (one primary, all others streaming).")
@click.option("--restart-cmd", default=None, help="Shell command that restarts a killed agent after "
              "host-kill; {name} is replaced by the member name, e.g. 'systemctl start pgwarden@{name}'.")
def drill(config: Path | None, fault: str, repeat: int, as_json: bool, yes: bool, rate: float, settle: float,
          candidate: str | None, dsn: str | None, dbname: str, fault_timeout: float, heal_timeout: float,
          restart_cmd: str | None) -> None:
    """Run a write workload against the cluster, inject one fault, report what the clients saw."""
    console = Console(stderr=as_json)
    try:
        local = load_local(config, os.environ)
        topology = read_topology(local)
    except (ConfigError, DrillError) as exc:
        console.print(f"Error: {exc}", style="red", markup=False)
        sys.exit(1)
    chosen = Fault(fault)
    if not yes:
        console.print(f"This would inject a {chosen.value} into cluster {topology.scope!r} (leader: "
                      f"{topology.leader or 'none'}) while writing {rate:.0f} rows/s. Nothing was done: "
                      "add --yes to run the drill.", markup=False)
        sys.exit(2)
    options = DrillOptions(chosen, rate=rate, settle=settle, candidate=candidate, fault_timeout=fault_timeout,
                           heal_timeout=heal_timeout)
    workload_dsn = with_client_timeouts(dsn) if dsn else _config_dsn(local, topology.members, dbname)
    runner = Drill(lambda: read_topology(local), workload_dsn, options,
                   rest=settings_from_config(local.ctl, local.restapi),
                   restarter=_shell_restarter(restart_cmd, console) if restart_cmd else None)
    report = _run(runner, repeat, console, live=not as_json)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        render_report(report, console)
    sys.exit(0 if report.ok else 1)


def _config_dsn(local: LocalConfig, members: Sequence[MemberInfo], dbname: str) -> str:
    from pgwarden.postgres.libpq import options_of, supported

    superuser = local.postgresql.authentication.superuser
    return multi_host_dsn(members, user=superuser.username, password=superuser.password, dbname=dbname,
                          options=supported(options_of(superuser)))


def _shell_restarter(template: str, console: Console) -> AgentRestarter:
    """Runs the user's command with {name} replaced; a zero exit status means the agent restarts."""

    def restart(name: str) -> bool:
        command = template.replace("{name}", shlex.quote(name))
        try:
            done = subprocess.run(command, shell=True, timeout=RESTART_TIMEOUT, check=False,
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            console.print(f"restart command timed out after {RESTART_TIMEOUT:.0f} s: {command}", markup=False)
            return False
        if done.returncode != 0:
            console.print(f"restart command failed ({done.returncode}): {command}\n{done.stderr.strip()}",
                          markup=False)
        return done.returncode == 0

    return restart


def _run(runner: Drill, repeat: int, console: Console, *, live: bool) -> Report:
    if not live:
        return runner.run(repeat)
    with Live(Text("starting..."), console=console, refresh_per_second=8, transient=True) as display:
        runner.progress = lambda p: display.update(render_progress(p))
        return runner.run(repeat)


def render_progress(p: Progress) -> Group:
    """The live display: phase, time since the fault, writes acknowledged/failed, outage, primary."""
    head = Text(f"[{p.repetition}/{p.repetitions}] {p.phase}", style="bold")
    lines: list[Text] = [head]
    if p.since_fault is not None:
        lines.append(Text(f"  {p.since_fault:6.1f} s since the fault   writes ok {p.acknowledged}   "
                          f"failed {p.failed}   primary {p.primary or '-'}"))
        if p.outage_since is not None:
            lines.append(Text(f"  writes impossible for {p.outage_since:.1f} s so far", style="red"))
        else:
            lines.append(Text("  writes working", style="green"))
    elif p.acknowledged or p.failed:
        lines.append(Text(f"  writes ok {p.acknowledged}   failed {p.failed}"))
    if p.detail:
        lines.append(Text(f"  {p.detail}", style="dim"))
    return Group(*lines)


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def render_report(report: Report, console: Console) -> None:
    """One row per repetition (fits 80 columns), then notes and errors, then median (min – max)."""
    table = Table(title=f"pgwarden drill: {report.fault.value}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("#", "old→new primary", "no writes", "failed tx", "primary up", "lost", "TL", "API"):
        table.add_column(column, justify="left" if column == "old→new primary" else "right", no_wrap=True)
    for run in report.runs:
        m = run.measurement
        table.add_row(
            str(run.repetition), f"{run.old_primary or '?'}→{run.new_primary or '?'}",
            _fmt(m.writes_impossible if m else None), str(m.failed_transactions) if m else "-",
            _fmt(run.primary_answers_after), "-" if run.missing is None else str(len(run.missing)),
            f"{run.old_timeline or '?'}→{run.new_timeline or '?'}", str(run.api.status) if run.api else "-",
            style="red" if run.error or run.missing else None)
    console.print(table)
    console.print("no writes: writes impossible for; primary up: until a new primary answered GET /primary; "
                  "lost: acknowledged writes missing on the new primary", style="dim")
    for run in report.runs:
        _print_run_notes(run, console)
    done = [r for r in report.runs if r.error is None]
    if len(done) > 1:
        summary = Table(title="median (min – max)", title_justify="left", box=box.SIMPLE_HEAD)
        summary.add_column("metric")
        summary.add_column("value", justify="right")
        for name, s in report.spreads().items():
            if s.n:
                summary.add_row(name, f"{s.median:.3f} ({s.min:.3f} – {s.max:.3f})")
        console.print(summary)


def _print_run_notes(run: RunResult, console: Console) -> None:
    lines = []
    if run.api is not None and run.api.accepted:
        lines.append(f"API answered {run.api.status} after {run.api.seconds:.2f} s: {run.api.text[:200]}")
    if run.healed_after is not None:
        lines.append(f"cluster healed {run.healed_after:.1f} s after the check"
                     + ("" if run.old_primary_rejoined is not False else f"; {run.old_primary} did not rejoin"))
    lines += [n for n in run.notes if n != run.error]
    for line in lines:
        console.print(f"  #{run.repetition}: {line}", markup=False)
    if run.error:
        console.print(f"  #{run.repetition}: {run.error}", style="red", markup=False)
