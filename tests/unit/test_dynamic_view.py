"""One reading of `/config` (issue 13): the cluster model's parsed view (`ClusterView.dynamic`) answers
what the REST API, the CLI and the core ask, the way Patroni and the agent's own validated parse read
it, never raises on garbage; and the decision core's settings are derived once, by one function
(`config.layering.ha_settings_from`), for the agent and the simulator."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.api.health import sync_mode
from pgwarden.api.switchover import SwitchoverRequest, check_switchover
from pgwarden.config.dynamic import adjust_timing
from pgwarden.config.layering import ha_settings_from, layer
from pgwarden.config.schema import LocalConfig
from pgwarden.config.validation import parse_dynamic, validate_model
from pgwarden.core.snapshot import WatchdogMode
from pgwarden.core.sync.plan import AckPoint, SyncMode
from pgwarden.dcs import codec
from pgwarden.model import ClusterView, DynamicView, LeaderKey, Member, SyncState, Tags, Versioned, synchronous_mode_of

SYNCHRONOUS = [True, "on", "ON", " true ", "yes", 1, "1", "quorum", "Quorum"]
ASYNCHRONOUS = [False, "off", "false", "no", 0, "0", None, "sometimes", 2, 1.0, "", [], {"on": 1}, "t"]


def cluster(config: Any, sync: tuple[str, ...] = ("n3",)) -> ClusterView:
    members = (Member("n1", role="primary", state="running"), Member("n2", role="replica", state="running"),
               Member("n3", role="replica", state="running"))
    return ClusterView("demo", config=Versioned({"synchronous_mode": config}, 1), leader=LeaderKey("n1"),
                       members=members, sync=SyncState(leader="n1", sync_standby=sync))


@pytest.mark.parametrize("value", SYNCHRONOUS)
def test_every_reader_finds_synchronous_mode_on(value: Any) -> None:
    view = cluster(value)
    assert view.dynamic.synchronous
    refusal = check_switchover(view, SwitchoverRequest("switchover", "n1", "n2"), paused=False)
    assert refusal is not None and refusal.text == "candidate name does not match with sync_standby"
    assert sync_mode(view) == ("quorum" if str(value).lower() == "quorum" else "sync")


@pytest.mark.parametrize("value", ASYNCHRONOUS)
def test_every_reader_finds_synchronous_mode_off(value: Any) -> None:
    view = cluster(value)
    assert not view.dynamic.synchronous
    assert check_switchover(view, SwitchoverRequest("switchover", "n1", "n2"), paused=False) is None


@pytest.mark.parametrize("value", SYNCHRONOUS + ASYNCHRONOUS)
def test_the_view_reads_synchronous_mode_and_pause_as_the_agent_runs_them(value: Any) -> None:
    config, _ = parse_dynamic({"synchronous_mode": value, "pause": value}, notes=False)
    view = DynamicView.parse({"synchronous_mode": value, "pause": value})
    assert view.synchronous_mode == config.synchronous_mode == (synchronous_mode_of(value) or "off")
    assert view.paused is bool(config.pause)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8))
def test_garbage_in_config_reads_as_defaults_and_never_raises(garbage: Any) -> None:
    keys = ("pause", "synchronous_mode", "failsafe_mode", "standby_cluster", "ttl", "loop_wait",
            "maximum_lag_on_failover")
    view = DynamicView.parse({key: garbage for key in keys})
    assert view.synchronous_mode in ("off", "on", "quorum")
    assert 0 <= view.ttl <= 3600 and 0 <= view.loop_wait <= 3600 and 0 <= view.maximum_lag_on_failover < 2**63
    assert isinstance(DynamicView.parse(garbage), DynamicView)  # the whole value garbage, too


def test_the_codec_builds_the_view_and_an_unreadable_config_reads_as_defaults() -> None:
    text = json.dumps({"pause": "on", "ttl": "9" * 5000, "loop_wait": 5, "maximum_lag_on_failover": -1})
    view = codec.decode_cluster("demo", {"config": (text, 4)}).view.dynamic
    assert view == DynamicView(paused=True, loop_wait=5)
    assert codec.decode_cluster("demo", {"config": ("{garbage", 4)}).view.dynamic == DynamicView()


def test_the_view_follows_the_config_through_replace() -> None:
    view = cluster("quorum")
    assert view.dynamic.quorum and view.paused is False
    paused = dataclasses.replace(view, config=Versioned({"pause": True}, 2))
    assert paused.paused and not paused.dynamic.synchronous
    assert dataclasses.replace(view, config=None).dynamic == DynamicView()


LOCAL = validate_model(LocalConfig, {
    "scope": "demo", "name": "n1", "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
    "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/tmp/n1",
                   "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "r"}},
                   "use_pg_rewind": True, "parameters": {"synchronous_commit": "remote_apply"}},
    "tags": {"nosync": True},
})  # fmt: skip


def test_the_agent_derives_the_core_settings_once_with_ha_settings_from() -> None:
    raw = {"ttl": 40, "loop_wait": 5, "synchronous_mode": "quorum", "synchronous_node_count": 2,
           "check_timeline": True, "postgresql": {"use_pg_rewind": False, "use_slots": False,
                                                  "parameters": {"synchronous_standby_names": "*"}}}
    config = layer(LOCAL, *parse_dynamic(raw))
    ha = config.ha
    assert (ha.ttl, ha.loop_wait, ha.check_timeline, ha.use_slots) == (40, 5, True, False)
    assert ha.use_pg_rewind is True  # the member's own postgresql.use_pg_rewind wins
    assert ha.tags == Tags(nosync=True)
    assert (ha.sync.mode, ha.sync.node_count) == (SyncMode.QUORUM, 2)
    assert (ha.sync.ack, ha.sync.configured_ssn) == (AckPoint.APPLY, "*")  # the parameters in force
    assert ha.watchdog.mode is WatchdogMode.AUTOMATIC  # no watchdog section: Patroni's default
    assert ha == ha_settings_from(config.dynamic, tags=Tags(nosync=True), parameters=config.parameters,
                                  watchdog=ha.watchdog)


def test_without_a_local_configuration_the_dynamic_one_alone_decides() -> None:
    """How the simulator derives its settings: /config parsed as the agent parses it, and its tags."""
    raw = {"ttl": 20, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 65536,
           "postgresql": {"use_pg_rewind": True, "remove_data_directory_on_rewind_failure": True},
           "pgwarden": {"lease_ttl": 5}}
    settings = ha_settings_from(parse_dynamic(raw, notes=False)[0], tags=Tags(nofailover=True))
    assert (settings.ttl, settings.loop_wait, settings.retry_timeout) == adjust_timing(20, 10, 10)[:3]
    assert settings.lease_ttl == 5 and settings.maximum_lag_on_failover == 65536
    assert settings.use_pg_rewind and settings.remove_data_directory_on_rewind_failure
    assert settings.tags.nofailover and settings.sync.mode is SyncMode.OFF
