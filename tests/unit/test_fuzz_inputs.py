"""Property-based fuzzing of every outside input an agent reads (issue 20, "Also"): DCS values through
the codec, configuration mappings through validation, and REST requests through the real server.

Sized for CI (a fixed example budget, derandomized, no deadline). Every bug found is kept as an
`@example` next to the property that found it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pgwarden.api.control import AgentControl
from pgwarden.api.management import ManagementSettings, management_routes
from pgwarden.api.security import BasicAuthCredentials
from pgwarden.api.server import start_api, stop_api
from pgwarden.api.state import StateHolder
from pgwarden.config import support
from pgwarden.config.errors import ConfigError, is_secret_path
from pgwarden.config.loader import validate_local
from pgwarden.config.validation import config_problems, parse_dynamic
from pgwarden.core.actions import RenewLeader
from pgwarden.core.decide import decide
from pgwarden.dcs import codec
from pgwarden.dcs.etcd3 import Etcd3Dcs
from pgwarden.localcluster.etcd import etcd_available
from pgwarden.model import MAX_LSN, MAX_TIMELINE, Member, is_system_identifier
from tests.core import builders as core_builders
from tests.support.etcd import EtcdServer
from tests.unit.test_api_management import CONFIG, FakeControl, member_json
from tests.unit.test_api_metrics import PRIMARY

EXAMPLES = int(os.environ.get("PGWARDEN_FUZZ_EXAMPLES", "200"))
"""Examples per property: the CI budget (a few seconds each); raise it for a longer local hunt, with
PGWARDEN_FUZZ_SEED=random to explore beyond the fixed derandomized sequence."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("PGWARDEN_FUZZ_SEED") != "random",
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SECRETS = ("Sekr1t-Fuzz-Passw0rd", "Hush-Etcd-Pw-77x", "Api-Pw-Zebra-991")
"""Distinctive passwords placed in the fuzzed configurations and bodies: never to be repeated back."""

# -- values ---------------------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", " 12", "12 ", "1/2", " 0/0 ", "-1", "1e400", "nan", "true", "off", "0x10", "1_0",
                     "\x00", "ﬀ", "٣", "9" * 45, "FFFFFFFF/FFFFFFFF", "100000000/0"]),
)
_finite = _scalars.filter(lambda v: not (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")))))
_plain_values = st.recursive(
    _finite, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""JSON values holding none of the secrets."""
_json_values = st.recursive(
    _finite | st.sampled_from(SECRETS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

# -- 2. DCS values through the codec -------------------------------------------------------------------

_MEMBER_KEYS = ("conn_url", "api_url", "state", "role", "version", "timeline", "xlog_location", "receive_lsn",
                "replay_lsn", "replication_state", "pending_restart", "checkpoint_after_promote", "tags")
_TAG_KEYS = ("nofailover", "failover_priority", "clonefrom", "noloadbalance", "replicatefrom", "nosync",
             "sync_priority", "nostream", "tag_x")
_SHAPES: dict[str, tuple[str, ...]] = {
    "members/n1": _MEMBER_KEYS,
    "status": ("optime", "slots", "retain_slots", "timeline"),
    "failover": ("leader", "member", "scheduled_at"),
    "sync": ("leader", "sync_standby", "quorum"),
    "config": ("ttl", "loop_wait", "retry_timeout", "postgresql", "synchronous_mode", "pause"),
}
DCS_KEYS = ("leader", "members/n1", "members/n2", "status", "history", "failover", "sync", "config", "initialize",
            "optime/leader")


def _healthy() -> dict[str, str]:
    member = {"conn_url": "postgres://127.0.0.1:5432/n", "api_url": "http://127.0.0.1:8008/patroni",
              "state": "running", "role": "primary", "timeline": 3, "xlog_location": 100, "tags": {}}
    return {
        "leader": "n1", "initialize": "7234", "config": '{"ttl": 30}',
        "members/n1": json.dumps(member), "members/n2": json.dumps({**member, "role": "replica"}),
        "status": '{"optime": 100, "slots": {}, "retain_slots": [], "timeline": 3}',
        "history": '[[1, 50, "no recovery target specified"], [2, 80, "x", null, "n1"]]',
        "failover": '{"leader": "n1", "member": "n2"}', "sync": '{"leader": "n1", "sync_standby": "n2", "quorum": 0}',
    }


@st.composite
def _mutated_json(draw: st.DrawFn, key: str) -> str:
    """The healthy value of `key` with fields replaced, added or removed, or a value of another shape."""
    text = _healthy().get(key if not key.startswith("members/") else "members/n1", "null")
    base = json.loads(text) if key in _SHAPES or key.startswith("members/") or key == "history" else text
    if isinstance(base, dict) and draw(st.booleans()):
        fields = _SHAPES.get("members/n1" if key.startswith("members/") else key, tuple(base))
        for name in draw(st.lists(st.sampled_from(fields), max_size=4)):
            base[name] = draw(_json_values)
        if key.startswith("members/") and draw(st.booleans()):
            base["tags"] = draw(st.dictionaries(st.sampled_from(_TAG_KEYS), _json_values, max_size=4))
    elif isinstance(base, list) and draw(st.booleans()):
        base = [draw(st.lists(_json_values, min_size=2, max_size=6)) for _ in range(draw(st.integers(0, 3)))]
    else:
        base = draw(_json_values)
    return json.dumps(base)


def _garbage(key: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.binary(max_size=40).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=40),
        _mutated_json(key),
        st.sampled_from(["", "{", "[" * 5000, "1" * 5000, "null", "[]", "{}", '"x"', "n1:n2", ":", " 7/7 ",
                         "postgres://h:1/db?application_name=x", "postgres://[::1/x"]),
    )


def _check_view(view: Any) -> None:
    """Every decoded value is in the range the rest of the agent assumes."""
    def timeline(value: int | None) -> None:
        assert value is None or (type(value) is int and 1 <= value <= MAX_TIMELINE), value

    def lsn(value: int | None) -> None:
        assert value is None or (type(value) is int and 0 <= value <= MAX_LSN), value

    def optional_str(value: Any) -> None:
        assert value is None or type(value) is str, value

    for m in view.members:
        assert isinstance(m, Member)
        for text in (m.conn_url, m.api_url, m.state, m.role, m.version):
            assert isinstance(text, str)
        optional_str(m.replication_state)
        timeline(m.timeline)
        for value in (m.xlog_location, m.receive_lsn, m.replay_lsn):
            lsn(value)
        assert type(m.pending_restart) is bool
        assert m.checkpoint_after_promote is None or type(m.checkpoint_after_promote) is bool
        for flag in (m.tags.nofailover, m.tags.clonefrom, m.tags.noloadbalance, m.tags.nosync, m.tags.nostream):
            assert type(flag) is bool
        for priority in (m.tags.failover_priority, m.tags.sync_priority):
            assert type(priority) is int
        optional_str(m.tags.replicatefrom)
        m.host_port  # noqa: B018  (must not raise)
    lsn(view.status.optime)
    timeline(view.status.timeline)
    for name, value in view.status.slots.items():
        assert type(name) is str
        lsn(value)
    assert all(type(s) is str for s in view.status.retain_slots)
    for row in view.history:
        timeline(row.timeline)
        lsn(row.lsn)
        assert type(row.reason) is str
        optional_str(row.timestamp)
        optional_str(row.new_leader)
    if view.failover is not None:
        for value in (view.failover.leader, view.failover.member, view.failover.scheduled_at):
            optional_str(value)
    if view.sync is not None:
        optional_str(view.sync.leader)
        assert all(type(s) is str for s in view.sync.sync_standby)
        assert type(view.sync.quorum) is int
    if view.config is not None:
        assert isinstance(view.config.value, Mapping)
    assert view.leader is None or type(view.leader.name) is str
    assert set(view.unreadable) <= {"config", "status", "history", "failover", "sync"}


_FOUND = {"status": '{"optime": " 12", "timeline": 3}', "failover": "x" * 5000,
          "sync": json.dumps({"sync_standby": [["n2"] * 2000]})}
"""Values the fuzzing found a bug with (the `@example`s below)."""


@FUZZ
@given(key=st.sampled_from(DCS_KEYS), data=st.data())
@example(key="status", data=None).via("found: an LSN string with spaces raised ValueError out of the codec")
@example(key="failover", data=None).via("found: a note repeated a whole garbage value (megabytes in the log)")
@example(key="sync", data=None).via("found: the same, for a garbage sync_standby")
def test_garbage_in_any_dcs_key_decodes_without_raising_and_in_range(key: str, data: Any) -> None:
    kvs = _healthy()
    kvs[key] = data.draw(_garbage(key)) if data is not None else _FOUND[key]
    decoded = codec.decode_cluster("pg", {k: (v, 7) for k, v in kvs.items()})
    _check_view(decoded.view)
    assert all(isinstance(n, str) and len(n) < 1000 for n in decoded.notes)


@FUZZ
@given(st.dictionaries(st.sampled_from(DCS_KEYS), st.text(max_size=30) | _mutated_json("members/n1"), max_size=6))
def test_several_garbage_keys_at_once(values: dict[str, str]) -> None:
    kvs = {**_healthy(), **values}
    _check_view(codec.decode_cluster("pg", {k: (v, 3) for k, v in kvs.items()}).view)


@FUZZ
@given(_json_values, st.text(max_size=20))
@example(" 12", "").via("found: a padded LSN string in a member field")
def test_single_decoders_raise_only_malformed_value(value: Any, text: str) -> None:
    raw = json.dumps(value)
    for decode in (codec.status_from_json, codec.history_from_json, lambda t: codec.failover_from_json(t, 1),
                   lambda t: codec.sync_from_json(t, 1), lambda t: codec.config_from_json(t, 1)):
        for candidate in (raw, text, json.dumps({"optime": value, "slots": {"s": value}, "quorum": value,
                                                 "sync_standby": value, "leader": value, "timeline": value})):
            with contextlib.suppress(codec.MalformedValue):
                decode(candidate)
    member = codec.member_from_json("n1", json.dumps({"xlog_location": value, "timeline": value, "tags": value}))
    _check_view(codec.decode_cluster("pg", {"members/n1": (codec.member_to_json(member), 1)}).view)
    assert codec.tags_from_json(value) is not None


@FUZZ
@given(st.binary(min_size=1, max_size=30).map(lambda b: b.decode("utf-8", "replace"))
       | st.text(min_size=1, max_size=30) | st.sampled_from(["٣٣", "1" * 21, str(2**64), "-7", "7 ", "0x10"]))
@example("Ýå¾G\"ì©").via("found by tests/integration/test_fuzz_agent.py: garbage in `initialize` made the "
                        "primary release its lock (system ID mismatch) and stay down while it was there")
def test_garbage_in_initialize_never_demotes_the_leader(initialize: str) -> None:
    """The decoded `initialize` reaches the core as is; anything but a system identifier is no
    evidence of another cluster: the leader keeps its lock and writes its own identifier back."""
    view = codec.decode_cluster("pg", {**{k: (v, 7) for k, v in _healthy().items()},
                                       "initialize": (initialize, 7)}).view
    if is_system_identifier(view.initialize):
        return  # another cluster's identifier, for all anybody can tell: covered by tests/core
    decision = decide(core_builders.snapshot(dcs=core_builders.cluster(initialize=view.initialize),
                                             memory=core_builders.memory(lease_in=15)))
    assert isinstance(decision.action, RenewLeader), decision
    assert decision.action.write_initialize == core_builders.SYSID


# -- 3. configuration through validation ---------------------------------------------------------------


def _paths(rules: tuple[support.KeyRule, ...]) -> list[tuple[str, ...]]:
    wild = {"*": "x"}
    return sorted({tuple(wild.get(p, p) for p in rule.path.split(".")) for rule in rules})


LOCAL_PATHS = _paths(support.LOCAL_RULES)
DYNAMIC_PATHS = _paths(support.DYNAMIC_RULES)

_config_values = st.one_of(
    _plain_values, st.sampled_from(["10.0.0.0/33", "1PB", "-1", 10**30, 1e308, "on", "quorum", "off", "127.0.0.1:0"]),
)
_secret_values = st.one_of(
    _json_values, st.sampled_from([*SECRETS, f"user:{SECRETS[0]}@h", {"password": SECRETS[1]}, [SECRETS[2]],
                                   {"username": 5, "password": SECRETS[0]}, {"x": [SECRETS[1]]}]),
)
"""What goes where a secret may be (`errors.is_secret_path`); secrets elsewhere are not secret."""


@st.composite
def _config_mapping(draw: st.DrawFn, paths: list[tuple[str, ...]], base: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=6)):
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = draw(_secret_values if is_secret_path(".".join(path)) else _config_values)
    return out


VALID_LOCAL: dict[str, Any] = {
    "scope": "demo", "name": "n1",
    "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008",
                "authentication": {"username": "op", "password": SECRETS[2]}},
    "etcd3": {"hosts": ["127.0.0.1:2379"], "username": "pgw", "password": SECRETS[1]},
    "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/var/lib/pg/x",
                   "authentication": {"superuser": {"username": "postgres", "password": SECRETS[0]},
                                      "replication": {"username": "rep", "password": SECRETS[0]}}},
}
VALID_DYNAMIC: dict[str, Any] = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                                 "postgresql": {"parameters": {"max_connections": 100}}}


def _no_secret(lines: list[str]) -> None:
    for line in lines:
        for secret in SECRETS:
            assert secret not in line, line


_TOP_KEYS = {path[0] for path in LOCAL_PATHS + DYNAMIC_PATHS}


def _names_a_key(line: str, data: Mapping[str, Any]) -> bool:
    """`line` starts with a key path (`a.b[2].c: ...`) whose first key is one of `data`'s."""
    head, sep, _ = line.partition(": ")
    first = head.removeprefix("/config.").split(".", 1)[0].split("[", 1)[0]
    return bool(sep) and (first in data or first in _TOP_KEYS)  # or the canonical name of an alias


def test_the_key_lists_are_not_empty() -> None:
    assert len(LOCAL_PATHS) > 50 and len(DYNAMIC_PATHS) > 20


@FUZZ
@given(_config_mapping(LOCAL_PATHS, VALID_LOCAL))
def test_fuzzed_local_config_raises_only_config_error_naming_keys(data: dict[str, Any]) -> None:
    try:
        validate_local(data)
    except ConfigError as exc:
        assert exc.problems
        _no_secret(exc.problems)
        for problem in exc.problems:
            assert _names_a_key(problem, data), problem


@FUZZ
@given(_config_mapping(DYNAMIC_PATHS, VALID_DYNAMIC))
def test_fuzzed_dynamic_config_is_repaired_or_named(data: dict[str, Any]) -> None:
    config, warnings = parse_dynamic(data)
    assert config is not None
    _no_secret(warnings)
    problems = config_problems(data)
    _no_secret(problems)
    for problem in problems:
        assert _names_a_key(problem, data), problem
    assert 20 <= config.ttl <= 3600 and 1 <= config.loop_wait <= config.ttl and config.retry_timeout >= 3


@FUZZ
@given(_plain_values)
def test_any_value_as_a_whole_config(value: Any) -> None:
    parse_dynamic(value)
    if isinstance(value, Mapping):
        config_problems(value)
    with pytest.raises(ConfigError):
        validate_local(value if isinstance(value, Mapping) else {"scope": value})


# -- 1. REST requests against the real server ------------------------------------------------------------
#
# The server (start_api with every management route and Basic auth) runs on its own event loop in a
# thread, against a real etcd holding a 3-member cluster, with tests/unit/test_api_management's fake
# agent; hypothesis drives it from the test's thread over real loopback HTTP.

API_USER, API_PASSWORD = "operator", SECRETS[2]
MEMBERS = ("n1", "n2", "n3")
HEALTH_PATHS = ("/", "/primary", "/read-write", "/master", "/standby-leader", "/standby_leader", "/leader",
                "/replica", "/read-only", "/synchronous", "/sync", "/read-only-sync", "/read-only-synchronous",
                "/quorum", "/read-only-quorum", "/asynchronous", "/async", "/health", "/liveness", "/readiness",
                "/patroni", "/cluster", "/history", "/metrics", "/openapi.json", "/config", "/nothing/here")
MANAGEMENT = (("POST", "/switchover"), ("POST", "/failover"), ("POST", "/restart"), ("POST", "/reinitialize"),
              ("POST", "/reload"), ("PATCH", "/config"), ("PUT", "/config"), ("DELETE", "/switchover"),
              ("DELETE", "/restart"))
BODY_KEYS = ("leader", "candidate", "member", "scheduled_at", "force", "from_leader", "schedule", "role",
             "postgres_version", "timeout", "restart_pending", "ttl", "loop_wait", "retry_timeout", "pause",
             "postgresql", "synchronous_mode", "maximum_lag_on_failover", "pgwarden")
_body_values = st.one_of(
    _plain_values, st.sampled_from(MEMBERS),
    st.sampled_from(["2030-01-01T00:00:00+00:00", "2000-01-01T00:00:00Z", "2030-01-01T00:00:00", "now", "tomorrow",
                     "9999-12-31T23:59:59+14:00", "primary", "replica", "any", "15.0", "1.2.3.4", "1e9", "-5",
                     {"parameters": {"max_connections": "x"}}, {"parameters": {"work_mem": "8MB"}}, {"lease_ttl": 0}]),
)
_PROTECTED_STATUSES: dict[tuple[str, str], frozenset[int]] = {
    ("POST", "/switchover"): frozenset({200, 202, 400, 409, 412, 422, 503}),
    ("POST", "/failover"): frozenset({200, 202, 400, 409, 412, 422, 503}),
    ("POST", "/restart"): frozenset({200, 202, 400, 422}),
    ("POST", "/reinitialize"): frozenset({200, 400}),
    ("POST", "/reload"): frozenset({202, 400}),
    ("PATCH", "/config"): frozenset({200, 400, 409, 411, 413, 415, 422}),
    ("PUT", "/config"): frozenset({200, 400, 411, 413, 415, 422}),
    ("DELETE", "/switchover"): frozenset({200, 404}),
    ("DELETE", "/restart"): frozenset({404}),
}
"""What each route may answer a fuzzed (authenticated) request (contract 4.4, api/*.py); 401 on top
without the right credentials. A 503 of /switchover is legitimate only for an accepted (valid)
request: the key was written, and the fake agent never switches."""


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        bad = [r for r in self.records if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
               or "BUG" in r.getMessage()]
        return [f"{r.name} {r.levelname} {r.getMessage()}" for r in bad]


class _RestRig:
    """The real server on its own loop in a thread, with helpers to call into that loop."""

    def __init__(self, etcd_host: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-api", daemon=True)
        self.thread.start()
        self.etcd_host = etcd_host
        self.dcs: list[Etcd3Dcs] = []
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> None:
        for name in MEMBERS:
            dcs = Etcd3Dcs(hosts=[self.etcd_host], namespace="/service", scope="fuzz", name=name, ttl=300)
            await dcs.connect()
            self.dcs.append(dcs)
        n1 = self.dcs[0]
        assert await n1.set_config(CONFIG, None) and await n1.acquire_leader()
        for dcs, name in zip(self.dcs, MEMBERS, strict=True):
            await dcs.touch_member(member_json(name, "primary" if name == "n1" else "replica"))
        self.control = FakeControl(n1)
        self.holder = StateHolder(dataclasses.replace(PRIMARY, lock_deadline=time.monotonic() + 36000))
        routes = management_routes(cast(AgentControl, self.control),
                                   ManagementSettings(dcs_timeout=5, switchover_wait=0.05))
        self.api = await start_api(self.holder, "127.0.0.1", 0, routes=routes,
                                   auth=BasicAuthCredentials(API_USER, API_PASSWORD))
        self.port = self.api.addresses[0][1]

    async def _stop(self) -> None:
        await stop_api(self.api)
        for dcs in self.dcs:
            await dcs.close()

    def close(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def stored(self) -> tuple[Any, Any]:
        """(the failover key, the /config) as stored now."""
        async def read() -> tuple[Any, Any]:
            view = await self.dcs[0].get_cluster()
            return ((view.failover.leader, view.failover.member, view.failover.scheduled_at) if view.failover else None,
                    dict(view.config.value) if view.config else None)
        result: tuple[Any, Any] = self.run(read())
        return result

    def restore(self) -> None:
        async def restore() -> None:
            await self.dcs[0].delete_failover()
            await self.dcs[0].set_config(CONFIG, None)
        self.run(restore())


@pytest.fixture(scope="module")
def rest() -> Iterator[tuple[_RestRig, _LogRecorder]]:
    if not etcd_available():
        pytest.skip("etcd binary not available")
    recorder = _LogRecorder()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    with EtcdServer.start() as etcd:
        rig = _RestRig(etcd.host)
        try:
            yield rig, recorder
        finally:
            rig.close()
            root.removeHandler(recorder)
            root.setLevel(old_level)


def _auth(good: bool) -> dict[str, str]:
    user, password = (API_USER, API_PASSWORD) if good else ("operator", "wrong")
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _http(port: int, method: str, target: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=dict(headers))
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def _check_answer(status: int, text: bytes, recorder: _LogRecorder, body_size: int) -> None:
    for secret in SECRETS:
        assert secret.encode() not in text
    assert len(text) <= 2 * body_size + 8192, len(text)
    assert b"Traceback" not in text
    assert recorder.problems() == []


_query = st.lists(
    st.tuples(st.sampled_from(["lag", "tag_x", "tag_", "replication_state", "mode", "x", "tag_nofailover", "lag"])
              | st.text(max_size=6),
              st.sampled_from(["", "0", "1", "-1", "16kB", "64MB", "1e400", "9" * 40, "streaming", "apply", "write",
                               "true", "%", "1TB", "nan", "1 GB", "\x00"]) | st.text(max_size=10)),
    max_size=4,
)


@FUZZ
@given(path=st.sampled_from(HEALTH_PATHS), method=st.sampled_from(["GET", "GET", "HEAD", "OPTIONS"]), query=_query)
def test_fuzzed_health_checks(rest: tuple[_RestRig, _LogRecorder], path: str, method: str,
                              query: list[tuple[str, str]]) -> None:
    rig, recorder = rest
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    status, text = _http(rig.port, method, target, None, {})
    always_there = path in ("/config", "/metrics", "/openapi.json", "/patroni", "/history") and method == "GET"
    allowed = {200} if always_there else {200, 400, 503}  # HEAD/OPTIONS: the code of a health check (contract 4.2)
    assert status in allowed | {404}, (status, text[:200])
    _check_answer(status, text, recorder, 0 if path not in ("/openapi.json", "/metrics") else 10**6)


_bodies = st.one_of(
    st.dictionaries(st.sampled_from(BODY_KEYS), _body_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    _plain_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
    st.sampled_from([b"", b"{", b"[" * 100 + b"]" * 100, b'{"a":' * 40 + b"1" + b"}" * 40, b"null", b'"x"',
                     b'{"leader": "n1", "candidate": "n2"}', b'{"candidate": "n2"}', b'{"leader": "n1"}',
                     b'{"leader": "n1", "candidate": "n1"}', b'{"schedule": "2000-01-01T00:00:00"}',
                     b'{"ttl": 1e18}', b'{"force": "yes"}', b'{"leader": "n1", "candidate": "n2", "x": NaN}',
                     b"\xff\xfe{}", b'{"\\ud800": 1}', b"1" * 5000]),
)


@FUZZ
@given(route=st.sampled_from(MANAGEMENT), body=_bodies | st.none(), good_auth=st.integers(0, 9).map(bool),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1",
                                     "multipart/form-data; boundary=x"]),
       query=_query)
@example(route=("POST", "/switchover"), body=b'{"leader": "n1", "candidate": "n2"}', good_auth=True,
         content_type="application/json", query=[])
def test_fuzzed_management_requests(rest: tuple[_RestRig, _LogRecorder], route: tuple[str, str], body: bytes | None,
                                    good_auth: bool, content_type: str, query: list[tuple[str, str]]) -> None:
    rig, recorder = rest
    method, path = route
    before = rig.stored()
    calls, wakeups = len(rig.control.calls), rig.control.wakeups
    headers = {**_auth(good_auth), **({"Content-Type": content_type} if content_type else {})}
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        status, text = _http(rig.port, method, target, body, headers)
        after = rig.stored()
        event(f"{method} {path} {status}")
        _check_answer(status, text, recorder, len(body or b""))
        if not good_auth:
            assert status == 401, (status, text[:200])
        else:
            assert status in _PROTECTED_STATUSES[route], (status, text[:300])
        if status >= 400 and method != "DELETE" and not (status == 503 and path in ("/switchover", "/failover")):
            # refused: nothing written, nothing asked of the agent
            assert after == before, (status, text[:300])
            assert (len(rig.control.calls), rig.control.wakeups) == (calls, wakeups), (status, text[:300])
        if status == 503:
            assert after[0] is not None and after[0] != before[0], text[:300]  # an accepted request only
    finally:
        rig.restore()


_raw_requests = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda method, target, version, headers, body: method + b" " + target + b" " + version + b"\r\n"
        + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body,
        st.sampled_from([b"GET", b"POST", b"PATCH", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"BREW", b"G\x00T", b""]),
        st.sampled_from([b"/", b"/primary?lag=%zz", b"/replica?lag=\xff", b"/switchover", b"/config", b"*",
                         b"//../../etc/passwd", b"/restart?x=" + b"a" * 5000, b"http://x/primary", b"/%00"])
        | st.binary(max_size=30),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"HTTP/1.1 extra", b""]),
        st.lists(st.sampled_from([b"Host: x", b"Content-Length: 5", b"Content-Length: -1",
                                  b"Content-Length: 99999999999999999999", b"Content-Length: 2", b"Content-Length: 3",
                                  b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
                                  b"Content-Type: application/json", b"Authorization: Basic ###",
                                  b"Authorization: Basic " + base64.b64encode(f"{API_USER}:{API_PASSWORD}".encode()),
                                  b"Expect: 100-continue", b"Connection: upgrade", b"Upgrade: websocket",
                                  b"X: \x00\xff", b"Bad Header", b": empty", b"A" * 9000 + b": b"])
                 | st.binary(max_size=20), max_size=6),
        st.sampled_from([b"", b"{}", b"ZZ\r\nxx\r\n0\r\n\r\n", b'{"leader": "n1", "candidate": "n2"}',
                         b"5\r\n{}\r\n", b"\x00" * 10]) | st.binary(max_size=30),
    ),
)


@FUZZ
@given(raw=_raw_requests)
@example(raw=b"GARBAGE / HTTP/9.9 \x00\r\n\r\n")
def test_raw_malformed_http(rest: tuple[_RestRig, _LogRecorder], raw: bytes) -> None:
    rig, recorder = rest
    before = rig.stored()
    with socket.create_connection(("127.0.0.1", rig.port), timeout=20) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    try:
        for line in answer.split(b"\r\n"):
            if line.startswith(b"HTTP/1."):
                code = int(line.split()[1])
                assert code < 500 or code == 503, answer[:300]
        _check_answer(0, answer, recorder, len(raw) * 3)
        if b"Authorization: Basic " + base64.b64encode(f"{API_USER}:{API_PASSWORD}".encode()) not in raw:
            assert rig.stored() == before
    finally:
        rig.restore()
