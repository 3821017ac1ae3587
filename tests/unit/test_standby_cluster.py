"""Standby clusters outside the core: the `standby_cluster` section read and refused, the member JSON and
callback role of a standby leader, the adapter settings it runs with, and demote-cluster/promote-cluster's
own rules."""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.agent.callbacks import callback_role
from pgwarden.agent.member import member_json
from pgwarden.cli.cluster_role import pending, standby_section
from pgwarden.cli.session import CtlError
from pgwarden.config.layering import ha_settings_from
from pgwarden.config.support import dynamic_refusals
from pgwarden.config.validation import dynamic_problems, parse_dynamic
from pgwarden.core.snapshot import StandbyCluster
from pgwarden.engine import effects as fx
from pgwarden.model import DataDirState, LocalPg, Tags
from pgwarden.postgres.conf import file_parameters
from pgwarden.postgres.settings import Credentials, PgSettings, Upstream

SECTION = {"host": "10.0.0.9,10.0.0.10", "port": 5433, "primary_slot_name": "site_b",
           "restore_command": "pgbackrest --stanza=main archive-get %f \"%p\"", "recovery_min_apply_delay": "5min",
           "create_replica_methods": ["basebackup"]}


def test_the_section_reaches_the_core() -> None:
    dynamic, warnings = parse_dynamic({"standby_cluster": SECTION})
    assert not warnings and not dynamic_refusals({"standby_cluster": SECTION})
    standby = ha_settings_from(dynamic, tags=Tags()).standby_cluster
    assert standby == StandbyCluster(host="10.0.0.9,10.0.0.10", port=5433, primary_slot_name="site_b",
                                     restore_command=SECTION["restore_command"], recovery_min_apply_delay="5min")
    assert standby.follow_name == "@remote:10.0.0.9,10.0.0.10:5433/site_b"
    assert ha_settings_from(parse_dynamic({})[0], tags=Tags()).standby_cluster is None


@pytest.mark.parametrize(("section", "problem"), [
    ({"port": 5432}, "expected `host`"),
    ({"host": "db; rm -rf /"}, "standby_cluster.host: expected a host name"),
    ({"host": "db", "port": 70000}, "standby_cluster.port"),
    ({"host": "db", "primary_slot_name": "Site-B"}, "standby_cluster.primary_slot_name: expected a replication slot"),
    ({"host": "db", "restore_command": "cp a b\nrm -rf /"}, "standby_cluster.restore_command: expected a one-line"),
    ({"host": "db", "recovery_min_apply_delay": "soon"}, "standby_cluster.recovery_min_apply_delay"),
    ({"host": "db", "create_replica_methods": ["wal e; rm /", "basebackup"]}, "standby_cluster.create_replica_methods"),
])
def test_hostile_values_are_refused_with_the_key_named(section: dict[str, Any], problem: str) -> None:
    raw = {"standby_cluster": section}
    assert dynamic_refusals(raw), "refused: never read as absent (a writable cluster)"
    assert any(problem in p for p in dynamic_problems(raw, "")), dynamic_problems(raw, "")


def test_an_unknown_key_is_refused() -> None:
    assert dynamic_refusals({"standby_cluster": {"host": "db", "hots": "typo"}})


def test_member_json_names_the_standby_leader() -> None:
    replica = LocalPg(DataDirState.VALID, sysid="1", running=True, accepting=True, in_recovery=True)
    common: dict[str, Any] = {"conn_url": "postgres://h:1/postgres", "api_url": "http://h:2/patroni", "tags": Tags(),
                              "task": None}
    assert member_json(pg=replica, standby_leader=True, **common)["role"] == "standby_leader"
    assert member_json(pg=replica, **common)["role"] == "replica"
    primary = LocalPg(DataDirState.VALID, sysid="1", running=True, accepting=True, in_recovery=False)
    assert member_json(pg=primary, standby_leader=True, **common)["role"] == "primary"


def test_callbacks_name_the_standby_leader() -> None:
    standby = StandbyCluster(host="db", port=5432)
    assert callback_role("replica", standby.follow_name, standby) == "standby_leader"
    assert callback_role("replica", "n1", standby) == "replica"
    assert callback_role("replica", standby.follow_name, None) == "replica"


def _pg_settings() -> PgSettings:
    from pathlib import Path

    return PgSettings(data_dir=Path("/nonexistent"), name="n1", scope="b", superuser=Credentials("postgres"),
                      replication=Credentials("replicator"))


def test_a_remote_upstream_streams_through_its_own_slot_or_none() -> None:
    settings = _pg_settings()
    through = file_parameters(settings, "replica", Upstream("@remote:db:5432/site_b", "db", 5432, "site_b"))
    assert through["primary_slot_name"] == "site_b" and "host=db" in through["primary_conninfo"]
    member = file_parameters(settings, "replica", Upstream("n2", "db", 5432))
    assert member["primary_slot_name"] == "n1"
    archive_only = file_parameters(settings, "replica", Upstream("@remote::5432/", "", 5432, ""))
    assert archive_only["primary_conninfo"] == "" and archive_only["primary_slot_name"] == ""


def test_the_remote_follow_effect_is_hashable_and_comparable() -> None:
    up = fx.Upstream("@remote:db:5432/", "db", 5432, remote=fx.RemoteFollow("", (("restore_command", "cp"),)))
    assert up == fx.Upstream("@remote:db:5432/", "db", 5432, remote=fx.RemoteFollow("", (("restore_command", "cp"),)))
    assert hash(up)


def test_demote_cluster_needs_a_source() -> None:
    with pytest.raises(CtlError, match="--host"):
        standby_section(None, None, None, None)
    assert standby_section("db", 5433, None, "site_b") == {"host": "db", "port": 5433, "primary_slot_name": "site_b"}


def test_pending_names_what_is_missing() -> None:
    running = {"role": "replica", "state": "running"}
    statuses: dict[str, Any] = {"n1": {"role": "standby_leader", "state": "running"}, "n2": running}
    assert pending(statuses, "standby_leader") == []
    assert pending({**statuses, "n2": None}, "standby_leader") == ["n2 (not answering)"]
    assert pending(statuses, "primary") == ["a running primary", "n1 (standby_leader, running)"]
