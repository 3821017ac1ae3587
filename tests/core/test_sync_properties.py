"""Properties of the primary's planner on arbitrary inputs: it never raises, is deterministic, never
publishes a standby its walsender does not report synchronous, keeps the ssn/sync order, and every
/sync it writes is safe for the ssn in force."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.core.sync.plan import SetSsn, SyncMemory, SyncMode, SyncSettings, WriteSync, plan_sync
from pgwarden.core.sync.safety import Legacy, ack_rule, quorum_is_safe
from pgwarden.core.sync.ssn import PLACEHOLDER, Ssn, SsnKind, name_key, parse_ssn
from pgwarden.model import ClusterView, DataDirState, LeaderKey, LocalPg, Member, ReplicationRow, SyncState, Tags

ME = "n1"
NAMES = ("n2", "n3", "n4", "n5")
lsns = st.integers(0, 120)


@st.composite
def rows(draw: st.DrawFn) -> tuple[ReplicationRow, ...]:
    out = []
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4)):
        lsn = draw(lsns)
        out.append(ReplicationRow(application_name=draw(st.sampled_from([name, name.upper()])),
                                  state=draw(st.sampled_from(["streaming", "streaming", "catchup"])),
                                  sync_state=draw(st.sampled_from(["async", "potential", "sync", "quorum"])),
                                  write_lsn=lsn, flush_lsn=lsn, replay_lsn=lsn))
    return tuple(out)


ssn_texts = st.one_of(
    st.just(""), st.just("*"), st.just("FIRST ("),
    st.builds(lambda kind, num, names: Ssn(kind, num, tuple(names)).render(),
              st.sampled_from([SsnKind.PRIORITY, SsnKind.QUORUM]), st.integers(1, 3),
              st.lists(st.sampled_from([*NAMES, "zz", PLACEHOLDER]), min_size=1, max_size=4, unique=True)))
tags = st.builds(Tags, nosync=st.booleans(), sync_priority=st.integers(0, 2), nofailover=st.booleans(),
                 replicatefrom=st.sampled_from([None, None, "n2", ME]))
sync_keys = st.one_of(st.none(), st.builds(
    SyncState, leader=st.sampled_from([ME, ME, "n2"]),
    sync_standby=st.lists(st.sampled_from(NAMES), unique=True, max_size=4).map(tuple),
    quorum=st.integers(-1, 3), revision=st.integers(1, 9)))
memories = st.builds(SyncMemory, timeline=st.sampled_from([None, 1]), seen_ssn=st.one_of(st.none(), ssn_texts),
                     legacy=st.lists(st.builds(Legacy, voters=st.lists(st.sampled_from(NAMES), max_size=3).map(tuple),
                                               quorum=st.integers(0, 2), barrier=st.one_of(st.none(), lsns)),
                                     max_size=2).map(tuple))
sync_settings = st.builds(SyncSettings, mode=st.sampled_from(list(SyncMode)), strict=st.booleans(),
                          node_count=st.integers(1, 3), maximum_lag_on_syncnode=st.sampled_from([-1, 0, 30]))


@st.composite
def situations(draw: st.DrawFn) -> tuple[ClusterView, LocalPg, str, SyncSettings, SyncMemory]:
    members = (Member(name=ME, state="running"), *(Member(name=n, state="running", tags=draw(tags)) for n in NAMES))
    view = ClusterView(scope="p", leader=LeaderKey(ME), members=members, sync=draw(sync_keys))
    pg = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=False, timeline=1,
                 wal_lsn=120, replication=draw(rows()))
    return view, pg, draw(ssn_texts), draw(sync_settings), draw(memories)


def _keys(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(name_key(n) for n in names)


@settings(max_examples=400, deadline=None)
@given(situations())
def test_planner_properties(situation: tuple[ClusterView, LocalPg, str, SyncSettings, SyncMemory]) -> None:
    view, pg, ssn, config, memory = situation
    plan = plan_sync(ME, view, pg, ssn, config, memory)
    assert plan == plan_sync(ME, view, pg, ssn, config, memory)  # deterministic
    ours = view.sync if view.sync is not None and view.sync.leader == ME else None
    try:
        current: Ssn | None = parse_ssn(ssn)
    except ValueError:
        current = None
    step = plan.step
    if isinstance(step, WriteSync):
        assert step.state.leader == ME
        before = _keys(ours.sync_standby) if ours is not None else frozenset()
        added = _keys(step.state.sync_standby) - before
        reported = {name_key(r.application_name) for r in pg.replication
                    if r.state == "streaming" and r.sync_state in ("sync", "quorum")}
        assert added <= reported, "published a standby its walsender does not report synchronous"
        in_ssn = not added or (current is not None and added <= current.keys)
        assert in_ssn, "published a standby before it is in the ssn"
        assert quorum_is_safe(_keys(step.state.sync_standby), step.state.quorum, ack_rule(current))
    if isinstance(step, SetSsn) and config.mode is not SyncMode.OFF:
        assert ours is not None
        new = parse_ssn(step.value)
        assert _keys(ours.sync_standby) <= new.keys, "removed from the ssn while still in /sync"
        assert quorum_is_safe(_keys(ours.sync_standby), ours.quorum, ack_rule(new))
