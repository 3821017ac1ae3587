"""Tables the CLI prints (`list`, `topology`, `history`), as pure functions of a `ClusterView`.

Rows are plain dicts keyed by column title, so the same rows become a rich table (`pretty`), tab
separated lines (`tsv`), JSON or YAML. Roles and states are those of GET /cluster
(`pgwarden.api.views`), so the CLI and the REST API never disagree about a member.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pgwarden.api.views import member_role, member_state
from pgwarden.core.classify import slot_name
from pgwarden.model import LSN, ClusterView, Member, PgState, ReplicationState, lsn_to_text

MEMBER_COLUMNS = ("Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag")
EXTENDED_COLUMNS = ("Pending restart", "Pending restart reason", "Scheduled restart", "Tags")
HISTORY_COLUMNS = ("TL", "LSN", "Reason", "Timestamp", "New Leader")
NUMERIC_COLUMNS = frozenset({"TL", "Receive Lag", "Replay Lag", "LSN"})
MB = 1024 * 1024

ROLE_TITLES = {
    "leader": "Leader",
    "standby_leader": "Standby Leader",
    "sync_standby": "Sync Standby",
    "quorum_standby": "Quorum Standby",
    "replica": "Replica",
}
TRANSITIONAL_STATES = frozenset({
    PgState.STARTING, PgState.STOPPING, PgState.RESTARTING, PgState.CREATING_REPLICA,
    PgState.INITIALIZING, PgState.REWINDING,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One member as `list` shows it: the cells, and what the colouring needs to know."""

    cells: Mapping[str, Any]
    style: str
    lagging: bool


# -- member rows -----------------------------------------------------------------------------------


def leader_optime(cluster: ClusterView) -> LSN | None:
    """The leader's WAL position: the `status` key, else the leader's own member JSON."""
    if cluster.status.optime is not None:
        return cluster.status.optime
    leader = cluster.leader_member
    return leader.lsn if leader else None


def lag_mb(reference: LSN | None, position: LSN | None) -> int | str:
    """Whole megabytes `position` is behind `reference`, or "unknown"."""
    if reference is None or position is None:
        return "unknown"
    return max(0, reference - position) // MB


def host_text(member: Member) -> str:
    """`host`, or `host:port` when the port is not PostgreSQL's default."""
    address = member.host_port
    if address is None:
        return ""
    host, port = address
    return host if port == 5432 else f"{host}:{port}"


def _member_style(role: str, state: str) -> str:
    if role in ("leader", "standby_leader"):
        return "bold green" if state == PgState.RUNNING else "bold red"
    if state == ReplicationState.STREAMING:
        return "green"
    # A replica shown as `running` runs but does not stream right now (its WAL receiver reconnects).
    if state in TRANSITIONAL_STATES or state in (ReplicationState.IN_ARCHIVE_RECOVERY, PgState.RUNNING):
        return "yellow"
    return "red"


def _extended_cells(member: Member) -> dict[str, Any]:
    scheduled = member.raw.get("scheduled_restart")
    reason = member.raw.get("pending_restart_reason")
    return {
        "Pending restart": "*" if member.pending_restart else None,
        "Pending restart reason": _reason_text(reason) if isinstance(reason, Mapping) else None,
        "Scheduled restart": scheduled.get("schedule") if isinstance(scheduled, Mapping) else None,
        "Tags": member.tags.as_json() or None,
    }


def _reason_text(reason: Mapping[str, Any]) -> str:
    parts = []
    for name, change in sorted(reason.items()):
        if isinstance(change, Mapping):
            parts.append(f"{name}: {change.get('old_value')}->{change.get('new_value')}")
        else:
            parts.append(str(name))
    return "; ".join(parts)


def member_row(cluster: ClusterView, member: Member) -> MemberRow:
    """The cells of one member (all columns, extended ones included); `lagging` beyond the cluster's
    maximum_lag_on_failover (shown in yellow)."""
    role = member_role(cluster, member)
    state = str(member_state(member, role))
    is_leader = role in ("leader", "standby_leader")
    optime = leader_optime(cluster)
    cells: dict[str, Any] = {
        "Member": member.name,
        "Host": host_text(member),
        "Role": ROLE_TITLES.get(role, role),
        "State": state,
        "TL": member.timeline,
        "Receive LSN": None if is_leader or member.receive_lsn is None else lsn_to_text(member.receive_lsn),
        "Receive Lag": None if is_leader else lag_mb(optime, member.receive_lsn or member.lsn),
        "Replay LSN": None if is_leader or member.replay_lsn is None else lsn_to_text(member.replay_lsn),
        "Replay Lag": None if is_leader else lag_mb(optime, member.replay_lsn or member.lsn),
    }
    cells.update(_extended_cells(member))
    behind = None if is_leader or optime is None or member.lsn is None else optime - member.lsn
    lagging = behind is not None and behind > cluster.dynamic.maximum_lag_on_failover
    return MemberRow(cells, _member_style(role, state), lagging=lagging)


def member_rows(cluster: ClusterView) -> list[MemberRow]:
    """Leader first, then by name."""
    leader = cluster.leader.name if cluster.leader else None
    ordered = sorted(cluster.members, key=lambda m: (m.name != leader, m.name))
    return [member_row(cluster, m) for m in ordered]


def topology_order(cluster: ClusterView) -> list[tuple[int, Member]]:
    """Members depth-first under their upstream: `replicatefrom` when it names another member, else
    the leader. Members without a path to the leader (no leader, or a cycle) come last at depth 0."""
    leader = cluster.leader.name if cluster.leader else None
    names = {m.name for m in cluster.members}
    children: dict[str | None, list[Member]] = {}
    for member in sorted(cluster.members, key=lambda m: m.name):
        if member.name == leader:
            continue
        upstream = member.tags.replicatefrom
        parent = upstream if upstream in names and upstream != member.name else leader
        children.setdefault(parent, []).append(member)
    ordered: list[tuple[int, Member]] = []
    seen: set[str] = set()

    def visit(member: Member, depth: int) -> None:
        if member.name in seen:
            return
        seen.add(member.name)
        ordered.append((depth, member))
        for child in children.get(member.name, []):
            visit(child, depth + 1)

    if cluster.leader_member is not None:
        visit(cluster.leader_member, 0)
    for member in sorted(cluster.members, key=lambda m: m.name):
        visit(member, 0)
    return ordered


def topology_rows(cluster: ClusterView) -> list[MemberRow]:
    """`member_rows` in topology order, names indented under their upstream ("+ name")."""
    rows = []
    for depth, member in topology_order(cluster):
        row = member_row(cluster, member)
        prefix = "  " * (depth - 1) + "+ " if depth else ""
        rows.append(MemberRow({**row.cells, "Member": prefix + member.name}, row.style, row.lagging))
    return rows


def history_rows(cluster: ClusterView) -> list[dict[str, Any]]:
    """The `history` key, oldest timeline first."""
    return [
        {"TL": h.timeline, "LSN": h.lsn, "Reason": h.reason, "Timestamp": h.timestamp or "",
         "New Leader": h.new_leader or ""}
        for h in sorted(cluster.history, key=lambda h: h.timeline)
    ]


# -- rendering -------------------------------------------------------------------------------------


def cluster_title(cluster: ClusterView) -> str:
    """patronictl's table title: `Cluster: <name> (<system identifier>)`."""
    if cluster.initialize:
        sysid = cluster.initialize
    elif cluster.initialize == "":
        sysid = "initializing"
    else:
        sysid = "uninitialized"
    return f"Cluster: {cluster.scope} ({sysid})"


def footer_lines(cluster: ClusterView) -> list[str]:
    """What `list` says under the table: maintenance mode, failsafe mode, a scheduled switchover, no leader."""
    lines = []
    if cluster.paused:
        lines.append("[yellow]Maintenance mode: on[/yellow]")
    if cluster.dynamic.failsafe_mode:
        listed = ", ".join(sorted(cluster.failsafe)) if cluster.failsafe else "not written yet"
        lines.append(f"Failsafe mode: on (/failsafe: {listed})")
    failover = cluster.failover
    if failover is not None and failover.scheduled_at:
        lines.append(f"Switchover scheduled at: {failover.scheduled_at}")
        lines.append(f"                   from: {failover.leader or '(current leader)'}")
        if failover.member:
            lines.append(f"                     to: {failover.member}")
    if cluster.leader is None and cluster.members:
        lines.append("[red]No leader[/red]: a leader race, a bootstrap, or maintenance without a primary")
    slots = slot_text(cluster)
    if slots:
        lines.append(f"Permanent slots (WAL retained on the primary): {slots}")
    ready = logical_ready_text(cluster)
    if ready:
        lines.append(f"Logical slot copies ready: {ready}")
    return lines


def logical_ready_text(cluster: ClusterView) -> str:
    """Which members' copies of the permanent logical slots are ready (member JSON `logical_slots_ready`):
    a failover to a member whose copies are not ready would lose the consumers' slots. Empty when no member
    publishes it (a cluster without permanent logical slots)."""
    members = sorted(cluster.members, key=lambda m: m.name)
    parts = [f"{m.name} {'yes' if m.logical_slots_ready else 'no'}"
             for m in members if m.logical_slots_ready is not None]
    return ", ".join(parts)


def slot_text(cluster: ClusterView) -> str:
    """The permanent slots the leader publishes in `/status` and the WAL each retains on the primary (its
    optime less the slot's position), so a slot that pins WAL is seen before the disk fills. Member slots
    are left out: the members' lag columns show them."""
    members = {slot_name(m.name) for m in cluster.members}
    optime = cluster.status.optime
    parts = []
    for name, lsn in sorted(cluster.status.slots.items()):
        if name in members:
            continue
        retained = f"{max(0, optime - lsn) / MB:.0f} MB" if optime is not None else "unknown"
        parts.append(f"{name} {retained}")
    return ", ".join(parts)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def member_table(title: str, rows: Sequence[MemberRow], columns: Sequence[str]) -> Table:
    """A rich table; each row in its member's colour, lag cells yellow beyond maximum_lag_on_failover."""
    table = Table(title=title, title_justify="left", box=box.ROUNDED, title_style="bold")
    for column in columns:
        # patronictl's pretty tables title both lag columns "Lag"; the unit is in the caption.
        header = "Lag" if column.endswith(" Lag") else column
        table.add_column(header, justify="right" if column in NUMERIC_COLUMNS else "left")
    for row in rows:
        cells = [Text(_cell_text(row.cells.get(c)), style=_lag_style(row, c)) for c in columns]
        table.add_row(*cells, style=row.style)
    if any(c.endswith(" Lag") for c in columns):
        table.caption = "Lag in MB"
        table.caption_justify = "right"
    return table


def _lag_style(row: MemberRow, column: str) -> str:
    return "bold yellow" if row.lagging and column.endswith(" Lag") else ""


def plain_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], title: str | None = None) -> Table:
    """A rich table of plain dict rows (history, query results)."""
    table = Table(title=title, title_justify="left", box=box.ROUNDED, title_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left")
    for row in rows:
        table.add_row(*(_cell_text(row.get(c)) for c in columns))
    return table


def serialize(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """tsv / json / yaml text of `rows` restricted to `columns`, in that order."""
    records = [{c: row.get(c) for c in columns} for row in rows]
    if fmt == "json":
        return json.dumps(records, default=str)
    if fmt in ("yaml", "yml"):
        return yaml.safe_dump(records, sort_keys=False, allow_unicode=True).rstrip("\n")
    if fmt == "tsv":
        lines = ["\t".join(columns)]
        lines += ["\t".join(_tsv_cell(r.get(c)) for c in columns) for r in records]
        return "\n".join(lines)
    raise ValueError(f"unknown output format {fmt!r}")


def _tsv_cell(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return _cell_text(value).replace("\t", " ")


def list_columns(extended: bool, cluster: ClusterView | None = None) -> tuple[str, ...]:
    """The columns `list` shows; with `-e` all of them, otherwise the extended ones only when some
    member has something to show there (as patronictl does)."""
    if extended or cluster is None:
        return MEMBER_COLUMNS + (EXTENDED_COLUMNS if extended else ())
    rows = [member_row(cluster, m).cells for m in cluster.members]
    return MEMBER_COLUMNS + tuple(c for c in EXTENDED_COLUMNS if any(r.get(c) for r in rows))


def member_records(cluster: ClusterView, *, extended: bool = False,
                   topology: bool = False) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """(columns, rows) of `list`/`topology` for the machine formats, each row with its "Cluster"."""
    rows = topology_rows(cluster) if topology else member_rows(cluster)
    columns = ("Cluster", *list_columns(extended, cluster))
    return columns, [{"Cluster": cluster.scope, **r.cells} for r in rows]


def render_cluster(console: Console, cluster: ClusterView, *, extended: bool = False,
                   topology: bool = False) -> None:
    """Print the pretty table of one cluster, with its title and footer lines."""
    rows = topology_rows(cluster) if topology else member_rows(cluster)
    console.print(member_table(cluster_title(cluster), rows, list_columns(extended, cluster)))
    for line in footer_lines(cluster):
        console.print(" " + line)


def render_table(cluster: ClusterView, console: Console) -> None:
    """The pretty member table with its footer (used by `pgwarden demo`)."""
    render_cluster(console, cluster)
