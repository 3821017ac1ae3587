"""Exhaustive model check of synchronous replication: no acknowledged commit is lost, whatever the
interleaving and wherever the primary dies.

A tiny world (a primary and 2-4 standbys, WAL positions as small integers) evolves by every possible
event: a commit, a standby catching up, a standby (dis)connecting, a `nosync` tag flipping, one cycle of
the primary's planner (`plan_sync`, its step applied at once), and — once per run — the primary dying
followed by the promotion of a replica that `may_promote` allows (with `pre_promote_sync` applied first).
After every event the check asks: if the primary died now, would every replica that `may_promote`
allows hold every acknowledged commit? Commits are acknowledged as early as PostgreSQL could (the
adversarial case): under the ssn in force at that moment, by its walsender rules.

Every reachable state is visited (breadth first, deduplicated), so this covers all interleavings up to
the bounds below, including crashes between any two steps of a multi-step change.
"""

from __future__ import annotations

import os
import random
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from pgwarden.core.snapshot import PeerStatus
from pgwarden.core.sync.plan import (
    DeleteSync,
    NoChange,
    SetSsn,
    SyncMemory,
    SyncMode,
    SyncSettings,
    WriteSync,
    plan_sync,
)
from pgwarden.core.sync.promotion import may_promote, pre_promote_sync
from pgwarden.core.sync.ssn import Ssn, SsnKind, name_key, parse_ssn
from pgwarden.model import (
    ClusterView,
    DataDirState,
    LeaderKey,
    LocalPg,
    Member,
    PgState,
    ReplicationRow,
    Role,
    SyncState,
    Tags,
)


@dataclass(frozen=True, slots=True)
class Bounds:
    nodes: int
    max_lsn: int = 2
    disconnects: int = 2  # standbys dropping their connection (reconnecting is free)
    nosync_flips: int = 1
    failovers: int = 1


@dataclass(frozen=True, slots=True)
class World:
    primary: int
    flush: tuple[int, ...]  # the primary's entry is its own WAL end
    alive: tuple[bool, ...]
    connected: tuple[bool, ...]  # streaming from the current primary
    nosync: tuple[bool, ...]
    ssn: str  # the primary's synchronous_standby_names, in force
    sync: SyncState | None  # revision 1 whenever present (one writer: CAS never races here)
    memory: SyncMemory
    acked: int  # every commit at or below this LSN was acknowledged to a client
    timeline: int
    disconnects: int
    nosync_flips: int
    failovers: int

    @property
    def lsn(self) -> int:
        return self.flush[self.primary]


def name(i: int) -> str:
    return f"n{i}"


# ---------------------------------------------------------------------------------------------------
# PostgreSQL's walsender rules, as the model applies them


def streaming_in_order(w: World, ssn: Ssn) -> list[int]:
    """Connected standbys named in the ssn, in the ssn's priority order."""
    by_key = {name_key(name(i)): i for i in range(len(w.flush))
              if i != w.primary and w.alive[i] and w.connected[i]}
    return [by_key[k] for k in (name_key(n) for n in ssn.names) if k in by_key]


def ack_position(w: World) -> int:
    """The highest LSN PostgreSQL would have released a waiting commit at, under the ssn in force."""
    ssn = parse_ssn(w.ssn)
    if ssn.kind is SsnKind.NONE:
        return w.lsn
    listed = streaming_in_order(w, ssn)
    if len(listed) < ssn.num:
        return w.acked
    if ssn.kind is SsnKind.PRIORITY:
        return min(w.flush[i] for i in listed[:ssn.num])
    return sorted((w.flush[i] for i in listed), reverse=True)[ssn.num - 1]


def settle(w: World) -> World:
    return replace(w, acked=max(w.acked, min(ack_position(w), w.lsn)))


def sync_state_of(w: World, i: int, ssn: Ssn) -> str:
    listed = streaming_in_order(w, ssn)
    if i not in listed:
        return "async"
    if ssn.kind is SsnKind.QUORUM:
        return "quorum"
    return "sync" if listed.index(i) < ssn.num else "potential"


def observe(w: World) -> tuple[ClusterView, LocalPg]:
    ssn = parse_ssn(w.ssn)
    rows = tuple(ReplicationRow(application_name=name(i), state="streaming", sync_state=sync_state_of(w, i, ssn),
                                write_lsn=w.flush[i], flush_lsn=w.flush[i], replay_lsn=w.flush[i])
                 for i in range(len(w.flush)) if i != w.primary and w.alive[i] and w.connected[i])
    members = tuple(Member(name=name(i), state=PgState.RUNNING,
                           role=Role.PRIMARY if i == w.primary else Role.REPLICA, tags=Tags(nosync=w.nosync[i]))
                    for i in range(len(w.flush)) if w.alive[i])
    view = ClusterView(scope="model", leader=LeaderKey(name(w.primary)), members=members, sync=w.sync)
    pg = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=False,
                 timeline=w.timeline, wal_lsn=w.lsn, replication=rows)
    return view, pg


# ---------------------------------------------------------------------------------------------------
# Events


def planner_cycle(w: World, settings: SyncSettings) -> World:
    view, pg = observe(w)
    plan = plan_sync(name(w.primary), view, pg, w.ssn, settings, w.memory)
    w = replace(w, memory=plan.memory)
    step = plan.step
    if isinstance(step, SetSsn):
        return replace(w, ssn=step.value)
    if isinstance(step, WriteSync):
        assert step.expected_revision == (w.sync.revision if w.sync else 0)
        return replace(w, sync=replace(step.state, revision=1))
    if isinstance(step, DeleteSync):
        return replace(w, sync=None)
    assert isinstance(step, NoChange)
    return w


def promotable(w: World, settings: SyncSettings) -> list[int]:
    """Replicas that may_promote allows if the primary dies now (every other replica reachable)."""
    memo_key = (settings, w.primary, w.flush, w.alive, w.sync)
    if memo_key not in _PROMOTABLE:
        _PROMOTABLE[memo_key] = _promotable(w, settings)
    return _PROMOTABLE[memo_key]


_PROMOTABLE: dict[object, list[int]] = {}


def _promotable(w: World, settings: SyncSettings) -> list[int]:
    out = []
    for c in range(len(w.flush)):
        if c == w.primary or not w.alive[c]:
            continue
        peers = [PeerStatus(name(j), reachable=True, in_recovery=True, lsn=w.flush[j])
                 for j in range(len(w.flush)) if j not in (c, w.primary) and w.alive[j]]
        if may_promote(name(c), w.flush[c], settings, w.sync, peers).allowed:
            out.append(c)
    return out


def fail_over(w: World, c: int, settings: SyncSettings) -> World:
    """The primary dies; `c` holds the leader key, applies pre-promotion (ssn, then /sync), promotes.
    Replicas ahead of `c` diverged (they would need a rewind) and leave the model; the others must
    reconnect to the new primary."""
    pre = pre_promote_sync(name(c), settings, w.sync)
    assert pre is not None
    alive = tuple(w.alive[i] and i != w.primary and w.flush[i] <= w.flush[c] for i in range(len(w.flush)))
    return replace(w, primary=c, alive=alive, connected=tuple(False for _ in w.flush), ssn=pre.ssn,
                   sync=replace(pre.sync, revision=1), memory=SyncMemory(), timeline=w.timeline + 1,
                   failovers=w.failovers - 1)


def successors(w: World, settings: SyncSettings, bounds: Bounds) -> Iterator[World]:
    if w.lsn < bounds.max_lsn:
        flush = list(w.flush)
        flush[w.primary] += 1
        yield replace(w, flush=tuple(flush))
    for i in range(len(w.flush)):
        if i == w.primary or not w.alive[i]:
            continue
        if w.connected[i] and w.flush[i] < w.lsn:
            yield replace(w, flush=tuple(w.lsn if j == i else f for j, f in enumerate(w.flush)))
        if w.connected[i] and w.disconnects:
            yield replace(w, connected=_flip(w.connected, i), disconnects=w.disconnects - 1)
        if not w.connected[i]:
            yield replace(w, connected=_flip(w.connected, i))
        if w.nosync_flips:
            yield replace(w, nosync=_flip(w.nosync, i), nosync_flips=w.nosync_flips - 1)
    yield planner_cycle(w, settings)
    if w.failovers:
        for c in promotable(w, settings):
            yield fail_over(w, c, settings)


def _flip(values: tuple[bool, ...], i: int) -> tuple[bool, ...]:
    return tuple(not v if j == i else v for j, v in enumerate(values))


# ---------------------------------------------------------------------------------------------------
# The check


def claimed(settings: SyncSettings) -> SyncState:
    """Where the guarantee starts: the primary has written /sync (its first step in synchronous mode).
    Before that, a non-strict cluster promises nothing (docs/synchronous.md); see test_sync_plan.py for
    the claim itself."""
    return SyncState(leader=name(0), sync_standby=(), quorum=0, revision=1)


def explore(settings: SyncSettings, bounds: Bounds, limit: int = 3_000_000) -> tuple[int, set[int]]:
    """Visit every reachable world; fail on the first that could lose an acknowledged commit.
    Returns the number of worlds seen and the set of acknowledged positions reached (a sanity check that
    the model does acknowledge commits)."""
    n = bounds.nodes
    start = World(primary=0, flush=(0,) * n, alive=(True,) * n, connected=(True,) * n, nosync=(False,) * n,
                  ssn="", sync=claimed(settings), memory=SyncMemory(), acked=0, timeline=1,
                  disconnects=bounds.disconnects, nosync_flips=bounds.nosync_flips, failovers=bounds.failovers)
    _PROMOTABLE.clear()
    seen = {start}
    queue: deque[tuple[World, tuple[World, ...]]] = deque([(start, ())])
    acked: set[int] = set()
    while queue:
        w, trail = queue.popleft()
        for c in promotable(w, settings):
            assert w.flush[c] >= w.acked, _story(w, trail, c, settings)
        acked.add(w.acked)
        for nxt in successors(w, settings, bounds):
            nxt = settle(nxt)
            if nxt not in seen:
                seen.add(nxt)
                assert len(seen) < limit, "model too large: tighten the bounds"
                queue.append((nxt, (*trail, w)[-12:]))
    return len(seen), acked


def _story(w: World, trail: tuple[World, ...], c: int, settings: SyncSettings) -> str:
    lines = [f"{settings}: {name(c)} may promote at {w.flush[c]} but commits up to {w.acked} were acknowledged"]
    for step in (*trail, w):
        lines.append(f"  primary={name(step.primary)} flush={step.flush} conn={step.connected} "
                     f"nosync={step.nosync} ssn={step.ssn!r} sync={step.sync} acked={step.acked} "
                     f"legacy={step.memory.legacy}")
    return "\n".join(lines)


def case(mode: SyncMode, nodes: int, *, strict: bool = False, count: int = 1, **bounds: int) -> object:
    settings = SyncSettings(mode=mode, strict=strict, node_count=count)
    name = f"{mode.value}{'-strict' if strict else ''}-n{count}-{nodes}nodes"
    return pytest.param(settings, Bounds(nodes=nodes, **bounds), id=name)


ON, QUORUM = SyncMode.ON, SyncMode.QUORUM
# Bounds sized for CI (a few seconds each on a shared 2-core machine). FULL_CASES widen them; run with
# PGWARDEN_SYNC_MODEL=full (minutes) after changing pgwarden/core/sync/.
CASES = [
    case(ON, 3),
    case(ON, 3, strict=True),
    case(QUORUM, 3, disconnects=1),
    case(QUORUM, 3, strict=True, disconnects=1),
    case(QUORUM, 3, count=2, disconnects=1),  # ANY 2 over 2 voters: Patroni's quorum 0
    case(ON, 4, count=2, max_lsn=1, nosync_flips=0),
    case(QUORUM, 4, count=2, max_lsn=1, disconnects=1, nosync_flips=0),
    case(QUORUM, 4, max_lsn=1, disconnects=1, nosync_flips=0),
    case(QUORUM, 5, count=2, strict=True, max_lsn=1, disconnects=1, nosync_flips=0, failovers=0),
    case(ON, 5, count=2, max_lsn=1, disconnects=1, nosync_flips=0, failovers=0),
]
FULL_CASES = [
    case(QUORUM, 3),
    case(QUORUM, 3, strict=True),
    case(QUORUM, 3, count=2),
    case(QUORUM, 3, count=2, strict=True),
    case(ON, 4, count=2, nosync_flips=0),
    case(QUORUM, 4, count=2, nosync_flips=0),
    case(QUORUM, 4, nosync_flips=0),
    case(QUORUM, 5, count=2, max_lsn=1, disconnects=1, nosync_flips=0),
    case(ON, 5, count=2, max_lsn=1, disconnects=1, nosync_flips=0),
]
if os.environ.get("PGWARDEN_SYNC_MODEL") == "full":
    CASES += FULL_CASES


@pytest.mark.parametrize(("settings", "bounds"), CASES)
def test_no_acknowledged_commit_is_lost(settings: SyncSettings, bounds: Bounds) -> None:
    worlds, acked = explore(settings, bounds)
    assert worlds > 100
    assert max(acked) == bounds.max_lsn  # commits do get acknowledged, so the check has teeth


def test_the_check_catches_a_planner_that_publishes_too_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check: a /sync that names a standby which may lack acknowledged commits is caught."""
    def careless(w: World, settings: SyncSettings) -> World:
        others = tuple(name(i) for i in range(len(w.flush)) if i != w.primary and w.alive[i] and w.connected[i])
        return replace(w, ssn=Ssn(SsnKind.PRIORITY, 1, others[:1]).render() if others else "",
                       sync=SyncState(name(w.primary), others, 0, 1))

    monkeypatch.setattr(sys.modules[__name__], "planner_cycle", careless)
    with pytest.raises(AssertionError, match="may promote"):
        explore(SyncSettings(mode=SyncMode.ON), Bounds(nodes=3, failovers=0))


def test_the_check_catches_reading_quorum_with_the_old_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation check (issue 12): a replica that counts itself towards `quorum` (pgwarden's old meaning)
    instead of seeing `quorum` *other* voters (Patroni's) promotes alone with 2 voters and `ANY 1`."""
    real = may_promote

    def old_meaning(me: str, lsn: int, settings: SyncSettings, sync: SyncState | None,
                    peers: list[PeerStatus]) -> object:
        key = replace(sync, quorum=sync.quorum - 1) if sync is not None else None
        return real(me, lsn, settings, key, peers)

    monkeypatch.setattr(sys.modules[__name__], "may_promote", old_meaning)
    with pytest.raises(AssertionError, match="may promote"):
        explore(SyncSettings(mode=SyncMode.QUORUM), Bounds(nodes=3, disconnects=1, failovers=0))


def random_walk(seed: int, mode: SyncMode = SyncMode.QUORUM, steps: int = 80) -> int:
    """One random schedule in a larger world than `explore` can enumerate (4-6 nodes, up to 3
    synchronous standbys, two failovers): the same events and the same check after each of them.
    Returns the highest acknowledged position (commits do get acknowledged)."""
    rng = random.Random(seed)
    n = rng.randint(4, 6)
    settings = SyncSettings(mode=mode, strict=rng.random() < 0.3, node_count=rng.randint(1, 3))
    bounds = Bounds(nodes=n, max_lsn=8, disconnects=6, nosync_flips=3, failovers=2)
    w = World(primary=0, flush=(0,) * n, alive=(True,) * n, connected=(True,) * n, nosync=(False,) * n,
              ssn="", sync=claimed(settings), memory=SyncMemory(), acked=0, timeline=1,
              disconnects=bounds.disconnects, nosync_flips=bounds.nosync_flips, failovers=bounds.failovers)
    _PROMOTABLE.clear()
    trail: tuple[World, ...] = ()
    for _ in range(steps):
        for c in promotable(w, settings):
            assert w.flush[c] >= w.acked, f"seed {seed}: " + _story(w, trail, c, settings)
        options = list(successors(w, settings, bounds))
        # The planner runs often, as it does on a real primary (every cycle, sooner while it moves).
        planned = planner_cycle(w, settings)
        w = settle(planned if rng.random() < 0.4 else rng.choice(options))
        trail = (*trail, w)[-12:]
    return w.acked


RANDOM_WALKS = int(os.environ.get("PGWARDEN_SYNC_WALKS", "200"))


@pytest.mark.parametrize("mode", [SyncMode.QUORUM, SyncMode.ON])
def test_random_walks_lose_no_acknowledged_commit(mode: SyncMode) -> None:
    """Random schedules in larger worlds (PGWARDEN_SYNC_WALKS=5000 for a campaign)."""
    reached = [random_walk(seed, mode) for seed in range(RANDOM_WALKS)]
    assert max(reached) > 0
