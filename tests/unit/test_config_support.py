"""The support table (config/support.py): every key of Patroni's schema is in exactly one class, and
refused keys are refused wherever a configuration enters (validation, edit-config, /config checks,
an agent's adoption of /config)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.cli.config_patch import config_problems as edit_config_problems
from pgwarden.config import ConfigError, load_local
from pgwarden.config.loader import load_local_noting
from pgwarden.config.support import (
    DYNAMIC_RULES,
    LOCAL_RULES,
    LOCAL_TOP_LEVEL_DYNAMIC,
    dynamic_refusals,
    judge_dynamic,
    judge_local,
)
from pgwarden.config.support import _match as match_rule
from pgwarden.config.validation import config_problems, parse_dynamic


def _words(text: str) -> list[str]:
    """The whitespace-separated words of a transcribed list."""
    return [word for line in text.splitlines() for word in line.split(" ") if word]


# Patroni's configuration keys as the contract lists them (shared/reference/patroni-contract.md 6.2,
# 6.3), transcribed by hand: a key added there and to nobody's class here fails the test below.
CONTRACT_LOCAL_KEYS = _words("""
name scope namespace thread_pool_size thread_stack_size
log.type log.level log.traceback_level log.format log.dateformat log.static_fields log.max_queue_size log.dir
log.mode log.file_num log.file_size log.loggers log.deduplicate_heartbeat_logs
restapi.listen restapi.connect_address restapi.authentication.username restapi.authentication.password
restapi.certfile restapi.keyfile restapi.keyfile_password restapi.cafile restapi.ciphers restapi.verify_client
restapi.allowlist restapi.allowlist_include_members restapi.http_extra_headers restapi.https_extra_headers
restapi.request_queue_size restapi.server_tokens restapi.thread_pool_size
ctl.authentication.username ctl.authentication.password ctl.insecure ctl.cacert ctl.certfile ctl.keyfile
ctl.keyfile_password
bootstrap.dcs bootstrap.method bootstrap.initdb bootstrap.post_bootstrap bootstrap.post_init bootstrap.pg_hba
bootstrap.users
etcd etcd3.host etcd3.hosts etcd3.url etcd3.proxy etcd3.srv etcd3.srv_suffix etcd3.protocol etcd3.username
etcd3.password etcd3.cacert etcd3.cert etcd3.key
consul zookeeper exhibitor kubernetes raft citus
postgresql.listen postgresql.connect_address postgresql.proxy_address postgresql.data_dir postgresql.config_dir
postgresql.bin_dir postgresql.bin_name postgresql.pgpass postgresql.custom_conf
postgresql.parameters postgresql.parameters_primary postgresql.parameters_replica
postgresql.parameters_standby_leader postgresql.pg_hba postgresql.pg_hba_primary postgresql.pg_hba_replica
postgresql.pg_ident postgresql.pg_ident_primary postgresql.pg_ident_replica
postgresql.callbacks.on_start postgresql.callbacks.on_stop postgresql.callbacks.on_restart
postgresql.callbacks.on_reload postgresql.callbacks.on_role_change
postgresql.create_replica_methods postgresql.basebackup postgresql.use_unix_socket postgresql.use_unix_socket_repl
postgresql.pg_ctl_timeout postgresql.use_pg_rewind postgresql.rewind
postgresql.remove_data_directory_on_rewind_failure postgresql.remove_data_directory_on_diverged_timelines
postgresql.recovery_conf postgresql.replica_method postgresql.pre_promote postgresql.before_stop
watchdog
tags.nofailover tags.failover_priority tags.nosync tags.sync_priority tags.clonefrom tags.noloadbalance
tags.replicatefrom tags.nostream tags.some_custom_tag
""") + [f"postgresql.authentication.{role}.{key}" for role in ("superuser", "replication", "rewind")
               for key in ("username", "password", "sslmode", "sslkey", "sslpassword", "sslcert", "sslrootcert",
                           "sslcrl", "sslcrldir", "sslnegotiation", "gssencmode", "channel_binding")]

CONTRACT_DYNAMIC_KEYS = _words("""
ttl loop_wait retry_timeout maximum_lag_on_failover maximum_lag_on_syncnode primary_start_timeout
master_start_timeout primary_stop_timeout master_stop_timeout primary_race_backoff max_timelines_history
check_timeline synchronous_mode synchronous_mode_strict synchronous_node_count failsafe_mode pause
member_slots_ttl slots permanent_slots permanent_replication_slots ignore_slots standby_cluster
postgresql.use_pg_rewind postgresql.use_slots postgresql.recovery_conf postgresql.parameters
postgresql.parameters_primary postgresql.parameters_replica postgresql.pg_hba postgresql.pg_ident
postgresql.pg_ctl_timeout postgresql.basebackup postgresql.rewind
""")

SAMPLE_VALUES: list[Any] = [None, True, 1, "x", ["x"], {"x": 1}, "required", "initdb", {"a": {"type": "physical"}}]


@pytest.mark.parametrize("path", CONTRACT_LOCAL_KEYS)
def test_every_local_key_of_the_contract_is_in_a_class(path: str) -> None:
    keys = tuple(path.split("."))
    for value in SAMPLE_VALUES:
        rule = match_rule(LOCAL_RULES + LOCAL_TOP_LEVEL_DYNAMIC, keys, value, {})
        assert rule is not None, f"{path} = {value!r} is in no class of LOCAL_RULES"


@pytest.mark.parametrize("path", CONTRACT_DYNAMIC_KEYS)
def test_every_dynamic_key_of_the_contract_is_in_a_class(path: str) -> None:
    keys = tuple(path.split("."))
    for value in SAMPLE_VALUES:
        assert match_rule(DYNAMIC_RULES, keys, value, {}) is not None, f"{path} = {value!r} is in no class"


def test_dynamic_keys_written_at_the_top_of_a_local_file_are_classified() -> None:
    for path in CONTRACT_DYNAMIC_KEYS:
        if "." not in path:
            assert match_rule(LOCAL_TOP_LEVEL_DYNAMIC, (path,), 1, {}) is not None, path


# -- refusals at each entry point -------------------------------------------------------------------

BASE: dict[str, Any] = {
    "scope": "batman", "name": "pg0", "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
    "etcd3": {"host": "127.0.0.1:2379"},
    "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/var/lib/pg/data",
                   "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "rep"}}},
    "watchdog": {"mode": "off"},
}  # fmt: skip

LOCAL_REFUSALS: list[tuple[dict[str, Any], str]] = [
    # A custom method is implemented; one named without a usable section is refused by validation.
    ({"bootstrap": {"method": "pgbackrest"}}, "bootstrap: expected a section `pgbackrest`"),
    ({"postgresql": {"create_replica_methods": ["pgbackrest", "basebackup"]}},
     "postgresql: expected a section `pgbackrest`"),
    ({"postgresql": {"create_replica_methods": "wal_e,basebackup", "wal_e": {"keep_data": True}}},
     "postgresql: expected `wal_e.command`"),
    ({"citus": {"group": 0, "database": "citus"}}, "citus: Citus clusters are not supported"),
    ({"etcd": {"srv": "etcd.example"}}, "etcd.srv: etcd discovery through a proxy or DNS SRV"),
    ({"consul": {"host": "127.0.0.1:8500"}}, "consul: consul is not supported by pgwarden yet"),
    ({"kubernetes": {"labels": {"app": "pg"}}}, "kubernetes: kubernetes is not supported by pgwarden yet"),
    ({"etcd3": {"srv": "etcd.example"}}, "etcd3.srv: etcd discovery through a proxy or DNS SRV"),
    ({"etcd3": {"proxy": "http://127.0.0.1:2379"}}, "etcd3.proxy: etcd discovery through a proxy or DNS SRV"),
    ({"synchronous_mode": True}, "synchronous_mode: a cluster-wide setting that Patroni reads only from /config"),
    ({"standby_cluster": {"host": "10.0.0.1"}}, "standby_cluster: a cluster-wide setting"),
    ({"bootstrap": {"dcs": {"standby_cluster": {"host": "10.0.0.1", "create_replica_methods": ["wal e"]}}}},
     "bootstrap.dcs.standby_cluster: a section pgwarden cannot use"),
    ({"bootstrap": {"dcs": {"slots": {"cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}}}}},
     "bootstrap.dcs.slots: logical slots need `postgresql.parameters.wal_level: logical`"),
    ({"bootstrap": {"dcs": {"permanent_replication_slots": {"barman": None, "cdc": {"type": "logical"}}}}},
     "bootstrap.dcs.permanent_replication_slots: an entry pgwarden cannot read"),
]  # fmt: skip

DYNAMIC_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"standby_cluster": {"host": "10.0.0.1", "create_replica_methods": ["wal e"]}},
     "standby_cluster: a section pgwarden cannot use"),
    ({"slots": {"cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}}},
     "slots: logical slots need `postgresql.parameters.wal_level: logical`"),
    ({"permanent_slots": {"barman": None, "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}}},
     "permanent_slots: logical slots need `postgresql.parameters.wal_level: logical`"),
]  # fmt: skip


def merged(extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def test_the_base_configuration_is_valid_and_quiet(tmp_path: Path) -> None:
    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump(BASE))
    _, notes = load_local_noting(path, {})
    assert notes == []


@pytest.mark.parametrize(("extra", "line"), LOCAL_REFUSALS)
def test_refused_local_keys_fail_validation_with_one_clear_line(tmp_path: Path, extra: dict[str, Any],
                                                                line: str) -> None:
    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump(merged(extra)))
    with pytest.raises(ConfigError) as caught:
        load_local(path, {})
    assert [p for p in caught.value.problems if p.startswith(line)], caught.value.problems


@pytest.mark.parametrize(("value", "line"), DYNAMIC_REFUSALS)
def test_refused_dynamic_keys_are_refused_by_every_writer(value: dict[str, Any], line: str) -> None:
    assert any(p.startswith(line) for p in config_problems(value))  # PATCH/PUT /config (in the child)
    assert any(p.startswith(line) for p in edit_config_problems(value))  # edit-config
    assert any(p.startswith(line) for p in dynamic_refusals(value))  # an agent adopting /config


@pytest.mark.parametrize(("value", "_line"), DYNAMIC_REFUSALS)
def test_the_neutral_form_of_a_refused_key_is_implemented(value: dict[str, Any], _line: str) -> None:
    (key,) = value
    assert dynamic_refusals({key: {}}) == []


def test_watchdog_and_failsafe_are_implemented() -> None:
    for section in ({"mode": False}, {"mode": "automatic", "device": "/dev/watchdog"},
                    {"mode": "required", "driver": "testing", "device": "/run/wd", "safety_margin": -1}):
        assert judge_local({"watchdog": section}) == []
    assert judge_local({}) == []  # no section: Patroni's default, automatic
    assert dynamic_refusals({"failsafe_mode": True}) == []
    assert judge_local({"bootstrap": {"dcs": {"failsafe_mode": True}}}) == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"thread_pool_size": 10}, "thread_pool_size: pgwarden serves its REST API on asyncio"),
        ({"bootstrap": {"users": {"admin": {"password": "x"}}}}, "bootstrap.users: removed in Patroni 4.0"),
        ({"postgresql": {"pgbackrest": {"command": "x"}}}, "postgresql.pgbackrest: a replica creation method's"),
        ({"postgresql": {"use_slots": False}}, "postgresql.use_slots: only the dynamic configuration"),
        ({"primary_start_timeout": 10}, "primary_start_timeout: a cluster-wide setting"),
        ({"restapi": {"listne": "x"}}, "restapi.listne: not a Patroni or pgwarden setting (a typo?); ignored"),
    ],
)  # fmt: skip
def test_harmless_and_unknown_local_keys_are_warned_of(raw: dict[str, Any], fragment: str) -> None:
    messages = [v.message for v in judge_local({**raw, "watchdog": {"mode": "off"}})]
    assert any(m.startswith(fragment) for m in messages), messages


def test_a_selected_method_section_is_not_warned_of_twice() -> None:
    raw = {"postgresql": {"create_replica_methods": ["pgbackrest"], "pgbackrest": {"command": "x"}},
           "watchdog": {"mode": "off"}}
    assert [v.path for v in judge_local(raw)] == []
    raw = {"bootstrap": {"method": "restore", "restore": {"command": "x"}}, "watchdog": {"mode": "off"}}
    assert [v.path for v in judge_local(raw)] == []


def test_harmless_and_unknown_dynamic_keys_are_warned_of_by_the_agents() -> None:
    _, warnings = parse_dynamic({"ignore_slots": [{"name": "x"}], "primary_race_backoff": 5, "ttl_typo": 3})
    assert not any("ignore_slots" in w for w in warnings), warnings  # implemented
    assert any(w.startswith("/config: primary_race_backoff: pgwarden races") for w in warnings), warnings
    assert "/config: ttl_typo: not a Patroni or pgwarden setting (a typo?); ignored" in warnings
    assert judge_dynamic({"ttl": 30, "pgwarden": {"lease_ttl": 7}, "postgresql": {"parameters": {"x": 1}}}) == []


def test_validate_config_prints_warnings_and_refusals(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pgwarden.cli.main import main

    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "watchdog"} | {"thread_pool_size": 5}))
    result = CliRunner().invoke(main, ["validate-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "watchdog" not in result.output
    assert "warning: thread_pool_size: pgwarden serves its REST API on asyncio" in result.output
    assert "configuration is valid" in result.output

    path.write_text(yaml.safe_dump(merged({"citus": {"group": 0, "database": "citus"}})))
    result = CliRunner().invoke(main, ["validate-config", str(path)])
    assert result.exit_code == 1
    assert "citus: Citus clusters are not supported" in result.output
    assert "configuration is valid" not in result.output


def test_docs_show_the_table_as_the_code_has_it() -> None:
    from pgwarden.config.support import compatibility_table

    doc = (Path(__file__).parents[2] / "docs" / "compatibility.md").read_text()
    start = doc.index("-->\n", doc.index("<!-- generated from")) + len("-->\n")
    end = doc.index("<!-- end of the generated table -->")
    assert doc[start:end].strip() == compatibility_table().strip(), \
        "docs/compatibility.md is stale: regenerate its table with `python -m pgwarden.config.support`"
