"""GET /openapi.json documents every endpoint the server serves, and nothing it does not serve."""

from __future__ import annotations

from typing import cast

from aiohttp.test_utils import RawTestServer, TestClient

from pgwarden.api.control import AgentControl
from pgwarden.api.health import HEALTH_CHECKS, STATUS_ONLY_CHECKS
from pgwarden.api.management import management_routes
from pgwarden.api.openapi import openapi_document
from pgwarden.api.server import READ_ENDPOINTS, build_app
from pgwarden.api.state import StateHolder
from tests.unit.test_api_metrics import PRIMARY

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def served_operations() -> set[tuple[str, str]]:
    """(METHOD, path) of everything the server answers: read endpoints, health checks, management."""
    routes = management_routes(cast(AgentControl, object()))
    served = {(method, "/" + segment) for method, segment in routes}
    served |= {("GET", "/" + segment) for segment in (*READ_ENDPOINTS, *HEALTH_CHECKS, *STATUS_ONLY_CHECKS)}
    return served


def documented_operations() -> set[tuple[str, str]]:
    paths = openapi_document("1.0")["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item if method in HTTP_METHODS}


def test_every_served_endpoint_is_documented() -> None:
    missing = served_operations() - documented_operations()
    assert not missing, f"endpoints missing from the OpenAPI document: {sorted(missing)}"


def test_every_documented_endpoint_is_served() -> None:
    extra = documented_operations() - served_operations()
    assert not extra, f"documented but not served: {sorted(extra)}"


def test_the_contract_endpoints_are_all_there() -> None:
    documented = {path for _, path in documented_operations()}
    for path in ("/standby-leader", "/synchronous", "/sync", "/asynchronous", "/async", "/quorum",
                 "/read-only-sync", "/read-only-quorum", "/liveness", "/readiness", "/patroni", "/cluster",
                 "/history", "/config", "/switchover", "/failover", "/restart", "/reload", "/reinitialize",
                 "/metrics"):  # fmt: skip
        assert path in documented


def test_unsafe_operations_document_401_and_403() -> None:
    for path, item in openapi_document("1.0")["paths"].items():
        for method, operation in item.items():
            if method != "get":
                assert {"401", "403"} <= operation["responses"].keys(), (method, path)


async def test_served_at_openapi_json() -> None:
    app = build_app(StateHolder(PRIMARY), routes=management_routes(cast(AgentControl, object())))
    async with TestClient(RawTestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/openapi.json")
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == PRIMARY.version
