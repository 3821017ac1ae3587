"""Replication slots: the primary's plan (member slots, permanent slots, the positions `/status`
publishes) and a replica's copies of the permanent slots.

Which slots pgwarden manages, and so may drop: the member slots (one per other member, kept for
`member_slots_ttl` after the member is gone) and the permanent slots of `/config` (`slots:`), including
ones removed from it, as long as this node knows them: from its own memory, or because the leader
published them in `/status`. A slot matched by `ignore_slots` is never created nor dropped, and any
other slot (made by hand, by a tool) is never touched.

Permanent physical slots must survive a failover: every failover-capable replica keeps a copy of each,
advanced (`pg_replication_slot_advance`) to the position the primary publishes, but never past its own
replay position. A promoted replica then already has the slot at or before the consumer's position,
and keeps the WAL an offline consumer still needs.

Pure, like the rest of the core.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pgwarden.core.classify import slot_name
from pgwarden.core.snapshot import Memory, Snapshot
from pgwarden.model import LSN

SLOT_ADVANCE_VERSION = 110000
"""pg_replication_slot_advance (and so the copies of permanent slots) exists from PostgreSQL 11 on."""


@dataclass(frozen=True, slots=True)
class PrimarySlots:
    """What the primary does with slots this cycle (after its renewal succeeded)."""

    create: tuple[str, ...]
    drop: tuple[str, ...]
    retain: tuple[str, ...]
    """`/status` `retain_slots`: the member slots kept (those of the members, and of the members gone for
    less than member_slots_ttl), from which the next leader learns what to keep (Patroni's meaning)."""
    publish: tuple[tuple[str, LSN], ...]
    """`/status` `slots`: the positions of the slots it manages, and its own member slot name at its WAL
    position (what the replicas may advance their copies to)."""
    memory: Memory


@dataclass(frozen=True, slots=True)
class SlotCopies:
    """What a replica does with its copies of the permanent slots this cycle."""

    create: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    advance: tuple[tuple[str, LSN], ...] = ()

    @property
    def changes(self) -> bool:
        """Slots to create or drop (advancing alone is routine, every cycle a consumer moves)."""
        return bool(self.create or self.drop)


def ignored(s: Snapshot, name: str) -> bool:
    """Is the physical slot `name` protected by `ignore_slots`?"""
    return any(m.matches(name) for m in s.settings.ignore_slots)


def _member_slot_names(s: Snapshot) -> set[str]:
    names = {slot_name(s.me)}
    if s.dcs is not None:
        names |= {slot_name(m.name) for m in s.dcs.members}
    return names


def permanent_here(s: Snapshot) -> set[str]:
    """The permanent physical slots this cluster keeps: configured, meant for a cluster of this kind
    (`cluster_type` primary in a primary cluster, standby in a standby cluster, unset in both), not
    ignored, and not a member's slot (a permanent slot named as a member's slot is that member slot)."""
    members = _member_slot_names(s)
    kind = "standby" if s.settings.standby_cluster is not None else "primary"
    return {p.name for p in s.settings.permanent_slots
            if p.type == "physical" and p.cluster_type in (None, kind)
            and p.name not in members and not ignored(s, p.name)}


def _managed_permanent(s: Snapshot, wanted: set[str]) -> set[str]:
    """The permanent slots this node may drop when they are no longer wanted: the wanted ones, those it
    remembers, and those the leader published in `/status` that are no member's slot."""
    managed = set(s.memory.permanent_slots) | wanted
    if s.dcs is not None:
        status = s.dcs.status
        members = _member_slot_names(s) | set(status.retain_slots) | {n for n, _ in s.memory.slot_last_seen}
        managed |= set(status.slots) - members
    return managed


def leads_replication(s: Snapshot) -> bool:
    """Does this node's PostgreSQL serve the cluster's replicas as the leader: a primary, or the standby
    leader of a standby cluster (in recovery, following the remote; its members stream from it)?"""
    return s.pg.is_primary or (s.settings.standby_cluster is not None and s.pg.is_replica)


def plan_primary(s: Snapshot) -> PrimarySlots:
    """The leader's slots (a primary's, or a standby leader's): every other member gets a slot as soon as
    its key appears (so a fresh replica streams at once); a slot whose member is gone is kept for
    member_slots_ttl (so a restarting replica can resume), then dropped; a permanent slot is created and
    kept while configured, dropped once removed from `/config`. Never a slot for the remote primary a
    standby leader follows: that one lives on the remote (`standby_cluster.primary_slot_name`)."""
    if not s.settings.use_slots or not leads_replication(s) or s.dcs is None:
        return PrimarySlots((), (), (), (), s.memory)
    members = {slot_name(m.name) for m in s.dcs.members if m.name != s.me and not m.tags.nostream}
    # A `nostream` member replays the archive only: a slot kept for it would only hold WAL back, so one
    # it had before is dropped at once rather than kept for member_slots_ttl.
    archive_only = {slot_name(m.name) for m in s.dcs.members if m.name != s.me and m.tags.nostream}
    permanent = permanent_here(s)
    seen = dict(s.memory.slot_last_seen)
    for name in s.dcs.status.retain_slots:
        if name not in permanent and name not in s.memory.permanent_slots:
            seen.setdefault(name, s.now)
    for name in members:
        seen[name] = s.now
    expired = {n for n, t in seen.items() if n not in members and n not in permanent
               and (n in archive_only or s.now - t > s.settings.member_slots_ttl)}
    present = set(s.pg.slots)
    managed = _managed_permanent(s, permanent)
    removed = managed - permanent - members - (set(seen) - expired)
    drop = {n for n in (expired | removed) & present if not ignored(s, n)}
    # An expired or removed slot stays remembered until it is really gone: if this renewal (and so the
    # drop) fails, the next cycle must plan the drop again.
    kept_seen = tuple(sorted((n, t) for n, t in seen.items() if n not in expired or n in present))
    kept_permanent = tuple(sorted(permanent | (removed & present)))
    memory = replace(s.memory, slot_last_seen=kept_seen, permanent_slots=kept_permanent)
    retain = set(seen) - expired
    publish = _positions(s, retain | permanent)
    create = tuple(sorted((members | permanent) - present))
    return PrimarySlots(create, tuple(sorted(drop)), tuple(sorted(retain)), publish, memory)


def _positions(s: Snapshot, managed: set[str]) -> tuple[tuple[str, LSN], ...]:
    out = {name: lsn for name, lsn in s.pg.slot_lsns if name in managed and lsn is not None}
    if s.pg.wal_lsn is not None:
        out[slot_name(s.me)] = s.pg.wal_lsn  # Patroni's: where a replica may advance its copy of ours to
    return tuple(sorted(out.items()))


def failover_capable(s: Snapshot) -> bool:
    """May this replica become the primary, and can it keep slot copies (PostgreSQL 11 or newer)?"""
    return (s.settings.use_slots and not s.settings.tags.nofailover
            and (s.pg.server_version or 0) >= SLOT_ADVANCE_VERSION)


def plan_copies(s: Snapshot, keep: set[str]) -> tuple[SlotCopies, Memory]:
    """A running replica's copies of the permanent slots: create the missing ones, drop those no longer
    configured (or all, once this replica may not fail over), and advance each to the position the
    primary published, never past this replica's own replay position (PostgreSQL would stop there too,
    but a copy ahead of what this node has replayed would claim WAL it does not have). `keep`: slots this
    replica has for another reason (its cascading members'), never dropped here."""
    wanted = permanent_here(s) if failover_capable(s) else set()
    present = set(s.pg.slots)
    managed = _managed_permanent(s, wanted)
    drop = {n for n in (managed - wanted - keep - _member_slot_names(s)) & present if not ignored(s, n)}
    memory = replace(s.memory, permanent_slots=tuple(sorted(wanted | (managed & present))))
    published = s.dcs.status.slots if s.dcs is not None else {}
    replayed = s.pg.replay_lsn
    advance: list[tuple[str, LSN]] = []
    for name, have in s.pg.slot_lsns:
        target = published.get(name)
        if name not in wanted or have is None or target is None or replayed is None:
            continue
        target = min(target, replayed)
        if target > have:
            advance.append((name, target))
    return SlotCopies(tuple(sorted(wanted - present)), tuple(sorted(drop)), tuple(advance)), memory
