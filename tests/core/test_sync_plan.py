"""pgwarden.core.sync.plan: the primary's planner, one situation per row, for each synchronous mode.

The default world: this node n1 is a primary at LSN 100 with members n1..n3; `rows` lists the
standbys streaming from it as `name:sync_state@flush_lsn` (state streaming unless `~` prefixes the
name: catchup). `/sync` is written as `"a,b/q"` with leader n1 (q omitted: 0) or None; `q` has Patroni's meaning (the
number of voters other than the candidate that a candidate must see).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from pgwarden.core.sync.plan import (
    NoChange,
    SetSsn,
    SyncMemory,
    SyncMode,
    SyncPlan,
    SyncSettings,
    WriteSync,
    eligible_standbys,
    plan_sync,
)
from pgwarden.core.sync.reasons import SyncWhy, render_sync
from pgwarden.core.sync.safety import Legacy
from pgwarden.core.sync.ssn import PLACEHOLDER, parse_ssn
from pgwarden.model import ClusterView, DataDirState, LeaderKey, LocalPg, Member, ReplicationRow, SyncState, Tags

ME = "n1"
LSN = 100
SETTLED = "settled"  # memory: the ssn in force was seen before and its change has settled


def rows(spec: str) -> tuple[ReplicationRow, ...]:
    out = []
    for item in spec.split():
        who, _, rest = item.partition(":")
        state, lsn = rest.partition("@")[::2]
        out.append(ReplicationRow(application_name=who.lstrip("~"),
                                  state="catchup" if who.startswith("~") else "streaming",
                                  sync_state=state or "async", flush_lsn=int(lsn or LSN),
                                  write_lsn=int(lsn or LSN), replay_lsn=int(lsn or LSN)))
    return tuple(out)


def sync_key(spec: str | None, leader: str = ME, revision: int = 5) -> SyncState | None:
    if spec is None:
        return None
    names, _, quorum = spec.partition("/")
    return SyncState(leader=leader, sync_standby=tuple(n for n in names.split(",") if n),
                     quorum=int(quorum or 0), revision=revision)


@dataclass(frozen=True)
class Situation:
    settings: SyncSettings = field(default_factory=lambda: SyncSettings(mode=SyncMode.ON))
    ssn: str = ""
    sync: SyncState | None = field(default_factory=lambda: sync_key(""))
    rows: str = "n2:async n3:async"
    members: tuple[str, ...] = ("n1", "n2", "n3")
    tags: dict[str, Tags] = field(default_factory=dict)
    memory: SyncMemory | str = SETTLED
    primary: bool = True

    def plan(self) -> SyncPlan:
        members = tuple(Member(name=n, state="running", tags=self.tags.get(n, Tags())) for n in self.members)
        view = ClusterView(scope="t", leader=LeaderKey(ME), members=members, sync=self.sync)
        pg = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=not self.primary,
                     timeline=1, wal_lsn=LSN, replication=rows(self.rows))
        memory = self.memory
        if memory == SETTLED:
            memory = SyncMemory(timeline=1, seen_ssn=self.ssn)
        assert isinstance(memory, SyncMemory)
        return plan_sync(ME, view, pg, self.ssn, self.settings, memory)


ON = SyncSettings(mode=SyncMode.ON)
ON2 = SyncSettings(mode=SyncMode.ON, node_count=2)
STRICT = SyncSettings(mode=SyncMode.ON, strict=True)
QUORUM = SyncSettings(mode=SyncMode.QUORUM)
QUORUM2 = SyncSettings(mode=SyncMode.QUORUM, node_count=2)
OFF = SyncSettings(mode=SyncMode.OFF)
FIVE = ("n1", "n2", "n3", "n4", "n5")

# (case, situation, expected step, expected reason)
CASES: list[tuple[str, Situation, object, SyncWhy]] = [
    ("not a primary", Situation(primary=False), NoChange(), SyncWhy.NOT_PRIMARY),
    # -- off
    ("off: delete /sync first", Situation(settings=OFF, ssn='FIRST 1 ("n2")', sync=sync_key("n2")),
     "delete 5", SyncWhy.OFF_DELETE_KEY),
    ("off: then reset the ssn", Situation(settings=OFF, ssn='FIRST 1 ("n2")', sync=None),
     SetSsn(""), SyncWhy.OFF_RESET_SSN),
    ("off: configured ssn kept", Situation(settings=SyncSettings(configured_ssn="ANY 1 (n2, n3)"),
                                           ssn='ANY 1 ("N2","n3")', sync=None), NoChange(), SyncWhy.OFF),
    # -- on
    ("on: claim a missing key", Situation(sync=None),
     WriteSync(SyncState(ME, (), 0), 0), SyncWhy.CLAIM_KEY),
    ("on: claim another leader's key", Situation(sync=sync_key("n2", leader="n9", revision=8)),
     WriteSync(SyncState(ME, (), 0), 8), SyncWhy.CLAIM_KEY),
    ("on: add the best standby to the ssn", Situation(), SetSsn('FIRST 1 ("n2")'), SyncWhy.SET_SSN),
    ("on: wait for the change to settle", Situation(ssn='FIRST 1 ("n2")', rows="n2:sync n3",
                                                    memory=SyncMemory(timeline=1, seen_ssn="")),
     NoChange(), SyncWhy.WAIT_BARRIER),
    ("on: publish once past the barrier", Situation(ssn='FIRST 1 ("n2")', rows="n2:sync@100 n3",
                                                    memory=SyncMemory(1, 'FIRST 1 ("n2")', (Legacy((), 0, 100),))),
     WriteSync(SyncState(ME, ("n2",), 0), 5), SyncWhy.PUBLISH),
    ("on: not before the barrier", Situation(ssn='FIRST 1 ("n2")', rows="n2:sync@90 n3",
                                             memory=SyncMemory(1, 'FIRST 1 ("n2")', (Legacy((), 0, 100),))),
     NoChange(), SyncWhy.WAIT_STANDBYS),
    ("on: not while its walsender says potential", Situation(ssn='FIRST 1 ("n2")', rows="n2:potential n3"),
     NoChange(), SyncWhy.WAIT_STANDBYS),
    ("on: in sync", Situation(ssn='FIRST 1 ("n2")', sync=sync_key("n2"), rows="n2:sync n3"),
     NoChange(), SyncWhy.IN_SYNC),
    ("on: a lost standby leaves /sync first", Situation(ssn='FIRST 1 ("n2")', sync=sync_key("n2"), rows="n3"),
     WriteSync(SyncState(ME, (), 0), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("on: then the ssn", Situation(ssn='FIRST 1 ("n2")', rows="n3"), SetSsn('FIRST 1 ("n3")'), SyncWhy.SET_SSN),
    ("on: a catching-up standby is not chosen", Situation(rows="~n2 n3"), SetSsn('FIRST 1 ("n3")'),
     SyncWhy.SET_SSN),
    ("on: nosync is never chosen", Situation(rows="n2", tags={"n2": Tags(nosync=True)}),
     NoChange(), SyncWhy.ASYNC_NO_STANDBY),
    ("on: sync_priority 0 is never chosen", Situation(rows="n2", tags={"n2": Tags(sync_priority=0)}),
     NoChange(), SyncWhy.ASYNC_NO_STANDBY),
    ("on: nosync drops a synchronous standby", Situation(ssn='FIRST 1 ("n2")', sync=sync_key("n2"),
                                                         rows="n2:sync n3", tags={"n2": Tags(nosync=True)}),
     WriteSync(SyncState(ME, (), 0), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("on: higher sync_priority wins", Situation(tags={"n3": Tags(sync_priority=2)}),
     SetSsn('FIRST 1 ("n3")'), SyncWhy.SET_SSN),
    ("on: the synchronous one stays (no churn)", Situation(ssn='FIRST 1 ("n3")', sync=sync_key("n3"),
                                                           rows="n2 n3:sync"), NoChange(), SyncWhy.IN_SYNC),
    ("on: a lagging standby is dropped", Situation(settings=SyncSettings(SyncMode.ON, maximum_lag_on_syncnode=10),
                                                   ssn='FIRST 1 ("n2")', sync=sync_key("n2"),
                                                   rows="n2:sync@50 n3"),
     WriteSync(SyncState(ME, (), 0), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("on: a cascading member is not chosen", Situation(tags={"n2": Tags(replicatefrom="n3")}),
     SetSsn('FIRST 1 ("n3")'), SyncWhy.SET_SSN),
    ("on: node count 2", Situation(settings=ON2), SetSsn('FIRST 2 ("n2","n3")'), SyncWhy.SET_SSN),
    ("on: node count 2, one available", Situation(settings=ON2, rows="n3"), SetSsn('FIRST 1 ("n3")'),
     SyncWhy.SET_SSN),
    ("on: an unreadable ssn is replaced", Situation(ssn="FIRST (", rows="n2"), SetSsn('FIRST 1 ("n2")'),
     SyncWhy.SET_SSN),
    ("on: an equivalent ssn is kept", Situation(ssn="n2", sync=sync_key("n2"), rows="n2:sync"),
     NoChange(), SyncWhy.IN_SYNC),
    ("on: a voter the ssn does not require is dropped", Situation(ssn="FIRST 1 (n2, n3)", sync=sync_key("n2,n3"),
                                                                  rows="n2:sync n3:potential"),
     WriteSync(SyncState(ME, (), 0), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("on: no standby at all", Situation(rows=""), NoChange(), SyncWhy.ASYNC_NO_STANDBY),
    # -- strict
    ("strict: keep waiting for the lost standby", Situation(settings=STRICT, ssn='FIRST 1 ("n2")',
                                                            sync=sync_key("n2"), rows=""),
     NoChange(), SyncWhy.STRICT_BLOCKING),
    ("strict: placeholder when nobody was synchronous", Situation(settings=STRICT, rows=""),
     SetSsn(f'FIRST 1 ("{PLACEHOLDER}")'), SyncWhy.SET_SSN),
    ("strict: writes wait on the placeholder", Situation(settings=STRICT, ssn=f'FIRST 1 ("{PLACEHOLDER}")',
                                                         rows=""), NoChange(), SyncWhy.STRICT_BLOCKING),
    ("strict: a nosync standby is not kept", Situation(settings=STRICT, ssn='FIRST 1 ("n2")', sync=sync_key("n2"),
                                                       rows="n2:sync", tags={"n2": Tags(nosync=True)}),
     WriteSync(SyncState(ME, (), 0), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("strict: a returning standby replaces the placeholder",
     Situation(settings=STRICT, ssn=f'FIRST 1 ("{PLACEHOLDER}")', rows="n3"),
     SetSsn('FIRST 1 ("n3")'), SyncWhy.SET_SSN),
    # -- quorum
    ("quorum: claim", Situation(settings=QUORUM, sync=None), WriteSync(SyncState(ME, (), 0), 0), SyncWhy.CLAIM_KEY),
    ("quorum: ssn first", Situation(settings=QUORUM, sync=sync_key("")), SetSsn('ANY 1 ("n2","n3")'),
     SyncWhy.SET_SSN),
    ("quorum: then voters and quorum (2 voters, ANY 1: quorum 1, as Patroni writes)",
     Situation(settings=QUORUM, ssn='ANY 1 ("n2","n3")', sync=sync_key(""), rows="n2:quorum n3:quorum",
               memory=SyncMemory(1, 'ANY 1 ("n2","n3")', (Legacy((), 0, 100),))),
     WriteSync(SyncState(ME, ("n2", "n3"), 1), 5), SyncWhy.PUBLISH),
    ("quorum: 2 voters, ANY 2: quorum 0, as Patroni writes",
     Situation(settings=QUORUM2, ssn='ANY 2 ("n2","n3")', sync=sync_key(""), rows="n2:quorum n3:quorum",
               memory=SyncMemory(1, 'ANY 2 ("n2","n3")', (Legacy((), 0, 100),))),
     WriteSync(SyncState(ME, ("n2", "n3"), 0), 5), SyncWhy.PUBLISH),
    ("quorum: 1 voter, ANY 1: quorum 0, as Patroni writes",
     Situation(settings=QUORUM, members=("n1", "n2"), ssn='ANY 1 ("n2")', sync=sync_key(""), rows="n2:quorum",
               memory=SyncMemory(1, 'ANY 1 ("n2")', (Legacy((), 0, 100),))),
     WriteSync(SyncState(ME, ("n2",), 0), 5), SyncWhy.PUBLISH),
    ("quorum: a voter behind the barrier raises the quorum",
     Situation(settings=QUORUM2, members=FIVE, ssn='ANY 2 ("n2","n3","n4","n5")', sync=sync_key("n2,n3,n4/2"),
               rows="n2:quorum n3:quorum@90 n4:quorum@90 n5:quorum@90",
               memory=SyncMemory(1, 'ANY 2 ("n2","n3","n4","n5")', (Legacy(("n2", "n3", "n4"), 2, 100),))),
     WriteSync(SyncState(ME, ("n2", "n3", "n4", "n5"), 3), 5), SyncWhy.PUBLISH),
    ("quorum: 5 nodes, node count 2", Situation(settings=QUORUM2, members=FIVE, ssn='ANY 2 ("n2","n3","n4","n5")',
                                                sync=sync_key("n2,n3,n4,n5/2"),
                                                rows="n2:quorum n3:quorum n4:quorum n5:quorum"),
     NoChange(), SyncWhy.IN_SYNC),
    ("quorum: growing, the quorum rises before the ssn",
     Situation(settings=QUORUM, ssn='ANY 1 ("n2","n3")', sync=sync_key("n2,n3/1"), members=(*FIVE[:3], "n4"),
               rows="n2:quorum n3:quorum n4"),
     WriteSync(SyncState(ME, ("n2", "n3"), 2), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("quorum: shrinking, the voter leaves first",
     Situation(settings=QUORUM, ssn='ANY 1 ("n2","n3")', sync=sync_key("n2,n3/1"), rows="n2:quorum"),
     WriteSync(SyncState(ME, ("n2",), 1), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("quorum: the quorum comes down only once covered",
     Situation(settings=QUORUM, ssn='ANY 1 ("n2")', sync=sync_key("n2/1"), rows="n2:quorum@100",
               memory=SyncMemory(1, 'ANY 1 ("n2")', (Legacy(("n2",), 1, 100),))),
     WriteSync(SyncState(ME, ("n2",), 0), 5), SyncWhy.PUBLISH),
    ("quorum: not before", Situation(settings=QUORUM, ssn='ANY 1 ("n2")', sync=sync_key("n2/1"), rows="n2:quorum@99",
                                     memory=SyncMemory(1, 'ANY 1 ("n2")', (Legacy(("n2",), 1, 100),))),
     NoChange(), SyncWhy.IN_SYNC),
    ("quorum: nofailover only to reach the count",
     Situation(settings=QUORUM2, members=(*FIVE[:3], "n4"), tags={"n4": Tags(nofailover=True)},
               rows="n2 n3 n4"), SetSsn('ANY 2 ("n2","n3")'), SyncWhy.SET_SSN),
    ("quorum: nofailover fills the count", Situation(settings=QUORUM2, tags={"n3": Tags(nofailover=True)}),
     SetSsn('ANY 2 ("n2","n3")'), SyncWhy.SET_SSN),
    ("quorum strict: placeholder", Situation(settings=SyncSettings(SyncMode.QUORUM, strict=True), rows=""),
     SetSsn(f'ANY 1 ("{PLACEHOLDER}")'), SyncWhy.SET_SSN),
    ("quorum from on: voters leave before the ssn becomes ANY",
     Situation(settings=QUORUM, ssn='FIRST 1 ("n2")', sync=sync_key("n2"), rows="n2:sync n3"),
     WriteSync(SyncState(ME, ("n2",), 1), 5), SyncWhy.PREPARE_SSN_CHANGE),
    ("quorum from on: straight to ANY 2 (every ack still includes n2)",
     Situation(settings=QUORUM2, ssn='FIRST 1 ("n2")', sync=sync_key("n2"), rows="n2:sync n3"),
     SetSsn('ANY 2 ("n2","n3")'), SyncWhy.SET_SSN),
]


def _matches(step: object, expected: object) -> bool:
    if isinstance(expected, str):  # "delete <revision>"
        return getattr(step, "kind", "") == "delete sync" and getattr(step, "expected_revision", -1) == int(
            expected.split()[1])
    return step == expected


@pytest.mark.parametrize(("situation", "step", "why"), [pytest.param(s, st, w, id=c) for c, s, st, w in CASES])
def test_plan(situation: Situation, step: object, why: SyncWhy) -> None:
    plan = situation.plan()
    assert (plan.why, _matches(plan.step, step)) == (why, True), f"got {plan.step} {plan.why} {plan.facts}"


def test_every_planner_reason_is_reached() -> None:
    planner = {w for w in SyncWhy if w.name in {
        "NOT_PRIMARY", "OFF_DELETE_KEY", "OFF_RESET_SSN", "OFF", "CLAIM_KEY", "PREPARE_SSN_CHANGE", "SET_SSN",
        "PUBLISH", "WAIT_BARRIER", "WAIT_STANDBYS", "STRICT_BLOCKING", "ASYNC_NO_STANDBY", "IN_SYNC"}}
    assert {s.plan().why for _, s, _, _ in CASES} == planner


def test_every_reason_renders_with_its_facts() -> None:
    for _, situation, _, _ in CASES:
        plan = situation.plan()
        text = render_sync(plan.why, plan.facts)
        assert "{" not in text and text


def test_eligible_order() -> None:
    s = Situation(rows="n2:async@90 n3:async@100 n4:sync@80", members=("n1", "n2", "n3", "n4"),
                  tags={"n2": Tags(sync_priority=3)})
    members = tuple(Member(name=n, state="running", tags=s.tags.get(n, Tags())) for n in s.members)
    view = ClusterView(scope="t", members=members)
    pg = LocalPg(data_dir=DataDirState.VALID, running=True, accepting=True, in_recovery=False, wal_lsn=LSN,
                 replication=rows(s.rows))
    assert eligible_standbys(ME, view, pg, ON) == ["n2", "n4", "n3"]


def test_a_fresh_memory_is_cautious() -> None:
    """After an agent restart nothing is known about earlier ssn values: no new voter is published
    before the ssn in force has been seen settle."""
    first = Situation(ssn='FIRST 1 ("n2")', rows="n2:sync", memory=SyncMemory()).plan()
    assert (first.step, first.why) == (NoChange(), SyncWhy.WAIT_BARRIER)
    assert first.memory.legacy == (Legacy((), 0, None),)
    second = Situation(ssn='FIRST 1 ("n2")', rows="n2:sync", memory=first.memory).plan()
    assert second.step == WriteSync(SyncState(ME, ("n2",), 0), 5)
    assert second.memory.legacy == ()  # everyone is past the barrier: retired


def test_a_new_timeline_resets_the_memory() -> None:
    stale = SyncMemory(timeline=7, seen_ssn='FIRST 1 ("n2")')
    plan = Situation(ssn='FIRST 1 ("n2")', rows="n2:sync", memory=stale).plan()
    assert plan.why is SyncWhy.WAIT_BARRIER and plan.memory.timeline == 1


def test_again_soon_while_steps_remain() -> None:
    assert Situation().plan().again_soon
    assert not Situation(ssn='FIRST 1 ("n2")', sync=sync_key("n2"), rows="n2:sync n3").plan().again_soon


def _settle(settings: SyncSettings, members: tuple[str, ...], tags: dict[str, Tags] | None = None,
            ssn: str = "", sync: SyncState | None = None) -> tuple[str, SyncState, list[tuple[str, SyncState]]]:
    """Run the planner, applying each step, until synchronous replication is in place. Every standby
    streams at the primary's position, so barriers pass at once. Also returns each /sync written, with
    the ssn in force when it was."""
    memory = SyncMemory()
    writes: list[tuple[str, SyncState]] = []
    for _ in range(20):
        names = {n.lower() for n in parse_ssn(ssn).names}
        spec = " ".join(f"{m}:{'quorum' if m in names else 'async'}" for m in members if m != ME)
        plan = Situation(settings=settings, ssn=ssn, sync=sync, rows=spec, members=members, tags=tags or {},
                         memory=memory).plan()
        memory = plan.memory
        if isinstance(plan.step, SetSsn):
            ssn = plan.step.value
        elif isinstance(plan.step, WriteSync):
            sync = replace(plan.step.state, revision=(sync.revision if sync else 0) + 1)
            writes.append((ssn, plan.step.state))
        elif plan.why is SyncWhy.IN_SYNC:
            assert sync is not None
            return ssn, sync, writes
    raise AssertionError(f"no steady state: {ssn!r} {sync}")


# Patroni 4.1.5's observed `quorum` values (contract 2.5): the number of voters other than the
# candidate that a candidate must see, `|voters| - k` for `ANY k`.
PATRONI_VALUES = [
    ("2 voters, ANY 1", QUORUM, ("n1", "n2", "n3"), 'ANY 1 ("n2","n3")', 1),
    ("2 voters, ANY 2", QUORUM2, ("n1", "n2", "n3"), 'ANY 2 ("n2","n3")', 0),
    ("1 voter, ANY 1", QUORUM, ("n1", "n2"), 'ANY 1 ("n2")', 0),
    ("4 voters, ANY 2", QUORUM2, FIVE, 'ANY 2 ("n2","n3","n4","n5")', 2),
    ("4 voters, ANY 1", QUORUM, FIVE, 'ANY 1 ("n2","n3","n4","n5")', 3),
]


@pytest.mark.parametrize(("settings", "members", "ssn", "quorum"),
                         [pytest.param(*row[1:], id=row[0]) for row in PATRONI_VALUES])
def test_steady_state_quorum_is_patronis(settings: SyncSettings, members: tuple[str, ...], ssn: str,
                                         quorum: int) -> None:
    final_ssn, sync, _ = _settle(settings, members)
    assert final_ssn == ssn
    assert (set(sync.sync_standby), sync.quorum) == (set(members) - {ME}, quorum)


def test_the_last_voter_left_after_the_other_turns_nosync_has_quorum_0() -> None:
    """Patroni: a single remaining voter after the other became `nosync` -> quorum 0. On the way the
    leaving voter goes first and the quorum stays high until the ssn change is covered."""
    members = ("n1", "n2", "n3")
    ssn, sync, _ = _settle(QUORUM, members)
    assert (ssn, sync.quorum) == ('ANY 1 ("n2","n3")', 1)
    ssn, sync, writes = _settle(QUORUM, members, tags={"n3": Tags(nosync=True)}, ssn=ssn, sync=sync)
    assert (ssn, sync.sync_standby, sync.quorum) == ('ANY 1 ("n2")', ("n2",), 0)
    assert [(ssn, w.sync_standby, w.quorum) for ssn, w in writes] == [
        ('ANY 1 ("n2","n3")', ("n2",), 1),  # n3 leaves /sync first; n2 alone may not promote yet
        ('ANY 1 ("n2")', ("n2",), 0),  # once the new ssn is in force and n2 is past its barrier
    ]
