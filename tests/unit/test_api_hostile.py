"""The REST server against hostile or careless clients (issues 11 and 20), on a real loopback socket:
server_tokens and extra headers on every answer (aiohttp's own errors too), the listen backlog,
connection limits and timeouts, bad input answered 4xx, access rules changed at runtime."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import aiohttp.web
import pytest

import pgwarden
from pgwarden.api import requests as api_requests
from pgwarden.api.control import AgentControl
from pgwarden.api.listener import ServerOptions, quiet_accept_errors, server_header, server_options_from
from pgwarden.api.management import management_routes
from pgwarden.api.security import AccessPolicy, BasicAuthCredentials
from pgwarden.api.server import ApiServer, start_api, stop_api
from pgwarden.api.state import StateHolder
from pgwarden.config.addresses import listens_beyond_loopback, unauthenticated_api_warning
from pgwarden.config.schema import RestApiConfig
from pgwarden.config.validation import validate_model
from pgwarden.dcs.base import Dcs
from pgwarden.logutil import RateLimitedLog
from tests.unit.test_api_management import FakeControl
from tests.unit.test_api_metrics import PRIMARY
from tests.unit.test_api_security import basic

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=10)


def _holder() -> StateHolder:
    # the real server reads the real monotonic clock
    return StateHolder(dataclasses.replace(PRIMARY, lock_deadline=time.monotonic() + 3600))


async def _serve(options: ServerOptions | None = None, access: AccessPolicy | None = None,
                 control: FakeControl | None = None) -> ApiServer:
    routes = management_routes(cast(AgentControl, control or FakeControl(cast(Dcs, None))))
    return await start_api(_holder(), "127.0.0.1", 0, routes=routes, access=access, options=options)


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    runner = await _serve()
    try:
        yield runner
    finally:
        await stop_api(runner)


def _url(api: ApiServer, path: str) -> str:
    host, port = api.addresses[0][:2]
    return f"http://{host}:{port}{path}"


async def _raw(api: ApiServer, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection; everything the server answers until it closes."""
    host, port = api.addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


def _header(answer: bytes, name: str) -> str | None:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# -- issue 11: server_tokens, extra headers, request_queue_size --------------------------------------


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("Original", f"pgwarden/{pgwarden.__version__} Python/"),
        ("minimal", f"pgwarden/{pgwarden.__version__}"),
        ("ProductOnly", "pgwarden"),
        ("nonsense", "pgwarden"),
    ],
)
async def test_server_tokens_name_every_answer_aiohttp_errors_included(tokens: str, expected: str) -> None:
    runner = await _serve(ServerOptions.of(server_tokens=tokens, http_extra_headers={"X-Frame-Options": "DENY"}))
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(_url(runner, "/primary")) as r:
            assert r.status == 200
            assert r.headers["Server"] == server_header(tokens)
            assert r.headers["Server"].startswith(expected)
            assert r.headers["X-Frame-Options"] == "DENY"
        # A malformed request line: answered by aiohttp itself, before any handler runs.
        answer = await _raw(runner, b"GARBAGE / HTTP/9.9 \x00\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 400")
        assert _header(answer, "Server") == server_header(tokens)
        assert _header(answer, "X-Frame-Options") == "DENY"
        assert b"aiohttp" not in answer.lower()
    finally:
        await stop_api(runner)


def test_extra_headers_from_restapi_skip_framing_headers_and_line_breaks(caplog: Any) -> None:
    restapi = validate_model(RestApiConfig, {
        "listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008", "server_tokens": "Minimal",
        "request_queue_size": 17,
        "http_extra_headers": {"X-A": "1", "Content-Length": "9", "X-Bad": "a\r\nSet-Cookie: x", "X-N": 5},
        "https_extra_headers": {"Strict-Transport-Security": "max-age=31536000", "X-A": "2"},
    })  # fmt: skip
    options = server_options_from(restapi)
    assert options.http_extra_headers == (("X-A", "1"), ("X-N", "5"))
    assert options.https_extra_headers == (("Strict-Transport-Security", "max-age=31536000"), ("X-A", "2"))
    assert (options.server_tokens, options.request_queue_size) == ("Minimal", 17)
    assert "Content-Length" in caplog.text and "X-Bad" in caplog.text


async def test_request_queue_size_is_the_listen_backlog() -> None:
    runner = await _serve(ServerOptions.of(request_queue_size=37))
    try:
        port = runner.addresses[0][1]
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
        assert listing.stdout.split()[2] == "37"  # ss: Send-Q of a listening socket is its backlog
    finally:
        await stop_api(runner)


# -- issue 20 item 10: bad input is a 4xx, and a malformed request is one log line ---------------------


async def test_a_huge_lag_is_400_not_500(api: ApiServer) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(_url(api, "/replica?lag=" + "9" * 400)) as r:
            assert r.status == 400
        async with session.get(_url(api, "/replica?lag=1e400")) as r:
            assert r.status == 400


@pytest.mark.parametrize(("method", "path"), [("POST", "/switchover"), ("PATCH", "/config"), ("POST", "/restart"),
                                              ("POST", "/failover"), ("PUT", "/config")])  # fmt: skip
async def test_deeply_nested_json_is_400_with_a_short_reason(api: ApiServer, method: str, path: str,
                                                              caplog: Any) -> None:  # fmt: skip
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        # (within the 64 kB body limit: a longer body is refused with 413 before any parsing)
        for body in ("[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000,
                     '{"leader": ' + "[" * 40 + "]" * 40 + "}"):  # fmt: skip
            async with session.request(method, _url(api, path), data=body,
                                       headers={"Content-Type": "application/json"}) as r:  # fmt: skip
                text = await r.text()
                assert r.status == 400, text
                assert "nested deeper than" in text and len(text) < 200
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


async def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert api_requests._nesting('{"a": "[[[[\\"[[{{", "b": [[1]]}') == 3


async def test_a_slow_body_gets_408(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_requests, "BODY_TIMEOUT", 0.3)
    answer = await _raw(api, b"POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 408")


async def test_malformed_requests_log_one_line_without_traceback(api: ApiServer, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n"):  # fmt: skip
        assert (await _raw(api, garbage)).startswith(b"HTTP/1.0 4")
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "pgwarden"))]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in lines)


def test_rate_limited_log_counts_what_it_left_out(caplog: Any) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), 10.0, clock=lambda: now[0])
    assert limited("accept failed: %s", "EMFILE")
    assert not limited("accept failed: %s", "EMFILE")
    assert not limited("accept failed: %s", "EMFILE")
    now[0] = 10.5
    assert limited("accept failed: %s", "EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed: EMFILE", "accept failed: EMFILE (2 similar in the previous 10 s not logged)"]


async def test_accept_errors_are_one_rate_limited_line(caplog: Any) -> None:
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)
    for _ in range(50):
        loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                     "exception": OSError(24, "Too many open files")})  # fmt: skip
    lines = [r for r in caplog.records if "accept" in r.getMessage()]
    assert len(lines) <= 1 and all(r.exc_info is None for r in lines)


# -- issue 20 item 2: idle connections cannot exhaust descriptors or lock out health checks ---------


async def test_excess_connections_evict_idle_ones_and_health_checks_still_answer() -> None:
    runner = await _serve(ServerOptions.of(max_connections=20))
    host, port = runner.addresses[0][:2]
    idle = [await asyncio.open_connection(host, port) for _ in range(60)]
    try:
        await asyncio.sleep(0.2)
        assert len(runner.handler.connections) <= 20
        assert runner.handler.evicted >= 40
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(_url(runner, "/primary")) as r:
            assert r.status == 200
    finally:
        for _, writer in idle:
            writer.close()
        await stop_api(runner)


async def test_when_every_connection_is_busy_a_new_one_is_closed_at_once() -> None:
    release, entered = asyncio.Event(), []

    async def slow(request: Any, holder: StateHolder) -> Any:
        entered.append(1)
        await release.wait()
        return aiohttp.web.Response(text="done")

    runner = await start_api(_holder(), "127.0.0.1", 0, routes={("POST", "slow"): slow},
                             options=ServerOptions.of(max_connections=2))  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            busy = [asyncio.create_task(session.post(_url(runner, "/slow"))) for _ in range(2)]
            while len(entered) < 2:
                await asyncio.sleep(0.01)
            assert await _raw(runner, b"", timeout=2) == b""  # closed at once, not after the keep-alive timeout
            assert runner.handler.refused == 1
            release.set()
            for task in busy:
                response = await task
                assert (response.status, await response.text()) == (200, "done")
    finally:
        await stop_api(runner)


async def test_idle_and_slow_request_heads_are_closed_after_the_keepalive_timeout() -> None:
    runner = await _serve(ServerOptions.of(keepalive_timeout=0.5))
    try:
        started = time.monotonic()
        answer = await _raw(runner, b"GET /primary HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        assert answer == b"" and time.monotonic() - started < 3
        started = time.monotonic()
        assert await _raw(runner, b"") == b"" and time.monotonic() - started < 3  # nothing sent at all
    finally:
        await stop_api(runner)


SERVER_SCRIPT = textwrap.dedent("""
    import asyncio, dataclasses, resource, sys, time
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from pgwarden.api.listener import ServerOptions
    from pgwarden.api.server import start_api
    from pgwarden.api.state import StateHolder
    from tests.unit.test_api_metrics import PRIMARY

    async def main():
        holder = StateHolder(dataclasses.replace(PRIMARY, lock_deadline=time.monotonic() + 3600))
        api = await start_api(holder, "127.0.0.1", 0, options=ServerOptions.of(request_queue_size=2048))
        print(api.addresses[0][1], api.handler.options.max_connections, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
""")


async def test_a_thousand_idle_connections_under_a_low_descriptor_limit() -> None:
    """The server runs with RLIMIT_NOFILE 256 in a child; this process holds 1000 idle connections."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_SCRIPT, "256", cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    held: list[asyncio.StreamWriter] = []
    try:
        port, limit = map(int, (await asyncio.wait_for(proc.stdout.readline(), 30)).split())
        assert limit == 128  # half the descriptor limit
        failures = 0
        while len(held) < 1000 and failures < 3:  # each one accepted by the server before the next
            try:
                async with asyncio.timeout(2):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                held.append(writer)
            except (TimeoutError, OSError):
                failures += 1
        assert len(held) == 1000
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(5):
                async with session.get(f"http://127.0.0.1:{port}/primary") as r:
                    assert r.status == 200
    finally:
        for writer in held:
            writer.close()
        proc.stdin.close()
        async with asyncio.timeout(10):
            stderr = (await proc.stderr.read()).decode()
            await proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) <= 5, stderr


# -- issue 20 item 1: access rules reloaded at runtime -----------------------------------------------


async def test_reconfigured_access_applies_to_the_next_request() -> None:
    control = FakeControl(cast(Dcs, None))
    runner = await _serve(control=control)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(_url(runner, "/restart"), json={}) as r:
                assert r.status == 200  # no authentication configured yet
            runner.reconfigure(AccessPolicy(auth=BasicAuthCredentials("admin", "old")), ServerOptions())
            async with session.post(_url(runner, "/restart"), json={}) as r:
                assert r.status == 401  # the same keep-alive connection: refused now
            async with session.patch(_url(runner, "/config"), json={"ttl": 30}) as r:
                assert r.status == 401
            async with session.post(_url(runner, "/restart"), json={}, headers=basic("admin", "old")) as r:
                assert r.status == 200
            runner.reconfigure(AccessPolicy(auth=BasicAuthCredentials("admin", "rotated")),
                               ServerOptions.of(server_tokens="ProductOnly"))  # fmt: skip
            async with session.post(_url(runner, "/restart"), json={}, headers=basic("admin", "old")) as r:
                assert r.status == 401
            async with session.post(_url(runner, "/restart"), json={}, headers=basic("admin", "rotated")) as r:
                assert r.status == 200 and r.headers["Server"] == "pgwarden"
        assert [call[0] for call in control.calls] == ["restart", "restart", "restart"]
    finally:
        await stop_api(runner)


# -- issue 20 item 12: an unauthenticated API reachable from other hosts is called out ----------------


@pytest.mark.parametrize(
    ("listen", "beyond"),
    [("127.0.0.1:8008", False), ("localhost:8008", False), ("[::1]:8008", False), ("127.0.0.2:8008", False),
     ("0.0.0.0:8008", True), (":8008", True), ("*:8008", True), ("[::]:8008", True), ("10.0.0.5:8008", True),
     ("db1.example.com:8008", True)],
)  # fmt: skip
def test_listens_beyond_loopback(listen: str, beyond: bool) -> None:
    assert listens_beyond_loopback(listen) is beyond


def test_unauthenticated_api_warning() -> None:
    def restapi(**settings: Any) -> RestApiConfig:
        return validate_model(RestApiConfig, {"connect_address": "10.0.0.5:8008", **settings})

    warning = unauthenticated_api_warning(restapi(listen="0.0.0.0:8008"))
    assert warning is not None and "restapi.authentication is not set" in warning
    assert unauthenticated_api_warning(restapi(listen="127.0.0.1:8008")) is None
    assert unauthenticated_api_warning(restapi(listen="0.0.0.0:8008",
                                               authentication={"username": "u", "password": "p"})) is None


def test_validate_config_warns_of_an_unauthenticated_api(tmp_path: Path) -> None:
    config = tmp_path / "pgwarden.yml"
    config.write_text(json.dumps({
        "scope": "demo", "name": "n1", "etcd3": {"host": "127.0.0.1:2379"},
        "restapi": {"listen": "0.0.0.0:8008", "connect_address": "10.0.0.5:8008"},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": str(tmp_path / "d"),
                       "authentication": {"superuser": {"username": "postgres", "password": "x"},
                                          "replication": {"username": "replicator", "password": "y"}}},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRONI")}
    done = subprocess.run([sys.executable, "-m", "pgwarden.cli.main", "validate-config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: restapi.listen '0.0.0.0:8008' accepts connections from other hosts" in done.stderr
