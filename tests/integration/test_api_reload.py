"""Issue 20: REST authentication added or rotated by a reload (POST /reload) takes effect in the
running agent, without a restart. One real agent (etcd + PostgreSQL 15)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from pgwarden.localcluster.etcd import ETCD_BIN
from pgwarden.localcluster.postgres import PG_BIN
from pgwarden.localcluster.processes import wait_until
from tests.integration.test_api_management import request
from tests.support.cluster import running_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (Path(ETCD_BIN).exists() and Path(PG_BIN, "postgres").exists()),
                       reason="needs etcd and PostgreSQL 15"),
]  # fmt: skip

# A restart only for replicas: on the primary it passes the access check, then is refused with 503
# ("restart conditions are not satisfied"), so the test never restarts PostgreSQL.
HARMLESS_RESTART = {"role": "replica"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _post(url: str, headers: dict[str, str], body: object = None) -> int:
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    call = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _status(url: str, headers: dict[str, str]) -> int:
    """POST /restart for replicas only (see HARMLESS_RESTART)."""
    return _post(url + "/restart", headers, HARMLESS_RESTART)


def _set_auth(config: Path, password: str) -> None:
    data = yaml.safe_load(config.read_text())
    data["restapi"]["authentication"] = {"username": "operator", "password": password}
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def test_authentication_added_and_rotated_by_reload() -> None:
    with running_cluster("reload", "reload", size=1, replicas=0) as cluster:
        node = cluster.nodes[0]
        url = node.api_url
        assert _status(url, {}) == 503  # no authentication configured: anyone passes the check

        _set_auth(node.config_path, "first-Secret-1")
        assert request(node, "POST", "/reload", auth=False)[0] == 202
        wait_until(lambda: _status(url, {}) == 401, 20, "unauthenticated POST /restart refused after reload")
        assert _status(url, _basic("operator", "first-Secret-1")) == 503
        assert request(node, "PATCH", "/config", {"ttl": 30}, auth=False)[0] == 401

        _set_auth(node.config_path, "second-Secret-2")
        status, _ = request(node, "POST", "/reload", auth=False)
        assert status == 401
        assert _post(url + "/reload", _basic("operator", "first-Secret-1")) == 202
        wait_until(lambda: _status(url, _basic("operator", "first-Secret-1")) == 401, 20,
                   "the old password refused after the rotation")  # fmt: skip
        assert _status(url, _basic("operator", "second-Secret-2")) == 503

