"""`pgwarden migrate`'s pure half: telling the agents apart, the checks, the plan and who does what."""

from __future__ import annotations

import os

from pgwarden.agent.member import member_json
from pgwarden.cli.migrate import (
    PATRONI,
    PGWARDEN,
    UNREACHABLE,
    HostCommands,
    MemberFacts,
    Step,
    agent_of,
    cluster_problems,
    config_problems,
    lag_of,
    local_step,
    member_healthy,
    other_hosts_advice,
    plan,
    timing_note,
)
from pgwarden.model import DataDirState, LocalPg, Tags


def facts(leader: str = "n1", pgwarden: tuple[str, ...] = (), **changes: MemberFacts) -> list[MemberFacts]:
    """Three healthy members; `pgwarden` names the ones already migrated."""
    out = []
    for name in ("n1", "n2", "n3"):
        agent = PGWARDEN if name in pgwarden else PATRONI
        if name == leader:
            out.append(MemberFacts(name, agent, role="primary", state="running", leader=True))
        else:
            out.append(MemberFacts(name, agent, role="replica", state="running", streaming=True, lag=0))
    return [changes.get(f.name, f) for f in out]


def test_the_server_header_tells_pgwarden_from_patroni() -> None:
    assert agent_of("pgwarden/0.1.0 Python/3.11.2") == PGWARDEN
    assert agent_of("pgwarden") == PGWARDEN  # server_tokens: ProductOnly
    assert agent_of("BaseHTTP/0.6 Python/3.11.2") == PATRONI
    assert agent_of(None) == PATRONI


def test_lag_is_measured_from_the_furthest_received_or_replayed_position() -> None:
    status = {"xlog": {"received_location": 900, "replayed_location": 800}}
    assert lag_of(status, 1000) == 100
    assert lag_of(status, 850) == 0  # the leader's answer was older than the replica's
    assert lag_of({"xlog": {"location": 5}}, 1000) is None
    assert lag_of(status, None) is None


def test_refused_settings_of_the_file_and_of_config_stop_the_migration() -> None:
    refused, _ = config_problems({"scope": "s", "name": "n1", "citus": {"group": 0, "database": "d"}},
                                 {"ttl": 30, "slots": {"logical": {"type": "logical", "database": "d",
                                                                   "plugin": "pgoutput"}}})
    assert any(line.startswith("citus") for line in refused), refused
    assert any(line.startswith("/config: slots") for line in refused), refused


def test_a_plain_patroni_configuration_passes() -> None:
    refused, warned = config_problems({"scope": "s", "name": "n1", "etcd3": {"hosts": "127.0.0.1:2379"}},
                                      {"ttl": 30, "loop_wait": 10, "retry_timeout": 10})
    assert refused == [] and warned == []


def test_a_healthy_cluster_has_no_problems() -> None:
    assert cluster_problems(facts(), paused=False, max_lag=1048576) == []


def test_every_unhealthy_member_is_named() -> None:
    bad = facts(n2=MemberFacts("n2", UNREACHABLE),
                n3=MemberFacts("n3", PATRONI, role="replica", state="running", streaming=True, lag=5000))
    problems = cluster_problems(bad, paused=True, max_lag=1000)
    assert any("paused" in p for p in problems)
    assert any(p.startswith("n2: its REST API does not answer") for p in problems)
    assert any(p.startswith("n3: 5000 bytes behind") for p in problems)


def test_no_leader_or_a_stopped_replica_is_a_problem() -> None:
    leaderless = [MemberFacts(f.name, f.agent, role="replica", state="running", streaming=True, lag=0)
                  for f in facts()]
    assert cluster_problems(leaderless, paused=False, max_lag=0) == [
        "the cluster has 0 leaders; it needs exactly one to migrate"]
    stopped = facts(n3=MemberFacts("n3", PATRONI, role="replica", state="stopped"))
    assert cluster_problems(stopped, paused=False, max_lag=0) == ["n3: not a streaming replica (state stopped)"]


def test_the_plan_is_replicas_then_the_switchover_then_the_old_leader() -> None:
    assert plan(facts()) == [Step("n2", "replace"), Step("n3", "replace"), Step("n2", "switchover"),
                             Step("n1", "replace")]
    assert plan(facts(), candidate="n3")[2] == Step("n3", "switchover")


def test_finished_steps_are_marked_done() -> None:
    half = plan(facts(pgwarden=("n3",)))
    assert half == [Step("n2", "replace"), Step("n3", "replace", done=True), Step("n3", "switchover"),
                    Step("n1", "replace")]
    after_switchover = plan(facts(leader="n2", pgwarden=("n2", "n3")))
    assert [s.done for s in after_switchover] == [False, True, True, True]
    assert after_switchover[0] == Step("n1", "replace")


def test_a_replica_host_does_its_step_at_once() -> None:
    steps = plan(facts())
    assert local_step(steps, "n3") == (Step("n3", "replace"), [])


def test_the_leader_host_waits_for_the_replicas_then_switches_over() -> None:
    steps = plan(facts())
    step, before = local_step(steps, "n1")
    assert step == Step("n2", "switchover")
    assert before == [Step("n2", "replace"), Step("n3", "replace")]
    ready = plan(facts(pgwarden=("n2", "n3")))
    assert local_step(ready, "n1") == (Step("n2", "switchover"), [])


def test_a_migrated_host_has_nothing_left_to_do() -> None:
    assert local_step(plan(facts(pgwarden=("n2",))), "n2") == (None, [])


def test_other_hosts_are_told_what_to_run_in_order() -> None:
    steps = plan(facts(pgwarden=("n2",)))
    assert other_hosts_advice(steps, "n2", "CMD") == ["on n3: CMD", "on n1: CMD"]


def test_exactly_one_way_to_stop_and_to_start_is_required() -> None:
    assert HostCommands(patroni_unit="patroni", pgwarden_unit="pgwarden").missing() == []
    assert len(HostCommands().missing()) == 2
    assert len(HostCommands(patroni_unit="p", patroni_pid=1, start_command="x").missing()) == 1


def test_health_after_a_step_needs_the_new_agent_streaming_within_the_lag() -> None:
    check = member_healthy("n2", PGWARDEN, 1000)
    assert check(facts(pgwarden=("n2",))) is None
    assert check(facts()) == "n2 answers as patroni, not pgwarden"
    lagging = MemberFacts("n2", PGWARDEN, role="replica", state="running", streaming=True, lag=2000)
    assert check(facts(n2=lagging)) == "n2 lags 2000 bytes"
    starting = MemberFacts("n2", PGWARDEN, role="replica", state="starting")
    assert check(facts(n2=starting)) == "n2 does not stream (state starting)"


def test_the_timing_note_gives_both_leases() -> None:
    assert "lives 30s" in timing_note({"ttl": 30}) and "pgwarden leader's 7s" in timing_note({"ttl": 30})
    assert "pgwarden leader's 20s" in timing_note({"ttl": 20, "pgwarden": {"lease_ttl": None}})
    assert "lives 30s" in timing_note(None)


def test_the_member_key_speaks_patronis_protocol_to_patroni_members() -> None:
    """A Patroni member reads `version` as a Patroni release (an old one writes legacy keys for it) and
    waits for `checkpoint_after_promote` to clear before pg_rewind against a new leader."""
    primary = LocalPg(DataDirState.VALID, running=True, accepting=True, in_recovery=False, wal_lsn=100, timeline=2)
    steady = member_json(pg=primary, conn_url="c", api_url="a", tags=Tags(), task=None)
    assert steady["version"] == "4.1.5" and "checkpoint_after_promote" not in steady
    promoting = member_json(pg=primary, conn_url="c", api_url="a", tags=Tags(), task="promote")
    assert promoting["checkpoint_after_promote"] is False


def test_a_pid_that_is_not_patroni_is_never_signalled() -> None:
    from pgwarden.cli.migrate import _runs_patroni

    assert not _runs_patroni(os.getpid())  # pytest, not Patroni
    assert not _runs_patroni(2**22 + 1)  # no such process
