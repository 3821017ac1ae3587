"""The replicas' copies of the members' slots: what the case rows cannot say (the nap after a failure)."""

from __future__ import annotations

from pgwarden.core.actions import EnsureSlots
from pgwarden.core.decide import SHORT_NAP, decide
from tests.core.rowlang import build_snapshot


def test_a_failed_copy_is_tried_again_after_loop_wait_not_at_once() -> None:
    fresh = decide(build_snapshot("replica following=n1 slots=", "-", "me=n2", "-"))
    failed = decide(build_snapshot("replica following=n1 slots=", "-", "me=n2 last=slots:fail@-1", "-"))
    assert isinstance(fresh.action, EnsureSlots) and isinstance(failed.action, EnsureSlots)
    assert fresh.wake_at - 1000 == SHORT_NAP
    assert failed.wake_at - 1000 == 10  # Patroni's default loop_wait
