"""Synchronous replication: what the primary does next with `synchronous_standby_names` and `/sync`,
and which replica may be promoted without losing an acknowledged commit.

Pure: no IO, no clock, no logging. Every answer is a value with a reason; the agent executes it.

The safety argument, in one place (docs/synchronous.md says it for operators):

* An *acknowledgement rule* is what the primary's `synchronous_standby_names` (ssn) makes a commit
  wait for: `k` standbys out of the names `N` (`FIRST k (N)` and `ANY k (N)` both ack through `k`
  of `N`; an empty ssn, or one with `*`, counts as k=0: nobody we know need hold the commit).
* A *promotion rule* is what `/sync` says, with Patroni's meaning of its `quorum` `q` (the number
  of voters *other than the candidate* the candidate must see): a voter of `V` may promote when at
  least `q` other voters are reachable and not ahead of it; a replica that is not a voter needs `q + 1`
  of them (in `on` mode it may not promote at all). Either way a *promotion set* is `q + 1` voters at
  or behind the candidate. Patroni writes `q = |V| - k` for `ANY k` over `V` (2 voters, `ANY 1`: 1;
  `ANY 2`: 0; a single voter: 0), and `q = 0` in `on` mode, where every voter must confirm.
* Both rules are safe together when every promotion set meets every acknowledgement set: when
  `q >= |V|` (nobody can gather `q + 1` voters), or `k > |N|` (nothing can be acknowledged), or
  `q + k >= |V ∪ N|`, i.e. `(q + 1) + k > |V ∪ N|` (`quorum_is_safe`). The primary changes ssn and
  `/sync` one step at a time and checks every intermediate pair, so the rule holds at every instant: in
  particular a standby joins the ssn before `/sync`, and leaves `/sync` before the ssn.
* Commits acknowledged under an ssn that is no longer in force are covered by a `Legacy` record: the
  `/sync` that was in force when the ssn changed still guards them until every voter and ssn name is
  past `barrier`, the primary's WAL position observed once the change had taken effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from pgwarden.model import LSN, ClusterView, LocalPg, Member, ReplicationRow, SyncState

if TYPE_CHECKING:  # types.py imports this module; PeerStatus is only needed for annotations
    from pgwarden.core.types import PeerStatus

PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"
"""A standby name nobody has: strict mode lists it when no real standby can be synchronous, so that
commits wait instead of being acknowledged asynchronously. (Patroni's name, kept for operators' tools.)"""

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
# synchronous_standby_names


class SsnKind(StrEnum):
    NONE = "none"  # empty: commits do not wait
    PRIORITY = "FIRST"
    QUORUM = "ANY"


class SsnSyntaxError(ValueError):
    """A synchronous_standby_names value PostgreSQL itself would reject."""


@dataclass(frozen=True, slots=True)
class Ssn:
    """One parsed synchronous_standby_names value."""

    kind: SsnKind
    num: int = 0
    names: tuple[str, ...] = ()

    def render(self) -> str:
        """The value to write: names always double-quoted, so any member name is a valid entry."""
        if self.kind is SsnKind.NONE:
            return ""
        quoted = ",".join('"' + name.replace('"', '""') + '"' for name in self.names)
        return f"{self.kind.value} {self.num} ({quoted})"

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(name_key(n) for n in self.names)

    def same_as(self, other: Ssn) -> bool:
        """Equal in effect (PostgreSQL matches names without regard to case)."""
        if self.kind is SsnKind.NONE or other.kind is SsnKind.NONE:
            return self.kind is other.kind
        return (self.kind, self.num, self.keys) == (other.kind, other.num, other.keys)


ASYNC = Ssn(SsnKind.NONE)


def name_key(name: str) -> str:
    """PostgreSQL compares standby names with application_name case-insensitively."""
    return name.lower()


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: 'word' (bare name or keyword), 'quoted' (always a name), 'num', punctuation."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            out.append((ch, ch))
            i += 1
        elif ch == '"':
            i = _quoted(text, i + 1, out)
        elif ch == "*":
            out.append(("quoted", "*"))
            i += 1
        elif ch.isalnum() or ch in "_$" or ord(ch) > 127:
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] in "_$" or ord(text[j]) > 127):
                j += 1
            word = text[i:j]
            out.append(("num" if all(c in "0123456789" for c in word) else "word", word))
            i = j
        else:
            raise SsnSyntaxError(f"unexpected {ch!r} at position {i} in {text!r}")
    return out


def _quoted(text: str, i: int, out: list[tuple[str, str]]) -> int:
    chars: list[str] = []
    while i < len(text):
        if text[i] == '"':
            if text[i + 1:i + 2] == '"':
                chars.append('"')
                i += 2
                continue
            out.append(("quoted", "".join(chars)))
            return i + 1
        chars.append(text[i])
        i += 1
    raise SsnSyntaxError(f"unterminated quoted name in {text!r}")


def parse_ssn(text: str) -> Ssn:
    """Parse synchronous_standby_names as PostgreSQL reports it (`SHOW`).

    Accepts `FIRST n (a, b)`, `ANY n (a, b)`, `n (a, b)` (= FIRST), `a, b` (= FIRST 1), `*`, quoted
    names with `""` escapes, and the empty string (no synchronous replication). FIRST and ANY are
    keywords in any case when unquoted, as in PostgreSQL.
    """
    toks = _tokens(text)
    if not toks:
        return ASYNC
    kind = SsnKind.PRIORITY
    head = toks[0][1].upper() if toks[0][0] == "word" else ""
    if head in ("FIRST", "ANY") and len(toks) > 1 and toks[1][0] == "num":
        kind = SsnKind.QUORUM if head == "ANY" else SsnKind.PRIORITY
        toks = toks[1:]
    if toks[0][0] == "num" and len(toks) > 1 and toks[1][0] == "(":
        num = int(toks[0][1])
        if num < 1:
            raise SsnSyntaxError(f"the number of synchronous standbys must be at least 1 in {text!r}")
        if toks[-1][0] != ")":
            raise SsnSyntaxError(f"missing ')' in {text!r}")
        return Ssn(kind, num, _name_list(toks[2:-1], text))
    if kind is SsnKind.QUORUM or head == "FIRST":
        raise SsnSyntaxError(f"expected '{head} <number> (names)' in {text!r}")
    return Ssn(SsnKind.PRIORITY, 1, _name_list(toks, text))


_KEYWORDS = frozenset({"FIRST", "ANY"})


def _name_list(toks: list[tuple[str, str]], text: str) -> tuple[str, ...]:
    names: list[str] = []
    for i, (kind, value) in enumerate(toks):
        want_name = i % 2 == 0
        keyword = kind == "word" and value.upper() in _KEYWORDS
        if want_name and kind in ("word", "quoted", "num") and value and not keyword:
            names.append(value)
        elif not want_name and kind == ",":
            continue
        else:
            raise SsnSyntaxError(f"malformed list of standby names in {text!r}")
    if not names or len(toks) % 2 == 0:
        raise SsnSyntaxError(f"malformed list of standby names in {text!r}")
    return tuple(names)


# ---------------------------------------------------------------------------------------------------
# The safety rules


@dataclass(frozen=True, slots=True)
class AckRule:
    """A commit is acknowledged once `k` of `names` (keys) hold it."""

    names: frozenset[str]
    k: int


def ack_rule(ssn: Ssn | None) -> AckRule:
    """What an ssn (None: unreadable) guarantees about who holds an acknowledged commit.

    `*` may be any standby at all, so it guarantees nothing, like an empty ssn. The strict placeholder
    is nobody: it only makes `k` unreachable, so commits wait.
    """
    if ssn is None or ssn.kind is SsnKind.NONE or "*" in ssn.names:
        return AckRule(frozenset(), 0)
    return AckRule(frozenset(k for k in ssn.keys if k != name_key(PLACEHOLDER)), ssn.num)


def promotion_set_size(quorum: int) -> int:
    """How many voters a promotion rests on: the candidate and `quorum` others, or `quorum + 1` others
    for a candidate that is not a voter (a negative `quorum` counts as 0)."""
    return max(0, quorum) + 1


def quorum_is_safe(voters: frozenset[str], quorum: int, rule: AckRule) -> bool:
    """Every promotion set (`quorum + 1` voters) meets every set of `rule.k` acknowledging standbys:
    `quorum + k >= |voters ∪ names|`, or no such promotion set or acknowledgement exists."""
    size = promotion_set_size(quorum)
    return size > len(voters) or rule.k > len(rule.names) or size + rule.k > len(voters | rule.names)


@dataclass(frozen=True, slots=True)
class Legacy:
    """Commits acknowledged before the ssn last changed: any `quorum + 1` of `voters` hold them (the
    `/sync` then in force was safe for that ssn), and so does every standby past `barrier`."""

    voters: tuple[str, ...]
    quorum: int
    barrier: LSN | None = None
    """The primary's WAL position one observation after the change was seen (None: not yet known)."""


def legacy_is_safe(voters: frozenset[str], quorum: int, legacy: Legacy, caught_up: frozenset[str]) -> bool:
    """Every promotion set of `voters` (`quorum + 1` of them) holds the commits `legacy` guards."""
    past = caught_up if legacy.barrier is not None else frozenset()
    unsure = voters - past
    size = promotion_set_size(quorum)
    if size > len(unsure):
        return True  # every promotion set includes a standby past the barrier
    old = frozenset(name_key(v) for v in legacy.voters)
    # A promotion set within `unsure` has at least `size - |unsure - old|` former voters: enough for
    # one of the former promotion sets, which met every acknowledgement set of the former ssn.
    return size - len(unsure - old) >= promotion_set_size(legacy.quorum)


# ---------------------------------------------------------------------------------------------------
# The primary's planner: inputs, memory and steps


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


class SyncWhy(StrEnum):
    # planner
    NOT_PRIMARY = "not a running primary"
    OFF_DELETE_KEY = "synchronous mode off: delete /sync"
    OFF_RESET_SSN = "synchronous mode off: restore configured ssn"
    OFF = "synchronous mode off"
    CLAIM_KEY = "claim /sync"
    PREPARE_SSN_CHANGE = "make /sync safe for the next ssn"
    SET_SSN = "set ssn"
    PUBLISH = "publish /sync"
    WAIT_BARRIER = "wait for ssn change to settle"
    WAIT_STANDBYS = "wait for standbys to become synchronous"
    STRICT_BLOCKING = "strict: no synchronous standby, writes wait"
    ASYNC_NO_STANDBY = "no synchronous standby: asynchronous"
    IN_SYNC = "synchronous replication in place"
    # promotion and switchover verdicts
    ASYNC_MODE = "synchronous mode off"
    NO_SYNC_KEY = "no /sync key"
    NO_SYNC_KEY_STRICT = "strict: no /sync key"
    FORMER_LEADER = "former /sync leader"
    SYNC_STANDBY = "synchronous standby"
    QUORUM_REACHED = "quorum reached"
    NOT_SYNC_STANDBY = "not a synchronous standby"
    NOT_ENOUGH_VOTES = "not enough votes"
    CANDIDATE_NOT_SYNC = "candidate not synchronous"
    NO_SYNC_STANDBY = "no synchronous standby"


Facts = tuple[tuple[str, str], ...]


def _facts(**facts: object) -> Facts:
    return tuple((k, _text(v)) for k, v in sorted(facts.items()))


def _text(value: object) -> str:
    if isinstance(value, (tuple, list, frozenset, set)):
        return ",".join(sorted(str(v) for v in value)) or "-"
    return str(value)


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
    current = _parse_or_none(ssn)
    memory = _observe(memory, pg, ssn, ours, settings.ack)
    if ours is None:
        claimed = SyncState(leader=me, sync_standby=(), quorum=0)
        revision = view.sync.revision if view.sync is not None else 0
        return SyncPlan(WriteSync(claimed, revision), SyncWhy.CLAIM_KEY, _facts(leader=me), memory, True)
    ctx = _context(me, settings, ours, current, pg, memory)
    target = _target_ssn(me, view, pg, ctx, settings)
    if current is None or not current.same_as(target):
        return _toward_ssn(ctx, target, memory)
    return _publish(ctx, target, memory)


def _parse_or_none(text: str) -> Ssn | None:
    try:
        return parse_ssn(text)
    except SsnSyntaxError:
        return None  # treated as guaranteeing nothing, and replaced by the planner's own value


def _plan_off(view: ClusterView, ssn: str, settings: SyncSettings, memory: SyncMemory) -> SyncPlan:
    if view.sync is not None:  # leave /sync before leaving the ssn
        return SyncPlan(DeleteSync(view.sync.revision), SyncWhy.OFF_DELETE_KEY, (), memory, True)
    wanted = _parse_or_none(settings.configured_ssn)
    current = _parse_or_none(ssn)
    if wanted is None or (current is not None and current.same_as(wanted)):
        return SyncPlan(NoChange(), SyncWhy.OFF, (), memory, False)
    return SyncPlan(SetSsn(settings.configured_ssn), SyncWhy.OFF_RESET_SSN,
                    _facts(value=settings.configured_ssn or "''"), memory, False)


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
    everyone = _voter_keys(ours) | ack_rule(_parse_or_none(ssn)).names
    # Retired: every voter and ssn name holds the guarded commits, and any later change records its
    # own Legacy over these same (caught-up) voters.
    kept = [lg for lg in legacy if not (lg.barrier is not None and everyone <= _past(pg, lg.barrier, ack))]
    return SyncMemory(timeline=pg.timeline, seen_ssn=ssn, legacy=_merge(kept))


def _merge(legacy: Iterable[Legacy]) -> tuple[Legacy, ...]:
    """One record per (voters, quorum): the latest barrier (or a pending one) is the stricter, because
    fewer standbys are past it, so it alone keeps both guarantees."""
    strictest: dict[tuple[frozenset[str], int], Legacy] = {}
    for lg in legacy:
        key = (_voter_set(lg.voters), lg.quorum)
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
    if _voter_set(voters) == _voter_set(ctx.voters) and quorum == ctx.quorum:
        return None
    state = SyncState(leader=ctx.me, sync_standby=voters, quorum=quorum)
    step = WriteSync(state, ctx.sync.revision)
    return SyncPlan(step, why, _facts(voters=voters, quorum=quorum, **facts), memory, True)


def _voter_set(voters: Iterable[str]) -> frozenset[str]:
    return frozenset(name_key(v) for v in voters)


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
    return SyncPlan(SetSsn(target.render()), SyncWhy.SET_SSN, _facts(before=before or "''",
                    after=target.render() or "''"), memory, True)


def _publish(ctx: _Ctx, target: Ssn, memory: SyncMemory) -> SyncPlan:
    """The ssn is as wanted: publish the standbys whose walsender reports them synchronous, with the
    smallest quorum that is safe, once the last ssn change has settled."""
    if any(lg.barrier is None for lg, _ in ctx.legacy):
        return SyncPlan(NoChange(), SyncWhy.WAIT_BARRIER, (), memory, True)
    confirmed = [n for n in target.names if _reports_synchronous(ctx.rows.get(name_key(n)))]
    known = _voter_set(ctx.voters)
    ordered = list(ctx.voters) + [n for n in confirmed if name_key(n) not in known]
    voters, quorum = _safest_sync(ctx, ordered, [ctx.rule])
    plan = _write(ctx, voters, quorum, SyncWhy.PUBLISH, memory)
    if plan is not None:
        return plan
    streaming = sum(1 for n in target.names if _streams(ctx.rows.get(name_key(n))))
    if target.kind is not SsnKind.NONE and streaming < target.num:  # only the strict fallback gets here
        return SyncPlan(NoChange(), SyncWhy.STRICT_BLOCKING, _facts(ssn=target.render()), memory, False)
    if target.kind is SsnKind.NONE:
        return SyncPlan(NoChange(), SyncWhy.ASYNC_NO_STANDBY, (), memory, False)
    waiting = sorted(n for n in target.names if name_key(n) not in _voter_set(voters))
    if waiting:
        # Come back soon only if one of them streams (it may turn synchronous any moment).
        soon = any(_streams(ctx.rows.get(name_key(n))) for n in waiting)
        return SyncPlan(NoChange(), SyncWhy.WAIT_STANDBYS, _facts(waiting=waiting), memory, soon)
    return SyncPlan(NoChange(), SyncWhy.IN_SYNC, _facts(voters=voters, quorum=quorum), memory, False)


def _streams(row: ReplicationRow | None) -> bool:
    return row is not None and row.state == "streaming"


def _reports_synchronous(row: ReplicationRow | None) -> bool:
    return _streams(row) and row is not None and row.sync_state in SYNCHRONOUS_STATES


# ---------------------------------------------------------------------------------------------------
# Replicas: promotion, switchover, pre-promotion


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
    voters = _voter_set(sync.sync_standby)
    if settings.mode is SyncMode.ON and name_key(me) not in voters:
        return SyncVerdict(False, SyncWhy.NOT_SYNC_STANDBY, _facts(sync_standby=sync.sync_standby))
    quorum = max(0, sync.quorum)
    voter = name_key(me) in voters
    seen = [p.name for p in peers if p.reachable and name_key(p.name) in voters
            and name_key(p.name) != name_key(me) and p.lsn is not None and p.lsn <= my_lsn]
    needed = quorum if voter else quorum + 1
    facts = _facts(seen=seen, quorum=quorum, needed=needed, voter="a voter" if voter else "not a voter")
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
            return SyncVerdict(True, SyncWhy.SYNC_STANDBY, _facts(sync_standby=standbys))
        return SyncVerdict(False, SyncWhy.NO_SYNC_STANDBY)
    if name_key(candidate) in _voter_set(standbys):
        return SyncVerdict(True, SyncWhy.SYNC_STANDBY, _facts(candidate=candidate))
    return SyncVerdict(False, SyncWhy.CANDIDATE_NOT_SYNC, _facts(candidate=candidate, sync_standby=standbys))


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
    current = _parse_or_none(ssn)
    wanted = parse_ssn(pre.ssn)
    if current is None or not current.same_as(wanted):
        return SetSsn(pre.ssn)
    if sync is None or (sync.leader, _voter_set(sync.sync_standby), sync.quorum) != (
            pre.sync.leader, _voter_set(pre.sync.sync_standby), pre.sync.quorum):
        return WriteSync(pre.sync, pre.expected_revision)
    return NoChange()


# ---------------------------------------------------------------------------------------------------
# Operator-facing text


_TEMPLATES: dict[SyncWhy, str] = {
    SyncWhy.NOT_PRIMARY: "synchronous replication: not a running primary, nothing to manage",
    SyncWhy.OFF_DELETE_KEY: "synchronous_mode is off: removing the /sync key",
    SyncWhy.OFF_RESET_SSN: "synchronous_mode is off: setting synchronous_standby_names to {value}",
    SyncWhy.OFF: "synchronous_mode is off",
    SyncWhy.CLAIM_KEY: "writing /sync with leader {leader} and no synchronous standby yet",
    SyncWhy.PREPARE_SSN_CHANGE: "updating /sync before changing synchronous_standby_names: synchronous "
                                "standbys {voters}, quorum {quorum} (dropped: {dropped})",
    SyncWhy.SET_SSN: "changing synchronous_standby_names from {before} to {after}",
    SyncWhy.PUBLISH: "publishing synchronous standbys {voters} with quorum {quorum} in /sync",
    SyncWhy.WAIT_BARRIER: "waiting for the synchronous_standby_names change to take effect",
    SyncWhy.WAIT_STANDBYS: "waiting for {waiting} to become synchronous",
    SyncWhy.STRICT_BLOCKING: "synchronous_mode_strict: no synchronous standby available, commits wait "
                             "(synchronous_standby_names = {ssn})",
    SyncWhy.ASYNC_NO_STANDBY: "no standby can be synchronous: commits are acknowledged asynchronously and "
                              "no replica may be promoted automatically",
    SyncWhy.IN_SYNC: "synchronous standbys {voters}, quorum {quorum}",
    SyncWhy.ASYNC_MODE: "synchronous_mode is off",
    SyncWhy.NO_SYNC_KEY: "no /sync key: no synchronous guarantee to keep",
    SyncWhy.NO_SYNC_KEY_STRICT: "synchronous_mode_strict and no /sync key: refusing to promote",
    SyncWhy.FORMER_LEADER: "I was the primary named in /sync: I hold every acknowledged commit",
    SyncWhy.SYNC_STANDBY: "a synchronous standby",
    SyncWhy.QUORUM_REACHED: "other voters not ahead of me: {seen}; {needed} needed with quorum {quorum} "
                            "(I am {voter})",
    SyncWhy.NOT_SYNC_STANDBY: "not a synchronous standby (synchronous standbys: {sync_standby}): "
                              "refusing to promote",
    SyncWhy.NOT_ENOUGH_VOTES: "other voters not ahead of me: {seen}; {needed} needed with quorum {quorum} "
                              "(I am {voter}): refusing to promote",
    SyncWhy.CANDIDATE_NOT_SYNC: "candidate {candidate} is not a synchronous standby (synchronous standbys: "
                                "{sync_standby}); a switchover to it could lose acknowledged commits",
    SyncWhy.NO_SYNC_STANDBY: "there is no synchronous standby to switch over to",
}


def render_sync(why: SyncWhy, facts: Facts) -> str:
    """The operator's log line (or REST error text) for a planner reason or a verdict."""
    return _TEMPLATES[why].format_map(_Missing(facts))


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"
