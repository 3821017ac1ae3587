"""The leader race: may this node try to take the free leader key?

Several nodes can each conclude they are the healthiest (equal WAL positions, unreachable peers);
the atomic create of the leader key in the DCS settles that. What this module guarantees is the
other direction: a node that is visibly behind, lagging, barred by tags or that still sees a live
primary never tries.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgwarden.core.classify import switch_lsn
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.slots import logical_configured
from pgwarden.core.snapshot import PeerStatus, Snapshot
from pgwarden.core.sync.promotion import may_promote
from pgwarden.core.sync.reasons import render_sync


@dataclass(frozen=True, slots=True)
class RaceVerdict:
    may_acquire: bool
    reason: Reason


def _lose(why: Why, **facts: object) -> RaceVerdict:
    return RaceVerdict(False, Reason(why, tuple((k, str(v)) for k, v in sorted(facts.items()))))


def replica_race(s: Snapshot) -> RaceVerdict:
    """A running replica with no leader in the DCS: is it the healthiest eligible node?"""
    assert s.dcs is not None
    settings, pg = s.settings, s.pg
    if not settings.tags.can_promote:
        return _lose(Why.RACE_NOFAILOVER)
    my_lsn = pg.lsn or 0
    if not within_lag(s, my_lsn):
        optime = s.dcs.status.optime or 0
        return _lose(Why.RACE_LAGGING, lag=optime - my_lsn, limit=settings.maximum_lag_on_failover)
    my_tl = pg.timeline or 0
    if my_tl < s.dcs.timeline and (settings.check_timeline or not _prefix_of_lineage(s, my_tl, my_lsn)):
        # A node behind the cluster's timeline may race only if its WAL is a prefix of the cluster's
        # lineage (it stopped at or before where its timeline ended): only then does the lag check
        # above measure what it lacks; WAL past that point is another branch, and its LSN says nothing.
        # (It used to be refused always, because it would have promoted to a timeline number already
        # used; promotions now reserve their number, engine.steps._claim_timeline. Refusing always
        # deadlocked clusters whose only nodes left were behind: found by the simulator.)
        return _lose(Why.RACE_TIMELINE_BEHIND, mine=my_tl, cluster=s.dcs.timeline)
    sync = may_promote(s.me, my_lsn, settings.sync, s.dcs.sync, s.peers)
    if not sync.allowed:
        return _lose(Why.SYNC_NOT_ALLOWED, detail=render_sync(sync.why, sync.facts))
    for peer in s.peers:
        if not _may_promote_peer(s, peer):
            continue  # e.g. an asynchronous replica ahead of us in synchronous mode: it cannot win
        behind = peer.timeline is not None and peer.timeline < s.dcs.timeline and not peer.is_running_primary
        if behind and (settings.check_timeline or not _prefix_of_lineage(s, peer.timeline or 0, peer.lsn or 0)):
            continue  # behind the cluster's timeline it may not race, so it must not bar us (no deadlock)
        failover = s.dcs.failover
        if failover is not None and failover.leader == peer.name and not peer.is_running_primary:
            continue  # the former leader of a switchover never races (contract): it must not bar us either
        order = _slot_order(s, peer)
        if order < 0:
            return _lose(Why.RACE_SLOTS_NOT_READY, member=peer.name)
        if order > 0:
            continue  # its copies of the logical slots are not ready, mine are: it does not bar me
        verdict = _compare_with_peer(peer, my_lsn, settings.tags.failover_priority, s.me)
        if verdict is not None:
            return verdict
    return RaceVerdict(True, Reason(Why.RACE_HEALTHIEST, (("lsn", str(my_lsn)),)))


def _slot_order(s: Snapshot, peer: PeerStatus) -> int:
    """With permanent logical slots: 1 when my copies are ready and `peer`'s are not, -1 the other way
    round, 0 when both are alike, or `peer` could not win a race anyway (unreachable, a running primary,
    barred by tags, beyond maximum_lag_on_failover: lag rules come first). Both sides read readiness from
    the member keys (`logical_slots_ready`), so every candidate ranks the same way; and a candidate
    without ready copies still wins when no other is ready: never a cluster without a leader for slots."""
    if s.dcs is None or peer.name == s.me or not logical_configured(s):
        return 0
    if (not peer.reachable or peer.is_running_primary or peer.nofailover or peer.failover_priority <= 0
            or peer.watchdog_failed or not within_lag(s, peer.lsn)):
        return 0
    me, other = s.dcs.member(s.me), s.dcs.member(peer.name)
    mine = me is not None and me.logical_slots_ready is True
    theirs = other is not None and other.logical_slots_ready is True
    return int(mine) - int(theirs)


def within_lag(s: Snapshot, lsn: int | None) -> bool:
    """Is a WAL position within maximum_lag_on_failover of the last optime the leader published?"""
    optime = s.dcs.status.optime if s.dcs is not None else None
    return optime is None or optime - (lsn or 0) <= s.settings.maximum_lag_on_failover


def _prefix_of_lineage(s: Snapshot, timeline: int, lsn: int) -> bool:
    assert s.dcs is not None
    ended = switch_lsn(s.dcs, timeline)
    return ended is not None and lsn <= ended


def _may_promote_peer(s: Snapshot, peer: PeerStatus) -> bool:
    """Whether synchronous mode would let `peer` promote (always, with it off). A running primary
    always counts: it must block the race whatever its sync state."""
    if s.dcs is None or s.settings.sync.mode.value == "off" or peer.is_running_primary:
        return True
    me = PeerStatus(name=s.me, reachable=True, in_recovery=True, lsn=s.pg.lsn)
    others = (*(p for p in s.peers if p.name != peer.name), me)
    return may_promote(peer.name, peer.lsn or 0, s.settings.sync, s.dcs.sync, others).allowed


def _compare_with_peer(peer: PeerStatus, my_lsn: int, my_priority: int, me: str) -> RaceVerdict | None:
    if peer.name == me or not peer.reachable:
        return None
    if peer.is_running_primary:
        return _lose(Why.RACE_PRIMARY_ALIVE, member=peer.name)
    if peer.nofailover or peer.failover_priority <= 0 or peer.watchdog_failed:
        return None  # cannot promote, so its position does not bar us
    peer_lsn = peer.lsn or 0
    if peer_lsn > my_lsn:
        return _lose(Why.RACE_NOT_HEALTHIEST, member=peer.name, theirs=peer_lsn, mine=my_lsn)
    if peer_lsn == my_lsn and peer.failover_priority > my_priority:
        return _lose(Why.RACE_NOT_HEALTHIEST, member=peer.name, priority=peer.failover_priority)
    return None


def failover_possible(s: Snapshot) -> bool:
    """On the leader: is there a reachable peer that could take over (used for a shutdown handover)?"""
    my_lsn = s.pg.lsn or 0
    for peer in s.peers:
        if peer.name == s.me or not peer.reachable or peer.nofailover or peer.failover_priority <= 0:
            continue
        if not _may_promote_peer(s, peer):
            continue
        mine = s.pg.timeline or s.pg.controldata_timeline
        on_timeline = not s.settings.check_timeline or peer.timeline == mine
        # A peer behind my timeline with WAL past where its timeline ended may never race (replica_race):
        # demoting for it would leave the cluster without a primary (found by the simulator, seed 214).
        behind = peer.timeline is not None and mine is not None and peer.timeline < mine
        if behind and s.dcs is not None and not _prefix_of_lineage(s, peer.timeline or 0, peer.lsn or 0):
            continue
        if peer.in_recovery and on_timeline and my_lsn - (peer.lsn or 0) <= s.settings.maximum_lag_on_failover:
            return True
    return False
