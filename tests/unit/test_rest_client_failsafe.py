"""RestClient.post_failsafe against the real REST server (api.server.start_api with the management
routes and a fake agent): accepted only on 200 with the `lsn` header read, everything else refused
with a detail that says why and carries no secret."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiohttp import web

from pgwarden.api.control import AgentControl, FailsafeAnswer
from pgwarden.api.management import management_routes
from pgwarden.api.security import AccessPolicy
from pgwarden.api.server import start_api, stop_api
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.model import MAX_LSN, FailsafePing
from pgwarden.rest_client import FailsafeReply, RestClient, RestSettings, redacted_url
from tests.unit.test_api_failsafe import FailsafeControl, state
from tests.unit.test_api_security import AUTH, PASSWORD

PING = FailsafePing("n1", "postgres://10.0.0.1:5432/postgres", "http://10.0.0.1:8008/patroni", {"n2": 4096})

Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(answer, node=..., access=...) -> (api_url, control) of a running REST server."""
    servers: list[Any] = []

    async def start(answer: FailsafeAnswer, node: NodeState | None = None,
                    access: AccessPolicy | None = None) -> tuple[str, FailsafeControl]:  # fmt: skip
        control = FailsafeControl(answer)
        api = await start_api(StateHolder(node or state(failsafe={"n1": PING.api_url or ""})), "127.0.0.1", 0,
                              routes=management_routes(cast(AgentControl, control)), access=access)  # fmt: skip
        servers.append(api)
        return f"http://127.0.0.1:{api.addresses[0][1]}/patroni", control

    yield start
    for api in servers:
        await stop_api(api)


async def test_an_accepting_replica(serve: Serve) -> None:
    api_url, control = await serve(FailsafeAnswer(True, 50331808))
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert reply == FailsafeReply(True, 50331808, "accepted")
    assert control.pings == [PING]


async def test_accepted_without_an_lsn(serve: Serve) -> None:
    api_url, _ = await serve(FailsafeAnswer(True, None))
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert reply == FailsafeReply(True, None, "accepted, without a valid lsn header")


async def test_a_running_primary_refuses(serve: Serve) -> None:
    api_url, _ = await serve(FailsafeAnswer(False, None))
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert reply == FailsafeReply(False, None, "answered 500 Running as a leader")


async def test_a_member_without_failsafe_mode_refuses(serve: Serve) -> None:
    api_url, control = await serve(FailsafeAnswer(True, 1), node=state(enabled=False))
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert reply == FailsafeReply(False, None, "answered 502 failsafe mode is not enabled")
    assert control.pings == []


async def test_a_bad_body_is_refused_with_the_members_reason(serve: Serve) -> None:
    api_url, _ = await serve(FailsafeAnswer(True, 1))
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, {"name": "n1", "slots": {"n2": -1}}, timeout=2)
    assert not reply.accepted and reply.detail.startswith("answered 400 slots: the LSN of each slot")


async def test_credentials(serve: Serve) -> None:
    api_url, control = await serve(FailsafeAnswer(True, 7), access=AccessPolicy(auth=AUTH))
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert reply == FailsafeReply(False, None, "answered 401 authentication required")
    async with RestClient(RestSettings(username="admin", password="wrong-" + PASSWORD)) as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert not reply.accepted and PASSWORD not in reply.detail
    async with RestClient(RestSettings(username=AUTH.username, password=AUTH.password)) as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=2)
    assert reply == FailsafeReply(True, 7, "accepted")
    assert control.pings == [PING]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_members_are_refusals_naming_the_reason_without_secrets() -> None:
    port = _free_port()
    async with RestClient() as client:
        gone = await client.post_failsafe(f"http://127.0.0.1:{port}/patroni", PING.as_json(), timeout=2)
        assert not gone.accepted and gone.lsn is None
        assert gone.detail.startswith(f"unreachable: POST http://127.0.0.1:{port}/failsafe: ")
        with_secret = await client.post_failsafe(f"http://admin:{PASSWORD}@127.0.0.1:{port}/patroni", PING.as_json(),
                                                 timeout=2)  # fmt: skip
        assert not with_secret.accepted and PASSWORD not in with_secret.detail, with_secret.detail
        bad = await client.post_failsafe(f"postgres://u:{PASSWORD}@h/x", PING.as_json(), timeout=2)
        assert not bad.accepted and bad.detail.startswith("unreachable: not a REST API URL")
        assert PASSWORD not in bad.detail


@pytest.fixture
async def odd_member() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(api_url, behaviour) of a member that answers 200 with the `lsn` header behaviour["lsn"] after
    behaviour["delay"] seconds."""
    behaviour: dict[str, Any] = {"lsn": "", "delay": 0.0}

    async def answer(request: web.Request) -> web.Response:
        await asyncio.sleep(behaviour["delay"])
        return web.Response(status=200, text="Accepted " + "x" * 5000, headers={"lsn": behaviour["lsn"]})

    app = web.Application()
    app.router.add_post("/failsafe", answer)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/patroni", behaviour
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("header", "lsn"), [("12345", 12345), (" 7 ", 7), (str(MAX_LSN), MAX_LSN), ("", None),
                                             (str(MAX_LSN + 1), None), ("0/3000060", None), ("-1", None),
                                             ("1" * 400, None), ("٣", None), ("1e3", None)])  # fmt: skip
async def test_the_lsn_header_is_read_strictly(odd_member: tuple[str, dict[str, Any]], header: str,
                                               lsn: int | None) -> None:  # fmt: skip
    api_url, behaviour = odd_member
    behaviour["lsn"] = header
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, {}, timeout=2)
    assert reply.accepted and reply.lsn == lsn


async def test_a_slow_member_times_out(odd_member: tuple[str, dict[str, Any]]) -> None:
    api_url, behaviour = odd_member
    behaviour["delay"] = 1.0
    async with RestClient() as client:
        reply = await client.post_failsafe(api_url, PING.as_json(), timeout=0.3)
    assert not reply.accepted and "no answer within 0.3s" in reply.detail


def test_redacted_url() -> None:
    assert redacted_url("http://h:8008/patroni") == "http://h:8008/patroni"
    assert redacted_url(f"http://u:{PASSWORD}@h:8008/patroni") == "http://***@h:8008/patroni"
    assert redacted_url("http://[::1/x") == "<malformed URL>"


def test_ping_json_round_trip() -> None:
    from pgwarden.api.failsafe import parse_failsafe_ping

    assert parse_failsafe_ping(PING.as_json()) == PING
    assert dataclasses.asdict(PING) == PING.as_json()
