"""`pgwarden list`: the cluster as a table, read straight from the DCS (like patronictl list)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from pgwarden.config import LocalConfig
from pgwarden.dcs import DcsError, dcs_from_config
from pgwarden.model import ClusterView, Member, PgState, lsn_to_text

COLUMNS = ("Member", "Host", "Role", "State", "TL", "Lag in MB")


def member_rows(cluster: ClusterView) -> list[dict[str, Any]]:
    """One row per member, leader first then by name, with the values `list` shows."""
    leader = cluster.leader.name if cluster.leader else None
    reference = cluster.status.optime
    if reference is None and cluster.leader_member is not None:
        reference = cluster.leader_member.lsn
    rows = []
    for member in sorted(cluster.members, key=lambda m: (m.name != leader, m.name)):
        rows.append({
            "Member": member.name,
            "Host": _host(member),
            "Role": _role(member, leader, cluster),
            "State": _state(member, leader),
            "TL": member.timeline,
            "Lag in MB": _lag_mb(member, leader, reference),
            "LSN": lsn_to_text(member.lsn) if member.lsn is not None else None,
        })
    return rows


def _host(member: Member) -> str:
    address = member.host_port
    return f"{address[0]}:{address[1]}" if address else ""


def _role(member: Member, leader: str | None, cluster: ClusterView) -> str:
    if member.name == leader:
        return "Leader"
    if cluster.sync and member.name in cluster.sync.sync_standby:
        return "Sync Standby"
    return "Replica"


def _state(member: Member, leader: str | None) -> str:
    # A replica counts as streaming only when it says it really streams from its upstream.
    if member.name != leader and member.state == PgState.RUNNING and member.replication_state:
        return str(member.replication_state)
    return str(member.state)


def _lag_mb(member: Member, leader: str | None, reference: int | None) -> str:
    if member.name == leader:
        return ""
    if reference is None or member.lsn is None:
        return "unknown"
    return str(max(0, reference - member.lsn) // (1024 * 1024))


def render_table(cluster: ClusterView, console: Console) -> None:
    title = f"Cluster: {cluster.scope} ({cluster.initialize or 'uninitialized'})"
    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("TL", "Lag in MB") else "left")
    for row in member_rows(cluster):
        style = "bold green" if row["Role"] == "Leader" else ("red" if row["State"] not in ("streaming",) else "")
        table.add_row(*("" if row[c] is None else str(row[c]) for c in COLUMNS), style=style or None)
    console.print(table)
    if cluster.paused:
        console.print(" Maintenance mode: on")
    if cluster.leader is None and cluster.members:
        console.print(" [yellow]No leader: a leader race or a bootstrap is in progress[/yellow]")


def render_plain(cluster: ClusterView, fmt: str) -> str:
    rows = [{"Cluster": cluster.scope, **row} for row in member_rows(cluster)]
    if fmt == "json":
        return json.dumps(rows)
    if fmt == "yaml":
        return yaml.safe_dump(rows, sort_keys=False)
    header = ["Cluster", *COLUMNS]
    lines = ["\t".join(header)]
    lines += ["\t".join("" if r[c] is None else str(r[c]) for c in header) for r in rows]
    return "\n".join(lines)


async def run_list(local: LocalConfig, fmt: str, interval: float | None) -> int:
    console = Console()
    try:
        dcs = await dcs_from_config(local.dcs.model_dump(), namespace=local.namespace, scope=local.scope,
                                    name=local.name, ttl=30, readonly=True)
    except DcsError as exc:
        console.print(f"Error: {exc}", style="red")
        return 1
    try:
        while True:
            try:
                cluster = await dcs.get_cluster()
            except DcsError as exc:
                console.print(f"Error: cannot read the DCS: {exc}", style="red")
                return 1
            if interval:
                console.clear()
                console.print(datetime.now().strftime("%Y-%m-%d %H:%M:%S"))
            if fmt == "pretty":
                render_table(cluster, console)
            else:
                print(render_plain(cluster, fmt))
            if not interval:
                return 0
            await asyncio.sleep(interval)
    finally:
        await dcs.close()
