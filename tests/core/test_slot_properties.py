"""Properties of the slot plans (`core.slots`), over random slots present, configured, remembered,
published and ignored: pgwarden never drops a slot it does not manage or that `ignore_slots` protects,
never drops a configured one, and a replica never advances a copy backwards or past its replay position."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.core.slots import plan_copies, plan_primary
from pgwarden.core.snapshot import Memory, PermanentSlot, SlotMatcher, Snapshot
from tests.core import builders as b

NAMES = st.sampled_from(["barman", "dr", "extra", "handmade", "n2", "n3", "n4"])
SETS = st.frozensets(NAMES, max_size=5)
LSNS = st.integers(min_value=0, max_value=1000)


@st.composite
def situations(draw: st.DrawFn, primary: bool) -> Snapshot:
    present = sorted(draw(SETS))
    lsn = draw(LSNS)
    pg = b.pg_primary(lsn=lsn) if primary else b.pg_replica(lsn=lsn)
    pg = replace(pg, slots=tuple(present), slot_lsns=tuple((n, draw(st.none() | LSNS)) for n in present))
    published = draw(st.dictionaries(NAMES, LSNS, max_size=4))
    cluster = b.cluster(retain_slots=sorted(draw(SETS)))
    cluster = replace(cluster, status=replace(cluster.status, slots=published))
    configured = tuple(PermanentSlot(n, cluster_type=draw(st.sampled_from([None, "primary", "standby"])))
                       for n in sorted(draw(SETS)))
    ignored = tuple(SlotMatcher(name=n) for n in sorted(draw(SETS)))
    memory = Memory(permanent_slots=tuple(sorted(draw(SETS))),
                    slot_last_seen=tuple((n, b.NOW - draw(st.integers(0, 4000))) for n in sorted(draw(SETS))))
    return b.snapshot(me="n1" if primary else "n2", pg=pg, dcs=cluster, memory=memory,
                      settings=b.settings(permanent_slots=configured, ignore_slots=ignored))


def _managed(s: Snapshot) -> set[str]:
    """Every name pgwarden may consider its own: members', configured, remembered (member slots kept for
    member_slots_ttl, and permanent ones), published."""
    assert s.dcs is not None
    return ({f"n{i}" for i in range(1, 5)} | {p.name for p in s.settings.permanent_slots}
            | {name for name, _ in s.memory.slot_last_seen} | set(s.memory.permanent_slots)
            | set(s.dcs.status.slots) | set(s.dcs.status.retain_slots))


def _kept(s: Snapshot) -> set[str]:
    return {p.name for p in s.settings.permanent_slots if p.cluster_type != "standby"} | {
        m.name for m in s.settings.ignore_slots if m.name}


@settings(max_examples=300, deadline=None)
@given(situations(primary=True))
def test_the_primary_drops_only_managed_unprotected_slots(s: Snapshot) -> None:
    plan = plan_primary(s)
    assert set(plan.drop) <= set(s.pg.slots)
    assert set(plan.drop) <= _managed(s)
    assert not set(plan.drop) & _kept(s)
    assert not set(plan.create) & set(s.pg.slots)
    assert not set(plan.create) & {m.name for m in s.settings.ignore_slots if m.name and m.name not in
                                   ("n2", "n3")}


@settings(max_examples=300, deadline=None)
@given(situations(primary=False))
def test_a_replica_drops_only_managed_copies_and_advances_within_its_wal(s: Snapshot) -> None:
    copies, _ = plan_copies(s, keep=set())
    assert set(copies.drop) <= set(s.pg.slots) and set(copies.drop) <= _managed(s)
    assert not set(copies.drop) & (_kept(s) | {"n1", "n2", "n3"})
    have = dict(s.pg.slot_lsns)
    for name, target in copies.advance:
        current = have[name]
        assert current is not None and s.pg.replay_lsn is not None
        assert current < target <= s.pg.replay_lsn
