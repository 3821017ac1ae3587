"""pgwarden.core.sync on replicas: who may promote, where a switchover may go, what a new primary
writes before it promotes."""

from __future__ import annotations

import pytest

from pgwarden.core.sync import (
    PLACEHOLDER,
    NoChange,
    PrePromote,
    SetSsn,
    SyncMode,
    SyncSettings,
    SyncWhy,
    WriteSync,
    ack_rule,
    may_promote,
    parse_ssn,
    pre_promote_step,
    pre_promote_sync,
    quorum_is_safe,
    render_sync,
    switchover_allowed,
)
from pgwarden.core.types import PeerStatus
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
    ("on, key still in quorum form: alone is not enough", ON, key("n2,n3", 2), "n2", 100, "n3=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("on, key still in quorum form: with a vote", ON, key("n2,n3", 2), "n2", 100, "n3=100", True,
     SyncWhy.SYNC_STANDBY),
    ("quorum: my vote and one behind", QUORUM, key("n2,n3,n4", 2), "n2", 100, "n3=90 n4=down", True,
     SyncWhy.QUORUM_REACHED),
    ("quorum: a voter ahead gives no vote", QUORUM, key("n2,n3,n4", 2), "n2", 100, "n3=110 n4=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: unknown position gives no vote", QUORUM, key("n2,n3,n4", 2), "n2", 100, "n3=? n4=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: a non-voter at the front", QUORUM, key("n2,n3,n4", 2), "n5", 100, "n2=100 n3=90", True,
     SyncWhy.QUORUM_REACHED),
    ("quorum: a non-voter with one vote", QUORUM, key("n2,n3,n4", 2), "n5", 100, "n2=100 n3=down", False,
     SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: quorum 0 means 1", QUORUM, key("n2", 0), "n3", 100, "n2=100", True, SyncWhy.QUORUM_REACHED),
    ("quorum: no voters, nobody", QUORUM, key("", 1), "n2", 100, "n3=1", False, SyncWhy.NOT_ENOUGH_VOTES),
    ("quorum: names match without case", QUORUM, key("N2,n3", 2), "n2", 100, "N3=100", True,
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
    ("quorum: to a voter", QUORUM, key("n2,n3", 2), "n3", True, SyncWhy.SYNC_STANDBY),
    ("quorum: to a non-voter", QUORUM, key("n2,n3", 2), "n4", False, SyncWhy.CANDIDATE_NOT_SYNC),
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
    ("quorum", QUORUM, key("n2,n3", 2), "n2", PrePromote("", SyncState("n2", (), 1), 9)),
    ("strict: former standbys stay", STRICT, key("n2,n3"), "n2",
     PrePromote('FIRST 1 ("n3")', SyncState("n2", ("n3",), 0), 9)),
    ("strict: nobody left", STRICT, key("n2"), "n2",
     PrePromote(f'FIRST 1 ("{PLACEHOLDER}")', SyncState("n2", (), 0), 9)),
    ("strict quorum: voters and quorum stay", QSTRICT, key("n2,n3,n4,n5", 3), "n2",
     PrePromote('ANY 1 ("n3","n4","n5")', SyncState("n2", ("n3", "n4", "n5"), 3), 9)),
    ("strict quorum: quorum 2 of 3 others", QSTRICT, key("n3,n4,n5", 2), "n2",
     PrePromote('ANY 2 ("n3","n4","n5")', SyncState("n2", ("n3", "n4", "n5"), 2), 9)),
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
        assert quorum_is_safe(voters, max(1, state.quorum), ack_rule(parse_ssn(pre.ssn)))


def test_pre_promote_steps_in_order() -> None:
    pre = pre_promote_sync("n2", STRICT, key("n2,n3"))
    assert pre is not None
    assert pre_promote_step(pre, "", key("n2,n3")) == SetSsn('FIRST 1 ("n3")')
    assert pre_promote_step(pre, 'FIRST 1 ("n3")', key("n2,n3")) == WriteSync(SyncState("n2", ("n3",), 0), 9)
    written = SyncState("n2", ("n3",), 0, revision=10)
    assert pre_promote_step(pre, 'FIRST 1 (n3)', written) == NoChange()  # promote now
