"""The cluster commands end to end against a real etcd and tiny real HTTP servers playing the members.

Each fake member is an aiohttp server (in a thread) that records the requests it gets and answers what
the test tells it to, with the contract's status codes and texts; the cluster keys live in a real etcd.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from pgwarden import aio
from pgwarden.cli.main import main
from pgwarden.dcs.etcd3 import Etcd3Dcs
from tests.support.etcd import EtcdServer

SCOPE = "unit"


@dataclass
class FakeMember:
    """A member's REST API: `answers[(METHOD, path)] = (status, text)`; requests are recorded."""

    name: str
    answers: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any, str | None]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append((request.method, request.path, json.loads(body) if body else None,
                              request.headers.get("Authorization")))
        status, text = self.answers.get((request.method, request.path), (501, "not implemented"))
        return web.Response(status=status, text=text)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/patroni"


class FakeMembers:
    """Serves several FakeMembers from one event loop thread; stopped by `close()`."""

    def __init__(self, names: list[str]) -> None:
        self.members = {name: FakeMember(name) for name in names}
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        for member in self.members.values():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", member.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            member.port = runner.addresses[0][1]
            self.runners.append(runner)

    async def _stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _publish(etcd: EtcdServer, members: FakeMembers, leader: str, config: dict[str, Any]) -> None:
    """Write the member keys, the leader key and /config as agents would."""
    for index, member in enumerate(members.members.values()):
        dcs = Etcd3Dcs(hosts=[etcd.host], namespace="/service", scope=SCOPE, name=member.name, ttl=60)
        await dcs.connect()
        role = "primary" if member.name == leader else "replica"
        data = {"conn_url": f"postgres://127.0.0.1:{5432 + index}/postgres", "api_url": member.api_url,
                "state": "running", "role": role, "version": "0.1.0", "timeline": 1, "xlog_location": 1000}
        if role == "replica":
            data["replication_state"] = "streaming"
        await dcs.touch_member(data)
        if member.name == leader:
            await dcs.initialize("7000000000000000001")
            await dcs.acquire_leader()
            await dcs.set_config(config, 0)
        await dcs.close()


async def _read_cluster(etcd: EtcdServer) -> Any:
    dcs = Etcd3Dcs(hosts=[etcd.host], namespace="/service", scope=SCOPE, name="reader", ttl=60, readonly=True)
    try:
        return await dcs.get_cluster()
    finally:
        await dcs.close()


@pytest.fixture
def world(etcd: EtcdServer) -> Iterator[tuple[EtcdServer, dict[str, FakeMember]]]:
    members = FakeMembers(["a", "b", "c"])
    try:
        aio.run(_publish(etcd, members, "a", {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}))
        yield etcd, members.members
    finally:
        members.close()


def cli(etcd: EtcdServer, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    url = f"etcd3://127.0.0.1:{etcd.client_port}/service"
    return CliRunner().invoke(main, ["-d", url, *args], input=stdin, env=env, catch_exceptions=False)


def test_list_json_reads_the_members(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world
    result = cli(etcd, "list", SCOPE, "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["Member"], r["Role"], r["State"]) for r in rows] == [
        ("a", "Leader", "running"), ("b", "Replica", "streaming"), ("c", "Replica", "streaming")]


def test_switchover_posts_to_the_leader_with_credentials(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, members = world
    members["a"].answers[("POST", "/switchover")] = (200, 'Successfully switched over to "b"')
    env = {"PATRONI_CTL_USERNAME": "admin", "PATRONI_CTL_PASSWORD": "secret"}
    result = cli(etcd, "switchover", SCOPE, "--candidate", "b", "--force", env=env)
    assert result.exit_code == 0, result.output
    assert 'Successfully switched over to "b"' in result.output
    method, path, body, auth = members["a"].requests[-1]
    assert (method, path, body) == ("POST", "/switchover", {"leader": "a", "candidate": "b"})
    assert auth == "Basic " + base64.b64encode(b"admin:secret").decode()


def test_switchover_asks_for_missing_values_and_confirms(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, members = world
    members["a"].answers[("POST", "/switchover")] = (202, "Switchover scheduled")
    result = cli(etcd, "switchover", SCOPE, stdin="a\nc\n2099-01-01T10:00+00:00\ny\n")
    assert result.exit_code == 0, result.output
    assert "Cluster: unit (7000000000000000001)" in result.output and "Switchover scheduled" in result.output
    expected = {"leader": "a", "candidate": "c", "scheduled_at": "2099-01-01T10:00:00+00:00"}
    assert members["a"].requests[-1][2] == expected


def test_switchover_refusal_is_an_error(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, members = world
    members["a"].answers[("POST", "/switchover")] = (412, "candidate name does not match with sync_standby")
    result = cli(etcd, "switchover", SCOPE, "--candidate", "b", "--force")
    assert result.exit_code == 1
    assert "Error: switchover failed: 412 candidate name does not match with sync_standby" in result.output


def test_switchover_falls_back_to_the_dcs_without_the_endpoint(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world  # the fake answers 501 to everything not configured
    result = cli(etcd, "switchover", SCOPE, "--candidate", "b", "--force")
    assert result.exit_code == 0, result.output
    assert "Could not switchover using Patroni api, falling back to DCS" in result.output
    failover = aio.run(_read_cluster(etcd)).failover
    assert (failover.leader, failover.member) == ("a", "b")


def test_switchover_checks_the_leader_name(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world
    result = cli(etcd, "switchover", SCOPE, "--leader", "b", "--candidate", "c", "--force")
    assert result.exit_code == 1 and "b is not the leader" in result.output


def test_restart_reports_each_member_and_fails_if_one_fails(
        world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, members = world
    members["b"].answers[("POST", "/restart")] = (200, "restarted successfully")
    members["c"].answers[("POST", "/restart")] = (503, "restart failed")
    result = cli(etcd, "restart", SCOPE, "-r", "replica", "--pending", "--pg-version", "16", "--force")
    assert result.exit_code == 1
    assert "Success: restart on member b" in result.output
    assert "Failed: restart for member c, status code=503, (restart failed)" in result.output
    assert members["b"].requests[-1][2] == {"postgres_version": "16", "restart_pending": True}
    assert not members["a"].requests


def test_failover_warns_about_an_async_candidate_in_sync_mode(etcd: EtcdServer) -> None:
    fakes = FakeMembers(["a", "b"])
    try:
        aio.run(_publish(etcd, fakes, "a", {"synchronous_mode": True}))
        fakes.members["a"].answers[("POST", "/failover")] = (200, 'Successfully failed over to "b"')
        result = cli(etcd, "failover", SCOPE, "--candidate", "b", stdin="n\n")
        assert result.exit_code == 1 and "is not a synchronous standby" in result.output
        assert not fakes.members["a"].requests
        result = cli(etcd, "failover", SCOPE, "--candidate", "b", "--force")
        assert result.exit_code == 0 and fakes.members["a"].requests[-1][2] == {"candidate": "b"}
        # patronictl 3's --leader/--primary is checked, never ignored, and passed on for the leader to check.
        sent = len(fakes.members["a"].requests)
        result = cli(etcd, "failover", SCOPE, "--candidate", "b", "--leader", "c", "--force")
        assert result.exit_code == 1 and "c is not the leader of cluster" in result.output
        assert len(fakes.members["a"].requests) == sent
        result = cli(etcd, "failover", SCOPE, "--candidate", "b", "--primary", "a", "--force")
        assert result.exit_code == 0 and fakes.members["a"].requests[-1][2] == {"candidate": "b", "leader": "a"}
    finally:
        fakes.close()


def test_pause_patches_config_on_the_leader_first(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, members = world
    members["a"].answers[("PATCH", "/config")] = (200, "{}")
    result = cli(etcd, "pause", SCOPE)
    assert result.exit_code == 0 and "Success: cluster management is paused" in result.output
    assert members["a"].requests[-1][:3] == ("PATCH", "/config", {"pause": True})
    result = cli(etcd, "resume", SCOPE)
    assert result.exit_code == 1 and "Error: Cluster is not paused" in result.output


def test_edit_config_writes_with_cas_and_refuses_invalid(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world
    result = cli(etcd, "edit-config", SCOPE, "-s", "loop_wait=5", "-p", "work_mem=8MB", "--force")
    assert result.exit_code == 0, result.output
    assert "+loop_wait: 5" in result.output and "Configuration changed" in result.output
    config = aio.run(_read_cluster(etcd)).config.value
    assert config["loop_wait"] == 5 and config["postgresql"]["parameters"]["work_mem"] == "8MB"
    result = cli(etcd, "edit-config", SCOPE, "-s", "ttl=abc", "--force")
    assert result.exit_code == 1 and "ttl: expected an integer" in result.output
    assert aio.run(_read_cluster(etcd)).config.value["ttl"] == 30


def test_edit_config_apply_patch_from_stdin(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world
    result = cli(etcd, "edit-config", SCOPE, "--apply", "-", "--force", "-q", stdin="retry_timeout: null\n")
    assert result.exit_code == 0, result.output
    assert "retry_timeout" not in aio.run(_read_cluster(etcd)).config.value


def test_flush_switchover_falls_back_to_deleting_the_key(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world
    cli(etcd, "switchover", SCOPE, "--candidate", "b", "--scheduled", "2099-01-01T00:00+00:00", "--force")
    assert aio.run(_read_cluster(etcd)).failover is not None
    result = cli(etcd, "flush", SCOPE, "switchover", "--force")
    assert result.exit_code == 0 and "scheduled switchover deleted" in result.output
    assert aio.run(_read_cluster(etcd)).failover is None


def test_remove_needs_typed_confirmations(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    etcd, _ = world
    result = cli(etcd, "remove", SCOPE, stdin="wrong\n")
    assert result.exit_code == 1 and "nothing was changed" in result.output


async def _touch(etcd: EtcdServer, name: str, data: dict[str, Any]) -> None:
    dcs = Etcd3Dcs(hosts=[etcd.host], namespace="/service", scope=SCOPE, name=name, ttl=60)
    await dcs.connect()
    await dcs.touch_member(data)
    await dcs.close()


def test_list_to_a_pipe_prints_every_cell_in_full(world: tuple[EtcdServer, dict[str, FakeMember]]) -> None:
    """Issue 11: with stdout not a terminal (a script, a CI log), `list` cut cells short (`127.0.0…`,
    `streami…`). It prints full width there, as patronictl does."""
    etcd, _ = world
    host = "replica-with-a-long-name.rack-17.datacenter-east.example.internal"
    aio.run(_touch(etcd, "d-member-with-a-long-name", {
        "conn_url": f"postgres://{host}:6543/postgres", "api_url": "http://127.0.0.1:1/patroni",
        "state": "running", "role": "replica", "replication_state": "in archive recovery", "timeline": 1,
        "xlog_location": 1000, "pending_restart": True,
        "tags": {"nofailover": True, "clonefrom": True, "datacenter": "east-with-a-long-name-as-well"}}))
    url = f"etcd3://127.0.0.1:{etcd.client_port}/service"
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    done = subprocess.run([sys.executable, "-m", "pgwarden.cli.entry", "-d", url, "list", SCOPE, "-e"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout, done.stdout
    for text in (f"{host}:6543", "in archive recovery", "streaming", "d-member-with-a-long-name",
                 "east-with-a-long-name-as-well", "127.0.0.1:5433"):
        assert text in done.stdout, done.stdout


def test_unknown_cluster_and_missing_dcs_are_errors(etcd: EtcdServer) -> None:
    result = cli(etcd, "history", "nosuch")
    assert result.exit_code == 1 and "Error: cluster 'nosuch' not found" in result.output
    result = CliRunner().invoke(main, ["list", "x"], env={"PATRONI_CONFIGURATION": ""})
    assert result.exit_code == 1 and "Error: no DCS to read" in result.output
