"""The aiohttp server (pgwarden.api.server) through a real loopback socket: routing, methods, errors."""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

import pgwarden
from pgwarden.api.server import MAX_REQUEST_BODY, BasicAuthCredentials, Handler, build_app, start_api, stop_api
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.model import ClusterView, DataDirState, LeaderKey, LocalPg, Member, Tags

NOW = 1000.0
PRIMARY = NodeState(
    name="n1",
    scope="demo",
    version="0.1.0",
    api_url="http://127.0.0.1:8008/patroni",
    conn_url="postgres://admin:s3cret@127.0.0.1:5432/postgres",
    pg=LocalPg(DataDirState.VALID, sysid="7", running=True, accepting=True, in_recovery=False, wal_lsn=100),
    cluster=ClusterView("demo", leader=LeaderKey("n1"), members=(Member("n1", role="primary"),)),
    dcs_last_seen=1_700_000_000.0,
    lock_deadline=NOW + 20,
    tags=Tags(),
    paused=False,
    maximum_lag_on_failover=1024 * 1024,
    ttl=30,
    loop_wait=10,
    next_cycle_deadline=NOW + 10,
)
AUTH = BasicAuthCredentials("admin", "pa:ss")
ORIGINAL = f"pgwarden/{pgwarden.__version__} Python/{platform.python_version()}"  # server_tokens' default


async def _echo(request: web.Request, holder: StateHolder) -> web.StreamResponse:
    holder.request_wakeup()
    return web.Response(text=f"handled {request.method} for {holder.get().name}")


async def _broken(request: web.Request, holder: StateHolder) -> web.StreamResponse:
    raise RuntimeError("postgres://admin:s3cret@db leaked?")


ROUTES: dict[tuple[str, str], Handler] = {("POST", "reload"): _echo, ("GET", "broken"): _broken}


@pytest.fixture
def wakeups() -> list[int]:
    return []


@pytest.fixture
def holder(wakeups: list[int]) -> StateHolder:
    return StateHolder(PRIMARY, wakeup=lambda: wakeups.append(1))


@pytest.fixture
async def client(holder: StateHolder) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = build_app(holder, auth=AUTH, routes=ROUTES, clock=lambda: NOW)
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


Client = TestClient[web.Request, web.Application]


async def test_get_health_path_returns_status_json(client: Client) -> None:
    response = await client.get("/primary")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["role"] == "primary"
    assert body["xlog"] == {"location": 100}
    assert response.headers["Server"] == ORIGINAL


@pytest.mark.parametrize(("path", "status"), [("/primary", 200), ("/replica", 503), ("/nonsense", 503)])
@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
async def test_head_and_options_return_only_the_code(client: Client, method: str, path: str, status: int) -> None:
    response = await client.request(method, path)
    assert response.status == status
    assert await response.read() == b""


async def test_unknown_path_is_503_with_the_status_json(client: Client) -> None:
    response = await client.get("/no/such/thing")
    assert response.status == 503
    assert (await response.json())["patroni"]["name"] == "n1"


async def test_malformed_lag_is_400_with_a_clear_text(client: Client) -> None:
    response = await client.get("/replica?lag=lots")
    assert response.status == 400
    assert "invalid lag value 'lots'" in await response.text()
    assert (await client.head("/replica?lag=lots")).status == 400


async def test_status_only_paths_have_an_empty_body(client: Client) -> None:
    response = await client.get("/liveness")
    assert response.status == 200
    assert await response.read() == b""


async def test_patroni_cluster_and_history(client: Client) -> None:
    status = await client.get("/patroni")
    assert status.status == 200
    assert (await status.json())["patroni"] == {"version": "0.1.0", "scope": "demo", "name": "n1"}
    cluster = await client.get("/cluster")
    assert cluster.status == 200
    assert [m["role"] for m in (await cluster.json())["members"]] == ["leader"]
    history = await client.get("/history")
    assert (history.status, await history.json()) == (200, [])


async def test_cluster_before_any_dcs_read_is_503(client: Client, holder: StateHolder) -> None:
    holder.publish(dataclasses.replace(PRIMARY, cluster=None))
    response = await client.get("/cluster")
    assert response.status == 503
    assert "no successful DCS read" in await response.text()


async def test_answers_follow_the_published_state(client: Client, holder: StateHolder) -> None:
    assert (await client.get("/primary")).status == 200
    holder.publish(dataclasses.replace(PRIMARY, pg=dataclasses.replace(PRIMARY.pg, accepting=False)))
    assert (await client.get("/primary")).status == 503


async def test_unknown_management_request_is_501(client: Client) -> None:
    response = await client.post("/switchover", json={"leader": "n1"})
    assert response.status == 501
    assert "not implemented" in await response.text()
    assert (await client.delete("/restart")).status == 501


async def test_management_route_requires_authentication(client: Client, wakeups: list[int]) -> None:
    missing = await client.post("/reload")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
    wrong = await client.post("/reload", headers={"Authorization": aiohttp.encode_basic_auth("admin", "nope")})
    assert wrong.status == 401
    garbage = await client.post("/reload", headers={"Authorization": "Basic !!!"})
    assert garbage.status == 401
    assert wakeups == []
    ok = await client.post("/reload", headers={"Authorization": aiohttp.encode_basic_auth("admin", "pa:ss")})
    assert (ok.status, await ok.text()) == (200, "handled POST for n1")
    assert wakeups == [1]


async def test_a_handler_bug_is_a_bare_500(client: Client) -> None:
    response = await client.get("/broken")
    assert response.status == 500
    assert await response.text() == "internal error"


async def test_no_secret_in_any_read_response(client: Client) -> None:
    for path in ("/", "/patroni", "/cluster", "/history", "/replica"):
        assert "s3cret" not in await (await client.get(path)).text()


async def test_start_and_stop_on_a_free_port(holder: StateHolder) -> None:
    runner = await start_api(holder, "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/leader"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            # the real server reads the real monotonic clock
            holder.publish(dataclasses.replace(PRIMARY, lock_deadline=time.monotonic() + 60))
            async with session.get(url) as response:
                assert response.status == 200
            holder.publish(dataclasses.replace(PRIMARY, lock_deadline=time.monotonic() - 1))
            async with session.get(url) as response:
                assert response.status == 503
    finally:
        await stop_api(runner)


async def test_the_real_server_limits_bodies_and_names_itself(holder: StateHolder) -> None:
    async def read_body(request: web.Request, holder: StateHolder) -> web.StreamResponse:
        return web.Response(text=str(len(await request.read())))

    runner = await start_api(holder, "127.0.0.1", 0, routes={("POST", "reload"): read_body})
    try:
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/reload"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.post(url, data=b"x" * 1000) as response:
                assert (response.status, await response.text()) == (200, "1000")
                assert response.headers["Server"] == ORIGINAL
            async with session.post(url, data=b"x" * (MAX_REQUEST_BODY + 1)) as response:
                assert response.status == 413
                assert response.headers["Server"] == ORIGINAL
    finally:
        await stop_api(runner)
