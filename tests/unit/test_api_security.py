"""Access control of the unsafe endpoints (allowlist, client certificates, HTTP Basic) and TLS.

Certificates are made for each test module with the `openssl` CLI: a CA, a server certificate for
127.0.0.1 (its key also stored encrypted, for keyfile_password) and a client certificate.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

from pgwarden.api.control import AgentControl
from pgwarden.api.management import management_routes
from pgwarden.api.security import (
    AccessPolicy,
    BasicAuthCredentials,
    TlsConfigError,
    access_policy_from,
    client_address,
    ssl_context_from,
)
from pgwarden.api.server import build_app, start_api, stop_api
from pgwarden.api.state import StateHolder
from pgwarden.config.schema import RestApiConfig
from pgwarden.config.validation import validate_model
from pgwarden.dcs.base import Dcs
from pgwarden.model import ClusterView, Member
from tests.unit.test_api_management import FakeControl
from tests.unit.test_api_metrics import PRIMARY

PASSWORD = "s3cr3t-Pa55"
AUTH = BasicAuthCredentials("admin", PASSWORD)


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header (aiohttp's BasicAuth helper is deprecated on the client side)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


GOOD = basic("admin", PASSWORD)
KEY_PASSWORD = "key-Pa55word"

Client = TestClient[web.Request, web.Application]

# Every route that changes something, with a body the handler accepts (it never gets that far here).
UNSAFE = [(m, "/" + s) for (m, s) in management_routes(cast(AgentControl, object())) if m != "GET"]


def _app(policy: AccessPolicy, holder: StateHolder | None = None) -> tuple[web.Application, FakeControl]:
    control = FakeControl(cast(Dcs, None))
    routes = management_routes(cast(AgentControl, control))
    return build_app(holder or StateHolder(PRIMARY), access=policy, routes=routes), control


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[Client, FakeControl]]:
    app, control = _app(AccessPolicy(auth=AUTH))
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as client:
        yield client, control


def test_the_unsafe_routes_are_the_contract_ones() -> None:
    assert sorted(UNSAFE) == sorted([
        ("PATCH", "/config"), ("PUT", "/config"), ("POST", "/switchover"), ("DELETE", "/switchover"),
        ("POST", "/failover"), ("POST", "/restart"), ("DELETE", "/restart"), ("POST", "/reload"),
        ("POST", "/reinitialize"), ("POST", "/failsafe"),
    ])  # fmt: skip


@pytest.mark.parametrize(("method", "path"), UNSAFE)
async def test_every_unsafe_endpoint_needs_credentials(
    guarded: tuple[Client, FakeControl], method: str, path: str
) -> None:
    client, control = guarded
    for headers in ({}, basic("admin", "wrong"), basic("root", PASSWORD), {"Authorization": "Basic !!"}):
        response = await client.request(method, path, json={}, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
        assert PASSWORD not in await response.text()
    assert control.calls == [] and control.wakeups == 0


async def test_reads_need_no_credentials_and_good_credentials_pass(guarded: tuple[Client, FakeControl]) -> None:
    client, control = guarded
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/patroni")).status == 200
    assert (await client.post("/reload", headers=GOOD)).status == 202
    assert control.calls == [("reload",)]


def _members(*hosts: str) -> StateHolder:
    members = tuple(Member(f"m{i}", api_url=f"http://{h}:8008/patroni", conn_url=f"postgres://{h}:5432/postgres")
                    for i, h in enumerate(hosts))  # fmt: skip
    return StateHolder(dataclasses.replace(PRIMARY, cluster=ClusterView("demo", members=members)))


@pytest.mark.parametrize(
    ("policy", "holder", "status"),
    [
        (AccessPolicy(auth=AUTH, allowlist=("10.0.0.0/8",)), None, 403),
        (AccessPolicy(auth=AUTH, allowlist=("10.0.0.0/8", "127.0.0.0/30")), None, 401),
        (AccessPolicy(auth=AUTH, allowlist=("127.0.0.1",)), None, 401),
        (AccessPolicy(auth=AUTH, allowlist=("localhost",)), None, 401),
        (AccessPolicy(auth=AUTH, allowlist=("no-such-host.invalid",)), None, 403),
        (AccessPolicy(auth=AUTH, allowlist_include_members=True), _members("10.1.1.1", "10.1.1.2"), 403),
        (AccessPolicy(auth=AUTH, allowlist_include_members=True), _members("10.1.1.1", "127.0.0.1"), 401),
        (AccessPolicy(auth=AUTH, allowlist_include_members=True), _members("localhost"), 401),
        (AccessPolicy(auth=AUTH, allowlist=("10.0.0.0/8",), allowlist_include_members=True),
         _members("127.0.0.1"), 401),
    ],
)  # fmt: skip
async def test_allowlist_is_checked_before_credentials(
    policy: AccessPolicy, holder: StateHolder | None, status: int
) -> None:
    app, control = _app(policy, holder)
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as client:
        for method, path in UNSAFE:
            if path == "/failsafe" and policy.allowlist_include_members:
                continue  # the members allowlist does not apply to it (contract 4.1): test_api_failsafe.py
            response = await client.request(method, path, json={})
            assert response.status == status, (method, path)
            if status == 403:
                assert "not allowed by restapi.allowlist" in await response.text()
        assert (await client.get("/patroni")).status == 200  # reads are never restricted
    assert control.calls == []


def test_client_address_normalises_ipv4_mapped_ipv6() -> None:
    assert str(client_address("::ffff:127.0.0.1")) == "127.0.0.1"
    assert client_address("not-an-ip") is None and client_address(None) is None


def test_access_policy_from_restapi_settings() -> None:
    restapi = _restapi(authentication={"username": "u", "password": "p"}, allowlist="10.0.0.0/8, db1",
                       allowlist_include_members=True)  # fmt: skip
    assert access_policy_from(restapi) == AccessPolicy(
        auth=BasicAuthCredentials("u", "p"), allowlist=("10.0.0.0/8", "db1"), allowlist_include_members=True
    )


async def test_no_secret_in_logs_or_reprs(guarded: tuple[Client, FakeControl], caplog: Any) -> None:
    client, _ = guarded
    caplog.set_level(logging.DEBUG)
    await client.post("/reload", headers=basic("admin", PASSWORD + "x"))
    await client.post("/reload", headers=GOOD)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(AUTH) and PASSWORD not in repr(AccessPolicy(auth=AUTH))


# -- TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(name: str, cwd: Path, extensions: str | None) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)  # fmt: skip
    extra = ["-extfile", "ext.cnf"] if extensions else []
    if extensions:
        (cwd / "ext.cnf").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", *extra, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    directory = Path(tempfile.mkdtemp(prefix="pgwarden-tls-"))
    try:
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=pgwarden-test-ca",
                 cwd=directory)  # fmt: skip
        _issue("server", directory, "subjectAltName=IP:127.0.0.1\n")
        _issue("client", directory, None)
        _openssl("pkey", "-in", "server.key", "-aes256", "-passout", f"pass:{KEY_PASSWORD}", "-out", "server-enc.key",
                 cwd=directory)  # fmt: skip
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _restapi(**settings: Any) -> RestApiConfig:
    return validate_model(RestApiConfig, {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008", **settings})


def _client_context(certs: Path, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if with_certificate:
        context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    return context


async def _https_statuses(certs: Path, verify_client: str, *, with_certificate: bool) -> tuple[int, int]:
    """(GET /patroni, POST /reload) over TLS; raises aiohttp.ClientError when the handshake fails."""
    restapi = _restapi(
        certfile=str(certs / "server.crt"), keyfile=str(certs / "server-enc.key"), keyfile_password=KEY_PASSWORD,
        cafile=str(certs / "ca.crt"), verify_client=verify_client,
    )  # fmt: skip
    control = FakeControl(cast(Dcs, None))
    runner = await start_api(StateHolder(PRIMARY), "127.0.0.1", 0, access=access_policy_from(restapi),
                             routes=management_routes(cast(AgentControl, control)),
                             ssl_context=ssl_context_from(restapi))  # fmt: skip
    try:
        port = runner.addresses[0][1]
        context = _client_context(certs, with_certificate=with_certificate)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            read = await session.get(f"https://127.0.0.1:{port}/patroni", ssl=context)
            write = await session.post(f"https://127.0.0.1:{port}/reload", ssl=context)
            read.release()
            write.release()
            return read.status, write.status
    finally:
        await stop_api(runner)


@pytest.mark.parametrize(
    ("verify_client", "with_certificate", "expected"),
    [
        ("none", False, (200, 202)),
        ("optional", False, (200, 403)),
        ("optional", True, (200, 202)),
        ("required", True, (200, 202)),
    ],
)
async def test_tls_with_and_without_client_certificates(
    certs: Path, verify_client: str, with_certificate: bool, expected: tuple[int, int]
) -> None:
    assert await _https_statuses(certs, verify_client, with_certificate=with_certificate) == expected


async def test_tls_required_refuses_a_client_without_certificate(certs: Path) -> None:
    with pytest.raises(aiohttp.ClientError):
        await _https_statuses(certs, "required", with_certificate=False)


def test_ssl_context_from_plain_http_and_errors(certs: Path) -> None:
    assert ssl_context_from(_restapi()) is None
    with pytest.raises(TlsConfigError, match=r"restapi\.certfile is not set"):
        ssl_context_from(_restapi(verify_client="required"))
    with pytest.raises(TlsConfigError, match=r"restapi\.cafile must name the client CA"):
        ssl_context_from(_restapi(certfile=str(certs / "server.crt"), keyfile=str(certs / "server.key"),
                                  verify_client="optional"))  # fmt: skip
    with pytest.raises(TlsConfigError, match="cannot load") as caught:
        ssl_context_from(_restapi(certfile=str(certs / "server.crt"), keyfile=str(certs / "server-enc.key"),
                                  keyfile_password="wrong-" + KEY_PASSWORD))  # fmt: skip
    assert KEY_PASSWORD not in str(caught.value)
    with pytest.raises(TlsConfigError, match=r"restapi\.certfile/keyfile"):
        ssl_context_from(_restapi(certfile="/nonexistent.crt"))


# -- a reload changes access rules, headers and TLS without restarting the agent (issue 20) ---------


async def test_reload_applies_authentication_tls_and_headers_to_the_running_api(certs: Path) -> None:
    from types import SimpleNamespace

    from pgwarden.agent.loop import Agent
    from pgwarden.api.listener import server_options_from
    from pgwarden.api.security import tls_fingerprint

    control = FakeControl(cast(Dcs, None))
    plain = _restapi(http_extra_headers={"X-Plain": "1"})
    runner = await start_api(StateHolder(PRIMARY), "127.0.0.1", 0, access=access_policy_from(plain),
                             routes=management_routes(cast(AgentControl, control)),
                             options=server_options_from(plain))  # fmt: skip
    port = runner.addresses[0][1]
    agent = SimpleNamespace(_api=runner, _api_tls=tls_fingerprint(plain), local=SimpleNamespace(restapi=plain))
    context = _client_context(certs, with_certificate=False)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.post(f"http://127.0.0.1:{port}/reload") as response:
                assert response.status == 202 and response.headers["X-Plain"] == "1"
            # The reload: authentication, TLS and HTTPS-only headers on the same port.
            agent.local.restapi = _restapi(
                listen=f"127.0.0.1:{port}", authentication={"username": "admin", "password": PASSWORD},
                certfile=str(certs / "server.crt"), keyfile=str(certs / "server.key"),
                http_extra_headers={"X-Plain": "1"}, https_extra_headers={"Strict-Transport-Security": "max-age=60"},
            )  # fmt: skip
            await Agent._reconfigure_api(agent)  # type: ignore[arg-type]
            url = f"https://127.0.0.1:{port}/reload"
            async with session.post(url, ssl=context) as response:
                assert response.status == 401
                assert response.headers["X-Plain"] == "1"
                assert response.headers["Strict-Transport-Security"] == "max-age=60"
            async with session.post(url, ssl=context, headers=GOOD) as response:
                assert response.status == 202
            # A rotated password: the old one is refused, the new one works.
            agent.local.restapi = dataclasses.replace(
                agent.local.restapi, authentication=dataclasses.replace(
                    agent.local.restapi.authentication, password="rotated-" + PASSWORD))  # fmt: skip
            await Agent._reconfigure_api(agent)  # type: ignore[arg-type]
            async with session.post(url, ssl=context, headers=GOOD) as response:
                assert response.status == 401
            async with session.post(url, ssl=context, headers=basic("admin", "rotated-" + PASSWORD)) as response:
                assert response.status == 202
            # A broken TLS setting on reload: logged, the listener keeps its certificate.
            agent.local.restapi = dataclasses.replace(agent.local.restapi, certfile="/nonexistent.crt")
            await Agent._reconfigure_api(agent)  # type: ignore[arg-type]
            async with session.get(f"https://127.0.0.1:{port}/patroni", ssl=context) as response:
                assert response.status == 200 and "Strict-Transport-Security" in response.headers
        assert [call[0] for call in control.calls] == ["reload", "reload", "reload"]
    finally:
        await stop_api(runner)
