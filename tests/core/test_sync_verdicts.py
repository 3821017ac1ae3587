"""pgwarden.core.sync.promotion on replicas: who may promote, where a switchover may go, what a new primary
writes before it promotes."""

from __future__ import annotations

import itertools

import pytest

from pgwarden.core.snapshot import PeerStatus
from pgwarden.core.sync.plan import NoChange, SetSsn, SyncMode, SyncSettings, WriteSync
from pgwarden.core.sync.promotion import PrePromote, may_promote, pre_promote_step, pre_promote_sync, switchover_allowed
from pgwarden.core.sync.reasons import SyncWhy, render_sync
from pgwarden.core.sync.safety import ack_rule, quorum_is_safe
from pgwarden.core.sync.ssn import PLACEHOLDER, parse_ssn
from pgwarden.model import SyncState

ON = SyncSettings(mode=SyncMode.ON)
STRICT = SyncSettings(mode=SyncMode.ON, strict=True)
QUORUM = SyncSettings(mode=SyncMode.QUORUM)
QSTRICT = SyncSettings(mode=SyncMode.QUORUM, strict=True)
OFF = SyncSettings()


def key(voters: str, quorum: int = 0, leader: str = "n1") -> SyncState:
    return SyncState(leader=leader, sync_standby=tuple(v for v in voters.split(",") if v), quorum=quorum,
                     revision=9)


def peers(spec: str) -> list[PeerStatus]:
    """`n3=90 n4=down n5=?` (? : reachable, position unknown)."""
    out = []
    for item in spec.split():
        who, value = item.split("=")
        out.append(PeerStatus(who, reachable=value != "down", in_recovery=True,
                              lsn=int(value) if value.isdigit() else None))
    return out


PROMOTE = [
    ("off: anyone", OFF, key("n3"), "n2", 100, "", True, SyncWhy.ASYNC_MODE),
    ("no key: anyone", ON, None, "n2", 100, "", True, SyncWhy.NO_SYNC_KEY),
    ("no key, strict: nobody", STRICT, None, "n2", 100, "", False, SyncWhy.NO_SYNC_KEY_STRICT),
    ("the former leader", ON, key("n3"), "n1", 100, "", True, SyncWhy.FORMER_LEADER),
    ("on: a synchronous standby", ON, key("n2"), "n2", 100, "n3=120", True, SyncWhy.SYNC_STANDBY),
    ("on: an asynchronous one, even ahead", ON, key("n3"), "n2", 200, "n3=100", False, SyncWhy.NOT_SYNC_STANDBY),
    ("on: nobody when /sync is empty", ON, key(""), "n2", 100, "", False, SyncWhy.NOT_SYNC_STANDBY),
    ("on, key still in quorum form: alone is not enough", ON, key("n2,n3", 1), "n2", 100, "n3=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("on, key still in quorum form: with the other voter", ON, key("n2,n3", 1), "n2", 100, "n3=100", True,
     SyncWhy.SYNC_STANDBY),
    ("quorum: one other voter behind", QUORUM, key("n2,n3,n4", 1), "n2", 100, "n3=90 n4=down", True,
     SyncWhy.QUORUM_REACHED),
    ("quorum: a voter ahead does not count", QUORUM, key("n2,n3,n4", 1), "n2", 100, "n3=110 n4=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: unknown position does not count", QUORUM, key("n2,n3,n4", 1), "n2", 100, "n3=? n4=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: a non-voter at the front needs quorum + 1", QUORUM, key("n2,n3,n4", 1), "n5", 100, "n2=100 n3=90",
     True, SyncWhy.QUORUM_REACHED),
    ("quorum: a non-voter with only quorum voters", QUORUM, key("n2,n3,n4", 1), "n5", 100, "n2=100 n3=down",
     False, SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: quorum 0, a non-voter needs one voter", QUORUM, key("n2", 0), "n3", 100, "n2=100", True,
     SyncWhy.QUORUM_REACHED),
    ("quorum: quorum 0, a voter needs nobody", QUORUM, key("n2,n3", 0), "n2", 100, "n3=down", True,
     SyncWhy.QUORUM_REACHED),
    ("quorum: no voters, nobody", QUORUM, key("", 0), "n2", 100, "n3=1", False, SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: a negative quorum counts as 0", QUORUM, key("n2", -1), "n3", 100, "n2=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: names match without case", QUORUM, key("N2,n3", 1), "n2", 100, "N3=100", True,
     SyncWhy.QUORUM_REACHED),
]


@pytest.mark.parametrize(("settings", "sync", "me", "lsn", "others", "allowed", "why"),
                         [pytest.param(*row[1:], id=row[0]) for row in PROMOTE])
def test_may_promote(settings: SyncSettings, sync: SyncState | None, me: str, lsn: int, others: str,
                     allowed: bool, why: SyncWhy) -> None:
    verdict = may_promote(me, lsn, settings, sync, peers(others))
    assert (verdict.allowed, verdict.why) == (allowed, why), verdict
    assert "{" not in render_sync(verdict.why, verdict.facts)


SWITCHOVER = [
    ("off", OFF, key(""), "n3", True, SyncWhy.ASYNC_MODE),
    ("on: to a synchronous standby", ON, key("n2"), "n2", True, SyncWhy.SYNC_STANDBY),
    ("on: to an asynchronous replica", ON, key("n2"), "n3", False, SyncWhy.CANDIDATE_NOT_SYNC),
    ("on: to anyone", ON, key("n2"), None, True, SyncWhy.SYNC_STANDBY),
    ("on: to anyone, nobody synchronous", ON, key(""), None, False, SyncWhy.NO_SYNC_STANDBY),
    ("quorum: to a voter", QUORUM, key("n2,n3", 1), "n3", True, SyncWhy.SYNC_STANDBY),
    ("quorum: to a non-voter", QUORUM, key("n2,n3", 1), "n4", False, SyncWhy.CANDIDATE_NOT_SYNC),
    ("no key", ON, None, "n3", True, SyncWhy.NO_SYNC_KEY),
    ("no key, strict", STRICT, None, "n3", False, SyncWhy.NO_SYNC_KEY_STRICT),
]


@pytest.mark.parametrize(("settings", "sync", "candidate", "allowed", "why"),
                         [pytest.param(*row[1:], id=row[0]) for row in SWITCHOVER])
def test_switchover_allowed(settings: SyncSettings, sync: SyncState | None, candidate: str | None,
                            allowed: bool, why: SyncWhy) -> None:
    verdict = switchover_allowed(candidate, settings, sync)
    assert (verdict.allowed, verdict.why) == (allowed, why), verdict


def test_switchover_refusal_says_why() -> None:
    verdict = switchover_allowed("n3", ON, key("n2"))
    assert render_sync(verdict.why, verdict.facts) == (
        "candidate n3 is not a synchronous standby (synchronous standbys: n2); a switchover to it could lose "
        "acknowledged commits")


PRE = [
    ("off", OFF, key("n2,n3"), "n2", None),
    ("on", ON, key("n2,n3"), "n2", PrePromote("", SyncState("n2", (), 0), 9)),
    ("on, no key", ON, None, "n2", PrePromote("", SyncState("n2", (), 0), 0)),
    ("quorum", QUORUM, key("n2,n3", 1), "n2", PrePromote("", SyncState("n2", (), 0), 9)),
    ("strict: former standbys stay", STRICT, key("n2,n3"), "n2",
     PrePromote('FIRST 1 ("n3")', SyncState("n2", ("n3",), 0), 9)),
    ("strict: nobody left", STRICT, key("n2"), "n2",
     PrePromote(f'FIRST 1 ("{PLACEHOLDER}")', SyncState("n2", (), 0), 9)),
    ("strict quorum: voters and quorum stay", QSTRICT, key("n2,n3,n4,n5", 2), "n2",
     PrePromote('ANY 1 ("n3","n4","n5")', SyncState("n2", ("n3", "n4", "n5"), 2), 9)),
    ("strict quorum: quorum 1 of 3 others", QSTRICT, key("n3,n4,n5", 1), "n2",
     PrePromote('ANY 2 ("n3","n4","n5")', SyncState("n2", ("n3", "n4", "n5"), 1), 9)),
    ("strict quorum, Patroni's 2 voters ANY 1", QSTRICT, key("n2,n3", 1), "n2",
     PrePromote('ANY 1 ("n3")', SyncState("n2", ("n3",), 1), 9)),
    ("strict: idempotent once written", STRICT, key("n3", leader="n2"), "n2",
     PrePromote('FIRST 1 ("n3")', SyncState("n2", ("n3",), 0), 9)),
]


@pytest.mark.parametrize(("settings", "sync", "me", "expected"), [pytest.param(*row[1:], id=row[0]) for row in PRE])
def test_pre_promote(settings: SyncSettings, sync: SyncState | None, me: str, expected: PrePromote | None) -> None:
    pre = pre_promote_sync(me, settings, sync)
    assert pre == expected
    if pre is not None:  # what it writes is safe for the ssn it sets
        state = pre.sync
        voters = frozenset(state.sync_standby)
        assert quorum_is_safe(voters, state.quorum, ack_rule(parse_ssn(pre.ssn)))


def test_pre_promote_steps_in_order() -> None:
    pre = pre_promote_sync("n2", STRICT, key("n2,n3"))
    assert pre is not None
    assert pre_promote_step(pre, "", key("n2,n3")) == SetSsn('FIRST 1 ("n3")')
    assert pre_promote_step(pre, 'FIRST 1 ("n3")', key("n2,n3")) == WriteSync(SyncState("n2", ("n3",), 0), 9)
    written = SyncState("n2", ("n3",), 0, revision=10)
    assert pre_promote_step(pre, 'FIRST 1 (n3)', written) == NoChange()  # promote now


# `/sync` values Patroni 4.1.5 writes (contract 2.5), read by pgwarden: `quorum` is the number of voters
# other than the candidate that the candidate must see (not ahead of it); a non-voter needs one more.
PATRONI_KEYS = [
    # 2 voters, ANY 1: Patroni writes quorum 1.
    ("2 voters ANY 1: a voter seeing the other voter behind", key("n2,n3", 1), "n2", "n3=90", True),
    ("2 voters ANY 1: a voter seeing only itself", key("n2,n3", 1), "n2", "n3=down", False),
    ("2 voters ANY 1: the other voter ahead", key("n2,n3", 1), "n2", "n3=110", False),
    ("2 voters ANY 1: a non-voter seeing both", key("n2,n3", 1), "n4", "n2=100 n3=90", True),
    ("2 voters ANY 1: a non-voter seeing one", key("n2,n3", 1), "n4", "n2=100 n3=down", False),
    # One voter left after the other became nosync: Patroni writes quorum 0.
    ("1 voter left: the voter alone", key("n2", 0), "n2", "n3=down", True),
    ("1 voter left: the nosync member, the voter behind it", key("n2", 0), "n3", "n2=90", True),
    ("1 voter left: the nosync member alone", key("n2", 0), "n3", "n2=down", False),
    ("1 voter left: the voter behind the nosync member", key("n2", 0), "n3", "n2=110", False),
    # 2 voters, ANY 2: Patroni writes quorum 0 (every commit is on both).
    ("2 voters ANY 2: a voter alone", key("n2,n3", 0), "n2", "n3=down", True),
    ("2 voters ANY 2: a non-voter with one voter behind", key("n2,n3", 0), "n4", "n2=100 n3=down", True),
    ("2 voters ANY 2: a non-voter alone", key("n2,n3", 0), "n4", "n2=down n3=down", False),
]


@pytest.mark.parametrize(("sync", "me", "others", "allowed"), [pytest.param(*row[1:], id=row[0])
                                                               for row in PATRONI_KEYS])
def test_a_patroni_written_key_gives_patronis_decision(sync: SyncState, me: str, others: str,
                                                       allowed: bool) -> None:
    verdict = may_promote(me, 100, QUORUM, sync, peers(others))
    assert verdict.allowed is allowed, render_sync(verdict.why, verdict.facts)
    assert verdict.allowed is _patroni_rule(me, 100, sync, peers(others))


def _patroni_rule(me: str, my_lsn: int, sync: SyncState, others: list[PeerStatus]) -> bool:
    """Patroni's quorum vote as the contract (2.4 h) states it: votes start at 0 for a voter, -1
    otherwise; each other voter that runs and is not ahead adds one; enough when votes >= quorum."""
    voters = {v.lower() for v in sync.sync_standby}
    votes = 0 if me.lower() in voters else -1
    votes += sum(1 for p in others if p.name.lower() in voters and p.name.lower() != me.lower()
                 and p.reachable and p.lsn is not None and p.lsn <= my_lsn)
    return votes >= sync.quorum


def test_every_small_quorum_key_gives_patronis_decision() -> None:
    """Exhaustively over 4 replicas: every voter set, quorum 0-3, candidate and peer state (down,
    behind, level, ahead), pgwarden's verdict is Patroni's (the former leader, which both always
    allow when nobody is ahead, is left out)."""
    names = ("n2", "n3", "n4", "n5")
    states = ("down", "90", "100", "110")
    checked = 0
    for mask in range(16):
        voters = ",".join(n for i, n in enumerate(names) if mask >> i & 1)
        for quorum in range(4):
            sync = key(voters, quorum)
            for me in names:
                rest = [n for n in names if n != me]
                for combo in itertools.product(states, repeat=len(rest)):
                    others = peers(" ".join(f"{n}={v}" for n, v in zip(rest, combo, strict=True)))
                    verdict = may_promote(me, 100, QUORUM, sync, others)
                    assert verdict.allowed is _patroni_rule(me, 100, sync, others), (sync, me, combo)
                    checked += 1
    assert checked == 16 * 4 * 4 * 4 ** 3


def test_old_meaning_would_have_promoted_a_lone_voter() -> None:
    """The issue's danger: reading Patroni's 1 (2 voters, ANY 1) as "1 vote, my own" promoted a voter
    that had seen nobody, though the only acknowledging standby may be the other voter."""
    verdict = may_promote("n2", 100, QUORUM, key("n2,n3", 1), peers("n3=down"))
    assert not verdict.allowed
    assert render_sync(verdict.why, verdict.facts) == (
        "other voters not ahead of me: -; 1 needed with quorum 1 (I am a voter): refusing to promote")
