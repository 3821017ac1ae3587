"""`pgwarden demote-cluster` and `pgwarden promote-cluster` (patronictl 4's): turn a primary cluster into a
standby cluster of a remote primary, and back, with one command that waits for the result.

Both only edit `/config` (PATCH on the leader first, as `pause` does: `standby_cluster` added or removed);
the agents do the rest (contract 2.12): a primary whose cluster became a standby cluster stops and comes back
as the standby leader following the remote; a standby leader whose cluster lost the section promotes. The
command then polls every member's `GET /patroni` until the leader reports its new role, running, and every
other member runs as a replica, or says what it still waits for when the timeout expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import click

from pgwarden.cli.ask import confirm_or_abort
from pgwarden.cli.manage import _act, _patch_config, _status
from pgwarden.cli.options import force_option, target_options
from pgwarden.cli.session import Ctl, CtlError, console, run
from pgwarden.model import ClusterView, Role

POLL_INTERVAL = 1.0


def standby_section(host: str | None, port: int | None, restore_command: str | None,
                    primary_slot_name: str | None) -> dict[str, Any]:
    """The `standby_cluster` section the options describe (the agents' validation checks each value)."""
    if not host and not restore_command:
        raise CtlError("a standby cluster needs --host (to stream from the remote primary) or --restore-command "
                       "(to restore its archived WAL), or both")
    given = {"host": host, "port": port, "primary_slot_name": primary_slot_name, "restore_command": restore_command}
    return {key: value for key, value in given.items() if value is not None}


def pending(statuses: Mapping[str, Mapping[str, Any] | None], leader_role: str) -> list[str]:
    """What the cluster still lacks to be in its new roles: one `name (what it is)` per member not there yet.
    The leader is the member reporting `leader_role`; exactly one must, running; the others run as replicas."""
    waiting: list[str] = []
    leaders = [name for name, body in statuses.items() if body is not None and body.get("role") == leader_role
               and body.get("state") == "running"]
    if len(leaders) != 1:
        waiting.append(f"a running {leader_role}")
    for name, body in sorted(statuses.items()):
        if name in leaders:
            continue
        if body is None:
            waiting.append(f"{name} (not answering)")
        elif body.get("role") != Role.REPLICA or body.get("state") != "running":
            waiting.append(f"{name} ({body.get('role')}, {body.get('state')})")
    return waiting


async def wait_for_roles(ctl: Ctl, leader_role: str, timeout: float) -> ClusterView:
    """Poll until every member is in its new role (`pending` is empty); CtlError naming what is missing at
    the timeout."""
    deadline = time.monotonic() + timeout
    missing = [f"a running {leader_role}"]
    with console.status(f"waiting for a {leader_role} and its replicas...") as status:
        while True:
            cluster = await ctl.cluster()
            statuses = {m.name: await _status(ctl, m) for m in cluster.members}
            missing = pending(statuses, leader_role)
            if not missing:
                return cluster
            if time.monotonic() >= deadline:
                break
            status.update(f"waiting for {', '.join(missing)}...")
            await asyncio.sleep(POLL_INTERVAL)
    raise CtlError(f"/config was changed, but the cluster is not in its new roles after {timeout:g}s: still "
                   f"waiting for {', '.join(missing)} (the agents go on; check `pgwarden list`)")


def _default_timeout(cluster: ClusterView) -> float:
    """Long enough for a demotion or promotion and every member's next cycles."""
    return float(3 * cluster.dynamic.loop_wait + 60)


async def _demote(ctl: Ctl, cluster: ClusterView, section: dict[str, Any], force: bool,
                  timeout: float | None) -> None:
    if cluster.dynamic.standby_cluster:
        raise CtlError(f"cluster {cluster.scope} is already a standby cluster")
    await _switch(ctl, cluster, section, Role.STANDBY_LEADER, force, timeout,
                  question="it stops accepting writes and follows the remote primary", what="demote",
                  became="a standby cluster", leader_is="its standby leader")


async def _promote(ctl: Ctl, cluster: ClusterView, force: bool, timeout: float | None) -> None:
    if not cluster.dynamic.standby_cluster:
        raise CtlError(f"cluster {cluster.scope} is not a standby cluster")
    await _switch(ctl, cluster, None, Role.PRIMARY, force, timeout,
                  question="it stops following the remote primary and accepts writes", what="promote",
                  became="a primary cluster", leader_is="its primary")


async def _switch(ctl: Ctl, cluster: ClusterView, section: dict[str, Any] | None, leader_role: str, force: bool,
                  timeout: float | None, *, question: str, what: str, became: str, leader_is: str) -> None:
    """Confirm, set `standby_cluster` to `section` (None: remove it), wait for the new roles, say so."""
    confirm_or_abort(f"Are you sure you want to {what} the cluster {cluster.scope}: {question}?", force,
                     "demotion" if what == "demote" else "promotion")
    await _patch_config(ctl, cluster, {"standby_cluster": section})
    done = await wait_for_roles(ctl, leader_role, timeout or _default_timeout(cluster))
    leader = done.leader.name if done.leader else "?"
    console.print(f"[green]Success:[/green] cluster {cluster.scope} is {became}; {leader} is {leader_is}")


_timeout_option = click.option("--timeout", type=click.FloatRange(min=1), default=None,
                               help="Seconds to wait for the new roles (default: 3 x loop_wait + 60).")


@click.command("demote-cluster")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@click.option("--host", help="The remote primary's host (or a stable address: a proxy, a DNS name).")
@click.option("--port", type=click.IntRange(1, 65535), help="The remote primary's port.")
@click.option("--restore-command", help="A restore_command to fetch WAL from the remote's archive.")
@click.option("--primary-slot-name", help="The replication slot on the remote primary to stream through.")
@force_option
@_timeout_option
@click.pass_context
def demote_cluster_cmd(ctx: click.Context, cluster_name: str | None, host: str | None, port: int | None,
                       restore_command: str | None, primary_slot_name: str | None, force: bool,
                       timeout: float | None) -> None:
    """Make this cluster a standby cluster of a remote primary (adds `standby_cluster` to /config) and wait
    until its leader runs as the standby leader."""
    def action(ctl: Ctl, cluster: ClusterView) -> Any:
        return _demote(ctl, cluster, standby_section(host, port, restore_command, primary_slot_name), force,
                       timeout)

    run(lambda: _act(ctx, cluster_name, action))


@click.command("promote-cluster")
@click.argument("cluster_name", required=False, metavar="[CLUSTER]")
@target_options()
@force_option
@_timeout_option
@click.pass_context
def promote_cluster_cmd(ctx: click.Context, cluster_name: str | None, force: bool, timeout: float | None) -> None:
    """Make this standby cluster a primary cluster (removes `standby_cluster` from /config) and wait until its
    leader runs as a writable primary."""
    run(lambda: _act(ctx, cluster_name, lambda c, v: _promote(c, v, force, timeout)))
