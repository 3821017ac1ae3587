"""Replication slots: the primary's plan (member slots, permanent slots, the positions `/status`
publishes) and a replica's copies of the members' and the permanent slots.

Which slots pgwarden manages, and so may drop: the member slots (one per other member, kept for
`member_slots_ttl` after the member is gone) and the permanent slots of `/config` (`slots:`), including
ones removed from it, as long as this node knows them: from its own memory, or because the leader
published them in `/status`. A slot matched by `ignore_slots` is never created nor dropped, and any
other slot (made by hand, by a tool) is never touched.

Permanent physical slots must survive a failover: every failover-capable replica keeps a copy of each,
advanced (`pg_replication_slot_advance`) to the position the primary publishes, but never past its own
replay position. A promoted replica then already has the slot at or before the consumer's position,
and keeps the WAL an offline consumer still needs. The members' slots are copied the same way (as
Patroni does on PostgreSQL 11 and later), kept for member_slots_ttl like the primary's: a promoted replica
already holds a slot for each member, at or before where that member is, the old primary's included.

Pure, like the rest of the core.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pgwarden.core.classify import slot_name
from pgwarden.core.snapshot import HaSettings, Memory, PermanentSlot, Snapshot
from pgwarden.model import LSN, LogicalSlot

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
    create_logical: tuple[tuple[str, str, str], ...] = ()
    """Permanent logical slots to create: (name, database, plugin)."""
    blocked: str = ""
    """Why missing logical slots are not created (said once, see `Memory.logical_blocked`)."""


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


def _other_members(s: Snapshot) -> tuple[set[str], set[str]]:
    """The slot names of the other members: those that stream, and the `nostream` ones. A `nostream` member
    replays the archive only: a slot kept for it would only hold WAL back, so one it had before is dropped
    at once rather than kept for member_slots_ttl."""
    others = [m for m in s.dcs.members if m.name != s.me] if s.dcs is not None else []
    return ({slot_name(m.name) for m in others if not m.tags.nostream},
            {slot_name(m.name) for m in others if m.tags.nostream})


def plan_primary(s: Snapshot) -> PrimarySlots:
    """The leader's slots (a primary's, or a standby leader's): every other member gets a slot as soon as
    its key appears (so a fresh replica streams at once); a slot whose member is gone is kept for
    member_slots_ttl (so a restarting replica can resume), then dropped; a permanent slot is created and
    kept while configured, dropped once removed from `/config`. Never a slot for the remote primary a
    standby leader follows: that one lives on the remote (`standby_cluster.primary_slot_name`)."""
    if not s.settings.use_slots or not leads_replication(s) or s.dcs is None:
        return PrimarySlots((), (), (), (), s.memory)
    members, archive_only = _other_members(s)
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
    removed = managed - permanent - members - (set(seen) - expired) - set(logical_here(s))
    drop = {n for n in (expired | removed) & present if not ignored(s, n)}
    # An expired or removed slot stays remembered until it is really gone: if this renewal (and so the
    # drop) fails, the next cycle must plan the drop again.
    kept_seen = tuple(sorted((n, t) for n, t in seen.items() if n not in expired or n in present))
    kept_permanent = tuple(sorted(permanent | (removed & present)))
    memory = replace(s.memory, slot_last_seen=kept_seen, permanent_slots=kept_permanent)
    retain = set(seen) - expired
    publish = _positions(s, retain | permanent)
    create = tuple(sorted((members | permanent) - present))
    logical = plan_primary_logical(s)
    memory = replace(memory, permanent_slots=tuple(sorted({*kept_permanent, *logical.managed})),
                     logical_blocked=bool(logical.blocked))
    blocked = logical.blocked if not s.memory.logical_blocked else ""  # one error line, not one per cycle
    return PrimarySlots(create, tuple(sorted({*drop, *logical.drop})), tuple(sorted(retain)),
                        tuple(sorted({*publish, *logical.publish})), memory, logical.create, blocked)


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
    """A running replica's copies of the permanent slots and of the other members' slots: create the
    missing ones, drop those no longer wanted (or all, once this replica may not fail over), and advance
    each to the position the primary published, never past this replica's own replay position
    (PostgreSQL would stop there too, but a copy ahead of what this node has replayed would claim WAL it
    does not have). `keep`: slots this replica has for another reason (its cascading members', in use by
    them), never dropped nor advanced here."""
    capable = failover_capable(s)
    wanted = permanent_here(s) if capable else set()
    members, seen, expired = _member_copies(s, capable)
    present = set(s.pg.slots)
    managed = _managed_permanent(s, wanted)
    drop = {n for n in (managed - wanted - keep - _member_slot_names(s) - set(logical_here(s))) & present
            if not ignored(s, n)}
    drop |= {n for n in expired & present if n not in keep | wanted and not ignored(s, n)}
    # The logical slots present count too: dropped from this memory, a logical copy would no longer be
    # "managed" by `plan_logical_copies`, and once `/status` stops listing it, never dropped.
    held = present | {slot.name for slot in s.pg.logical_slots}
    memory = replace(s.memory, permanent_slots=tuple(sorted(wanted | (managed & held))),
                     slot_last_seen=tuple(sorted((n, t) for n, t in seen.items() if n not in expired or n in present)))
    published = s.dcs.status.slots if s.dcs is not None else {}
    replayed = s.pg.replay_lsn
    advance: list[tuple[str, LSN]] = []
    for name, have in s.pg.slot_lsns:
        target = published.get(name)
        if name not in wanted | members or name in keep or have is None or target is None or replayed is None:
            continue
        target = min(target, replayed)
        if target > have:
            advance.append((name, target))
    create = (wanted | members) - present - {n for n in members if ignored(s, n)}
    return SlotCopies(tuple(sorted(create)), tuple(sorted(drop)), tuple(advance)), memory


def _member_copies(s: Snapshot, capable: bool) -> tuple[set[str], dict[str, float], set[str]]:
    """The other members' slots a failover-capable replica keeps (as Patroni does on PostgreSQL 11 and
    later): a promoted replica then already holds each member's slot, at or before its position, and the
    WAL the member still needs. Kept for the members the leader retains (`/status` `retain_slots`) and, like
    the primary, for member_slots_ttl after this node last saw the member, so a flapping DCS read or a new
    leader that has not published yet does not drop a slot a restarting member needs.
    Returns (the member slots wanted, when each was last seen, those to drop)."""
    seen = dict(s.memory.slot_last_seen)
    if s.dcs is None or not s.settings.use_slots:
        return set(), seen, set()
    mine = slot_name(s.me)
    current, archive_only = _other_members(s)
    for name in s.dcs.status.retain_slots:
        if name != mine:
            seen.setdefault(name, s.now)
    for name in current:
        seen[name] = s.now
    for name in archive_only:  # a copy kept for a member that became `nostream` only holds WAL back
        seen.setdefault(name, s.now)
    retained = set(s.dcs.status.retain_slots) - {mine}
    wanted = (current | retained) - archive_only if capable else set()
    expired = {n for n, t in seen.items()
               if n != mine and n not in wanted and (not capable or n in archive_only or (n not in retained
                                       and s.now - t > s.settings.member_slots_ttl))}
    return wanted, seen, expired


# -- permanent logical slots ------------------------------------------------------------------------------
#
# On the primary they are created with their plugin in their database and their confirmed_flush_lsn is
# published in `/status`. PostgreSQL before 16 cannot create a logical slot in recovery, so a replica gets its
# copy by copying the slot's state file from the leader while its PostgreSQL is stopped (`CopyLogicalSlots`),
# then advances it (`pg_replication_slot_advance` works on a standby for a logical slot) to the published
# position, never past its own replay position. A copy must never be AHEAD of what the consumer confirmed:
# the consumer would miss the changes in between after a failover. So a copy ahead of the published position
# is dropped and copied again, unless this agent made it from the current leader and the published position
# has not reached it once yet (the leader's state file may be newer than its last publication).

LOGICAL = "logical"


def logical_configured(s: Snapshot) -> bool:
    """Does `/config` have permanent logical slots (whatever their other attributes)?"""
    return any(p.type == LOGICAL for p in s.settings.permanent_slots)


def logical_here(s: Snapshot) -> dict[str, PermanentSlot]:
    """The permanent logical slots this cluster keeps: configured with a database and a plugin, in a primary
    cluster (a standby cluster's nodes are all in recovery: they cannot have them), not ignored."""
    if s.settings.standby_cluster is not None:
        return {}
    members = _member_slot_names(s)
    return {p.name: p for p in s.settings.permanent_slots
            if p.type == LOGICAL and p.database and p.plugin and p.cluster_type in (None, "primary")
            and p.name not in members and not _ignored_logical(s, p.name, p.database, p.plugin)}


def _ignored_logical(s: Snapshot, name: str, database: str | None, plugin: str | None) -> bool:
    return any(m.matches(name, LOGICAL, database, plugin) for m in s.settings.ignore_slots)


def _matches(slot: LogicalSlot, spec: PermanentSlot) -> bool:
    return slot.database == spec.database and slot.plugin == spec.plugin


def _published(s: Snapshot) -> set[str]:
    """The slots the leader published a position for: slots this cluster made (never a foreign one)."""
    return set(s.dcs.status.slots) if s.dcs is not None else set()


def _wal_level_ok(s: Snapshot) -> bool:
    return s.pg.wal_level == LOGICAL


@dataclass(frozen=True, slots=True)
class PrimaryLogical:
    """What the primary does with the permanent logical slots this cycle."""

    create: tuple[tuple[str, str, str], ...] = ()  # (name, database, plugin)
    drop: tuple[str, ...] = ()
    publish: tuple[tuple[str, LSN], ...] = ()
    managed: tuple[str, ...] = ()
    """The logical slots it manages from now on (for `Memory.permanent_slots`)."""
    blocked: str = ""
    """Why none is created although some are missing (the running wal_level), "" otherwise."""


def plan_primary_logical(s: Snapshot) -> PrimaryLogical:
    """The primary's permanent logical slots: create the missing ones (only with wal_level logical), drop the
    managed ones no longer configured, recreate a managed one of the wrong plugin or database (never one it
    does not manage: it is left alone), and publish their confirmed_flush_lsn."""
    if not s.settings.use_slots or not s.pg.is_primary or s.dcs is None:
        return PrimaryLogical()
    wanted = logical_here(s)
    present = {slot.name: slot for slot in s.pg.logical_slots}
    managed = _managed_permanent(s, set(wanted))
    drop = {n for n, slot in present.items() if n in managed and n not in wanted
            and not _ignored_logical(s, n, slot.database, slot.plugin)}
    wrong = {n for n, slot in present.items() if n in wanted and not _matches(slot, wanted[n])}
    wrong |= {n for n in wanted if n in s.pg.slots}  # a physical slot of that name
    # Recreated only when this cluster made it (it published its position); a slot made by someone else
    # with this name is left alone: the create below names it in an error line instead.
    drop |= wrong & _published(s)
    missing = [spec for n, spec in sorted(wanted.items()) if (n not in present and n not in wrong) or n in wrong - drop]
    blocked = ""
    if missing and not _wal_level_ok(s):
        blocked = (f"permanent logical slots {', '.join(p.name for p in missing)} are not created: PostgreSQL runs "
                   f"with wal_level={s.pg.wal_level or 'unknown'}; set postgresql.parameters.wal_level: logical in "
                   "the dynamic configuration and restart")
        missing = []
    create = tuple((p.name, p.database or "", p.plugin or "") for p in missing)
    publish = tuple(sorted((n, slot.confirmed_flush) for n, slot in present.items()
                           if n in wanted and n not in wrong and slot.confirmed_flush is not None))
    kept = set(wanted) | (drop & set(present))
    return PrimaryLogical(create, tuple(sorted(drop)), publish, tuple(sorted(kept)), blocked)


@dataclass(frozen=True, slots=True)
class LogicalCopies:
    """What a replica does with its copies of the permanent logical slots this cycle."""

    copy: tuple[str, ...] = ()
    """Missing copies to make from the leader's state files (one restart of PostgreSQL for all)."""
    drop: tuple[str, ...] = ()
    advance: tuple[tuple[str, str, LSN], ...] = ()  # (name, database, target)
    managed: tuple[str, ...] = ()


def plan_logical_copies(s: Snapshot) -> tuple[LogicalCopies, Memory]:
    """A running replica's copies of the permanent logical slots (see the comment above)."""
    wanted = logical_here(s) if failover_capable(s) and s.pg.is_replica else {}
    present = {slot.name: slot for slot in s.pg.logical_slots}
    managed = _managed_permanent(s, set(wanted))
    leader = _leader(s)
    published = s.dcs.status.slots if s.dcs is not None else {}
    exempt = _just_copied(s, leader)
    drop: set[str] = set()
    advance: list[tuple[str, str, LSN]] = []
    for name, slot in sorted(present.items()):
        spec = wanted.get(name)
        if spec is None:
            if name in managed and not _ignored_logical(s, name, slot.database, slot.plugin):
                drop.add(name)
            continue
        target = published.get(name)
        have = slot.confirmed_flush
        if not _matches(slot, spec):
            if name in _published(s):
                drop.add(name)  # another plugin or database than configured now: copied again
        elif target is not None and have is not None and have > target and name not in exempt:
            drop.add(name)  # ahead of the consumer: a failover would skip changes it never confirmed
        elif target is not None and have is not None and s.pg.replay_lsn is not None:
            target = min(target, s.pg.replay_lsn)
            if target > have:
                advance.append((name, slot.database or "", target))
        if target is not None and have is not None and published[name] >= have:
            exempt.discard(name)  # the published position reached the copy: from now on it is checked
    copies = tuple(sorted(n for n in wanted if n not in present and n not in s.pg.slots))
    if not _wal_level_ok(s) or leader is None or (s.memory.slot_copy_retry_at is not None
                                                  and s.now < s.memory.slot_copy_retry_at):
        copies = ()
    remembered = tuple(sorted((n, source) for n, source in s.memory.logical_copies
                              if source == leader and n in exempt and n in present and n not in drop))
    memory = replace(s.memory, logical_copies=remembered)
    kept = tuple(sorted(set(wanted) | (managed & set(present))))
    return LogicalCopies(copies, tuple(sorted(drop)), tuple(advance), kept), memory


def _leader(s: Snapshot) -> str | None:
    return s.dcs.leader.name if s.dcs is not None and s.dcs.leader is not None else None


def _just_copied(s: Snapshot, leader: str | None) -> set[str]:
    """The copies this agent made from `leader` whose position `/status` has not reached yet: not checked
    against it (the leader's state file may be newer than its last publication)."""
    return {n for n, source in s.memory.logical_copies if source == leader}


def remember_copies(memory: Memory, names: tuple[str, ...], leader: str) -> Memory:
    """A copy of `names` from `leader` is being made: exempt them until the published position reaches them."""
    made = {*memory.logical_copies, *((n, leader) for n in names)}
    return replace(memory, logical_copies=tuple(sorted(made)))


def logical_ready(s: Snapshot) -> bool | None:
    """Are this node's copies of the permanent logical slots ready (member JSON `logical_slots_ready`)? A
    primary's are (it holds the slots); a replica's when every one exists here with its plugin and database,
    the primary published its position, and it is not ahead of that position (or exempt, just copied). None:
    the cluster has no permanent logical slots."""
    if not logical_configured(s):
        return None
    if s.dcs is None:
        return s.memory.logical_slots_ready
    if s.pg.is_primary:
        return True
    if not s.pg.is_replica or not failover_capable(s):
        return False
    exempt = _just_copied(s, _leader(s))
    present = {slot.name: slot for slot in s.pg.logical_slots}
    for name, spec in logical_here(s).items():
        slot, target = present.get(name), s.dcs.status.slots.get(name)
        if slot is None or not _matches(slot, spec) or target is None or slot.confirmed_flush is None:
            return False
        if slot.confirmed_flush > target and name not in exempt:
            return False
    return True


COPY_BACKOFF = 30.0
COPY_BACKOFF_MAX = 600.0
COPY_WAIT = 10.0
COPY_WAITING = "waiting: "
"""How a copy's outcome detail starts when it could not be made yet and stopped nothing (`engine.steps`)."""


def copy_backoff(settings: HaSettings, failures: int) -> float:
    """Seconds before the next copy of logical slots after `failures` failed ones in a row: at least a
    loop_wait, doubling, at most ten minutes; 0 failures (a copy that waits): COPY_WAIT, at least a loop_wait."""
    if failures <= 0:
        return max(COPY_WAIT, float(settings.loop_wait))
    base = max(COPY_BACKOFF, float(settings.loop_wait))
    return min(base * float(2 ** (failures - 1)), COPY_BACKOFF_MAX)
