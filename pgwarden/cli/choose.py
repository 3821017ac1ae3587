"""Choosing members and instants from what the user typed; pure functions of a `ClusterView`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pgwarden.api.views import member_role
from pgwarden.model import ClusterView, Member

ROLE_CHOICES = ("leader", "primary", "standby-leader", "replica", "standby", "any")


class ChoiceError(ValueError):
    """A member, role or time that does not fit the cluster; the message says why."""


def has_role(cluster: ClusterView, member: Member, role: str) -> bool:
    """patronictl's `-r` roles: leader (primary or standby leader), primary, standby-leader,
    replica/standby (every non-leader), any."""
    is_leader = member_role(cluster, member) in ("leader", "standby_leader")
    standby = cluster.dynamic.standby_cluster
    if role == "any":
        return True
    if role == "leader":
        return is_leader
    if role == "primary":
        return is_leader and not standby
    if role == "standby-leader":
        return is_leader and standby
    if role in ("replica", "standby"):
        return not is_leader
    raise ChoiceError(f"unknown role {role!r}; expected one of {', '.join(ROLE_CHOICES)}")


def select_members(cluster: ClusterView, names: Sequence[str], role: str = "any") -> list[Member]:
    """The named members (all when none are named) that have `role`, in name order."""
    unknown = [n for n in names if cluster.member(n) is None]
    if unknown:
        known = ", ".join(sorted(m.name for m in cluster.members)) or "none"
        raise ChoiceError(f"{', '.join(unknown)}: not a member of {cluster.scope} (members: {known})")
    chosen = [m for m in cluster.members if not names or m.name in names]
    matching = sorted((m for m in chosen if has_role(cluster, m, role)), key=lambda m: m.name)
    if not matching:
        raise ChoiceError(f"no member of {cluster.scope} matches role {role}")
    return matching


def pick_member(cluster: ClusterView, member: str | None, role: str | None) -> Member:
    """One member for `query`/`dsn`: by name, else the first with `role`, else the leader."""
    if member and role:
        raise ChoiceError("give either --member or --role, not both")
    if member:
        found = cluster.member(member)
        if found is None:
            raise ChoiceError(f"{member}: not a member of {cluster.scope}")
        return found
    return select_members(cluster, (), role or "leader")[0]


def switchover_candidates(cluster: ClusterView, leader: str | None) -> list[str]:
    """Members that may take over: not the leader, and not tagged nofailover."""
    return sorted(m.name for m in cluster.members if m.name != leader and m.tags.can_promote)


def parse_schedule(text: str | None, now: datetime) -> datetime | None:
    """`--scheduled` text -> an aware instant in the future, or None for "now"/empty.

    ISO 8601; without a time zone the local one is meant (as patronictl assumes)."""
    if text is None or text.strip().lower() in ("", "now"):
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ChoiceError(f"{text!r}: not an ISO 8601 time (e.g. 2030-01-31T23:30 or 2030-01-31T23:30+01:00)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # the local time zone
    if when <= now:
        raise ChoiceError(f"{when.isoformat()} is in the past")
    return when
