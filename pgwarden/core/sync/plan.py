"""The primary's synchronous replication: its next single step with `synchronous_standby_names` and
`/sync`, in an order that keeps the safety rules (`core.sync.safety`) at every instant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from pgwarden.core.sync.reasons import Facts, SyncWhy, as_facts
from pgwarden.core.sync.safety import AckRule, Legacy, ack_rule, legacy_is_safe, quorum_is_safe
from pgwarden.core.sync.ssn import ASYNC, PLACEHOLDER, Ssn, SsnKind, name_key, name_keys, parse_ssn_or_none
from pgwarden.model import LSN, ClusterView, LocalPg, Member, ReplicationRow, SyncState

SYNCHRONOUS_STATES = frozenset({"sync", "quorum"})


# ---------------------------------------------------------------------------------------------------
# Settings


class SyncMode(StrEnum):
    OFF = "off"
    ON = "on"
    QUORUM = "quorum"


class AckPoint(StrEnum):
    """Which pg_stat_replication column a commit waits for (follows `synchronous_commit`)."""

    WRITE = "write"  # remote_write
    FLUSH = "flush"  # on (the default)
    APPLY = "apply"  # remote_apply


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """The effective synchronous-replication settings (DCS /config, after defaults)."""

    mode: SyncMode = SyncMode.OFF
    strict: bool = False
    node_count: int = 1
    maximum_lag_on_syncnode: int = -1
    """Bytes; a standby further behind is not chosen. Zero or less disables the check."""
    configured_ssn: str = ""
    """The ssn from `postgresql.parameters`, enforced only when synchronous_mode is off."""
    ack: AckPoint = AckPoint.FLUSH


# ---------------------------------------------------------------------------------------------------
# Memory and steps


@dataclass(frozen=True, slots=True)
class SyncMemory:
    """What the planner remembers between cycles (returned in every plan, fed back next time). A fresh
    one (after an agent restart) is always safe: it only makes the planner more cautious."""

    timeline: int | None = None
    seen_ssn: str | None = None
    legacy: tuple[Legacy, ...] = ()


@dataclass(frozen=True, slots=True)
class SetSsn:
    """Set synchronous_standby_names to `value` and reload PostgreSQL. Nothing else."""

    value: str
    kind: str = "set ssn"


@dataclass(frozen=True, slots=True)
class WriteSync:
    """Write `/sync` = `state` only if the key is still at `expected_revision` (0: only if absent).
    A failed compare-and-swap is not retried: the next cycle re-reads and plans again."""

    state: SyncState
    expected_revision: int
    kind: str = "write sync"


@dataclass(frozen=True, slots=True)
class DeleteSync:
    """Delete `/sync` only if it is still at `expected_revision`."""

    expected_revision: int
    kind: str = "delete sync"


@dataclass(frozen=True, slots=True)
class NoChange:
    kind: str = "no change"


SyncStep = SetSsn | WriteSync | DeleteSync | NoChange


# ---------------------------------------------------------------------------------------------------
# The planner


@dataclass(frozen=True, slots=True)
class SyncPlan:
    step: SyncStep
    why: SyncWhy
    facts: Facts
    memory: SyncMemory
    again_soon: bool
    """More steps are due (or a change must settle): decide again after a short nap, not loop_wait."""


@dataclass(frozen=True, slots=True)
class _Ctx:
    """One call's inputs, boiled down."""

    me: str
    mode: SyncMode
    sync: SyncState  # /sync, ours (leader == me)
    voters: tuple[str, ...]
    quorum: int  # the key's, never below 0 (Patroni's meaning: other voters a candidate must see)
    current: Ssn | None  # None: unreadable
    rule: AckRule
    rows: dict[str, ReplicationRow]  # by name key
    legacy: tuple[tuple[Legacy, frozenset[str]], ...]  # with who is past each barrier


def plan_sync(me: str, view: ClusterView, pg: LocalPg, ssn: str, settings: SyncSettings,
              memory: SyncMemory) -> SyncPlan:
    """The primary's next single step towards the synchronous replication `settings` ask for.

    `ssn` is synchronous_standby_names as the local PostgreSQL reports it now. Steps come in the safe
    order: a standby joins the ssn before `/sync`, leaves `/sync` before the ssn, a quorum grows before
    the ssn it must match, and every `/sync` written is safe for both the ssn in force and the commits
    acknowledged under earlier ones (module docstring). Call it every cycle while this node is the
    primary holding the leader key, and apply the step before the next call.
    """
    if not pg.is_primary or pg.wal_lsn is None:
        return SyncPlan(NoChange(), SyncWhy.NOT_PRIMARY, (), memory, False)
    if settings.mode is SyncMode.OFF:
        return _plan_off(view, ssn, settings, memory)
    ours = view.sync if view.sync is not None and view.sync.leader == me else None
    current = parse_ssn_or_none(ssn)
    memory = _observe(memory, pg, ssn, ours, settings.ack)
    if ours is None:
        claimed = SyncState(leader=me, sync_standby=(), quorum=0)
        revision = view.sync.revision if view.sync is not None else 0
        return SyncPlan(WriteSync(claimed, revision), SyncWhy.CLAIM_KEY, as_facts(leader=me), memory, True)
    ctx = _context(me, settings, ours, current, pg, memory)
    target = _target_ssn(me, view, pg, ctx, settings)
    if current is None or not current.same_as(target):
        return _toward_ssn(ctx, target, memory)
    return _publish(ctx, target, memory)



def _plan_off(view: ClusterView, ssn: str, settings: SyncSettings, memory: SyncMemory) -> SyncPlan:
    if view.sync is not None:  # leave /sync before leaving the ssn
        return SyncPlan(DeleteSync(view.sync.revision), SyncWhy.OFF_DELETE_KEY, (), memory, True)
    wanted = parse_ssn_or_none(settings.configured_ssn)
    current = parse_ssn_or_none(ssn)
    if wanted is None or (current is not None and current.same_as(wanted)):
        return SyncPlan(NoChange(), SyncWhy.OFF, (), memory, False)
    return SyncPlan(SetSsn(settings.configured_ssn), SyncWhy.OFF_RESET_SSN,
                    as_facts(value=settings.configured_ssn or "''"), memory, False)


def _ack_lsn(row: ReplicationRow, ack: AckPoint) -> LSN | None:
    if ack is AckPoint.WRITE:
        return row.write_lsn
    if ack is AckPoint.APPLY:
        return row.replay_lsn
    return row.flush_lsn


# -- memory ----------------------------------------------------------------------------------------


def _observe(memory: SyncMemory, pg: LocalPg, ssn: str, ours: SyncState | None, ack: AckPoint) -> SyncMemory:
    """Fold this observation in: settle pending barriers, note an ssn change, retire what is covered."""
    if memory.timeline != pg.timeline:
        memory = SyncMemory(timeline=pg.timeline)  # a new tenure: nothing remembered applies
    legacy = [lg if lg.barrier is not None else replace(lg, barrier=pg.wal_lsn) for lg in memory.legacy]
    if memory.seen_ssn != ssn:
        voters = ours.sync_standby if ours is not None else ()
        legacy.append(Legacy(voters, max(0, ours.quorum) if ours is not None else 0))
    everyone = _voter_keys(ours) | ack_rule(parse_ssn_or_none(ssn)).names
    # Retired: every voter and ssn name holds the guarded commits, and any later change records its
    # own Legacy over these same (caught-up) voters.
    kept = [lg for lg in legacy if not (lg.barrier is not None and everyone <= _past(pg, lg.barrier, ack))]
    return SyncMemory(timeline=pg.timeline, seen_ssn=ssn, legacy=_merge(kept))


def _merge(legacy: Iterable[Legacy]) -> tuple[Legacy, ...]:
    """One record per (voters, quorum): the latest barrier (or a pending one) is the stricter, because
    fewer standbys are past it, so it alone keeps both guarantees."""
    strictest: dict[tuple[frozenset[str], int], Legacy] = {}
    for lg in legacy:
        key = (name_keys(lg.voters), lg.quorum)
        seen = strictest.get(key)
        if seen is None or lg.barrier is None or (seen.barrier is not None and lg.barrier > seen.barrier):
            strictest[key] = lg
    return tuple(strictest.values())


def _voter_keys(sync: SyncState | None) -> frozenset[str]:
    return frozenset(name_key(v) for v in sync.sync_standby) if sync is not None else frozenset()


def _past(pg: LocalPg, barrier: LSN, ack: AckPoint) -> frozenset[str]:
    """Standbys whose acknowledged position is at or past `barrier` (they hold everything before it)."""
    return frozenset(name_key(r.application_name) for r in pg.replication
                     if (lsn := _ack_lsn(r, ack)) is not None and lsn >= barrier)


def _context(me: str, settings: SyncSettings, ours: SyncState, current: Ssn | None, pg: LocalPg,
             memory: SyncMemory) -> _Ctx:
    legacy = tuple((lg, _past(pg, lg.barrier, settings.ack) if lg.barrier is not None else frozenset())
                   for lg in memory.legacy)
    return _Ctx(me=me, mode=settings.mode, sync=ours, voters=ours.sync_standby, quorum=max(0, ours.quorum),
                current=current, rule=ack_rule(current),
                rows={name_key(r.application_name): r for r in pg.replication}, legacy=legacy)


# -- the target ssn --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    sync_priority: int
    promotable: bool
    synchronous: bool  # its walsender reports it synchronous now
    lsn: LSN

    @property
    def order(self) -> tuple[int, bool, bool, int, str]:
        return (-self.sync_priority, not self.promotable, not self.synchronous, -self.lsn, self.name)


def eligible_standbys(me: str, view: ClusterView, pg: LocalPg, settings: SyncSettings) -> list[str]:
    """Members that may become synchronous now, best first: streaming from this primary, not `nosync`
    (nor sync_priority 0), not meant to cascade from another member, within maximum_lag_on_syncnode.
    Order: sync_priority, able to promote, already synchronous (no churn), position, name."""
    return [c.name for c in _candidates(me, view, pg, settings)]


def _candidates(me: str, view: ClusterView, pg: LocalPg, settings: SyncSettings) -> list[_Candidate]:
    rows = {name_key(r.application_name): r for r in pg.replication}
    out: list[_Candidate] = []
    for m in view.members:
        row = rows.get(name_key(m.name))
        if m.name == me or row is None or not _may_be_sync(m, view, me):
            continue
        lsn = _ack_lsn(row, settings.ack)
        if row.state != "streaming" or lsn is None:
            continue
        lag = (pg.wal_lsn or 0) - lsn
        if 0 < settings.maximum_lag_on_syncnode < lag:
            continue
        out.append(_Candidate(m.name, m.tags.sync_priority, m.tags.can_promote,
                              row.sync_state in SYNCHRONOUS_STATES, lsn))
    return sorted(out, key=lambda c: c.order)


def _may_be_sync(m: Member, view: ClusterView, me: str) -> bool:
    if m.tags.nosync or m.tags.sync_priority <= 0:
        return False
    upstream = m.tags.replicatefrom
    cascades = upstream is not None and upstream != me and view.member(upstream) is not None
    return not cascades


def _target_ssn(me: str, view: ClusterView, pg: LocalPg, ctx: _Ctx, settings: SyncSettings) -> Ssn:
    candidates = _candidates(me, view, pg, settings)
    count = max(1, settings.node_count)
    if settings.mode is SyncMode.ON:
        picked = [c.name for c in candidates[:count]]
        kind = SsnKind.PRIORITY
    else:  # quorum: every promotable candidate; others only to reach the count
        able = [c.name for c in candidates if c.promotable]
        others = [c.name for c in candidates if not c.promotable]
        picked = able + others[:max(0, count - len(able))]
        kind = SsnKind.QUORUM
    if picked:
        num = len(picked) if kind is SsnKind.PRIORITY else min(count, len(picked))
        return Ssn(kind, num, tuple(sorted(picked)))
    return _strict_fallback(view, ctx, kind, count) if settings.strict else ASYNC


def _strict_fallback(view: ClusterView, ctx: _Ctx, kind: SsnKind, count: int) -> Ssn:
    """No standby can be synchronous but strict mode forbids acknowledging alone: keep waiting for the
    standbys already named (current ssn, else /sync), minus those now barred; else for a placeholder."""
    def allowed(name: str) -> bool:
        m = view.member(name)
        return name != PLACEHOLDER and name != "*" and (m is None or _may_be_sync(m, view, ctx.me))

    current = ctx.current
    source = current.names if current is not None and current.kind is not SsnKind.NONE else ctx.voters
    kept = tuple(sorted(n for n in source if allowed(n))) or (PLACEHOLDER,)
    if current is not None and current.kind is kind and current.keys == frozenset(map(name_key, kept)):
        return current
    num = len(kept) if kind is SsnKind.PRIORITY else min(count, len(kept))
    return Ssn(kind, num, kept)


# -- steps -----------------------------------------------------------------------------------------


def _safe(ctx: _Ctx, voters: Iterable[str], quorum: int, rules: Sequence[AckRule]) -> bool:
    keys = frozenset(name_key(v) for v in voters)
    return (all(quorum_is_safe(keys, quorum, r) for r in rules)
            and all(legacy_is_safe(keys, quorum, lg, past) for lg, past in ctx.legacy))


def _safest_sync(ctx: _Ctx, voters: Sequence[str], rules: Sequence[AckRule]) -> tuple[tuple[str, ...], int]:
    """The /sync (voters, quorum) to write: `on` mode keeps quorum 0 (a synchronous standby needs no
    other voter) and admits, in order, each voter that keeps it safe; quorum mode keeps every voter and
    takes the smallest safe quorum (it exists: the number of voters is always safe, since nobody can
    then see that many others). In steady state (voters = the ssn's names) that is `|voters| - k`."""
    if ctx.mode is SyncMode.ON:
        chosen: list[str] = []
        for v in voters:
            if _safe(ctx, [*chosen, v], 0, rules):
                chosen.append(v)
        return tuple(chosen), 0
    quorum = next(q for q in range(len(voters) + 1) if _safe(ctx, voters, q, rules))
    return tuple(voters), quorum


def _write(ctx: _Ctx, voters: tuple[str, ...], quorum: int, why: SyncWhy, memory: SyncMemory,
           **facts: object) -> SyncPlan | None:
    """A WriteSync when (voters, quorum) differ from the key, else None."""
    if name_keys(voters) == name_keys(ctx.voters) and quorum == ctx.quorum:
        return None
    state = SyncState(leader=ctx.me, sync_standby=voters, quorum=quorum)
    step = WriteSync(state, ctx.sync.revision)
    return SyncPlan(step, why, as_facts(voters=voters, quorum=quorum, **facts), memory, True)



def _toward_ssn(ctx: _Ctx, target: Ssn, memory: SyncMemory) -> SyncPlan:
    """The ssn must change: first make /sync safe for both the old and the new ssn (voters leaving the
    ssn leave /sync now; the quorum grows now), then change the ssn."""
    staying = [v for v in ctx.voters if name_key(v) in target.keys]
    voters, quorum = _safest_sync(ctx, staying, [ctx.rule, ack_rule(target)])
    dropped = sorted(set(ctx.voters) - set(voters))
    plan = _write(ctx, voters, quorum, SyncWhy.PREPARE_SSN_CHANGE, memory, dropped=dropped)
    if plan is not None:
        return plan
    before = ctx.current.render() if ctx.current is not None else "?"
    return SyncPlan(SetSsn(target.render()), SyncWhy.SET_SSN, as_facts(before=before or "''",
                    after=target.render() or "''"), memory, True)


def _publish(ctx: _Ctx, target: Ssn, memory: SyncMemory) -> SyncPlan:
    """The ssn is as wanted: publish the standbys whose walsender reports them synchronous, with the
    smallest quorum that is safe, once the last ssn change has settled."""
    if any(lg.barrier is None for lg, _ in ctx.legacy):
        return SyncPlan(NoChange(), SyncWhy.WAIT_BARRIER, (), memory, True)
    confirmed = [n for n in target.names if _reports_synchronous(ctx.rows.get(name_key(n)))]
    known = name_keys(ctx.voters)
    ordered = list(ctx.voters) + [n for n in confirmed if name_key(n) not in known]
    voters, quorum = _safest_sync(ctx, ordered, [ctx.rule])
    plan = _write(ctx, voters, quorum, SyncWhy.PUBLISH, memory)
    if plan is not None:
        return plan
    streaming = sum(1 for n in target.names if _streams(ctx.rows.get(name_key(n))))
    if target.kind is not SsnKind.NONE and streaming < target.num:  # only the strict fallback gets here
        return SyncPlan(NoChange(), SyncWhy.STRICT_BLOCKING, as_facts(ssn=target.render()), memory, False)
    if target.kind is SsnKind.NONE:
        return SyncPlan(NoChange(), SyncWhy.ASYNC_NO_STANDBY, (), memory, False)
    waiting = sorted(n for n in target.names if name_key(n) not in name_keys(voters))
    if waiting:
        # Come back soon only if one of them streams (it may turn synchronous any moment).
        soon = any(_streams(ctx.rows.get(name_key(n))) for n in waiting)
        return SyncPlan(NoChange(), SyncWhy.WAIT_STANDBYS, as_facts(waiting=waiting), memory, soon)
    return SyncPlan(NoChange(), SyncWhy.IN_SYNC, as_facts(voters=voters, quorum=quorum), memory, False)


def _streams(row: ReplicationRow | None) -> bool:
    return row is not None and row.state == "streaming"


def _reports_synchronous(row: ReplicationRow | None) -> bool:
    return _streams(row) and row is not None and row.sync_state in SYNCHRONOUS_STATES
