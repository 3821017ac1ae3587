"""The management endpoints through the real server, against a real etcd, with a fake agent.

The fake `AgentControl` records what the handlers ask of the agent and plays the agent's part in a
switchover (it reads the failover key the handler wrote, then reports a new leader or none).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

from pgwarden.api.control import AgentControl, ControlResult, RestartRequest
from pgwarden.api.management import ManagementSettings, management_routes
from pgwarden.api.server import build_app
from pgwarden.api.state import StateHolder
from pgwarden.dcs.base import Dcs
from pgwarden.dcs.etcd3 import Etcd3Dcs
from pgwarden.localcluster.etcd import etcd_available
from pgwarden.model import ClusterView, LeaderKey
from tests.support.etcd import EtcdServer
from tests.unit.test_api_metrics import PRIMARY

NAMESPACE = "/service"
CONFIG = {"ttl": 30, "loop_wait": 2, "retry_timeout": 5, "postgresql": {"parameters": {"max_connections": 100}}}
_scopes = itertools.count()

Client = TestClient[web.Request, web.Application]


class FakeControl:
    """AgentControl for tests: answers with canned results and records every call."""

    def __init__(self, dcs: Dcs) -> None:
        self._dcs = dcs
        self.calls: list[tuple[Any, ...]] = []
        self.wakeups = 0
        self.on_wait: Callable[[str | None], Awaitable[ClusterView | None]] | None = None

    @property
    def dcs(self) -> Dcs:
        return self._dcs

    @property
    def member_names(self) -> tuple[str, ...]:
        return ("n1", "n2", "n3")

    async def restart(self, request: RestartRequest) -> ControlResult:
        self.calls.append(("restart", request))
        return (
            ControlResult(202, "Restart scheduled")
            if request.schedule
            else ControlResult(200, "restarted successfully")
        )

    async def cancel_scheduled_restart(self) -> ControlResult:
        self.calls.append(("cancel_restart",))
        return ControlResult(404, "no restarts are scheduled")

    async def reload(self) -> ControlResult:
        self.calls.append(("reload",))
        return ControlResult(202, "reload scheduled")

    async def reinitialize(self, *, force: bool, from_leader: bool) -> ControlResult:
        self.calls.append(("reinitialize", force, from_leader))
        return ControlResult(200, "reinitialize started")

    def wakeup(self) -> None:
        self.wakeups += 1

    async def wait_for_new_leader(self, old: str | None, timeout: float) -> ClusterView | None:
        self.calls.append(("wait", old, timeout))
        return await self.on_wait(old) if self.on_wait else None


@pytest.fixture(scope="module")
def shared_etcd() -> Iterator[EtcdServer]:
    if not etcd_available():
        pytest.skip("etcd binary not available")
    with EtcdServer.start() as server:
        yield server


@pytest.fixture
async def make_dcs(shared_etcd: EtcdServer) -> AsyncIterator[Callable[[str], Awaitable[Etcd3Dcs]]]:
    scope = f"api{next(_scopes)}"
    created: list[Etcd3Dcs] = []

    async def make(name: str) -> Etcd3Dcs:
        dcs = Etcd3Dcs(hosts=[shared_etcd.host], namespace=NAMESPACE, scope=scope, name=name, ttl=30)
        await dcs.connect()
        created.append(dcs)
        return dcs

    yield make
    for dcs in created:
        await dcs.close()


def member_json(name: str, role: str = "replica", **extra: Any) -> dict[str, Any]:
    return {"conn_url": f"postgres://127.0.0.1:5432/{name}", "api_url": "http://127.0.0.1:8008/patroni",
            "state": "running", "role": role, "version": "0.1.0", **extra}  # fmt: skip


@pytest.fixture
async def cluster_dcs(make_dcs: Callable[[str], Awaitable[Etcd3Dcs]]) -> Etcd3Dcs:
    """A scope with /config, leader n1 (primary) and replicas n2, n3; returns the API node's client."""
    n1, n2, n3 = await make_dcs("n1"), await make_dcs("n2"), await make_dcs("n3")
    assert await n1.set_config(CONFIG, 0)
    assert await n1.acquire_leader()
    await n1.touch_member(member_json("n1", "primary"))
    await n2.touch_member(member_json("n2"))
    await n3.touch_member(member_json("n3"))
    return n1


@pytest.fixture
def control(cluster_dcs: Etcd3Dcs) -> FakeControl:
    return FakeControl(cluster_dcs)


@pytest.fixture
def holder() -> StateHolder:
    return StateHolder(PRIMARY)


@pytest.fixture
async def client(control: FakeControl, holder: StateHolder) -> AsyncIterator[Client]:
    routes = management_routes(cast(AgentControl, control), ManagementSettings(dcs_timeout=5))
    app = build_app(holder, routes=routes)
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def _stored_failover(dcs: Dcs) -> dict[str, Any] | None:
    failover = (await dcs.get_cluster()).failover
    if failover is None:
        return None
    fields = {"leader": failover.leader, "member": failover.member, "scheduled_at": failover.scheduled_at}
    return {k: v for k, v in fields.items() if v is not None}


# -- /config --------------------------------------------------------------------------------------


async def test_get_config(client: Client) -> None:
    response = await client.get("/config")
    assert (response.status, await response.json()) == (200, CONFIG)


async def test_get_config_without_a_config_key_is_502(make_dcs: Callable[[str], Awaitable[Etcd3Dcs]]) -> None:
    empty = FakeControl(await make_dcs("n1"))
    app = build_app(StateHolder(PRIMARY), routes=management_routes(cast(AgentControl, empty)))
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as test_client:
        assert (await test_client.get("/config")).status == 502
        patch = await test_client.patch("/config", json={"pause": True})
        assert patch.status == 503 and "no /config" in await patch.text()


async def test_patch_config_merges_deletes_and_wakes_the_agent(client: Client, control: FakeControl) -> None:
    patch = {"loop_wait": 3, "postgresql": {"parameters": {"max_connections": None, "work_mem": "8MB"}}}
    response = await client.patch("/config", json=patch)
    expected = {**CONFIG, "loop_wait": 3, "postgresql": {"parameters": {"work_mem": "8MB"}}}
    assert (response.status, await response.json()) == (200, expected)
    stored = (await control.dcs.get_cluster()).config
    assert stored is not None and dict(stored.value) == expected
    assert control.wakeups == 1


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"ttl": "abc"}, "ttl: expected an integer, found 'abc'"),
        ({"retry_timeout": 2}, "retry_timeout: expected a number >= 3, found 2"),
        ({"synchronous_mode": "sometimes"}, "synchronous_mode: expected off, on or quorum"),
    ],
)
async def test_patch_making_the_config_invalid_is_400_and_writes_nothing(
    client: Client, control: FakeControl, patch: dict[str, Any], fragment: str
) -> None:
    response = await client.patch("/config", json=patch)
    assert response.status == 400
    assert fragment in await response.text()
    stored = (await control.dcs.get_cluster()).config
    assert stored is not None and dict(stored.value) == CONFIG
    assert control.wakeups == 0


class _RacingDcs:
    """The API node's DCS, with somebody else writing /config right after each of our reads."""

    def __init__(self, real: Dcs, other: Dcs) -> None:
        self._real, self._other = real, other

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def get_cluster(self) -> ClusterView:
        view = await self._real.get_cluster()
        assert await self._other.set_config({**CONFIG, "loop_wait": 4})
        return view


async def test_patch_config_loses_a_compare_and_swap_race_with_409(
    make_dcs: Callable[[str], Awaitable[Etcd3Dcs]],
) -> None:
    mine, other = await make_dcs("n1"), await make_dcs("n2")
    assert await mine.set_config(CONFIG, 0)
    racing = FakeControl(cast(Dcs, _RacingDcs(mine, other)))
    app = build_app(StateHolder(PRIMARY), routes=management_routes(cast(AgentControl, racing)))
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as test_client:
        response = await test_client.patch("/config", json={"pause": True})
    assert response.status == 409
    stored = (await mine.get_cluster()).config
    assert stored is not None and stored.value.get("loop_wait") == 4 and "pause" not in stored.value


async def test_put_config_replaces_unconditionally(client: Client, control: FakeControl) -> None:
    response = await client.put("/config", json={"ttl": 40, "loop_wait": 5})
    assert (response.status, await response.json()) == (200, {"ttl": 40, "loop_wait": 5})
    stored = (await control.dcs.get_cluster()).config
    assert stored is not None and dict(stored.value) == {"ttl": 40, "loop_wait": 5}
    bad = await client.put("/config", json={"ttl": 10})
    assert bad.status == 400 and "ttl: expected a number >= 20" in await bad.text()


BAD_BODIES = [b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b"   "]
BODY_ENDPOINTS = [("PATCH", "/config"), ("PUT", "/config"), ("POST", "/switchover"), ("POST", "/failover"),
                  ("POST", "/restart"), ("POST", "/reinitialize")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
async def test_bad_bodies_are_400_never_500(client: Client, control: FakeControl, method: str, path: str) -> None:
    for body in BAD_BODIES:
        response = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
        optional_and_blank = path in ("/restart", "/reinitialize") and not body.strip()
        assert response.status == (200 if optional_and_blank else 400), (body, await response.text())
    assert [c for c in control.calls if c[0] != "reinitialize" and c[0] != "restart"] == []


async def test_a_body_without_content_length_is_411(client: Client) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"PATCH /config HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 411 " in status_line


# -- switchover and failover -----------------------------------------------------------------------


async def test_switchover_writes_the_key_wakes_the_agent_and_reports_the_new_leader(
    client: Client, control: FakeControl
) -> None:
    seen: list[dict[str, Any] | None] = []

    async def agent_switches(old: str | None) -> ClusterView:
        seen.append(await _stored_failover(control.dcs))
        return ClusterView("demo", leader=LeaderKey("n2"))

    control.on_wait = agent_switches
    response = await client.post("/switchover", json={"leader": "n1", "candidate": "n2"})
    assert (response.status, await response.text()) == (200, 'Successfully switched over to "n2"')
    assert seen == [{"leader": "n1", "member": "n2"}]
    assert control.calls == [("wait", "n1", 20.0)]
    assert control.wakeups == 1


async def test_failover_reports_a_different_leader(client: Client, control: FakeControl) -> None:
    async def someone_else(old: str | None) -> ClusterView:
        return ClusterView("demo", leader=LeaderKey("n3"))

    control.on_wait = someone_else
    response = await client.post("/failover", json={"candidate": "n2"})
    assert (response.status, await response.text()) == (200, 'Failed over to "n3" instead of "n2"')


async def test_switchover_that_the_leader_dropped_is_503_failed(client: Client, control: FakeControl) -> None:
    async def leader_gives_up(old: str | None) -> None:
        assert await control.dcs.delete_failover()

    control.on_wait = leader_gives_up
    response = await client.post("/switchover", json={"leader": "n1"})
    assert (response.status, await response.text()) == (503, "Switchover failed")


async def test_switchover_without_an_answer_is_503_status_unknown(client: Client, control: FakeControl) -> None:
    response = await client.post("/switchover", json={"leader": "n1", "candidate": "n3"})
    assert (response.status, await response.text()) == (503, "Switchover status unknown")


async def test_scheduled_switchover_then_cancel(client: Client, control: FakeControl) -> None:
    response = await client.post("/switchover", json={"leader": "n1", "scheduled_at": "2099-01-01T10:00:00+00:00"})
    assert (response.status, await response.text()) == (202, "Switchover scheduled")
    assert await _stored_failover(control.dcs) == {"leader": "n1", "scheduled_at": "2099-01-01T10:00:00+00:00"}
    assert not [c for c in control.calls if c[0] == "wait"]
    deleted = await client.delete("/switchover")
    assert (deleted.status, await deleted.text()) == (200, "scheduled switchover deleted")
    assert await _stored_failover(control.dcs) is None
    again = await client.delete("/switchover")
    assert (again.status, await again.text()) == (404, "no switchover is scheduled")


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/switchover", {"leader": "n2"}, 412, "leader name does not match"),
        ("/switchover", {"leader": "n1", "candidate": "n7"}, 412, "candidate does not exists"),
        ("/failover", {"leader": "n1"}, 400, "Failover could be performed only to a specific candidate"),
        ("/switchover", {"leader": "n1", "scheduled_at": "2001-01-01T00:00:00+00:00"}, 422,
         "Cannot schedule switchover in the past"),
    ],
)  # fmt: skip
async def test_refused_switchovers_write_nothing(
    client: Client, control: FakeControl, path: str, body: dict[str, Any], status: int, text: str
) -> None:
    response = await client.post(path, json=body)
    assert (response.status, await response.text()) == (status, text)
    assert await _stored_failover(control.dcs) is None
    assert control.wakeups == 0


async def test_paused_cluster_refuses_a_scheduled_switchover(client: Client, control: FakeControl) -> None:
    assert await control.dcs.set_config({**CONFIG, "pause": True})
    response = await client.post("/switchover", json={"leader": "n1", "scheduled_at": "2099-01-01T10:00:00Z"})
    assert (response.status, await response.text()) == (400, "Can't schedule switchover in the paused state")


# -- restart, reload, reinitialize -----------------------------------------------------------------


async def test_restart_reload_reinitialize_reach_the_agent(client: Client, control: FakeControl) -> None:
    restart = await client.post("/restart", json={"role": "primary", "restart_pending": True, "timeout": 30})
    assert (restart.status, await restart.text()) == (200, "restarted successfully")
    scheduled = await client.post("/restart", json={"schedule": "2099-01-01T10:00:00+00:00"})
    assert (scheduled.status, await scheduled.text()) == (202, "Restart scheduled")
    assert (await client.delete("/restart")).status == 404
    reload = await client.post("/reload")
    assert (reload.status, await reload.text()) == (202, "reload scheduled")
    reinit = await client.post("/reinitialize", json={"force": True})
    assert (reinit.status, await reinit.text()) == (200, "reinitialize started")
    assert control.calls == [
        ("restart", RestartRequest(role="primary", restart_pending=True, timeout=30.0)),
        ("restart", RestartRequest(schedule="2099-01-01T10:00:00+00:00")),
        ("cancel_restart",),
        ("reload",),
        ("reinitialize", True, False),
    ]


async def test_bad_restart_filters_are_400_and_never_reach_the_agent(client: Client, control: FakeControl) -> None:
    response = await client.post("/restart", json={"role": "leader-ish"})
    assert response.status == 400
    assert "role" in await response.text()
    assert control.calls == []


async def test_no_traceback_and_no_500_for_odd_json(client: Client) -> None:
    response = await client.post("/switchover", data=json.dumps({"leader": ["n1"]}))
    assert response.status == 400 and "leader: expected a string" in await response.text()
