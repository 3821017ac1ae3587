"""When observation must ask the peers for their WAL positions (classify.needs_peer_statuses)."""

from __future__ import annotations

import pytest

from pgwarden.core.classify import needs_peer_statuses
from pgwarden.model import ClusterView
from tests.core import builders as b

SWITCHOVER = b.failover_key("n1", "n2")


@pytest.mark.parametrize(("name", "view", "me", "shutting_down", "wanted"), [
    ("DCS unreadable", None, "n1", False, False),
    ("no leader: a race", b.cluster(leader=None), "n2", False, True),
    ("no leader, a failover key: a race", b.cluster(leader=None, failover=SWITCHOVER), "n2", False, True),
    ("leader, steady state", b.cluster(), "n1", False, False),
    ("leader shutting down: a handover", b.cluster(), "n1", True, True),
    ("leader with a failover key: check the candidate", b.cluster(failover=SWITCHOVER), "n1", False, True),
    ("leader with a scheduled key", b.cluster(failover=b.failover_key("n1", "n2", scheduled_at=b.wall_iso(60))),
     "n1", False, True),
    ("replica with a failover key", b.cluster(failover=SWITCHOVER), "n2", False, False),
    ("replica shutting down", b.cluster(), "n2", True, False),
])
def test_needs_peer_statuses(name: str, view: ClusterView | None, me: str, shutting_down: bool,
                             wanted: bool) -> None:
    assert needs_peer_statuses(view, me, shutting_down) is wanted, name
