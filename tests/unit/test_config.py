"""pgwarden.config: Patroni YAML/env compatibility, validation messages, dynamic config and layering."""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.config import (
    ConfigError,
    EffectiveConfig,
    adjust_timing,
    api_url,
    conn_url,
    effective,
    load_local,
    parse_dynamic,
    parse_listen,
    scrub_patroni_env,
    validate_file,
)
from pgwarden.model import Tags

# Written from the contract's key list in the style of Patroni's postgres0.yml: it must load unchanged.
POSTGRES0_YML = textwrap.dedent("""\
    scope: batman
    namespace: /service/
    name: postgresql0

    restapi:
      listen: 127.0.0.1:8008
      connect_address: 127.0.0.1:8008
      authentication:
        username: username
        password: password
      allowlist_include_members: false

    ctl:
      insecure: false

    etcd3:
      hosts: 127.0.0.1:2379,127.0.0.2:2379

    log:
      type: plain
      level: INFO
      traceback_level: ERROR
      loggers:
        patroni.postmaster: WARNING

    bootstrap:
      dcs:
        ttl: 30
        loop_wait: 10
        retry_timeout: 10
        maximum_lag_on_failover: 1048576
        master_start_timeout: 120
        synchronous_mode: off
        postgresql:
          use_pg_rewind: true
          pg_hba:
          - host replication replicator 127.0.0.1/32 md5
          - host all all 0.0.0.0/0 md5
          parameters:
            max_connections: 200
            wal_level: hot_standby
            hot_standby: "on"
            max_wal_senders: 10
            max_replication_slots: 10
            wal_log_hints: on
      initdb:
      - encoding: UTF8
      - data-checksums
      pg_hba:
      - host replication replicator 127.0.0.1/32 md5
      - host all all 0.0.0.0/0 md5
      post_init: /usr/local/bin/post_init.sh

    postgresql:
      listen: 127.0.0.1,127.0.0.2:5432
      connect_address: 127.0.0.1:5432
      proxy_address: 127.0.0.1:5433
      data_dir: data/postgresql0
      bin_dir: /usr/lib/postgresql/15/bin
      bin_name:
        pg_ctl: pg_ctl
      pgpass: /tmp/pgpass0
      authentication:
        replication:
          username: replicator
          password: rep-pass
        superuser:
          username: postgres
          password: zalando
        rewind:
          username: rewind_user
          password: rewind_password
          sslmode: prefer
      parameters:
        unix_socket_directories: '..'
        shared_buffers: 128MB
        log_connections: on
      create_replica_methods:
      - basebackup
      basebackup:
        max-rate: 100M
        checkpoint: fast
      callbacks:
        on_role_change: /usr/local/bin/role_change.sh
      pre_promote: /usr/local/bin/fence.sh
      use_unix_socket: true
      pg_ctl_timeout: 60
      remove_data_directory_on_rewind_failure: true

    watchdog:
      mode: off

    tags:
      nofailover: false
      noloadbalance: false
      clonefrom: false
      nosync: false
      datacenter: eu-1
    """)


@pytest.fixture
def base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(POSTGRES0_YML)
    return data


def write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems_of(tmp_path: Path, data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    return validate_file(write(tmp_path / "patroni.yml", data), environ or {})


# -- loading --------------------------------------------------------------------------------------


def test_patroni_style_yaml_loads_unchanged(tmp_path: Path) -> None:
    config = load_local(write(tmp_path / "postgres0.yml", POSTGRES0_YML), {})

    assert (config.scope, config.name, config.namespace) == ("batman", "postgresql0", "/service/")
    assert config.dcs.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.2:2379")
    assert config.postgresql.listen_hosts == ("127.0.0.1", "127.0.0.2")
    assert config.postgresql.port == 5432
    assert config.postgresql.authentication.rewind is not None
    assert config.postgresql.authentication.rewind.sslmode == "prefer"
    assert config.bootstrap.post_bootstrap == "/usr/local/bin/post_init.sh"  # the post_init alias
    assert config.bootstrap.initdb == [{"encoding": "UTF8"}, "data-checksums"]
    assert config.watchdog.mode == "off"  # YAML reads a bare `off` as false
    assert config.tags.to_tags() == Tags(custom={"datacenter": "eu-1"})
    assert config.other_keys == {}


def test_directory_of_files_is_deep_merged_in_sorted_order(tmp_path: Path, base: dict[str, Any]) -> None:
    write(tmp_path / "10-base.yml", base)
    write(tmp_path / "20-override.yaml", {"name": "pg1", "postgresql": {"parameters": {"work_mem": "8MB"}}})
    write(tmp_path / "README.txt", "not: [yaml")

    config = load_local(tmp_path, {})

    assert config.name == "pg1"
    assert config.postgresql.parameters["work_mem"] == "8MB"
    assert config.postgresql.parameters["shared_buffers"] == "128MB"  # kept from the first file


def test_env_overrides_merge_over_the_file(tmp_path: Path, base: dict[str, Any]) -> None:
    environ = {
        "PATRONI_NAME": "node-b",
        "PATRONI_RESTAPI_USERNAME": "admin",
        "PATRONI_RESTAPI_ALLOWLIST": "10.0.0.0/8,127.0.0.1",
        "PATRONI_SUPERUSER_PASSWORD": "s3cret",
        "PATRONI_REPLICATION_SSLMODE": "require",
        "PATRONI_ETCD3_HOSTS": "'e1:2379','e2:2379'",
        "PATRONI_ETCD3_PROTOCOL": "https",
        "PATRONI_POSTGRESQL_DATA_DIR": "/srv/pg",
        "PATRONI_POSTGRESQL_BIN_PG_CTL": "/opt/pg_ctl",
        "PATRONI_LOG_LOGGERS": "{patroni.api: DEBUG}",
        "PATRONI_LOG_DEDUPLICATE_HEARTBEAT_LOGS": "yes",
        "PATRONI_CTL_INSECURE": "true",
        "HOME": "/root",
    }
    config = load_local(write(tmp_path / "p.yml", base), environ)

    assert config.name == "node-b"
    assert config.restapi.authentication is not None
    assert config.restapi.authentication.username == "admin"
    assert config.restapi.authentication.password == "password"  # untouched keys survive
    assert config.restapi.allowlist == ["10.0.0.0/8", "127.0.0.1"]
    assert config.postgresql.authentication.superuser.password == "s3cret"
    assert config.postgresql.authentication.replication.sslmode == "require"
    assert config.dcs.endpoints == ("https://e1:2379", "https://e2:2379")
    assert config.postgresql.data_dir == "/srv/pg"
    assert config.postgresql.bin_name == {"pg_ctl": "/opt/pg_ctl"}
    assert config.log.loggers == {"patroni.postmaster": "WARNING", "patroni.api": "DEBUG"}
    assert config.log.deduplicate_heartbeat_logs is True
    assert config.ctl.insecure is True
    assert environ["PATRONI_NAME"] == "node-b"  # load_local never mutates the environment


def test_patroni_configuration_variable_is_the_source_when_no_path(base: dict[str, Any]) -> None:
    config = load_local(None, {"PATRONI_CONFIGURATION": yaml.safe_dump(base), "PATRONI_SCOPE": "robin"})
    assert (config.scope, config.name) == ("robin", "postgresql0")


def test_pure_environment_configuration() -> None:
    environ = {
        "PATRONI_SCOPE": "batman",
        "PATRONI_NAME": "pg0",
        "PATRONI_RESTAPI_LISTEN": "0.0.0.0:8008",
        "PATRONI_RESTAPI_CONNECT_ADDRESS": "10.0.0.5:8008",
        "PATRONI_ETCD3_HOST": "10.0.0.9:2379",
        "PATRONI_POSTGRESQL_LISTEN": "0.0.0.0:5432",
        "PATRONI_POSTGRESQL_CONNECT_ADDRESS": "10.0.0.5:5432",
        "PATRONI_POSTGRESQL_DATA_DIR": "/var/lib/postgresql/data",
        "PATRONI_SUPERUSER_USERNAME": "postgres",
        "PATRONI_REPLICATION_USERNAME": "replicator",
    }
    config = load_local(None, environ)

    assert config.etcd is None
    assert config.dcs.endpoints == ("http://10.0.0.9:2379",)
    assert api_url(config.restapi) == "http://10.0.0.5:8008/patroni"
    assert conn_url(config.postgresql) == "postgres://10.0.0.5:5432/postgres"


def test_scrub_removes_only_patroni_variables() -> None:
    environ = {"PATRONI_SUPERUSER_PASSWORD": "x", "PATRONI_NAME": "a", "PATH": "/bin"}
    removed = scrub_patroni_env(environ)
    assert environ == {"PATH": "/bin"}
    assert removed == {"PATRONI_SUPERUSER_PASSWORD": "x", "PATRONI_NAME": "a"}


# -- validation messages ----------------------------------------------------------------------------


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, leaf = dotted.split(".")
    node = out
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return out


_DELETE = object()


_REQUIRED = "expected a value (required key), found nothing"
_HOST_PORT = "expected 'host:port'"
_INITDB = "expected a mapping or a list whose items are 'flag' or a one-key {name: value}, found [5] (list)"


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("postgresql.authentication.replication.username", _DELETE, _REQUIRED),
        ("postgresql.data_dir", _DELETE, _REQUIRED),
        ("name", ["a"], "expected a string, found ['a'] (list)"),
        ("restapi.listen", "localhost", f"{_HOST_PORT}, found 'localhost' (string)"),
        ("restapi.connect_address", ":8008", f"{_HOST_PORT} with a host, found ':8008' (string)"),
        ("postgresql.listen", "h:99999", f"{_HOST_PORT} with a port between 1 and 65535, found 'h:99999' (string)"),
        ("restapi.verify_client", "maybe", "expected one of 'none', 'optional' or 'required', found 'maybe' (string)"),
        ("postgresql.use_pg_rewind", "perhaps", "expected a boolean (true/false), found 'perhaps' (string)"),
        ("postgresql.pg_ctl_timeout", "soon", "expected an integer, found 'soon' (string)"),
        ("postgresql.parameters", ["a"], "expected a mapping, found ['a'] (list)"),
        ("bootstrap.initdb", [5], _INITDB),
        ("tags.failover_priority", -1, "expected a number >= 0, found -1 (integer)"),
        ("watchdog.mode", "sometimes", "expected one of 'off', 'automatic' or 'required', found 'sometimes' (string)"),
        ("etcd3", {"protocol": "http"}, "expected one of host, hosts, url or proxy (srv discovery is not supported)"),
        ("bootstrap.dcs.ttl", "abc", "expected an integer, found 'abc' (string)"),
        ("bootstrap.dcs.synchronous_mode", "sometimes", "expected off, on or quorum, found 'sometimes' (string)"),
    ],
)
def test_each_invalid_value_gives_one_message_naming_path_expected_and_found(
    tmp_path: Path, base: dict[str, Any], dotted: str, value: Any, expected: str
) -> None:
    problems = problems_of(tmp_path, _set(base, dotted, value))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{dotted}: {expected}")


def test_a_list_item_is_named_by_its_index(tmp_path: Path, base: dict[str, Any]) -> None:
    problems = problems_of(tmp_path, _set(base, "postgresql.pg_hba", ["host all all 0/0 md5", {"a": 1}]))
    assert problems == ["postgresql.pg_hba[1]: expected a string, found a mapping with keys a"]


def test_all_problems_are_collected_and_str_lists_them_one_per_line(base: dict[str, Any], tmp_path: Path) -> None:
    data = _set(_set(base, "name", {"a": 1}), "postgresql.data_dir", _DELETE)
    with pytest.raises(ConfigError) as caught:
        load_local(write(tmp_path / "p.yml", data), {})
    assert len(caught.value.problems) == 2
    assert str(caught.value).splitlines() == caught.value.problems


def test_env_value_of_the_wrong_type_is_reported_with_the_key_path(tmp_path: Path, base: dict[str, Any]) -> None:
    assert problems_of(tmp_path, base, {"PATRONI_RESTAPI_REQUEST_QUEUE_SIZE": "lots"}) == [
        "restapi.request_queue_size: expected an integer, found 'lots' (string)"
    ]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({}, "etcd3: expected a DCS section (etcd3, etcd or zookeeper) giving the store's addresses, found none"),
        ({"consul": {"host": "c:8500"}}, "consul: consul is not supported by pgwarden yet (etcd v3, etcd v2 and "
                                         "ZooKeeper are)"),
        ({"etcd": {"host": "a:2379"}, "etcd3": {"host": "a:2379"}},
         "etcd: expected one DCS section, found 2 (etcd3, etcd)"),
        ({"etcd3": {"host": "a:2379"}, "zookeeper": {"hosts": "z:2181"}}, "expected one DCS section"),
        ({"zookeeper": {"use_ssl": True}}, "zookeeper"),
    ],
)
def test_one_implemented_dcs_section_is_required_and_other_dcs_are_refused(
    tmp_path: Path, base: dict[str, Any], sections: dict[str, Any], expected: str
) -> None:
    data = {k: v for k, v in base.items() if k != "etcd3"} | sections
    problems = problems_of(tmp_path, data)
    assert len(problems) == 1 and expected in problems[0], problems


def test_file_errors_are_clear(tmp_path: Path) -> None:
    assert validate_file(tmp_path / "missing.yml", {}) == [f"{tmp_path}/missing.yml: configuration file not found"]
    broken = write(tmp_path / "broken.yml", "scope: x\n  name: y\n")
    assert validate_file(broken, {}) == [
        f"{broken}: YAML syntax error at line 2, column 7: mapping values are not allowed here"
    ]
    a_list = write(tmp_path / "list.yml", "- a\n- b\n")
    assert validate_file(a_list, {}) == [f"{a_list}: expected a YAML mapping at the top level, found a list"]
    empty_dir = tmp_path / "conf.d"
    empty_dir.mkdir()
    assert validate_file(empty_dir, {}) == [
        f"{empty_dir}: expected *.yml or *.yaml files in this directory, found none"
    ]


def test_valid_file_has_no_problems(tmp_path: Path) -> None:
    assert validate_file(write(tmp_path / "p.yml", POSTGRES0_YML), {}) == []


# -- dynamic configuration ----------------------------------------------------------------------------


def test_dynamic_defaults_follow_the_contract() -> None:
    config, warnings = parse_dynamic({})
    assert warnings == []
    assert (config.ttl, config.loop_wait, config.retry_timeout) == (30, 10, 10)
    assert config.maximum_lag_on_failover == 1048576
    assert config.maximum_lag_on_syncnode == -1
    assert (config.primary_start_timeout, config.primary_stop_timeout) == (300, 0)
    assert config.synchronous_mode == "off" and config.synchronous_node_count == 1
    assert config.member_slots_ttl == 1800
    assert config.postgresql.use_slots is True
    assert config.pause is None and config.standby_cluster is None


def test_dynamic_accepts_patroni_legacy_forms() -> None:
    config, warnings = parse_dynamic(
        {
            "master_start_timeout": 60,
            "synchronous_mode": True,
            "permanent_slots": {"keep": None, "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}},
            "member_slots_ttl": "30min",
        }
    )
    assert warnings == []
    assert config.primary_start_timeout == 60
    assert config.synchronous_mode == "on"
    assert config.slots["keep"].type == "physical" and config.slots["cdc"].plugin == "pgoutput"
    assert config.member_slots_ttl == 1800


def test_bad_dynamic_values_fall_back_to_defaults_with_a_warning() -> None:
    config, warnings = parse_dynamic(
        {
            "ttl": "abc",
            "maximum_lag_on_failover": 5,
            "slots": {"bad": {"type": "logical"}, "good": None},
            "postgresql": {"use_slots": "maybe", "use_pg_rewind": True, "data_dir": "/elsewhere"},
        }
    )
    assert config.ttl == 30
    assert config.maximum_lag_on_failover == 5  # valid keys are kept
    assert set(config.slots) == {"good"}
    assert config.postgresql.use_slots is True and config.postgresql.use_pg_rewind is True
    assert warnings == [
        "/config: postgresql.data_dir: a per-member setting, read only from each member's own configuration;"
        " ignored",
        "/config: ttl: expected an integer, found 'abc' (string); using the default for ttl (30)",
        "/config: slots.bad: expected database and plugin for a logical slot, found a mapping with keys type;"
        " ignoring slots.bad",
        "/config: postgresql.use_slots: expected a boolean (true/false), found 'maybe' (string);"
        " using the default for postgresql.use_slots (True)",
    ]


@pytest.mark.parametrize("raw", [["not", "a", "mapping"], "text", {"postgresql": "nope"}])
def test_dynamic_config_of_the_wrong_shape_never_raises(raw: Any) -> None:
    config, warnings = parse_dynamic(raw)
    assert config.ttl == 30 and config.postgresql.use_slots is True
    assert warnings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((30, 10, 10), (30, 10, 10)),
        ((10, 10, 10), (20, 1, 9)),  # ttl raised to its minimum, then loop_wait lowered, then retry_timeout
        ((30, 0, 1), (30, 1, 3)),  # minimums
        ((30, 20, 10), (30, 10, 10)),  # loop_wait is lowered first
        ((30, 5, 20), (30, 1, 14)),  # then retry_timeout
    ],
)
def test_timing_rules_are_enforced_with_a_warning(given: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    *adjusted, warnings = adjust_timing(*given)
    assert tuple(adjusted) == expected
    assert bool(warnings) == (given != expected)
    config, dyn_warnings = parse_dynamic(dict(zip(("ttl", "loop_wait", "retry_timeout"), given, strict=True)))
    assert (config.ttl, config.loop_wait, config.retry_timeout) == expected
    assert dyn_warnings == warnings


@given(st.integers(-100, 1000), st.integers(-100, 1000), st.integers(-100, 1000))
def test_timing_adjustment_always_yields_a_valid_triple(ttl: int, loop_wait: int, retry_timeout: int) -> None:
    ttl, loop_wait, retry_timeout, _ = adjust_timing(ttl, loop_wait, retry_timeout)
    assert ttl >= 20 and loop_wait >= 1 and retry_timeout >= 3
    assert loop_wait + 2 * retry_timeout <= ttl


# -- layering -------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Any:
    return load_local(write(tmp_path / "postgres0.yml", POSTGRES0_YML), {})


def test_before_bootstrap_the_bootstrap_dcs_section_is_the_dynamic_config(local: Any) -> None:
    config = effective(local, None)
    assert config.ha.primary_start_timeout == 120
    assert config.parameters["max_connections"] == 200
    assert config.parameters["wal_level"] == "hot_standby"
    assert config.bootstrap_pg_hba == tuple(local.bootstrap.pg_hba)


def test_local_wins_over_dynamic_except_use_slots_and_cmdline_gucs(local: Any) -> None:
    dynamic = {
        "loop_wait": 5,
        "pause": True,
        "postgresql": {
            "use_pg_rewind": False,
            "use_slots": False,
            "pg_hba": ["host all all 10.0.0.0/8 md5"],
            "parameters": {"shared_buffers": "1GB", "work_mem": "4MB", "max_connections": 300},
        },
    }
    local = dataclasses.replace(local, postgresql=_with_local_settings(local.postgresql))
    config = effective(local, dynamic)

    assert config.ha.loop_wait == 5 and config.dynamic.pause is True  # dynamic over defaults
    assert config.ha.use_pg_rewind is True  # local over dynamic
    assert config.pg_hba == ("host all all 127.0.0.1/32 trust",)
    assert config.parameters["shared_buffers"] == "128MB"
    assert config.parameters["work_mem"] == "4MB"
    assert config.ha.use_slots is False  # only dynamic config sets it ...
    assert config.parameters["max_connections"] == 300  # ... and the command-line GUCs
    assert config.parameters["max_wal_senders"] == 10  # their defaults
    assert any("max_locks_per_transaction" in w and "ignored" in w for w in config.warnings)


def _with_local_settings(postgresql: Any) -> Any:
    parameters = dict(postgresql.parameters, max_locks_per_transaction=128)
    return dataclasses.replace(
        postgresql, use_pg_rewind=True, pg_hba=["host all all 127.0.0.1/32 trust"], parameters=parameters
    )


def test_enforced_and_derived_parameters(local: Any) -> None:
    dynamic = {"postgresql": {"parameters": {"hot_standby": "off", "wal_level": "minimal", "max_connections": 10}}}
    config = effective(local, dynamic)
    params = config.parameters
    assert params["hot_standby"] == "on" and params["wal_log_hints"] == "on"
    assert params["wal_level"] == "replica"
    assert params["max_connections"] == 100  # below the minimum 25: the default
    assert params["track_commit_timestamp"] == "off"
    assert params["log_connections"] == "on"  # YAML booleans rendered the PostgreSQL way
    assert params["listen_addresses"] == "127.0.0.1,127.0.0.2"
    assert (params["port"], params["cluster_name"]) == (5432, "batman")
    assert len([w for w in config.warnings if w.startswith("postgresql.parameters.")]) == 3


def test_role_specific_parameters_and_pg_hba(local: Any) -> None:
    dynamic = {
        "postgresql": {
            "parameters_replica": {"work_mem": "1MB", "max_connections": 999},
            "pg_hba_primary": ["host all all 0.0.0.0/0 scram-sha-256"],
        }
    }
    config = effective(local, dynamic)
    assert config.parameters_for("replica")["work_mem"] == "1MB"
    assert config.parameters_for("replica")["max_connections"] == 100  # not overridable per role
    assert config.pg_hba_for("primary") == ("host all all 0.0.0.0/0 scram-sha-256",)
    assert config.pg_hba_for("replica") == config.pg_hba


def test_effective_config_is_frozen_and_complete(local: Any) -> None:
    config = effective(local, {})
    assert isinstance(config, EffectiveConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.parameters["work_mem"] = "1GB"  # type: ignore[index]
    assert (config.name, config.scope, config.namespace) == ("postgresql0", "batman", "/service/")
    assert config.ha.use_pg_rewind is False  # {} as /config: bootstrap.dcs no longer applies
    assert config.ha.remove_data_directory_on_rewind_failure is True
    assert config.ha.remove_data_directory_on_diverged_timelines is False
    assert config.ha.tags.custom == {"datacenter": "eu-1"}
    assert config.api_url == "http://127.0.0.1:8008/patroni"
    assert config.conn_url == "postgres://127.0.0.1:5432/postgres"


def test_local_timing_wins_over_the_cluster_config(tmp_path: Path, base: dict[str, Any]) -> None:
    """As in Patroni, a member's own ttl/loop_wait/retry_timeout win over /config, under the same rules."""
    config = effective(load_local(write(tmp_path / "p.yml", base | {"ttl": "60", "loop_wait": 5.0}), {}),
                       {"ttl": 30, "loop_wait": 10, "retry_timeout": 10})
    assert (config.ha.ttl, config.ha.loop_wait, config.ha.retry_timeout) == (60, 5, 10)
    config = effective(load_local(write(tmp_path / "p.yml", base | {"loop_wait": 25}), {}), {})
    assert (config.ha.ttl, config.ha.loop_wait, config.ha.retry_timeout) == (30, 10, 10)
    assert any("loop_wait (25)" in w for w in config.warnings)


def test_cluster_wide_safety_settings_in_the_local_file_are_refused(tmp_path: Path, base: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_local(write(tmp_path / "p.yml", base | {"synchronous_mode": True}), {})
    assert caught.value.problems[0].startswith("synchronous_mode: a cluster-wide setting")


# -- addresses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5432", ("127.0.0.1", 5432)), ("a,b:5433", ("a,b", 5433)), ("[::1]:8008", ("::1", 8008)),
     ("*:5432", ("*", 5432)), (":8008", ("", 8008))],
)  # fmt: skip
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["localhost", "h:port", "h:0"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'host:port'"):
        parse_listen(text)


def test_https_api_url_and_ipv6_hosts(tmp_path: Path, base: dict[str, Any]) -> None:
    base["restapi"] |= {"certfile": "/etc/ssl/cert.pem", "connect_address": "[fd00::5]:8008"}
    base["etcd3"] = {"hosts": ["[fd00::9]", "e2"], "protocol": "https"}
    config = load_local(write(tmp_path / "p.yml", base), {})
    assert api_url(config.restapi) == "https://[fd00::5]:8008/patroni"
    assert config.dcs.endpoints == ("https://[fd00::9]:2379", "https://e2:2379")


def test_empty_sections_read_as_empty(tmp_path: Path, base: dict[str, Any]) -> None:
    base |= {"tags": None, "ctl": None, "watchdog": None}
    base["postgresql"] |= {"callbacks": None, "parameters": None, "pg_hba": None}
    base["bootstrap"]["dcs"]["postgresql"] = None
    config = load_local(write(tmp_path / "p.yml", base), {})
    assert config.tags.to_tags() == Tags()
    assert config.postgresql.parameters == {} and config.postgresql.pg_hba is None
    assert effective(config, None).ha.use_slots is True


def test_modern_log_variables_win_over_legacy_ones(tmp_path: Path, base: dict[str, Any]) -> None:
    environ = {"PATRONI_LOGLEVEL": "DEBUG", "PATRONI_LOG_LEVEL": "WARNING", "PATRONI_LOGFORMAT": "%(message)s"}
    config = load_local(write(tmp_path / "p.yml", base), environ)
    assert (config.log.level, config.log.format) == ("WARNING", "%(message)s")


@pytest.mark.parametrize(
    "extra",
    [
        {"postgresql": {"authentication": {"replication": "replicator:TopSecret-42"}}},
        {"postgresql": {"authentication": {"superuser": {"username": "postgres", "password": ["TopSecret-42"]}}}},
        {"postgresql": {"authentication": {"rewind": {"username": "r", "sslpassword": {"x": "TopSecret-42"}}}}},
        {"restapi": {"authentication": {"username": "u", "password": {"TopSecret-42": 1}}}},
        {"etcd3": {"hosts": ["127.0.0.1:2379"], "password": ["TopSecret-42"]}},
    ],
)
def test_no_secret_value_in_any_validation_message(tmp_path: Path, base: dict[str, Any], extra: dict[str, Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: a password was echoed in validation errors (agent.log, validate-config)."""
    data = copy.deepcopy(base)
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value}
        if key == "postgresql":
            data[key]["authentication"] = {**base["postgresql"]["authentication"], **value["authentication"]}
    problems = problems_of(tmp_path, data)
    assert problems, "the value must be refused"
    assert not any("TopSecret" in p for p in problems), problems
    assert any("(not shown)" in p for p in problems), problems


@pytest.mark.parametrize(
    ("sections", "kind", "mapping"),
    [
        ({"etcd3": {"host": "a:2379"}}, "etcd3", {"host": "a:2379", "protocol": "http"}),
        ({"etcd": {"hosts": "a:2379,b:2379"}}, "etcd", {"hosts": ["a:2379", "b:2379"], "protocol": "http"}),
        ({"zookeeper": {"hosts": "z1:2181,z2:2181"}}, "zookeeper",
         {"hosts": ["z1:2181", "z2:2181"], "use_ssl": False, "verify": True}),
        ({"zookeeper": {"hosts": ["z1:2181"], "set_acls": {"user:pw": ["ALL"]}, "auth_data": {"digest": "u:p"}}},
         "zookeeper", {"hosts": ["z1:2181"], "use_ssl": False, "verify": True, "set_acls": {"user:pw": ["ALL"]},
                       "auth_data": {"digest": "u:p"}}),
    ],
)
def test_each_implemented_dcs_section_is_read_in_patronis_forms(
    tmp_path: Path, base: dict[str, Any], sections: dict[str, Any], kind: str, mapping: dict[str, Any]
) -> None:
    data = {k: v for k, v in base.items() if k != "etcd3"} | sections
    config = load_local(write(tmp_path / "c.yml", data), {})
    assert config.dcs_kind == kind
    assert config.dcs.as_mapping() == mapping


def test_zookeeper_from_patroni_environment_variables_alone(tmp_path: Path, base: dict[str, Any]) -> None:
    data = {k: v for k, v in base.items() if k != "etcd3"}
    env = {"PATRONI_ZOOKEEPER_HOSTS": "'z1:2181','z2:2181'"}
    config = load_local(write(tmp_path / "c.yml", data), env)
    assert config.dcs_kind == "zookeeper" and config.dcs.as_mapping()["hosts"] == ["z1:2181", "z2:2181"]
    env = {"PATRONI_ETCD_HOST": "e1:2379"}
    config = load_local(write(tmp_path / "c.yml", data), env)
    assert config.dcs_kind == "etcd" and config.dcs.as_mapping()["host"] == "e1:2379"
