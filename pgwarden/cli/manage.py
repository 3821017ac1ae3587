"""Commands that change the cluster: switchover, failover, restart, reload, reinit, flush, pause, resume,
remove. They read the cluster from the DCS, ask what is missing, show the cluster, confirm, and act
through the REST API of the right member (falling back to a DCS write where patronictl does)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from pgwarden.cli.ask import ask, confirm, confirm_or_abort, typed_confirmation
from pgwarden.cli.choose import ROLE_CHOICES, ChoiceError, parse_schedule, select_members, switchover_candidates
from pgwarden.cli.config_patch import merge_patch
from pgwarden.cli.listing import render_cluster
from pgwarden.cli.options import force_option, target_options
from pgwarden.cli.progress import follow_reinit
from pgwarden.cli.session import Ctl, CtlError, console, current_target, resolve_scope, run
from pgwarden.dcs import DcsError
from pgwarden.model import ClusterView, Member, PgState
from pgwarden.rest_client import RestError, RestReply

SWITCHOVER_TIMEOUT = 75.0  # the REST call waits up to 2*max(10, loop_wait) s for the new leader
RESTART_TIMEOUT = 90.0  # a restart waits for PostgreSQL to stop and start (plus --timeout if given)
REINIT_WAIT_TIMEOUT = 6 * 3600.0  # a base backup of a big cluster takes hours; Ctrl-C stops waiting
NOT_IMPLEMENTED = 501  # an agent without this endpoint: fall back to the DCS like patronictl
AUTH_FAILURES = (401, 403)
PG_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


def _now() -> datetime:
    return datetime.now().astimezone()


def _fail(exc: ChoiceError) -> CtlError:
    return CtlError(str(exc))


async def _act(ctx: click.Context, cluster_name: str | None,
               action: Callable[[Ctl, ClusterView], Awaitable[None]]) -> None:
    target = current_target(ctx)
    async with Ctl(target, resolve_scope(target, cluster_name)) as ctl:
        await action(ctl, await ctl.existing_cluster())


def _show(cluster: ClusterView) -> None:
    render_cluster(console, cluster)


def _schedule(text: str | None, force: bool, what: str) -> datetime | None:
    if text is None and not force:
        text = ask(f"When should the {what} take place (e.g. 2030-01-31T23:30)", default="now")
    try:
        return parse_schedule(text, _now())
    except ChoiceError as exc:
        raise _fail(exc) from None


async def _try_members(ctl: Ctl, members: Sequence[Member], method: str, path: str, body: Any,
                       timeout: float) -> RestReply | None:
    """The first answer from `members` in order that is not "unreachable" or "not implemented";
    None when no member gave one. Credential errors stop at once (every member would refuse)."""
    for member in members:
        try:
            reply = await ctl.call(member, method, path, body, timeout=timeout)
        except CtlError as exc:
            console.print(f"[yellow]{exc}[/yellow]")
            continue
        if reply.status in AUTH_FAILURES:
            raise CtlError(f"{member.name} refused {method} {path}: {reply.describe()} (check ctl.authentication)")
        if reply.status != NOT_IMPLEMENTED:
            return reply
    return None


def _leader_first(cluster: ClusterView) -> list[Member]:
    leader = cluster.leader.name if cluster.leader else None
    return sorted(cluster.members, key=lambda m: (m.name != leader, m.name))


# -- switchover / failover ---------------------------------------------------------------------------


def _switchover_leader(cluster: ClusterView, leader: str | None, force: bool) -> str:
    if cluster.leader is None:
        raise CtlError(f"cluster {cluster.scope} has no leader: use `failover --candidate NAME`")
    current = cluster.leader.name
    if leader is None:
        leader = current if force else ask("Primary", default=current)
    if leader != current:
        raise CtlError(f"{leader} is not the leader of cluster {cluster.scope} (the leader is {current})")
    return leader


def _switchover_candidate(cluster: ClusterView, leader: str, candidate: str | None, force: bool) -> str | None:
    candidates = switchover_candidates(cluster, leader)
    if candidate is None and not force:
        if not candidates:
            raise CtlError("switchover is not possible: no other member may become the leader")
        console.print(f"Candidates: {', '.join(candidates)} (empty: the healthiest one)")
        candidate = ask("Candidate", default="", choices=["", *candidates]) or None
    if candidate is None:
        if cluster.paused:
            raise CtlError("Switchover is possible only to a specific candidate in a paused state")
        return None
    if candidate == leader:
        raise CtlError("Switchover target and source are the same")
    if cluster.member(candidate) is None:
        raise CtlError(f"{candidate}: not a member of {cluster.scope}")
    if candidate not in candidates:
        raise CtlError(f"{candidate} is tagged nofailover (or failover_priority 0) and cannot become the leader")
    return candidate


def _request_text(kind: str, leader: str | None, candidate: str | None, when: datetime | None) -> str:
    parts = [kind]
    if leader:
        parts.append(f"from {leader}")
    parts.append(f"to {candidate}" if candidate else "to the healthiest replica")
    parts.append(f"at {when.isoformat()}" if when else "now")
    return " ".join(parts)


async def _request_through_dcs(ctl: Ctl, cluster: ClusterView, value: Mapping[str, Any]) -> None:
    """patronictl's fallback: write the `failover` key and let the leader (or the race) act on it."""
    console.print("Could not switchover using Patroni api, falling back to DCS")
    revision = cluster.failover.revision if cluster.failover else cluster.unreadable.get("failover", 0)
    try:
        written = await ctl.dcs.set_failover(value, revision)
    except DcsError as exc:
        raise CtlError(f"cannot write the failover key: {exc}") from None
    if not written:
        raise CtlError("the failover key changed meanwhile (another switchover?); check `list` and try again")
    console.print("[green]Success:[/green] the request is in the DCS; the cluster acts on it within one cycle")


async def _post_change(ctl: Ctl, cluster: ClusterView, path: str, body: Mapping[str, Any],
                       targets: Sequence[Member], dcs_value: Mapping[str, Any], scheduled: bool) -> None:
    with console.status(f"POST /{path} ... waiting for the new leader"):
        reply = await _try_members(ctl, targets, "POST", f"/{path}", dict(body), SWITCHOVER_TIMEOUT)
    if reply is None:
        await _request_through_dcs(ctl, cluster, dcs_value)
        return
    if not reply.ok:
        raise CtlError(f"{path} failed: {reply.describe()}")
    console.print(f"[green]Success:[/green] {reply.text.strip()}")
    if not scheduled:
        _show(await ctl.cluster())


async def _switchover(ctl: Ctl, cluster: ClusterView, leader_opt: str | None, candidate_opt: str | None,
                      scheduled_opt: str | None, force: bool) -> None:
    leader = _switchover_leader(cluster, leader_opt, force)
    candidate = _switchover_candidate(cluster, leader, candidate_opt, force)
    when = _schedule(scheduled_opt, force, "switchover")
    if when and cluster.paused:
        raise CtlError("Can't schedule switchover in the paused state")
    _show(cluster)
    confirm_or_abort(f"Are you sure you want to switchover cluster {cluster.scope}, demoting current leader "
                     f"{leader}?", force, "switchover")
    console.print(_request_text("Switchover", leader, candidate, when))
    body: dict[str, Any] = {"leader": leader}
    if candidate:
        body["candidate"] = candidate
    if when:
        body["scheduled_at"] = when.isoformat()
    dcs_value = {"leader": leader, **({"member": candidate} if candidate else {}),
                 **({"scheduled_at": body["scheduled_at"]} if when else {})}
    leader_member = cluster.member(leader)
    targets = [leader_member] if leader_member else []
    await _post_change(ctl, cluster, "switchover", body, targets, dcs_value, scheduled=when is not None)


def _warn_async_candidate(cluster: ClusterView, candidate: str, force: bool) -> None:
    synced = cluster.sync.sync_standby if cluster.sync else ()
    if not cluster.dynamic.synchronous or candidate in synced:
        return
    console.print(f"[bold yellow]Warning:[/bold yellow] {candidate} is not a synchronous standby "
                  f"(sync: {', '.join(synced) or 'none'}); transactions committed on the leader may be lost.")
    confirm_or_abort(f"Fail over to the asynchronous {candidate} anyway?", force, "failover")


async def _failover(ctl: Ctl, cluster: ClusterView, candidate: str | None, leader_opt: str | None,
                    force: bool) -> None:
    leader = cluster.leader.name if cluster.leader else None
    if leader_opt is not None and leader_opt != leader:
        # Checked, never ignored: a script naming the wrong leader meant another cluster state than this one.
        raise CtlError(f"{leader_opt} is not the leader of cluster {cluster.scope} "
                       f"(the leader is {leader or 'nobody'})")
    if candidate is None:
        choices = sorted(m.name for m in cluster.members if m.name != leader)
        if force or not choices:
            raise CtlError("failover needs --candidate NAME (Failover could be performed only to a specific candidate)")
        candidate = ask("Candidate", choices=choices)
    if candidate == leader:
        raise CtlError(f"{candidate} is already the leader; failover needs another member")
    chosen = cluster.member(candidate)
    if chosen is None:
        raise CtlError(f"{candidate}: not a member of {cluster.scope}")
    _warn_async_candidate(cluster, candidate, force)
    _show(cluster)
    demoting = f", demoting current leader {leader}" if leader else ""
    confirm_or_abort(f"Are you sure you want to failover cluster {cluster.scope}{demoting}?", force, "failover")
    console.print(_request_text("Failover", leader, candidate, None))
    targets = [m for m in (cluster.leader_member, chosen) if m is not None]
    body = {"candidate": candidate, **({"leader": leader_opt} if leader_opt else {})}
    await _post_change(ctl, cluster, "failover", body, targets, {"member": candidate}, scheduled=False)


@click.command("switchover")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@click.option("--leader", "--primary", "leader", default=None, help="The current leader (checked).")
@click.option("--candidate", default=None, help="The member to take over (default: the healthiest).")
@click.option("--scheduled", default=None, help="When: ISO 8601 time, or 'now'.")
@force_option
@click.pass_context
def switchover_cmd(ctx: click.Context, cluster_name: str | None, leader: str | None, candidate: str | None,
                   scheduled: str | None, force: bool) -> None:
    """Hand the leader role to a healthy replica, now or at a scheduled time."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _switchover(c, v, leader, candidate, scheduled, force)))


@click.command("failover")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@click.option("--candidate", default=None, help="The member to promote.")
@click.option("--leader", "--primary", "leader", default=None, hidden=True,
              help="The current leader (checked; patronictl 3's option).")
@force_option
@click.pass_context
def failover_cmd(ctx: click.Context, cluster_name: str | None, candidate: str | None, leader: str | None,
                 force: bool) -> None:
    """Promote a named member, even when the cluster has no healthy leader."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _failover(c, v, candidate, leader, force)))


# -- per-member actions: restart, reload, reinit, flush ---------------------------------------------


def _members(cluster: ClusterView, names: Sequence[str], role: str) -> list[Member]:
    try:
        return select_members(cluster, names, role)
    except ChoiceError as exc:
        raise _fail(exc) from None


def _restart_body(when: datetime | None, pg_version: str | None, pending: bool,
                  timeout: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if when:
        body["schedule"] = when.isoformat()
    if pg_version:
        if not PG_VERSION.match(pg_version):
            raise CtlError(f"--pg-version {pg_version!r}: expected a PostgreSQL version such as 15 or 15.4")
        body["postgres_version"] = pg_version
    if pending:
        body["restart_pending"] = True
    if timeout is not None:
        body["timeout"] = timeout
    return body


def _report(action: str, member: Member, reply: RestReply, *, scheduled: bool = False) -> bool:
    """Print patronictl's per-member line; True on success."""
    if reply.ok:
        done = f"{action} scheduled" if reply.status == 202 and scheduled else action
        preposition = "for" if action == "reinitialize" else "on"  # patronictl's words
        console.print(f"[green]Success:[/green] {done} {preposition} member {member.name}")
        return True
    console.print(f"[red]Failed:[/red] {action} for member {member.name}, status code={reply.status}, "
                  f"({reply.text.strip()})")
    return False


async def _each_member(ctl: Ctl, members: Sequence[Member], method: str, path: str, body: Any, timeout: float,
                       report: Callable[[Member, RestReply], bool]) -> None:
    """Call every member; exit 1 (after trying all of them) if any failed or could not be reached."""
    failures = 0
    for member in members:
        try:
            reply = await ctl.call(member, method, path, body, timeout=timeout)
        except CtlError as exc:
            console.print(f"[red]Failed:[/red] {exc}")
            failures += 1
            continue
        failures += 0 if report(member, reply) else 1
    if failures:
        raise CtlError(f"{failures} of {len(members)} member(s) failed")


async def _restart(ctl: Ctl, cluster: ClusterView, names: Sequence[str], role: str, any_member: bool,
                   scheduled: str | None, pg_version: str | None, pending: bool, timeout: float | None,
                   force: bool) -> None:
    members = _members(cluster, names, role)
    if any_member:
        members = [random.choice(members)]
    when = _schedule(scheduled, force, "restart")
    if when and cluster.paused:
        raise CtlError("Can't schedule restart in the paused state")
    body = _restart_body(when, pg_version, pending, timeout)
    _show(cluster)
    names_text = ", ".join(m.name for m in members)
    confirm_or_abort(f"Are you sure you want to restart members {names_text}?", force, "restart")
    await _each_member(ctl, members, "POST", "/restart", body, RESTART_TIMEOUT + (timeout or 0),
                       lambda m, r: _report("restart", m, r, scheduled=when is not None))


@click.command("restart")
@click.argument("cluster_name", required=False, metavar="[CLUSTER")
@click.argument("member_names", nargs=-1, metavar="[MEMBER]...]")
@target_options()
@click.option("-r", "--role", type=click.Choice(ROLE_CHOICES), default="any", show_default=True)
@click.option("--any", "any_member", is_flag=True, help="Restart one member chosen at random.")
@click.option("--scheduled", default=None, help="When: ISO 8601 time, or 'now'.")
@click.option("--pg-version", default=None, help="Restart only members running an older PostgreSQL version.")
@click.option("--pending", is_flag=True, help="Restart only members with a pending restart.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait for the restart (a primary fails over past it).")
@force_option
@click.pass_context
def restart_cmd(ctx: click.Context, cluster_name: str | None, member_names: tuple[str, ...], role: str,
                any_member: bool, scheduled: str | None, pg_version: str | None, pending: bool,
                timeout: float | None, force: bool) -> None:
    """Restart PostgreSQL on members (all, or those named), now or at a scheduled time."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _restart(
        c, v, member_names, role, any_member, scheduled, pg_version, pending, timeout, force)))


def _report_reload(member: Member, reply: RestReply) -> bool:
    if reply.ok:
        console.print(f"[green]Success:[/green] reload request received for member {member.name}; it is applied "
                      "in the next cycle")
        return True
    return _report("reload", member, reply)


async def _reload(ctl: Ctl, cluster: ClusterView, names: Sequence[str], role: str, force: bool) -> None:
    members = _members(cluster, names, role)
    _show(cluster)
    confirm_or_abort(f"Are you sure you want to reload members {', '.join(m.name for m in members)}?", force,
                     "reload")
    await _each_member(ctl, members, "POST", "/reload", None, 10.0, _report_reload)


@click.command("reload")
@click.argument("cluster_name", required=False, metavar="[CLUSTER")
@click.argument("member_names", nargs=-1, metavar="[MEMBER]...]")
@target_options()
@click.option("-r", "--role", type=click.Choice(ROLE_CHOICES), default="any", show_default=True)
@force_option
@click.pass_context
def reload_cmd(ctx: click.Context, cluster_name: str | None, member_names: tuple[str, ...], role: str,
               force: bool) -> None:
    """Make members re-read their configuration files (like SIGHUP)."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _reload(c, v, member_names, role, force)))


async def _status(ctl: Ctl, member: Member) -> Mapping[str, Any] | None:
    try:
        body = (await ctl.call(member, "GET", "/patroni", timeout=5.0)).json()
    except (CtlError, RestError):  # while waiting, any failure to read the status is "not answering"
        return None
    return body if isinstance(body, Mapping) else None


async def _reinit_one(ctl: Ctl, member: Member, from_leader: bool, force: bool, wait: bool) -> bool:
    before = await _status(ctl, member) if wait else None
    body = {"force": force, "from_leader": from_leader}
    reply = await ctl.call(member, "POST", "/reinitialize", body, timeout=30.0)
    if reply.status == 503 and "already in progress" in reply.text and not force:
        if not confirm(f"{member.name}: {reply.text.strip()}. Cancel it and reinitialize anyway?"):
            return _report("reinitialize", member, reply)
        reply = await ctl.call(member, "POST", "/reinitialize", {**body, "force": True}, timeout=30.0)
    if not _report("reinitialize", member, reply) or not wait:
        return reply.ok
    start_time = before.get("postmaster_start_time") if before else None
    result = await follow_reinit(member.name, lambda: _status(ctl, member), start_time, REINIT_WAIT_TIMEOUT)
    if not result.finished:
        console.print(f"[red]Failed:[/red] reinitialize of {member.name} ended in state {result.state}")
        return False
    console.print(f"[green]Success:[/green] {member.name} runs again after the reinitialize")
    return True


async def _reinit(ctl: Ctl, cluster: ClusterView, names: Sequence[str], from_leader: bool, wait: bool,
                  force: bool) -> None:
    if not names:
        replicas = [m.name for m in _members(cluster, (), "replica")]
        if force:
            raise CtlError("name the member(s) to reinitialize")
        names = [ask("Which member do you want to reinitialize", choices=replicas)]
    members = _members(cluster, names, "any")
    _show(cluster)
    confirm_or_abort(f"Are you sure you want to reinitialize members {', '.join(m.name for m in members)}?", force,
                     "reinitialize")
    failures = 0
    for member in members:
        try:
            ok = await _reinit_one(ctl, member, from_leader, force, wait)
        except CtlError as exc:
            console.print(f"[red]Failed:[/red] {exc}")
            ok = False
        failures += 0 if ok else 1
    if failures:
        raise CtlError(f"{failures} of {len(members)} member(s) failed")


@click.command("reinit")
@click.argument("cluster_name", required=False, metavar="[CLUSTER")
@click.argument("member_names", nargs=-1, metavar="[MEMBER]...]")
@target_options()
@click.option("--from-leader", is_flag=True, help="Clone from the leader even if replicatefrom names another.")
@click.option("--wait", is_flag=True, help="Wait for the re-clone to finish, with a progress bar.")
@force_option
@click.pass_context
def reinit_cmd(ctx: click.Context, cluster_name: str | None, member_names: tuple[str, ...], from_leader: bool,
               wait: bool, force: bool) -> None:
    """Throw away a replica's data directory and clone it again."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _reinit(c, v, member_names, from_leader, wait, force)))


async def _flush_restarts(ctl: Ctl, cluster: ClusterView, names: Sequence[str], role: str, force: bool) -> None:
    members = _members(cluster, names, role)
    confirm_or_abort(f"Are you sure you want to flush scheduled restarts of {', '.join(m.name for m in members)}?",
                     force, "flush")

    def report(member: Member, reply: RestReply) -> bool:
        if reply.status == 404:
            console.print(f"{member.name}: no restart is scheduled")
            return True
        return _report("flush scheduled restart", member, reply)

    await _each_member(ctl, members, "DELETE", "/restart", None, 10.0, report)


async def _flush_switchover(ctl: Ctl, cluster: ClusterView, force: bool) -> None:
    garbage = cluster.unreadable.get("failover") if cluster.failover is None else None
    if cluster.failover is None and garbage is None:
        console.print("No pending scheduled switchover")
        return
    if garbage is not None:
        console.print("The failover key is unreadable (not a switchover request): it blocks new switchovers")
    confirm_or_abort("Are you sure you want to cancel the scheduled switchover?", force, "flush")
    reply = await _try_members(ctl, _leader_first(cluster), "DELETE", "/switchover", None, 10.0)
    if reply is not None and reply.status in (200, 404):
        console.print("[green]Success:[/green] scheduled switchover deleted" if reply.ok else reply.text.strip())
        return
    if reply is not None:
        console.print(f"REST API answered {reply.describe()}; deleting the failover key in the DCS")
    try:
        deleted = await ctl.dcs.delete_failover(cluster.failover.revision if cluster.failover else garbage)
    except DcsError as exc:
        raise CtlError(f"cannot delete the failover key: {exc}") from None
    if not deleted:
        raise CtlError("the failover key changed meanwhile; check `list` and try again")
    console.print("[green]Success:[/green] scheduled switchover deleted")


@click.command("flush")
@click.argument("cluster_name", metavar="CLUSTER")
@click.argument("member_names", nargs=-1, metavar="[MEMBER]...")
@click.argument("what", type=click.Choice(["restart", "switchover"]))
@target_options()
@click.option("-r", "--role", type=click.Choice(ROLE_CHOICES), default="any", show_default=True)
@force_option
@click.pass_context
def flush_cmd(ctx: click.Context, cluster_name: str, member_names: tuple[str, ...], what: str, role: str,
              force: bool) -> None:
    """Cancel scheduled restarts (of the named members) or the scheduled switchover."""
    if what == "restart":
        run(lambda: _act(ctx, cluster_name, lambda c, v: _flush_restarts(c, v, member_names, role, force)))
    else:
        run(lambda: _act(ctx, cluster_name, lambda c, v: _flush_switchover(c, v, force)))


# -- cluster-wide: pause, resume, remove --------------------------------------------------------------


async def _patch_config(ctl: Ctl, cluster: ClusterView, patch: Mapping[str, Any]) -> None:
    """PATCH /config on the first member that answers (leader first); else a CAS write of /config."""
    reply = await _try_members(ctl, _leader_first(cluster), "PATCH", "/config", dict(patch), 10.0)
    if reply is not None:
        if not reply.ok:
            raise CtlError(f"PATCH /config failed: {reply.describe()}")
        return
    if "config" in cluster.unreadable:
        raise CtlError("the stored /config is not valid JSON; nothing was changed "
                       "(replace it with edit-config --replace)")
    console.print("No member accepted PATCH /config; writing /config in the DCS directly")
    current = dict(cluster.config.value) if cluster.config else {}
    revision = cluster.config.revision if cluster.config else 0
    try:
        written = await ctl.dcs.set_config(merge_patch(current, patch), revision)
    except DcsError as exc:
        raise CtlError(f"cannot write /config: {exc}") from None
    if not written:
        raise CtlError("/config changed meanwhile; try again")


async def _wait_for_pause(ctl: Ctl, cluster: ClusterView, paused: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [m.name for m in cluster.members]
    with console.status("waiting for every member to apply it...") as status:
        while time.monotonic() < deadline:
            pending.clear()
            for member in cluster.members:
                body = await _status(ctl, member)
                if body is None or bool(body.get("pause")) != paused:
                    pending.append(member.name)
            if not pending:
                return
            status.update(f"waiting for {', '.join(pending)}...")
            await asyncio.sleep(1.0)
    raise CtlError(f"not every member reported it within {timeout:g}s: {', '.join(pending)}")


async def _toggle_pause(ctl: Ctl, cluster: ClusterView, paused: bool, wait: bool) -> None:
    if cluster.paused == paused:
        raise CtlError("Cluster is already paused" if paused else "Cluster is not paused")
    await _patch_config(ctl, cluster, {"pause": True if paused else None})
    if wait:
        await _wait_for_pause(ctl, cluster, paused, 3 * cluster.dynamic.loop_wait + 30)
    state = "paused" if paused else "resumed"
    console.print(f"[green]Success:[/green] cluster management is {state}")


@click.command("pause")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@click.option("--wait", is_flag=True, help="Wait until every member runs in maintenance mode.")
@click.pass_context
def pause_cmd(ctx: click.Context, cluster_name: str | None, wait: bool) -> None:
    """Maintenance mode: the agents stop starting, stopping, promoting and demoting PostgreSQL."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _toggle_pause(c, v, True, wait)))


@click.command("resume")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@click.option("--wait", is_flag=True, help="Wait until every member has left maintenance mode.")
@click.pass_context
def resume_cmd(ctx: click.Context, cluster_name: str | None, wait: bool) -> None:
    """Leave maintenance mode."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _toggle_pause(c, v, False, wait)))


async def _remove(ctl: Ctl, cluster: ClusterView) -> None:
    _show(cluster)
    typed_confirmation("Please confirm the cluster name to remove", cluster.scope)
    typed_confirmation(f'You are about to remove all information in the DCS for {cluster.scope}, please type '
                       '"Yes I am aware"', "Yes I am aware")
    leader = cluster.leader_member
    if leader is not None and leader.state == PgState.RUNNING:
        typed_confirmation("This cluster currently is healthy. Please specify the leader name to continue",
                           leader.name)
    delete_cluster = getattr(ctl.dcs, "delete_cluster", None)
    if delete_cluster is None:
        raise CtlError("this pgwarden's DCS layer cannot delete a whole scope yet (Dcs.delete_cluster is missing)")
    try:
        await delete_cluster()
    except DcsError as exc:
        raise CtlError(f"cannot remove the cluster from the DCS: {exc}") from None
    console.print(f"[green]Success:[/green] cluster {cluster.scope} removed from the DCS")


@click.command("remove")
@click.argument("cluster_name", metavar="CLUSTER")
@target_options()
@click.pass_context
def remove_cmd(ctx: click.Context, cluster_name: str) -> None:
    """Wipe the cluster's keys from the DCS (after typed confirmations). Stop the agents first."""
    run(lambda: _act(ctx, cluster_name, _remove))


MANAGE_COMMANDS = (switchover_cmd, failover_cmd, restart_cmd, reload_cmd, reinit_cmd, flush_cmd, pause_cmd,
                   resume_cmd, remove_cmd)
