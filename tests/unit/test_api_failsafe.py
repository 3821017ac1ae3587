"""GET and POST /failsafe through the real server with a fake agent (contract 2.8, 4.1, 4.4): the
answers and their texts, the `lsn` header, hostile bodies (400, the agent never asked), the access
checks (credentials; the members allowlist does not apply), and the failsafe fields of /patroni and
/metrics."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.api.control import AgentControl, FailsafeAnswer
from pgwarden.api.failsafe import parse_failsafe_ping
from pgwarden.api.health import status_json
from pgwarden.api.management import management_routes
from pgwarden.api.metrics import node_metrics
from pgwarden.api.openapi import openapi_document
from pgwarden.api.requests import Refusal
from pgwarden.api.security import AccessPolicy
from pgwarden.api.server import build_app
from pgwarden.api.state import NodeState, StateHolder
from pgwarden.dcs.base import Dcs
from pgwarden.model import (
    FAILSAFE_MAX_ENTRIES,
    FAILSAFE_MAX_NAME,
    FAILSAFE_MAX_URL,
    MAX_LSN,
    ClusterView,
    FailsafePing,
    LeaderKey,
    Member,
    Versioned,
)
from tests.unit.test_api_management import FakeControl
from tests.unit.test_api_metrics import PRIMARY
from tests.unit.test_api_security import AUTH, GOOD, PASSWORD, basic

Client = TestClient[web.Request, web.Application]

URLS = {"n1": "http://10.0.0.1:8008/patroni", "n2": "http://10.0.0.2:8008/patroni"}
PING = {"name": "n1", "conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": URLS["n1"],
        "slots": {"n2": 50331808, "logical_1": 0}}  # fmt: skip
SECRET_URL = "postgres://replicator:" + PASSWORD + "@10.0.0.1:5432/postgres"


class FailsafeControl(FakeControl):
    """FakeControl that also answers failsafe pings with `answer` and records them."""

    def __init__(self, answer: FailsafeAnswer) -> None:
        super().__init__(cast(Dcs, None))
        self.answer = answer
        self.pings: list[FailsafePing] = []

    def failsafe_ping(self, ping: FailsafePing) -> FailsafeAnswer:
        self.pings.append(ping)
        return self.answer


def state(*, enabled: bool = True, failsafe: dict[str, str] | None = None, **changes: Any) -> NodeState:
    config = Versioned({"ttl": 30, "failsafe_mode": enabled}, 1)
    members = tuple(Member(name, api_url=url, conn_url=f"postgres://{url[7:15]}:5432/postgres")
                    for name, url in URLS.items())  # fmt: skip
    cluster = ClusterView("demo", config=config, leader=LeaderKey("n1"), members=members, failsafe=failsafe)
    return dataclasses.replace(PRIMARY, cluster=cluster, **changes)


@pytest.fixture
def control() -> FailsafeControl:
    return FailsafeControl(FailsafeAnswer(True, 50331808))


async def serve(node: NodeState, control: FakeControl, access: AccessPolicy | None = None) -> Client:
    app = build_app(StateHolder(node), access=access, routes=management_routes(cast(AgentControl, control)))
    client: Client = TestClient(RawTestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(control: FailsafeControl) -> AsyncIterator[Client]:
    test_client = await serve(state(failsafe=URLS), control)
    yield test_client
    await test_client.close()


# -- GET /failsafe ------------------------------------------------------------------------------------


async def test_get_answers_the_failsafe_key_when_failsafe_mode_is_enabled(client: Client) -> None:
    response = await client.get("/failsafe")
    assert response.status == 200
    assert await response.json() == URLS
    assert (await client.head("/failsafe")).status == 200


@pytest.mark.parametrize(("node", "status", "body"), [
    (state(failsafe=None), 200, {}),
    (state(enabled=False, failsafe=URLS), 502, "failsafe mode is not enabled"),
    (dataclasses.replace(PRIMARY, cluster=ClusterView("demo", failsafe=URLS)), 502, "failsafe mode is not enabled"),
    (dataclasses.replace(PRIMARY, cluster=None), 503, "failsafe state unknown: no successful DCS read yet"),
])  # fmt: skip
async def test_get_without_failsafe_mode(node: NodeState, status: int, body: Any, control: FailsafeControl) -> None:
    test_client = await serve(node, control)
    try:
        response = await test_client.get("/failsafe")
        assert response.status == status
        assert (await response.json() if status == 200 else await response.text()) == body
    finally:
        await test_client.close()


# -- POST /failsafe -----------------------------------------------------------------------------------


async def test_an_accepted_ping_is_200_accepted_with_the_lsn_header(client: Client, control: FailsafeControl) -> None:
    response = await client.post("/failsafe", json=PING)
    assert response.status == 200
    assert await response.text() == "Accepted"
    assert response.headers["lsn"] == "50331808"
    assert control.pings == [FailsafePing("n1", PING["conn_url"], URLS["n1"], PING["slots"])]


async def test_an_accepted_ping_without_a_known_lsn_has_no_header(control: FailsafeControl) -> None:
    control.answer = FailsafeAnswer(True, None)
    test_client = await serve(state(failsafe=URLS), control)
    try:
        response = await test_client.post("/failsafe", json={"name": "n1"})
        assert (response.status, await response.text()) == (200, "Accepted")
        assert "lsn" not in response.headers
    finally:
        await test_client.close()
    assert control.pings == [FailsafePing("n1")]


async def test_a_refused_ping_is_500_running_as_a_leader(control: FailsafeControl) -> None:
    control.answer = FailsafeAnswer(False, 123)
    test_client = await serve(state(failsafe=URLS), control)
    try:
        response = await test_client.post("/failsafe", json=PING)
        assert (response.status, await response.text()) == (500, "Running as a leader")
        assert "lsn" not in response.headers
    finally:
        await test_client.close()


@pytest.mark.parametrize(("node", "status"), [(state(enabled=False), 502), (dataclasses.replace(PRIMARY, cluster=None),
                                                                            503)])  # fmt: skip
async def test_a_ping_without_failsafe_mode_never_reaches_the_agent(node: NodeState, status: int,
                                                                    control: FailsafeControl) -> None:  # fmt: skip
    test_client = await serve(node, control)
    try:
        assert (await test_client.post("/failsafe", json=PING)).status == status
    finally:
        await test_client.close()
    assert control.pings == []


HOSTILE: list[tuple[Any, str]] = [
    ([], "the JSON body must be an object, found list"),
    ("n1", "the JSON body must be an object, found str"),
    (None, "the JSON body must be an object, found NoneType"),
    ({}, "name: the leader's member name is required"),
    ({"name": ""}, "name: the leader's member name is required"),
    ({"name": 1}, "name: expected a string, found int"),
    ({"name": ["n1"]}, "name: expected a string, found list"),
    ({"name": "n" * (FAILSAFE_MAX_NAME + 1)}, f"name: expected at most {FAILSAFE_MAX_NAME} printable characters"),
    ({"name": "n1\nFAKE LOG LINE"}, "name: expected at most"),
    ({"name": "\ud800"}, "name: expected at most"),
    ({"name": "n1", "conn_url": {"host": "x"}}, "conn_url: expected a string, found dict"),
    ({"name": "n1", "api_url": "h" * (FAILSAFE_MAX_URL + 1)}, "api_url: expected at most"),
    ({"name": "n1", "slots": []}, "slots: expected an object of slot name -> LSN, found list"),
    ({"name": "n1", "slots": "n2"}, "slots: expected an object"),
    ({"name": "n1", "slots": {"n2": "0/3000060"}}, "slots: the LSN of each slot must be an integer"),
    ({"name": "n1", "slots": {"n2": True}}, "slots: the LSN of each slot must be an integer"),
    ({"name": "n1", "slots": {"n2": 1.5}}, "slots: the LSN of each slot must be an integer"),
    ({"name": "n1", "slots": {"n2": -1}}, "slots: the LSN of each slot must be an integer"),
    ({"name": "n1", "slots": {"n2": MAX_LSN + 1}}, "slots: the LSN of each slot must be an integer"),
    ({"name": "n1", "slots": {"n2": None}}, "slots: the LSN of each slot must be an integer"),
    ({"name": "n1", "slots": {"": 1}}, "slots: a slot name must have"),
    ({"name": "n1", "slots": {f"s{i}": i for i in range(FAILSAFE_MAX_ENTRIES + 1)}}, "slots: more than 1000 slots"),
]


@pytest.mark.parametrize(("body", "reason"), HOSTILE)
async def test_hostile_bodies_are_400_and_never_reach_the_agent(client: Client, control: FailsafeControl, body: Any,
                                                                reason: str) -> None:  # fmt: skip
    response = await client.post("/failsafe", data=json.dumps(body), headers={"Content-Type": "application/json"})
    text = await response.text()
    assert response.status == 400, text
    assert text.startswith(reason) and len(text) < 200
    assert control.pings == []


@pytest.mark.parametrize("data", [
    b"", b"{", b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000, b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"name": "n1", "slots": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
])  # fmt: skip
async def test_malformed_json_is_400_with_a_short_reason(client: Client, control: FailsafeControl, data: bytes) -> None:
    response = await client.post("/failsafe", data=data, headers={"Content-Type": "application/json"})
    assert response.status == 400 and len(await response.text()) < 200
    assert control.pings == []


async def test_an_empty_body_is_400_and_a_huge_one_413(client: Client, control: FailsafeControl) -> None:
    response = await client.post("/failsafe")
    assert (response.status, await response.text()) == (400, "a JSON body is required, the request body is empty")
    headers = {"Content-Type": "application/json"}
    big = json.dumps({"name": "n1", "conn_url": "x" * 100_000})
    response = await client.post("/failsafe", data=big, headers=headers)
    assert (response.status, await response.text()) == (400, "conn_url: expected at most 2048 printable characters")
    # (the agent's server takes 64 kB: api.server.MAX_REQUEST_BODY; this test server aiohttp's 1 MB)
    huge = json.dumps({"name": "n1", "conn_url": "x" * 2_000_000})
    assert (await client.post("/failsafe", data=huge, headers=headers)).status == 413
    assert control.pings == []


async def test_refusals_never_echo_a_conn_url(client: Client) -> None:
    for body in ({"name": "n1", "conn_url": SECRET_URL + "\n"}, {"name": "n1", "conn_url": SECRET_URL * 60},
                 {"name": SECRET_URL * 10}):  # fmt: skip
        response = await client.post("/failsafe", json=body)
        assert response.status == 400 and PASSWORD not in await response.text()


async def test_unknown_keys_are_ignored_and_nulls_are_absent(client: Client, control: FailsafeControl) -> None:
    response = await client.post("/failsafe", json={"name": "n1", "conn_url": None, "api_url": "", "slots": None,
                                                    "future": {"x": [1]}})  # fmt: skip
    assert response.status == 200
    assert control.pings == [FailsafePing("n1", None, None, {})]


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "conn_url", "api_url", "slots", "x"]), _values, max_size=5)
       | st.fixed_dictionaries({"name": st.text(max_size=5), "slots": st.dictionaries(st.text(max_size=5), _values)}))
def test_any_body_is_a_ping_or_a_400(body: dict[str, Any]) -> None:
    try:
        ping = parse_failsafe_ping(body)
    except Refusal as refusal:
        assert refusal.status == 400 and len(refusal.text) < 200
        return
    assert ping.name == body["name"] and ping.name
    assert all(isinstance(lsn, int) and 0 <= lsn <= MAX_LSN for lsn in ping.slots.values())
    assert parse_failsafe_ping(ping.as_json()) == ping


# -- access ---------------------------------------------------------------------------------------------


async def test_post_needs_the_credentials_get_does_not(control: FailsafeControl) -> None:
    test_client = await serve(state(failsafe=URLS), control, AccessPolicy(auth=AUTH))
    try:
        for headers in ({}, basic("admin", "wrong")):
            response = await test_client.post("/failsafe", json=PING, headers=headers)
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
        assert control.pings == []
        assert (await test_client.post("/failsafe", json=PING, headers=GOOD)).status == 200
        assert (await test_client.get("/failsafe")).status == 200
    finally:
        await test_client.close()
    assert len(control.pings) == 1


async def test_the_members_allowlist_does_not_apply_to_failsafe(control: FailsafeControl) -> None:
    # The members live on 10.0.0.x: the client (127.0.0.1) is not one of them.
    test_client = await serve(state(failsafe=URLS), control, AccessPolicy(auth=AUTH, allowlist_include_members=True))
    try:
        assert (await test_client.post("/reload", headers=GOOD)).status == 403
        assert (await test_client.post("/failsafe", json=PING, headers=GOOD)).status == 200
        assert (await test_client.post("/failsafe", json=PING)).status == 401  # the credentials still do
    finally:
        await test_client.close()


async def test_the_restapi_allowlist_still_applies_to_failsafe(control: FailsafeControl) -> None:
    node = state(failsafe={"n1": "http://127.0.0.1:8008/patroni"})
    node = dataclasses.replace(node, cluster=dataclasses.replace(
        cast(ClusterView, node.cluster), members=(Member("n1", api_url="http://127.0.0.1:8008/patroni"),)))
    test_client = await serve(node, control, AccessPolicy(allowlist=("10.0.0.0/8",), allowlist_include_members=True))
    try:
        assert (await test_client.post("/reload")).status == 202  # a member's address
        response = await test_client.post("/failsafe", json=PING)
        assert response.status == 403 and "not allowed by restapi.allowlist" in await response.text()
    finally:
        await test_client.close()
    assert control.pings == []


# -- /patroni, /metrics, /openapi.json ----------------------------------------------------------------


def test_status_json_reports_failsafe_mode_is_active_only_when_true() -> None:
    assert status_json(state(failsafe_mode_is_active=True), 1000.0)["failsafe_mode_is_active"] is True
    assert "failsafe_mode_is_active" not in status_json(state(), 1000.0)


def _metric(node: NodeState, name: str) -> float:
    return next(s.value for family in node_metrics(node, 1000.0) for s in family.samples if s.name == name)


@pytest.mark.parametrize(("node", "active", "enabled", "member"), [
    (state(failsafe=URLS, failsafe_mode_is_active=True), 1, 1, 1),
    (state(failsafe={"n2": URLS["n2"]}), 0, 1, 0),
    (state(failsafe=None), 0, 1, 0),
    (state(enabled=False), 0, 0, 0),
    (dataclasses.replace(PRIMARY, cluster=None), 0, 0, 0),
])  # fmt: skip
def test_failsafe_metrics(node: NodeState, active: int, enabled: int, member: int) -> None:
    assert node.name == "n1"
    assert _metric(node, "patroni_failsafe_mode_is_active") == active
    assert _metric(node, "patroni_failsafe_mode_enabled") == enabled
    assert _metric(node, "patroni_failsafe_member") == member


def test_openapi_documents_both_routes() -> None:
    path = openapi_document("1.0")["paths"]["/failsafe"]
    assert path["get"]["responses"].keys() >= {"200", "502"}
    post = path["post"]
    assert post["responses"].keys() >= {"200", "400", "401", "403", "500"}
    assert "lsn" in post["responses"]["200"]["headers"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
