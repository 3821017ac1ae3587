"""Synchronous replication on replicas: which may be promoted without losing an acknowledged commit,
where a switchover may go, and what a new primary sets before `pg_ctl promote`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pgwarden.core.snapshot import PeerStatus
from pgwarden.core.sync.plan import NoChange, SetSsn, SyncMode, SyncSettings, SyncStep, WriteSync
from pgwarden.core.sync.reasons import Facts, SyncWhy, as_facts
from pgwarden.core.sync.ssn import PLACEHOLDER, Ssn, SsnKind, name_key, name_keys, parse_ssn, parse_ssn_or_none
from pgwarden.model import LSN, SyncState


@dataclass(frozen=True, slots=True)
class SyncVerdict:
    allowed: bool
    why: SyncWhy
    facts: Facts = ()


def _mode_blocks_nothing(settings: SyncSettings, sync: SyncState | None) -> SyncVerdict | None:
    """The verdict when synchronous mode (or a missing /sync key) leaves nothing to check."""
    if settings.mode is SyncMode.OFF:
        return SyncVerdict(True, SyncWhy.ASYNC_MODE)
    if sync is None:
        if settings.strict:
            return SyncVerdict(False, SyncWhy.NO_SYNC_KEY_STRICT)
        return SyncVerdict(True, SyncWhy.NO_SYNC_KEY)
    return None


def may_promote(me: str, my_lsn: LSN, settings: SyncSettings, sync: SyncState | None,
                peers: Sequence[PeerStatus]) -> SyncVerdict:
    """May this replica become primary without losing an acknowledged commit (leader race, failover)?

    The former `/sync` leader may (it acknowledged every commit itself). Otherwise, with `quorum` read
    as Patroni writes and reads it (the number of voters *other than the candidate* it must see), it
    must see at least `quorum` other voters of `/sync` if it is a voter itself, `quorum + 1` if not:
    each reachable voter whose WAL position is known and not ahead of `my_lsn` counts. Those voters
    and itself (if a voter) form a promotion set of `quorum + 1` voters, which meets every set of
    standbys that acknowledged a commit (`quorum_is_safe`), so this node, at or past all of them,
    holds every acknowledged commit. In `on` mode it must moreover be a voter (a synchronous standby);
    Patroni writes `quorum` 0 there, and a larger one (a key still in quorum form) is honoured.
    `peers` are this cycle's peer statuses; an unreachable peer does not count.
    """
    verdict = _mode_blocks_nothing(settings, sync)
    if verdict is not None:
        return verdict
    assert sync is not None
    if sync.leader is not None and name_key(sync.leader) == name_key(me):
        return SyncVerdict(True, SyncWhy.FORMER_LEADER)
    voters = name_keys(sync.sync_standby)
    if settings.mode is SyncMode.ON and name_key(me) not in voters:
        return SyncVerdict(False, SyncWhy.NOT_SYNC_STANDBY, as_facts(sync_standby=sync.sync_standby))
    quorum = max(0, sync.quorum)
    voter = name_key(me) in voters
    seen = [p.name for p in peers if p.reachable and name_key(p.name) in voters
            and name_key(p.name) != name_key(me) and p.lsn is not None and p.lsn <= my_lsn]
    needed = quorum if voter else quorum + 1
    facts = as_facts(seen=seen, quorum=quorum, needed=needed, voter="a voter" if voter else "not a voter")
    if len(seen) < needed:
        return SyncVerdict(False, SyncWhy.NOT_ENOUGH_VOTES, facts)
    why = SyncWhy.SYNC_STANDBY if settings.mode is SyncMode.ON else SyncWhy.QUORUM_REACHED
    return SyncVerdict(True, why, facts)


def switchover_allowed(candidate: str | None, settings: SyncSettings, sync: SyncState | None) -> SyncVerdict:
    """May a switchover go to `candidate` (None: to any member)? In `on` and quorum mode only to a
    standby named in `/sync`, which holds every acknowledged commit (or can gather the votes)."""
    verdict = _mode_blocks_nothing(settings, sync)
    if verdict is not None:
        return verdict
    assert sync is not None
    standbys = [v for v in sync.sync_standby if sync.leader is None or name_key(v) != name_key(sync.leader)]
    if candidate is None:
        if standbys:
            return SyncVerdict(True, SyncWhy.SYNC_STANDBY, as_facts(sync_standby=standbys))
        return SyncVerdict(False, SyncWhy.NO_SYNC_STANDBY)
    if name_key(candidate) in name_keys(standbys):
        return SyncVerdict(True, SyncWhy.SYNC_STANDBY, as_facts(candidate=candidate))
    return SyncVerdict(False, SyncWhy.CANDIDATE_NOT_SYNC, as_facts(candidate=candidate, sync_standby=standbys))


@dataclass(frozen=True, slots=True)
class PrePromote:
    """What a replica that holds the leader key sets before `pg_ctl promote`, in this order: the ssn
    (inert until promotion, so the first commit already waits as it should), then `/sync` by
    compare-and-swap. If the CAS fails, promotion waits for the next cycle."""

    ssn: str
    sync: SyncState
    expected_revision: int


def pre_promote_sync(me: str, settings: SyncSettings, sync: SyncState | None) -> PrePromote | None:
    """The ssn and `/sync` for the new primary `me` (None: synchronous mode is off, nothing to do).

    Not strict: `/sync` = {me, no standby} and an empty ssn. Until a standby is synchronous again
    writes are acknowledged by `me` alone, and only `me` may be promoted.
    Strict: the former voters stay voters with the same quorum (they still guard what the old primary
    acknowledged), and the ssn (`ANY |voters| - quorum`) makes every new commit wait for enough of them
    that every promotion set of them holds it; with no former voter, a placeholder makes commits wait.
    """
    if settings.mode is SyncMode.OFF:
        return None
    revision = sync.revision if sync is not None else 0
    if not settings.strict:
        state = SyncState(leader=me, sync_standby=(), quorum=0)
        return PrePromote("", state, revision)
    # Once written (leader == me), the same computation gives the same answer: the step is idempotent.
    voters = tuple(v for v in (sync.sync_standby if sync is not None else ()) if name_key(v) != name_key(me))
    quorum = 0 if settings.mode is SyncMode.ON or sync is None else max(0, sync.quorum)
    ssn = _pre_promote_ssn(settings.mode, voters, quorum)
    return PrePromote(ssn.render(), SyncState(me, voters, quorum), revision)


def _pre_promote_ssn(mode: SyncMode, voters: tuple[str, ...], quorum: int) -> Ssn:
    if not voters:
        kind = SsnKind.PRIORITY if mode is SyncMode.ON else SsnKind.QUORUM
        return Ssn(kind, 1, (PLACEHOLDER,))
    if mode is SyncMode.ON:
        return Ssn(SsnKind.PRIORITY, len(voters), tuple(sorted(voters)))
    # ANY k with quorum + k = |voters|: every promotion set (quorum + 1 voters) meets every ack set.
    return Ssn(SsnKind.QUORUM, max(1, len(voters) - quorum), tuple(sorted(voters)))


def pre_promote_step(pre: PrePromote, ssn: str, sync: SyncState | None) -> SyncStep:
    """The next step before promoting: SetSsn, then WriteSync, then NoChange (= promote now)."""
    current = parse_ssn_or_none(ssn)
    wanted = parse_ssn(pre.ssn)
    if current is None or not current.same_as(wanted):
        return SetSsn(pre.ssn)
    if sync is None or (sync.leader, name_keys(sync.sync_standby), sync.quorum) != (
            pre.sync.leader, name_keys(pre.sync.sync_standby), pre.sync.quorum):
        return WriteSync(pre.sync, pre.expected_revision)
    return NoChange()
