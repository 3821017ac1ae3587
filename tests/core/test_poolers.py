"""A planned switchover waits (bounded) for `pgwarden route` sidecars to pause their PgBouncer clients."""

from __future__ import annotations

from dataclasses import replace

from pgwarden.core import decide
from pgwarden.core.actions import Demote, RenewLeader
from pgwarden.core.decide import POOLER_HOLD_WAIT
from pgwarden.core.reasons import Why
from pgwarden.model import RouterState
from tests.core import builders as b


def _switchover(held_for: int | None, kinds: tuple[str, ...] = ("pgbouncer",)) -> object:
    routers = (RouterState(name="r1", kinds=kinds, primary="n1", held_for=held_for),)
    return replace(b.cluster(failover=b.failover_key("n1", "n2")), routers=routers)


def test_leader_waits_while_a_pooler_has_not_paused_for_this_switchover() -> None:
    d = decide(b.snapshot(dcs=_switchover(None), peers=(b.peer("n2"), b.peer("n3")), memory=b.memory(lease_in=15)))
    assert isinstance(d.action, RenewLeader) and d.reason.why is Why.WAITING_FOR_POOLERS
    assert d.memory.pooler_hold is not None and d.wake_at - b.NOW <= 0.1 + 1e-9


def test_leader_demotes_once_every_pooler_holds_for_this_revision() -> None:
    d = decide(b.snapshot(dcs=_switchover(b.FAILOVER_REVISION), peers=(b.peer("n2"), b.peer("n3")),
                          memory=b.memory(lease_in=15)))
    assert isinstance(d.action, Demote)


def test_a_pooler_that_never_answers_delays_the_switchover_only_so_long() -> None:
    first = decide(b.snapshot(dcs=_switchover(None), peers=(b.peer("n2"), b.peer("n3")), memory=b.memory(lease_in=15)))
    later = decide(b.snapshot(dcs=_switchover(None), peers=(b.peer("n2"), b.peer("n3")), memory=first.memory,
                              now=b.NOW + POOLER_HOLD_WAIT + 0.1))
    assert isinstance(later.action, Demote)


def test_haproxy_only_routers_are_not_waited_for() -> None:
    d = decide(b.snapshot(dcs=_switchover(None, ("haproxy",)), peers=(b.peer("n2"), b.peer("n3")),
                          memory=b.memory(lease_in=15)))
    assert isinstance(d.action, Demote)
