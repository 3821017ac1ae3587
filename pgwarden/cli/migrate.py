"""`pgwarden migrate`: move a running Patroni cluster to pgwarden one host at a time, without an outage.

The order is fixed by what keeps writes going: every replica first (Patroni stopped, pgwarden started
on the same configuration file and data directory, the member back and streaming), then one
switchover to a pgwarden replica, then the old Patroni leader, now a replica, last. pgwarden and
Patroni read each other's keys and REST answers, so the cluster runs mixed in between.

Without `--execute` the command only checks and prints the plan. With it, it performs the local
host's step (this configuration's `name`), verifies the member's health after each action, and stops
at the first failed check with what to do. It never prompts, so it runs unattended (Ansible), and it
ends by printing what to run on the other hosts.

The pure half (facts -> problems and plan) is unit-tested without processes (tests/unit/test_migrate.py);
the IO half reads the DCS and the members' REST APIs through the CLI's `Ctl` session.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from pgwarden.cli.options import META_CONFIG, target_options
from pgwarden.cli.session import Ctl, CtlError, console, current_target, resolve_scope, run
from pgwarden.config.dynamic import DEFAULT_LEASE_TTL
from pgwarden.config.support import dynamic_refusals, judge_dynamic, judge_local, refusals, warnings
from pgwarden.model import ClusterView, Member

PATRONI = "patroni"
PGWARDEN = "pgwarden"
UNREACHABLE = "unreachable"
DEFAULT_MAX_LAG = 1048576
"""Bytes a replica may be behind the leader and still count as healthy (Patroni's maximum_lag_on_failover)."""
DEFAULT_TIMEOUT = 120.0
POLL = 1.0


# -- facts and the pure checks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What the migration needs to know about one member, from its key and its REST answer."""

    name: str
    agent: str
    """PATRONI, PGWARDEN (told apart by the REST API's `Server` header) or UNREACHABLE."""
    role: str = ""
    """`role` of GET /patroni: primary, replica, ..."""
    state: str = ""
    streaming: bool = False
    lag: int | None = None
    """Bytes behind the leader's WAL position; None when unknown (or the leader itself)."""
    leader: bool = False
    """Holds the leader key."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the plan: replace the agent of `member`, or switch the lead over to `member`."""

    member: str
    action: str
    """"replace" (stop Patroni, start pgwarden) or "switchover" (hand the lead to `member`)."""
    done: bool = False

    def describe(self, leader: str | None) -> str:
        if self.action == "switchover":
            return f"switch over from {leader} to {self.member} (a pgwarden replica)"
        role = "the old leader, now a replica" if self.member == leader else "replica"
        return f"{self.member} ({role}): stop Patroni, start pgwarden with the same configuration file"


def agent_of(server_header: str | None) -> str:
    """pgwarden names itself in its `Server` header whatever `restapi.server_tokens` says; Patroni never does."""
    return PGWARDEN if server_header and "pgwarden" in server_header.lower() else PATRONI


def lag_of(status: Mapping[str, Any], leader_lsn: int | None) -> int | None:
    """Bytes a replica's GET /patroni answer says it is behind `leader_lsn` (None when unknown)."""
    xlog = status.get("xlog")
    if leader_lsn is None or not isinstance(xlog, Mapping):
        return None
    positions = [v for v in (xlog.get("received_location"), xlog.get("replayed_location")) if isinstance(v, int)]
    return max(0, leader_lsn - max(positions)) if positions else None


def config_problems(local_raw: Mapping[str, Any], dynamic_raw: Any) -> tuple[list[str], list[str]]:
    """(refusals, warnings) of pgwarden for this host's configuration and the cluster's /config: what
    an agent started on it would refuse, and what it would accept with a warning."""
    local = judge_local(local_raw)
    refused = refusals(local) + [f"/config: {line}" for line in dynamic_refusals(dynamic_raw)]
    warned = warnings(local)
    if isinstance(dynamic_raw, Mapping):
        warned += [f"/config: {line}" for line in warnings(judge_dynamic(dynamic_raw))]
    return refused, warned


def timing_note(dynamic_raw: Any) -> str:
    """How the leader lease behaves in the mixed cluster, from /config (contract 2.6, docs)."""
    raw = dynamic_raw if isinstance(dynamic_raw, Mapping) else {}
    ttl = raw.get("ttl", 30)
    section = raw.get("pgwarden")
    own: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
    lease = own.get("lease_ttl", DEFAULT_LEASE_TTL)
    effective = ttl if lease is None or not isinstance(ttl, int) else min(int(lease), ttl)
    return (f"leader lease: a Patroni leader's key lives {ttl}s after its host dies (ttl), a pgwarden leader's "
            f"{effective}s (pgwarden.lease_ttl, capped by ttl); each leader stops accepting writes before its "
            "own lease ends, so the two never overlap. Set `pgwarden: {lease_ttl: null}` in /config for "
            "Patroni's timing everywhere.")


def cluster_problems(facts: Sequence[MemberFacts], *, paused: bool, max_lag: int) -> list[str]:
    """What makes the cluster unfit for the next migration step: no single running leader, a member
    down or not streaming, a replica lagging, maintenance mode."""
    problems: list[str] = []
    leaders = [f for f in facts if f.leader]
    if len(leaders) != 1:
        problems.append(f"the cluster has {len(leaders)} leaders; it needs exactly one to migrate")
    elif leaders[0].role not in ("primary", "master"):
        problems.append(f"the leader {leaders[0].name} does not run as a primary (role {leaders[0].role or '?'})")
    if paused:
        problems.append("the cluster is paused (maintenance mode): resume it first (`pgwarden resume`)")
    for f in facts:
        if f.leader:
            continue
        if f.agent == UNREACHABLE:
            problems.append(f"{f.name}: its REST API does not answer")
        elif f.state != "running" or not f.streaming:
            problems.append(f"{f.name}: not a streaming replica (state {f.state or '?'})")
        elif f.lag is not None and f.lag > max_lag:
            problems.append(f"{f.name}: {f.lag} bytes behind the leader (more than --max-lag {max_lag})")
    return problems


def plan(facts: Sequence[MemberFacts], candidate: str | None = None) -> list[Step]:
    """Replicas first (by name), then the switchover, then the old leader; finished steps marked done."""
    leader = next((f for f in facts if f.leader), None)
    replicas = sorted((f for f in facts if not f.leader), key=lambda f: f.name)
    steps = [Step(f.name, "replace", done=f.agent == PGWARDEN) for f in replicas]
    if leader is None:
        return steps
    if leader.agent == PGWARDEN:  # switched over already: only the replicas may be left
        return [*steps, Step(leader.name, "switchover", done=True), Step(leader.name, "replace", done=True)]
    target = candidate or next((f.name for f in replicas if f.agent == PGWARDEN), replicas[0].name if replicas else "")
    return [*steps, Step(target, "switchover"), Step(leader.name, "replace")]


def local_step(steps: Sequence[Step], me: str) -> tuple[Step | None, list[Step]]:
    """This host's next step and the unfinished steps of other hosts that must come before it.

    Replicas may go in any order (one at a time: the health checks see to that); the switchover
    belongs to the old leader's host and waits for every replica; that host's replacement comes last."""
    switchover = next((i for i, s in enumerate(steps) if s.action == "switchover"), None)
    old_leader = steps[-1].member if switchover is not None else None
    for index, s in enumerate(steps):
        owner = old_leader if s.action == "switchover" else s.member
        if s.done or owner != me:
            continue
        if switchover is None or index < switchover:
            return s, []
        return s, [b for b in steps[:index] if not b.done]
    return None, []


def other_hosts_advice(steps: Sequence[Step], me: str, command: str) -> list[str]:
    """What to run on each other host, in order, after this one."""
    lines = []
    seen: set[str] = set()
    for s in steps:
        host = s.member if s.action == "replace" else None
        if host is None or s.done or host == me or host in seen:
            continue
        seen.add(host)
        lines.append(f"on {host}: {command}")
    return lines


# -- IO: reading the cluster ---------------------------------------------------------------------------


async def gather_facts(ctl: Ctl, cluster: ClusterView) -> list[MemberFacts]:
    """Every member's facts: its key, and its GET /patroni answer with the `Server` header."""
    leader_name = cluster.leader.name if cluster.leader else None
    answers = await asyncio.gather(*(_status(ctl, m) for m in cluster.members))
    statuses = dict(zip((m.name for m in cluster.members), answers, strict=True))
    leader_status = statuses.get(leader_name or "")
    leader_lsn = None
    if leader_status is not None and isinstance(leader_status[1].get("xlog"), Mapping):
        location = leader_status[1]["xlog"].get("location")
        leader_lsn = location if isinstance(location, int) else None
    facts = []
    for member in sorted(cluster.members, key=lambda m: m.name):
        got = statuses[member.name]
        if got is None:
            facts.append(MemberFacts(member.name, UNREACHABLE, leader=member.name == leader_name))
            continue
        agent, status = got
        facts.append(MemberFacts(
            member.name, agent, role=str(status.get("role", "")), state=str(status.get("state", "")),
            streaming=status.get("replication_state") == "streaming",
            lag=None if member.name == leader_name else lag_of(status, leader_lsn),
            leader=member.name == leader_name))
    return facts


async def _status(ctl: Ctl, member: Member) -> tuple[str, dict[str, Any]] | None:
    try:
        reply = await ctl.call(member, "GET", "/patroni", timeout=3.0)
    except CtlError:
        return None
    try:
        body = reply.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return agent_of(reply.headers.get("Server") or reply.headers.get("server")), body


# -- IO: acting on this host -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostCommands:
    """How to stop Patroni and start pgwarden on this host (exactly one way each)."""

    patroni_unit: str | None = None
    patroni_pid: int | None = None
    stop_command: str | None = None
    pgwarden_unit: str | None = None
    start_command: str | None = None

    def missing(self) -> list[str]:
        problems = []
        if sum(x is not None for x in (self.patroni_unit, self.patroni_pid, self.stop_command)) != 1:
            problems.append("give exactly one way to stop Patroni: --patroni-unit, --patroni-pid or --stop-command")
        if sum(x is not None for x in (self.pgwarden_unit, self.start_command)) != 1:
            problems.append("give exactly one way to start pgwarden: --pgwarden-unit or --start-command")
        return problems


def _shell(command: str, what: str) -> None:
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise CtlError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")


def stop_patroni(commands: HostCommands, timeout: float) -> None:
    """Stop the local Patroni cleanly (it stops PostgreSQL); returns once it is gone."""
    if commands.patroni_unit:
        _shell(f"systemctl stop {shlex.quote(commands.patroni_unit)}", f"systemctl stop {commands.patroni_unit}")
    elif commands.stop_command:
        _shell(commands.stop_command, "the stop command")
    elif commands.patroni_pid is not None:
        if not _runs_patroni(commands.patroni_pid):
            raise CtlError(f"process {commands.patroni_pid} is not Patroni (its command line does not name "
                           "patroni); nothing was stopped")
        try:
            os.kill(commands.patroni_pid, signal.SIGTERM)
        except ProcessLookupError:
            raise CtlError(f"no process {commands.patroni_pid}: is Patroni running with that PID?") from None
        deadline = time.monotonic() + timeout
        while _alive(commands.patroni_pid):
            if time.monotonic() > deadline:
                raise CtlError(f"Patroni (PID {commands.patroni_pid}) still runs {timeout:.0f}s after SIGTERM; "
                               "nothing else was changed")
            time.sleep(0.2)


def _runs_patroni(pid: int) -> bool:
    """Whether /proc says `pid` runs Patroni: a wrong PID must not stop some other program."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(word.decode(errors="replace")).name.startswith("patroni") for word in words[:3])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not reaped by its parent) is gone for us
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def start_pgwarden(commands: HostCommands) -> None:
    if commands.pgwarden_unit:
        _shell(f"systemctl start {shlex.quote(commands.pgwarden_unit)}", f"systemctl start {commands.pgwarden_unit}")
    elif commands.start_command:
        _shell(commands.start_command, "the start command")


Waiter = Callable[[Callable[[list[MemberFacts]], str | None], float, str], Any]


async def wait_for(ctl: Ctl, check: Callable[[list[MemberFacts]], str | None], timeout: float, what: str) -> None:
    """Poll the cluster until `check(facts)` returns None (healthy); CtlError with its last answer."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            facts = await gather_facts(ctl, await ctl.cluster())
            answer = check(facts)
        except CtlError as exc:
            answer = str(exc)
        if answer is None:
            return
        last = answer
        await asyncio.sleep(POLL)
    raise CtlError(f"{what}: not healthy after {timeout:.0f}s ({last})")


def member_healthy(name: str, agent: str, max_lag: int) -> Callable[[list[MemberFacts]], str | None]:
    """A check: `name` answers as `agent`, runs, streams from the leader and lags at most `max_lag`."""
    def check(facts: list[MemberFacts]) -> str | None:
        me = next((f for f in facts if f.name == name), None)
        if me is None:
            return f"{name} has no member key"
        if me.agent != agent:
            return f"{name} answers as {me.agent}, not {agent}"
        if me.state != "running" or not me.streaming:
            return f"{name} does not stream (state {me.state or '?'})"
        if me.lag is None or me.lag > max_lag:
            return f"{name} lags {me.lag if me.lag is not None else 'an unknown number of'} bytes"
        return None
    return check


def leads(name: str) -> Callable[[list[MemberFacts]], str | None]:
    def check(facts: list[MemberFacts]) -> str | None:
        leader = next((f for f in facts if f.leader), None)
        if leader is None or leader.name != name or leader.role != "primary":
            return f"{name} is not the running leader yet (leader: {leader.name if leader else 'none'})"
        return None
    return check


# -- the command ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    execute: bool
    candidate: str | None
    max_lag: int
    timeout: float
    commands: HostCommands
    config_path: str | None


async def migrate(ctx: click.Context, cluster_name: str | None, options: Options) -> int:
    target = current_target(ctx)
    me = str(target.raw.get("name") or "")
    async with Ctl(target, resolve_scope(target, cluster_name)) as ctl:
        cluster = await ctl.existing_cluster()
        facts = await gather_facts(ctl, cluster)
        dynamic_raw = cluster.config.value if cluster.config else None
        refused, warned = config_problems(target.raw, dynamic_raw)
        unhealthy = cluster_problems(facts, paused=bool(cluster.dynamic.paused), max_lag=options.max_lag)
        steps = plan(facts, options.candidate)
        _print_report(ctl.scope, me, facts, steps, refused, warned, unhealthy, dynamic_raw)
        if refused or unhealthy:
            console.print("[red]Not ready to migrate[/red]: fix the problems above, then run this again.")
            return 1
        command = _rerun_command(options)
        step, before = local_step(steps, me)
        if not options.execute:
            console.print("Checks passed. Run with --execute on each host, in the plan's order:")
            for line in other_hosts_advice(steps, "", command):
                console.print(f"  {line}")
            return 0
        if not me or cluster.member(me) is None:
            raise CtlError(f"this host's member {me or '(no name in the configuration)'} is not in the cluster")
        if step is None:
            console.print(f"{me}: nothing left to do on this host.")
            _advise(steps, me, command)
            return 0
        if before:
            raise CtlError(f"{me} must wait: first " + "; ".join(s.describe(_leader(facts)) for s in before))
        missing = options.commands.missing()
        if missing:
            raise CtlError("; ".join(missing))
        await _execute(ctl, step, me, options)
        console.print(f"[green]{me} runs pgwarden[/green], streaming, lag within {options.max_lag} bytes.")
        _advise(plan(await gather_facts(ctl, await ctl.cluster()), options.candidate), me, command)
        return 0


def _leader(facts: Sequence[MemberFacts]) -> str | None:
    return next((f.name for f in facts if f.leader), None)


async def _execute(ctl: Ctl, step: Step, me: str, options: Options) -> None:
    if step.action == "switchover":
        candidate = step.member
        console.print(f"step: switch over from {me} to {candidate}")
        await wait_for(ctl, member_healthy(candidate, PGWARDEN, options.max_lag), options.timeout,
                       f"the candidate {candidate}")
        leader = (await ctl.existing_cluster()).member(me)
        if leader is None:
            raise CtlError(f"{me} has no member key")
        reply = await ctl.call(leader, "POST", "/switchover", {"leader": me, "candidate": candidate},
                               timeout=options.timeout)
        if not reply.ok:
            raise CtlError(f"the switchover was refused ({reply.status}): {reply.text.strip()}")
        await wait_for(ctl, leads(candidate), options.timeout, f"{candidate} as the new leader")
        await wait_for(ctl, member_healthy(me, PATRONI, options.max_lag), options.timeout,
                       f"{me} following {candidate} under Patroni")
        console.print(f"  {candidate} leads; {me} follows it under Patroni")
    console.print(f"step: {me}: stop Patroni")
    stop_patroni(options.commands, options.timeout)
    console.print(f"step: {me}: start pgwarden")
    start_pgwarden(options.commands)
    try:
        await wait_for(ctl, member_healthy(me, PGWARDEN, options.max_lag), options.timeout,
                       f"{me} under pgwarden")
    except CtlError as exc:
        raise CtlError(f"{exc}. pgwarden's log says why; to go back, stop pgwarden and start Patroni again "
                       "(same file, same data directory)") from None


def _rerun_command(options: Options) -> str:
    """The command for the other hosts, each with its own configuration file."""
    given = " -c <its configuration file>" if options.config_path else ""
    return (f"pgwarden migrate{given} --execute --patroni-unit <unit> --pgwarden-unit <unit> "
            "(or --patroni-pid / --stop-command, --start-command)")


def _advise(steps: Sequence[Step], me: str, command: str) -> None:
    lines = other_hosts_advice(steps, me, command)
    if lines:
        console.print("Next, on the other hosts, in this order:")
        for line in lines:
            console.print(f"  {line}")
    else:
        console.print("The whole cluster runs pgwarden.")


def _print_report(scope: str, me: str, facts: Sequence[MemberFacts], steps: Sequence[Step], refused: Sequence[str],
                  warned: Sequence[str], unhealthy: Sequence[str], dynamic_raw: Any) -> None:
    console.print(f"Cluster {scope}: {len(facts)} members" + (f"; this host is {me}" if me else ""))
    for f in facts:
        lag = "" if f.lag is None else f", lag {f.lag} bytes"
        console.print(f"  {f.name}: {f.agent}, {'leader' if f.leader else f.role or '?'}, {f.state or '?'}{lag}")
    leader = _leader(facts)
    console.print("Plan:")
    for number, s in enumerate(steps, 1):
        console.print(f"  {number}. ({'done' if s.done else 'todo'}) {escape(s.describe(leader))}")
    console.print(f"Timing: {timing_note(dynamic_raw)}", soft_wrap=True)
    for line in warned:
        console.print(f"warning: {line}", soft_wrap=True)
    for line in refused:
        console.print(f"[red]refused[/red]: {line}", soft_wrap=True)
    for line in unhealthy:
        console.print(f"[red]unhealthy[/red]: {line}", soft_wrap=True)


@click.command("migrate")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@click.option("--execute", is_flag=True, help="Perform this host's step (default: only check and show the plan).")
@click.option("--candidate", default=None, help="The pgwarden replica to switch over to (default: the first).")
@click.option("--max-lag", type=click.IntRange(0), default=DEFAULT_MAX_LAG, show_default=True,
              help="Bytes a replica may lag and still count as healthy.")
@click.option("--timeout", type=click.FloatRange(1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds each health check may take.")
@click.option("--patroni-unit", default=None, help="Stop Patroni with `systemctl stop UNIT`.")
@click.option("--patroni-pid", type=int, default=None, help="Stop Patroni by SIGTERM to this PID (and wait).")
@click.option("--stop-command", default=None, help="Stop Patroni with this shell command.")
@click.option("--pgwarden-unit", default=None, help="Start pgwarden with `systemctl start UNIT`.")
@click.option("--start-command", default=None, help="Start pgwarden with this shell command (it must return).")
@click.pass_context
def migrate_cmd(ctx: click.Context, cluster_name: str | None, execute: bool, candidate: str | None, max_lag: int,
                timeout: float, patroni_unit: str | None, patroni_pid: int | None, stop_command: str | None,
                pgwarden_unit: str | None, start_command: str | None) -> None:
    """Check a running Patroni cluster and migrate it to pgwarden, one host at a time (this host with --execute)."""
    commands = HostCommands(patroni_unit, patroni_pid, stop_command, pgwarden_unit, start_command)
    config_path = ctx.meta.get(META_CONFIG)
    options = Options(execute, candidate, max_lag, timeout, commands, str(config_path) if config_path else None)
    sys.exit(run(lambda: migrate(ctx, cluster_name, options)))
