"""The pure switchover/failover checks: every refusal code and text of contract 4.4, and the key written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgwarden.api.control import ControlResult
from pgwarden.api.requests import Refusal
from pgwarden.api.switchover import (
    SwitchoverRequest,
    check_switchover,
    failover_value,
    parse_switchover,
    success_text,
    wait_timeout,
)
from pgwarden.model import ClusterView, LeaderKey, Member, SyncState, Tags, Versioned

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _member(name: str, role: str = "replica", state: str = "running", **tags: Any) -> Member:
    return Member(name, role=role, state=state, tags=Tags(**tags))


def _cluster(*members: Member, leader: str | None = "n1", config: dict[str, Any] | None = None,
             sync: tuple[str, ...] | None = None) -> ClusterView:  # fmt: skip
    return ClusterView(
        "demo",
        leader=LeaderKey(leader) if leader else None,
        members=members,
        config=Versioned(config or {}, 1),
        sync=SyncState(leader=leader, sync_standby=sync) if sync is not None else None,
    )


HEALTHY = _cluster(_member("n1", role="primary"), _member("n2"), _member("n3"))


@pytest.mark.parametrize(
    ("action", "body", "status", "text"),
    [
        ("failover", {"leader": "n1"}, 400, "Failover could be performed only to a specific candidate"),
        ("switchover", {"candidate": "n2"}, 400, "Switchover could be performed only from a specific leader"),
        ("switchover", {"leader": "n1", "candidate": "n1"}, 400, "Switchover target and source are the same"),
        ("switchover", {"leader": 1}, 400, "leader: expected a string, found int"),
        ("switchover", {"leader": "n1", "scheduled_at": "2030-01-02T10:00:00"}, 400,
         "Timezone information is mandatory for the scheduled switchover"),
        ("switchover", {"leader": "n1", "scheduled_at": "tomorrow"}, 422, "Unable to parse scheduled timestamp"),
        ("switchover", {"leader": "n1", "scheduled_at": 12}, 422, "Unable to parse scheduled timestamp"),
        ("switchover", {"leader": "n1", "scheduled_at": "2029-01-01T10:00:00+00:00"}, 422,
         "Cannot schedule switchover in the past"),
        ("failover", {"candidate": "n2", "scheduled_at": "2031-01-01T10:00:00+00:00"}, 400,
         "Failover can't be scheduled"),
    ],
)  # fmt: skip
def test_parse_refusals(action: Any, body: dict[str, Any], status: int, text: str) -> None:
    with pytest.raises(Refusal) as caught:
        parse_switchover(body, action, NOW)
    assert caught.value.status == status
    assert text in caught.value.text


def test_parse_a_scheduled_switchover_keeps_the_instant_and_writes_it_in_iso() -> None:
    request = parse_switchover({"leader": "n1", "scheduled_at": "2030-01-01T13:00:00Z"}, "switchover", NOW)
    assert request == SwitchoverRequest("switchover", "n1", None, NOW + timedelta(hours=1))
    assert failover_value(request) == {"leader": "n1", "scheduled_at": "2030-01-01T13:00:00+00:00"}


def test_failover_value_has_only_the_fields_set() -> None:
    assert failover_value(SwitchoverRequest("failover", candidate="n2")) == {"member": "n2"}
    assert failover_value(SwitchoverRequest("switchover", "n1", "n2")) == {"leader": "n1", "member": "n2"}


SWITCH = SwitchoverRequest("switchover", leader="n1")


@pytest.mark.parametrize(
    ("cluster", "request_", "paused", "expected"),
    [
        (HEALTHY, SWITCH, False, None),
        (HEALTHY, SwitchoverRequest("switchover", "n1", "n3"), False, None),
        (HEALTHY, SwitchoverRequest("failover", candidate="n2"), False, None),
        (_cluster(_member("n2"), leader=None), SwitchoverRequest("failover", candidate="n2"), False, None),
        (HEALTHY, SwitchoverRequest("switchover", "n1", scheduled_at=NOW), True,
         ControlResult(400, "Can't schedule switchover in the paused state")),
        (HEALTHY, SWITCH, True,
         ControlResult(400, "Switchover is possible only to a specific candidate in a paused state")),
        (HEALTHY, SwitchoverRequest("switchover", "n1", "n2"), True, None),
        (HEALTHY, SwitchoverRequest("switchover", "n2"), False, ControlResult(412, "leader name does not match")),
        (_cluster(_member("n2"), leader=None), SWITCH, False, ControlResult(412, "leader name does not match")),
        (HEALTHY, SwitchoverRequest("switchover", "n1", "n9"), False, ControlResult(412, "candidate does not exists")),
        (_cluster(_member("n1", role="primary")), SWITCH, False,
         ControlResult(412, "switchover is not possible: cluster does not have members except leader")),
        (_cluster(_member("n1", role="primary"), _member("n2", nofailover=True), _member("n3", state="stopped")),
         SWITCH, False, ControlResult(412, "switchover is not possible: no good candidates have been found")),
        (_cluster(_member("n1", role="primary"), _member("n2", failover_priority=0)), SWITCH, False,
         ControlResult(412, "switchover is not possible: no good candidates have been found")),
        (_cluster(_member("n1", role="primary"), _member("n2"), config={"synchronous_mode": True}, sync=("n3",)),
         SwitchoverRequest("switchover", "n1", "n2"), False,
         ControlResult(412, "candidate name does not match with sync_standby")),
        (_cluster(_member("n1", role="primary"), _member("n2"), config={"synchronous_mode": "on"}, sync=()),
         SWITCH, False, ControlResult(412, "switchover is not possible: no good candidates have been found")),
        (_cluster(_member("n1", role="primary"), _member("n2"), config={"synchronous_mode": "on"}, sync=("n2",)),
         SWITCH, False, None),
    ],
)  # fmt: skip
def test_check_switchover(
    cluster: ClusterView, request_: SwitchoverRequest, paused: bool, expected: ControlResult | None
) -> None:
    assert check_switchover(cluster, request_, paused) == expected


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (_member("n2", nofailover=True), "switchover is not possible: no good candidates have been found"),
        (_member("n2", state="starting"), "switchover is not possible: no good candidates have been found"),
    ],
)
def test_a_named_candidate_must_be_promotable_and_running(member: Member, fragment: str) -> None:
    cluster = _cluster(_member("n1", role="primary"), member)
    result = check_switchover(cluster, SwitchoverRequest("switchover", "n1", "n2"), False)
    assert result is not None and result.status == 412 and fragment in result.text


def test_failover_to_the_current_leader_is_refused() -> None:
    result = check_switchover(HEALTHY, SwitchoverRequest("failover", candidate="n1"), False)
    assert result == ControlResult(412, 'candidate "n1" is already the leader')


def test_success_texts() -> None:
    assert success_text(SwitchoverRequest("switchover", "n1", "n2"), "n2") == 'Successfully switched over to "n2"'
    assert success_text(SWITCH, "n3") == 'Successfully switched over to "n3"'
    assert success_text(SwitchoverRequest("switchover", "n1", "n2"), "n3") == 'Switched over to "n3" instead of "n2"'
    assert success_text(SwitchoverRequest("failover", candidate="n2"), "n2") == 'Successfully failed over to "n2"'
    assert success_text(SwitchoverRequest("failover", candidate="n2"), "n3") == 'Failed over to "n3" instead of "n2"'


def test_wait_timeout_is_twice_max_of_ten_and_loop_wait() -> None:
    assert wait_timeout(2) == 20.0
    assert wait_timeout(30) == 60.0
