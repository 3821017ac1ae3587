"""The etcd JSON-gateway client's pure parts: encoding, range ends, watch messages, error kinds."""

from __future__ import annotations

import json

import pytest

from pgwarden.dcs.etcd_http import (
    EtcdClient,
    EtcdError,
    KeyValue,
    b64,
    compare_absent,
    op_put,
    prefix_end,
    ssl_context_from_config,
)


def test_prefix_end_covers_every_key_under_the_prefix() -> None:
    assert prefix_end(b"/service/demo/") == b"/service/demo0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_defaults_for_fields_the_gateway_omits() -> None:
    kv = KeyValue.from_json({"key": b64(b"/k"), "mod_revision": "7"})
    assert (kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease) == (b"/k", b"", 7, 0, 0)


def test_transaction_building_blocks_use_the_gateway_encoding() -> None:
    assert compare_absent(b"/k") == {"key": "L2s=", "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    assert op_put(b"/k", b"v", 12) == {"request_put": {"key": "L2s=", "value": "dg==", "lease": "12"}}
    assert "lease" not in op_put(b"/k", b"v")["request_put"]


def _client() -> EtcdClient:
    return EtcdClient([("127.0.0.1", 2379)])


def test_watch_messages() -> None:
    client = _client()
    created = json.dumps({"result": {"header": {"revision": "5"}, "created": True}}).encode()
    assert client._watch_batch("h", created).events == ()
    events = {"result": {"header": {"revision": "6"}, "events": [
        {"kv": {"key": b64(b"/a"), "value": b64(b"x"), "mod_revision": "6"}},
        {"type": "DELETE", "kv": {"key": b64(b"/b"), "mod_revision": "6"}}]}}
    batch = client._watch_batch("h", json.dumps(events).encode())
    assert batch.revision == 6 and [(e.kind, e.kv.key) for e in batch.events] == [("PUT", b"/a"), ("DELETE", b"/b")]
    compacted = {"result": {"canceled": True, "compact_revision": "2"}}
    with pytest.raises(EtcdError) as error:
        client._watch_batch("h", json.dumps(compacted).encode())
    assert error.value.kind == "compacted"


@pytest.mark.parametrize(("status", "body", "kind"), [
    (404, {"error": "etcdserver: requested lease not found", "code": 5}, "lease"),
    (401, {"error": "etcdserver: invalid auth token", "code": 16}, "auth"),
    (400, {"error": "etcdserver: authentication failed, invalid user ID or password", "code": 3}, "auth"),
    (503, {"error": "etcdserver: request timed out", "code": 14}, "timeout"),
    (503, {"error": "etcdserver: no leader", "code": 14}, "unavailable"),
    (400, {"error": "etcdserver: too many operations in txn request", "code": 3}, "other"),
])
def test_error_kinds(status: int, body: dict[str, object], kind: str) -> None:
    with pytest.raises(EtcdError) as error:
        _client()._decode("kv/txn", status, json.dumps(body).encode())
    assert error.value.kind == kind


def test_a_missing_gateway_and_garbage_are_errors() -> None:
    with pytest.raises(EtcdError, match="no v3 gateway"):
        _client()._decode("kv/range", 404, b"404 page not found")
    with pytest.raises(EtcdError, match="not JSON"):
        _client()._decode("kv/range", 200, b"<html>")


def test_tls_only_when_configured() -> None:
    assert ssl_context_from_config({"hosts": ["h:2379"]}) is None
    assert ssl_context_from_config({"protocol": "https", "hosts": ["h:2379"]}) is not None
    assert ssl_context_from_config({"url": "https://h:2379"}) is not None
    with pytest.raises(OSError):
        ssl_context_from_config({"protocol": "https", "cacert": "/nonexistent/ca.pem"})
