"""The members' REST client: timeouts, unreachable members as values, credentials, TLS files, and the
peers' statuses the agent reads through it."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pgwarden.agent.peers import fetch_peers
from pgwarden.agent.uniqueness import name_in_use
from pgwarden.config.schema import Credentials, CtlConfig, RestApiConfig
from pgwarden.model import ClusterView, Member
from pgwarden.rest_client import (
    RestClient,
    RestError,
    RestReply,
    RestSettings,
    Unreachable,
    endpoint_url,
    settings_from_config,
)

STATUS = '{"state": "running", "role": "replica", "timeline": 3, "xlog": {"received_location": 120}, ' \
         '"patroni": {"name": "n2", "scope": "demo"}}'


async def _slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(1)  # the runner's cleanup waits for it
    return web.Response(text="late")


async def _status(_request: web.Request) -> web.Response:
    return web.Response(status=503, text=STATUS)


async def _garbage(_request: web.Request) -> web.Response:
    return web.Response(text="<html>")


async def _echo_auth(request: web.Request) -> web.Response:
    return web.Response(status=503, text=request.headers.get("Authorization", "none"))


@pytest.fixture
async def member() -> AsyncIterator[str]:
    """A member's REST API: its status (503, as a member whose PostgreSQL is down), a slow endpoint, a
    body that is not JSON, and an echo of the Authorization header. Yields its `api_url`."""
    app = web.Application()
    app.router.add_get("/patroni", _status)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/garbage", _garbage)
    app.router.add_post("/auth", _echo_auth)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/patroni"
    finally:
        await runner.cleanup()


def _free_port_url() -> str:
    """The api_url of a member that is gone: nothing listens on that port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/patroni"


def test_endpoints_replace_the_published_path() -> None:
    assert endpoint_url("http://10.0.0.1:8008/patroni", "/switchover") == "http://10.0.0.1:8008/switchover"
    assert endpoint_url("https://h:8443/patroni?x=1", "primary") == "https://h:8443/primary"
    with pytest.raises(ValueError, match="not a REST API URL"):
        endpoint_url("postgres://x", "/patroni")


async def test_a_slow_or_absent_member_is_unreachable_with_the_reason(member: str) -> None:
    async with RestClient() as client:
        assert await client.request(member, "GET", "/slow", timeout=0.2) == Unreachable(
            f"GET {member.removesuffix('/patroni')}/slow: no answer within 0.2s")
        assert await client.request("postgres://x", "GET", "/patroni") == Unreachable(
            "not a REST API URL: 'postgres://x'")
        absent = _free_port_url()
        reply = await client.request(absent, "GET", "/patroni", timeout=2)
        assert isinstance(reply, Unreachable) and reply.reason.startswith(f"GET {absent}: ")


async def test_every_http_answer_is_a_reply(member: str) -> None:
    async with RestClient() as client:
        reply = await client.request(member, "GET", "/patroni")
        assert isinstance(reply, RestReply) and reply.status == 503 and not reply.ok
        assert reply.json()["role"] == "replica"
        garbage = await client.request(member, "GET", "/garbage")
        assert isinstance(garbage, RestReply) and garbage.ok and garbage.json_object() is None
        with pytest.raises(RestError, match="expected a JSON answer"):
            garbage.json()


async def test_credentials_go_with_every_call(member: str) -> None:
    async with RestClient(RestSettings(username="admin", password="s3cret")) as client:
        reply = await client.request(member, "POST", "/auth", {"x": 1})
    expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert isinstance(reply, RestReply) and reply.text == expected
    async with RestClient() as client:
        reply = await client.request(member, "POST", "/auth")
    assert isinstance(reply, RestReply) and reply.text == "none"


async def test_tls_files_that_cannot_be_loaded_are_reported_not_raised() -> None:
    async with RestClient(RestSettings(certfile="/nonexistent/client.crt")) as client:
        reply = await client.request("https://127.0.0.1:1/patroni", "GET", "/patroni")
    assert isinstance(reply, Unreachable)
    assert reply.reason.startswith("cannot load the client certificate /nonexistent/client.crt")
    async with RestClient(RestSettings(cafile="/nonexistent/ca.crt")) as client:
        reply = await client.request("https://127.0.0.1:1/patroni", "GET", "/patroni")
    assert isinstance(reply, Unreachable) and reply.reason.startswith("cannot load the CA file /nonexistent/ca.crt")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    crt, key = directory / "member.crt", directory / "member.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=member",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return crt, key


async def test_https_members_are_verified_with_the_configured_ca(tmp_path: Path) -> None:
    crt, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(crt, key)
    app = web.Application()
    app.router.add_get("/patroni", _status)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    api_url = f"https://127.0.0.1:{runner.addresses[0][1]}/patroni"
    try:
        for settings in (RestSettings(cafile=str(crt)), RestSettings(insecure=True)):
            async with RestClient(settings) as client:
                reply = await client.request(api_url, "GET", "/patroni")
            assert isinstance(reply, RestReply) and reply.status == 503, settings
        async with RestClient() as client:  # the system's CAs do not know this certificate
            reply = await client.request(api_url, "GET", "/patroni")
        assert isinstance(reply, Unreachable) and "certificate verify failed" in reply.reason
    finally:
        await runner.cleanup()


def test_settings_come_from_ctl_else_restapi() -> None:
    restapi = RestApiConfig(listen="127.0.0.1:8008", connect_address="127.0.0.1:8008",
                            authentication=Credentials(username="api", password="p1"), cafile="/api-ca.crt",
                            certfile="/server.crt")
    assert settings_from_config(CtlConfig(), restapi) == RestSettings(
        username="api", password="p1", cafile="/api-ca.crt", certfile="/server.crt")
    ctl = CtlConfig(authentication=Credentials(username="ctl", password="p2"), insecure=True, cacert="/ctl-ca.crt")
    assert settings_from_config(ctl, restapi) == RestSettings(
        username="ctl", password="p2", cafile="/ctl-ca.crt", certfile="/server.crt", insecure=True)


async def test_peers_statuses_whatever_the_http_status_and_unreachable_ones(member: str) -> None:
    members = [Member(name="n1", api_url="http://127.0.0.1:1/patroni"), Member(name="n2", api_url=member),
               Member(name="n3", api_url=member.replace("/patroni", "/garbage")), Member(name="n4", api_url=""),
               Member(name="n5", api_url=_free_port_url())]
    async with aiohttp.ClientSession() as session:
        peers = await fetch_peers(session, members, me="n1")
        assert not session.closed  # the agent's session: used, never closed
    assert [p.name for p in peers] == ["n2", "n3", "n4", "n5"]
    assert [p.reachable for p in peers] == [True, False, False, False]
    assert peers[0].lsn == 120 and peers[0].timeline == 3 and peers[0].in_recovery is True


async def test_a_name_is_in_use_only_when_its_api_url_answers_as_that_member(member: str) -> None:
    def cluster(api_url: str) -> ClusterView:
        return ClusterView(scope="demo", members=(Member(name="n2", api_url=api_url),))

    assert await name_in_use(cluster(member), "demo", "n2")
    assert not await name_in_use(cluster(member), "demo", "n3")
    assert not await name_in_use(cluster(_free_port_url()), "demo", "n2")
