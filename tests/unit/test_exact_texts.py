"""Issue 12, item 9: the texts the contract lists (sections 2.3, 4 and 5), byte for byte, each produced by
the code path that produces it in the agent, the REST API or the CLI.

Runbooks, log alerts, HAProxy-side scripts and people grep for these strings; one table, one row per
text, so a change of wording anywhere shows up here.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from pgwarden.agent import control as agent_control
from pgwarden.agent import loop as agent_loop
from pgwarden.agent.uniqueness import duplicate_name_line
from pgwarden.api.control import ControlResult
from pgwarden.api.requests import Refusal
from pgwarden.api.switchover import SwitchoverRequest, check_switchover, parse_switchover, success_text
from pgwarden.cli import manage
from pgwarden.cli.listing import cluster_title, footer_lines
from pgwarden.cli.session import console
from pgwarden.config.schema import TagsConfig
from pgwarden.core import Decision, Memory, Outcome, render
from pgwarden.core.actions import Reinitialize, Wait
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.render import render_race
from pgwarden.model import ClusterView, LeaderKey, Member, SyncState, Tags, Versioned
from pgwarden.rest_client import RestReply

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _why(why: Why, **facts: str) -> Callable[[], str]:
    return lambda: render(Reason(why, tuple(facts.items())))


def _member(name: str, role: str = "replica", state: str = "running", **tags: Any) -> Member:
    return Member(name, role=role, state=state, tags=Tags(**tags))


def _cluster(*members: Member, leader: str | None = "n1", config: dict[str, Any] | None = None,
             sync: tuple[str, ...] | None = None) -> ClusterView:  # fmt: skip
    return ClusterView("demo", initialize="7000000000000000001", leader=LeaderKey(leader) if leader else None,
                       members=members, config=Versioned(config or {}, 1),
                       sync=SyncState(leader=leader, sync_standby=sync) if sync is not None else None)


HEALTHY = _cluster(_member("n1", role="primary"), _member("n2"), _member("n3"))
UNFIT = _cluster(_member("n1", role="primary"), _member("n2", nofailover=True), _member("n3", state="stopped"))


def _parse_refusal(body: dict[str, Any], action: Any) -> Callable[[], str]:
    def run() -> str:
        with pytest.raises(Refusal) as refused:
            parse_switchover(body, action, NOW)
        return refused.value.text

    return run


def _check(cluster: ClusterView, request: SwitchoverRequest, paused: bool = False) -> Callable[[], str]:
    def run() -> str:
        result = check_switchover(cluster, request, paused)
        assert result is not None
        return result.text

    return run


def _desk_refusal(why: Why, **facts: str) -> Callable[[], str]:
    return lambda: agent_control.refusal_text(Decision(Wait(), Reason(why, tuple(facts.items())), 0.0, Memory()))


def _desk_finished(ok: bool) -> Callable[[], str]:
    async def run() -> str:
        desk = agent_control.RequestDesk()
        future = desk.submit(agent_control.RestartRequested())
        assert future is not None
        desk.book.started = True  # the core chose to restart
        desk.finished(Outcome(action="restart", ok=ok, detail="pg_ctl: could not start server", sent_at=0.0))
        return (await future).text

    return lambda: asyncio.run(run())


class _Control:
    """Just enough of AgentControlImpl's collaborators for the answers that need no DCS."""

    def __init__(self, paused: bool = False) -> None:
        async def reload() -> str:
            return ""

        self.impl = agent_control.AgentControlImpl(
            dcs=None, desk=agent_control.RequestDesk(), cluster=lambda: None,  # type: ignore[arg-type]
            paused=lambda: paused, reload=reload, wake=lambda: None)


def _control_text(call: Callable[[agent_control.AgentControlImpl], Any], paused: bool = False,
                  twice: bool = False) -> Callable[[], str]:
    async def run() -> str:
        impl = _Control(paused).impl
        result: ControlResult = await call(impl)
        if twice:
            result = await call(impl)
        return result.text

    return lambda: asyncio.run(run())


def _restart_scheduled(impl: agent_control.AgentControlImpl) -> Any:
    return impl.restart(agent_control.RestartRequest(schedule="2030-01-01T12:00:00+00:00"))


async def _schedule_then_cancel(impl: agent_control.AgentControlImpl) -> ControlResult:
    await _restart_scheduled(impl)
    return await impl.cancel_scheduled_restart()


def _reinit_started() -> str:
    async def run() -> str:
        desk = agent_control.RequestDesk()
        future = desk.submit(agent_control.ReinitRequested())
        assert future is not None
        decision = Decision(Reinitialize(source="n1", follow="n1"), Reason(Why.REINITIALIZE), 0.0, Memory())
        request = desk.book.request
        assert request is not None
        desk.answer(request, desk.book.decided(decision), decision)
        return (await future).text

    return asyncio.run(run())


def _cli(call: Callable[[], Any]) -> Callable[[], str]:
    def run() -> str:
        with console.capture() as captured:
            call()
        return captured.get().rstrip("\n")

    return run


def _cli_report(action: str, status: int = 200) -> Callable[[], str]:
    return _cli(lambda: manage._report(action, _member("n2"), RestReply(status, "ok")))


# (contract section, the text, what produces it)
TEXTS: list[tuple[str, str, Callable[[], str]]] = [
    # 2.1 / 2.3: the HA loop's lines
    ("2.1", "Unexpected exception raised, please report it as a BUG",
     lambda: "Unexpected exception raised, please report it as a BUG" if
     '"Unexpected exception raised, please report it as a BUG"' in inspect.getsource(agent_loop.Agent._cycle_failed)
     else "missing"),
    ("2.3", "no action. I am (n1), the leader with the lock", _why(Why.LOCK_HELD, name="n1")),
    ("2.3", "promoted self to leader because I had the session lock", _why(Why.PROMOTE_WITH_LOCK, name="n1")),
    ("2.3", "switchover: demoting myself", _why(Why.SWITCHOVER_DEMOTE, op="switchover")),
    ("2.3", "manual failover: demoting myself", _why(Why.SWITCHOVER_DEMOTE, op="manual failover")),
    ("2.3", "demoted self because failed to update leader lock in DCS", _why(Why.LOCK_LOST)),
    ("2.3", "removed leader lock because postgres is not running as primary", _why(Why.PAUSED_RELEASE)),
    ("2.3", "updated leader lock during restart", _why(Why.TASK_IN_PROGRESS_RENEW, task="restart")),
    ("2.3", "stopped PostgreSQL because of startup timeout", _why(Why.START_TIMEOUT, timeout="300")),
    ("2.3", "no action. I am (n2), a secondary, and following a leader (n1)",
     _why(Why.FOLLOWING, name="n2", leader="n1")),
    ("2.3", "demoting self because I do not have the lock and I was a leader",
     _why(Why.NOT_LEADER_PRIMARY, leader="n3")),
    ("2.3", "continue to run as primary without lock", _why(Why.PAUSED_PRIMARY_WITHOUT_LOCK)),
    ("2.3", "no action. I am (n2)", _why(Why.PAUSED_NO_ACTION, name="n2")),
    ("2.3", "running pg_rewind from n1", _why(Why.REWIND, leader="n1")),
    ("2.3", "reinitializing due to diverged timelines", _why(Why.DIVERGED_REMOVE)),
    ("2.3", "clone in progress", _why(Why.TASK_IN_PROGRESS, task="clone")),
    ("2.3", "promoted self to leader by acquiring session lock",
     lambda: render_race(Reason(Why.RACE_HEALTHIEST), True)),
    ("2.3", "acquired session lock as a leader", lambda: render_race(Reason(Why.RACE_PRIMARY_RECLAIM), True)),
    ("2.3", "following new leader after trying and failing to obtain lock",
     lambda: render_race(Reason(Why.RACE_HEALTHIEST), False, "somebody else holds the leader key")),
    ("2.3", "following a different leader because i am not the healthiest node",
     _why(Why.RACE_NOT_HEALTHIEST, member="n3")),
    ("2.3", "following a different leader because I am not allowed to promote", _why(Why.RACE_NOFAILOVER)),
    ("2.3", "starting primary after failure", _why(Why.START_PRIMARY_AFTER_CRASH)),
    ("2.3", "starting as readonly because i had the session lock", _why(Why.START_READONLY_WITH_LOCK)),
    ("2.3", "starting as a secondary", _why(Why.START_REPLICA)),
    ("2.3", "removed leader key after trying and failing to start postgres", _why(Why.START_FAILED_RELEASE)),
    ("2.3", "postgres is not running", _why(Why.PAUSED_PG_STOPPED, state="stopped")),
    ("2.3", "stopped PostgreSQL to fail over after a crash", _why(Why.CRASH_FAILOVER)),
    ("2.3", "trying to bootstrap a new cluster", _why(Why.BOOTSTRAP)),
    ("2.3", "trying to bootstrap from leader 'n1'", _why(Why.CLONE_FROM_LEADER, member="n1")),
    ("2.3", "trying to bootstrap from replica 'n3'", _why(Why.CLONE_FROM_REPLICA, member="n3")),
    ("2.3", "waiting for leader to bootstrap", _why(Why.WAIT_FOR_BOOTSTRAP)),
    ("2.3", "released leader key voluntarily as data dir empty and currently leader",
     _why(Why.EMPTY_DATA_WITH_LOCK, data_dir="empty")),
    ("2.3", "released leader key voluntarily as data dir not accessible and currently leader",
     _why(Why.EMPTY_DATA_WITH_LOCK, data_dir="not accessible")),
    ("2.3", "demoted self because DCS is not accessible and I was a leader", _why(Why.LEASE_AT_RISK)),
    ("2.3", "DCS is not accessible", _why(Why.DCS_DOWN)),
    # Patroni's start-up and configuration warnings (items 1 and 9 of issue 12)
    ("1", "Can't start; there is already a node named 'node1' running", lambda: duplicate_name_line("node1")),
    ("6.2", "Conflicting configuration between nofailover: True and failover_priority: 1. Defaulting to nofailover: "
     "True",
     lambda: TagsConfig(nofailover=True, failover_priority=1).conflicts()[0]),
    ("6.2", "Conflicting configuration between nofailover: False and failover_priority: 0. Defaulting to nofailover: "
     "False", lambda: TagsConfig(nofailover=False, failover_priority=0).conflicts()[0]),
    ("6.2", "Conflicting configuration between nosync: True and sync_priority: 1. Defaulting to nosync: True",
     lambda: TagsConfig(nosync=True, sync_priority=1).conflicts()[0]),
    ("6.2", "Conflicting configuration between nosync: False and sync_priority: 0. Defaulting to nosync: False",
     lambda: TagsConfig(nosync=False, sync_priority=0).conflicts()[0]),
    # 4.4: REST answers
    ("4.4", "Failover could be performed only to a specific candidate", _parse_refusal({"leader": "n1"}, "failover")),
    ("4.4", "Switchover could be performed only from a specific leader",
     _parse_refusal({"candidate": "n2"}, "switchover")),
    ("4.4", "Switchover target and source are the same",
     _parse_refusal({"leader": "n1", "candidate": "n1"}, "switchover")),
    ("4.4", "Can't schedule switchover in the paused state",
     _check(HEALTHY, SwitchoverRequest("switchover", "n1", "n2", NOW), paused=True)),
    ("4.4", "Switchover is possible only to a specific candidate in a paused state",
     _check(HEALTHY, SwitchoverRequest("switchover", "n1"), paused=True)),
    ("4.4", "leader name does not match", _check(HEALTHY, SwitchoverRequest("switchover", "n2", "n3"))),
    ("4.4", "candidate name does not match with sync_standby",
     _check(_cluster(_member("n1", role="primary"), _member("n2"), config={"synchronous_mode": "on"}, sync=()),
            SwitchoverRequest("switchover", "n1", "n2"))),
    ("4.4", "candidate does not exists", _check(HEALTHY, SwitchoverRequest("switchover", "n1", "n9"))),
    ("4.4", "switchover is not possible: cluster does not have members except leader",
     _check(_cluster(_member("n1", role="primary")), SwitchoverRequest("switchover", "n1"))),
    ("4.4", "switchover is not possible: no good candidates have been found",
     _check(UNFIT, SwitchoverRequest("switchover", "n1"))),
    ("4.4", "failover is not possible: no good candidates have been found",
     _check(UNFIT, SwitchoverRequest("failover", candidate="n2"))),
    ("4.4", "failover is not possible: no good candidates have been found",
     _check(UNFIT, SwitchoverRequest("failover", candidate="n3"))),
    ("4.4", 'Successfully switched over to "n2"', lambda: success_text(SwitchoverRequest("switchover", "n1"), "n2")),
    ("4.4", 'Switched over to "n3" instead of "n2"',
     lambda: success_text(SwitchoverRequest("switchover", "n1", "n2"), "n3")),
    ("4.4", "restarted successfully", _desk_finished(True)),
    ("4.4", "restart failed", _desk_finished(False)),
    ("4.4", "restart conditions are not satisfied",
     _desk_refusal(Why.RESTART_REFUSED, detail="role is replica, not primary")),
    ("4.4", "postgres is still starting", _desk_refusal(Why.RESTART_REFUSED, detail="postgres is still starting")),
    ("4.4", "Restart scheduled", _control_text(_restart_scheduled)),
    ("4.4", "Another restart is already scheduled", _control_text(_restart_scheduled, twice=True)),
    ("4.4", "Can't schedule restart in the paused state", _control_text(_restart_scheduled, paused=True)),
    ("4.4", "no restarts are scheduled", _control_text(lambda c: c.cancel_scheduled_restart())),
    ("4.4", "scheduled restart deleted", _control_text(_schedule_then_cancel)),
    ("4.4", "reinitialize started", _reinit_started),
    ("4.4", "I am the leader, can not reinitialize",
     _desk_refusal(Why.REINITIALIZE_REFUSED, detail="I am the leader, can not reinitialize")),
    ("4.4", "Cluster has no leader, can not reinitialize",
     _desk_refusal(Why.REINITIALIZE_REFUSED, detail="Cluster has no leader, can not reinitialize")),
    ("4.4", "reinitialize already in progress", _desk_refusal(Why.TASK_IN_PROGRESS, task="reinitialize")),
    ("4.4", "reload scheduled", _control_text(lambda c: c.reload())),
    # 5: patronictl's lines
    ("5", "Success: restart on member n2", _cli_report("restart")),
    ("5", "Success: reinitialize for member n2", _cli_report("reinitialize")),
    ("5", "Success: cluster management is paused",
     lambda: "Success: cluster management is paused"
     if 'console.print(f"[green]Success:[/green] cluster management is {state}")' in inspect.getsource(manage)
     and '"paused"' in inspect.getsource(manage) else "missing"),
    ("5", "Maintenance mode: on", lambda: footer_lines(_cluster(_member("n1"), config={"pause": True}))[0]
     .removeprefix("[yellow]").removesuffix("[/yellow]")),
    ("5", "Cluster: demo (7000000000000000001)", lambda: cluster_title(HEALTHY)),
    ("5", "Could not switchover using Patroni api, falling back to DCS",
     lambda: "Could not switchover using Patroni api, falling back to DCS"
     if '"Could not switchover using Patroni api, falling back to DCS"' in inspect.getsource(manage) else "missing"),
]


@pytest.mark.parametrize(("section", "text", "produce"), TEXTS, ids=[f"{s}: {t}" for s, t, _ in TEXTS])
def test_text_is_patronis(section: str, text: str, produce: Callable[[], str]) -> None:
    assert produce() == text


def test_reinitialize_refusal_keeps_pgwardens_log_line() -> None:
    """The REST answer is Patroni's bare text; the agent's log line still says what was refused."""
    reason = Reason(Why.REINITIALIZE_REFUSED, (("detail", "I am the leader, can not reinitialize"),))
    assert render(reason) == "reinitialize refused: I am the leader, can not reinitialize"


def test_conflicting_tags_resolve_as_patroni_does() -> None:
    assert not TagsConfig(nofailover=True, failover_priority=1).to_tags().can_promote
    assert TagsConfig(nofailover=False, failover_priority=0).to_tags().can_promote
    assert not TagsConfig(failover_priority=0).to_tags().can_promote
    assert TagsConfig(nofailover=True, failover_priority=0).conflicts() == []
    assert TagsConfig(nofailover=False, failover_priority=2).conflicts() == []
    assert TagsConfig(nosync=False, sync_priority=0).to_tags().sync_priority == 1


def test_the_agent_logs_conflicting_tags_verbatim(caplog: pytest.LogCaptureFixture) -> None:
    line = TagsConfig(nofailover=True, failover_priority=1).conflicts()[0]
    with caplog.at_level("WARNING", logger="pgwarden"):
        agent_loop.log_config_warning(line)
        agent_loop.log_config_warning("ttl=5 is below the minimum 20; using 20")
    assert [r.getMessage() for r in caplog.records] == [line, "configuration: ttl=5 is below the minimum 20; using 20"]
