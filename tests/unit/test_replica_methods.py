"""Replica creation methods and custom bootstrap methods (issue 15), the pure pieces: the configuration in
every form Patroni accepts, the command lines, the order of the steps (driven without IO by a scripted
interpreter), and the configuration files a restored or archive-only data directory gets."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgwarden.config.errors import ConfigError
from pgwarden.config.layering import layer
from pgwarden.config.loader import validate_local
from pgwarden.config.schema import MethodSpec, flag
from pgwarden.config.validation import parse_dynamic
from pgwarden.core.actions import Bootstrap, Clone, Reinitialize
from pgwarden.engine import effects as fx
from pgwarden.engine.steps import BASEBACKUP, BootstrapMethod, ReplicaMethod
from pgwarden.model import ClusterView, Member
from pgwarden.postgres import conf
from pgwarden.postgres.controller import method_argv, replication_uri
from tests.engine.script import Script, context
from tests.unit.test_pgconf import LEADER, conf_values, make_settings

BASE = """\
scope: batman
name: pg0
restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}
etcd3: {host: 127.0.0.1:2379}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /var/lib/pg/data
  authentication:
    superuser: {username: postgres}
    replication: {username: replicator}
"""


def load(extra: str) -> Any:
    data = yaml.safe_load(BASE)
    for key, value in (yaml.safe_load(textwrap.dedent(extra)) or {}).items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_local(data)


# -- configuration -------------------------------------------------------------------------------------


def test_the_default_is_basebackup_alone() -> None:
    config = load("")
    assert config.postgresql.replica_methods() == (MethodSpec(name="basebackup"),)
    assert config.bootstrap.custom_method() is None
    assert not layer(config, parse_dynamic({})[0]).ha.clone_without_leader


def test_patronis_pgbackrest_example() -> None:
    config = load("""
        postgresql:
          create_replica_methods: [pgbackrest, basebackup]
          pgbackrest:
            command: /usr/bin/pgbackrest --stanza=main --delta restore
            keep_data: True
            no_params: True
          basebackup:
            max-rate: 100M
        """)
    pgbackrest, basebackup = config.postgresql.replica_methods()
    assert pgbackrest == MethodSpec(name="pgbackrest", command="/usr/bin/pgbackrest --stanza=main --delta restore",
                                    keep_data=True, no_params=True)
    assert basebackup.name == "basebackup"


def test_a_comma_string_extra_keys_and_no_leader_as_patronis_wal_e_example() -> None:
    config = load("""
        postgresql:
          create_replica_methods: wal_e, basebackup
          wal_e:
            command: patroni_wale_restore
            no_leader: 1
            envdir: /etc/env.d/wal-e
            use_iam: 1
        """)
    wal_e, _ = config.postgresql.replica_methods()
    assert wal_e.no_leader and not wal_e.keep_data
    assert wal_e.params == (("envdir", "/etc/env.d/wal-e"), ("use_iam", "1"))
    assert layer(config, parse_dynamic({})[0]).ha.clone_without_leader


def test_the_legacy_replica_method_is_used_without_create_replica_methods() -> None:
    config = load("""
        postgresql:
          replica_method: restore
          restore: {command: /bin/restore}
        """)
    assert [m.name for m in config.postgresql.replica_methods()] == ["restore"]


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (1, True), ("true", True), ("yes", True), ("on", True),
    (False, False), (0, False), (None, False), ("false", False), ("no", False), ("off", False), ("0", False),
])  # fmt: skip
def test_switches_read_as_patroni_users_write_them(value: Any, expected: bool) -> None:
    assert flag(value) is expected


@pytest.mark.parametrize(("extra", "fragment"), [
    ("postgresql: {create_replica_methods: [pgbackrest]}", "expected a section `pgbackrest`"),
    ("postgresql: {create_replica_methods: [x], x: {keep_data: true}}", "expected `x.command`"),
    ("postgresql: {create_replica_methods: [x], x: {command: \"a 'b\"}}", "expected `x.command` to be a command line"),
    ("postgresql: {create_replica_methods: [x, x], x: {command: a}}", "each replica creation method once"),
    ("postgresql: {create_replica_methods: [x], x: {command: a, opt: [1, 2]}}", "for `x.opt`"),
    ("postgresql: {create_replica_methods: [x], x: {command: a, 'b c': 1}}", "expected option names"),
    ("bootstrap: {method: restore}", "expected a section `restore`"),
    ("bootstrap: {method: restore, restore: {command: a, recovery_conf: [x]}}", "to be a mapping"),
    ("bootstrap: {method: restore, restore: {command: a, recovery_conf: {'bad name': 1}}}", "not a valid parameter"),
    ("bootstrap: {method: restore, restore: {command: a, recovery_conf: {restore_command: \"a\\nb\"}}}", "newline"),
])  # fmt: skip
def test_unusable_method_sections_are_refused_naming_the_key(extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(extra)
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_a_custom_bootstrap_method_as_patronis_documentation_writes_it() -> None:
    config = load("""
        bootstrap:
          method: clone_with_pgbackrest
          clone_with_pgbackrest:
            command: /usr/local/bin/restore.sh --stanza main
            keep_existing_recovery_conf: False
            no_params: False
            recovery_conf:
              recovery_target_action: promote
              recovery_target_timeline: latest
              restore_command: pgbackrest --stanza=main archive-get %f "%p"
          dcs: {ttl: 30}
        """)
    method = config.bootstrap.custom_method()
    assert method is not None and method.command == "/usr/local/bin/restore.sh --stanza main"
    assert dict(method.recovery_conf) == {"recovery_target_action": "promote", "recovery_target_timeline": "latest",
                                          "restore_command": 'pgbackrest --stanza=main archive-get %f "%p"'}
    assert method.params == () and not method.keep_existing_recovery_conf


# -- command lines ----------------------------------------------------------------------------------------


OURS = ("--scope=batman", "--role=replica", "--datadir=/data", "--connstring=postgres://rep@10.0.0.1:5432/postgres")


def test_a_method_gets_its_own_options_then_patronis_arguments() -> None:
    method = MethodSpec(name="wal_e", command="/usr/bin/wale-restore 'a b'", params=(("envdir", "/etc/e"),))
    assert method_argv(method, OURS) == ["/usr/bin/wale-restore", "a b", "--envdir=/etc/e", *OURS]


def test_no_params_keeps_the_methods_own_options_only() -> None:
    method = MethodSpec(name="pgbackrest", command="pgbackrest --stanza=main --delta restore", no_params=True,
                        params=(("type", "standby"),))
    assert method_argv(method, OURS) == ["pgbackrest", "--stanza=main", "--delta", "restore", "--type=standby"]


def test_a_command_is_never_handed_to_a_shell() -> None:
    method = MethodSpec(name="x", command="restore; rm -rf / $(id)", no_params=True)
    assert method_argv(method, ()) == ["restore;", "rm", "-rf", "/", "$(id)"]


@pytest.mark.parametrize(("host", "expected"), [
    ("10.0.0.1", "postgres://rep%40x@10.0.0.1:5433/postgres"),
    ("::1", "postgres://rep%40x@[::1]:5433/postgres"),
    ("/var/run/postgresql", "postgres://rep%40x@/var/run/postgresql:5433/postgres"),
])  # fmt: skip
def test_the_connstring_names_the_source_and_the_replication_user_but_no_password(host: str, expected: str) -> None:
    assert replication_uri(host, 5433, "rep@x") == expected


# -- the steps ---------------------------------------------------------------------------------------------

N2 = Member("n2", conn_url="postgres://127.0.0.2:5432/postgres")
CLUSTER = ClusterView(scope="s", members=(N2,))
FAILED = fx.Result(False, "it failed", "failed")
BROKEN, PGBACKREST = ReplicaMethod("broken"), ReplicaMethod("pgbackrest", keep_data=True)
NO_LEADER = ReplicaMethod("pgbackrest", keep_data=True, no_leader=True)


def fails(*names: str) -> Any:
    def answer(effect: fx.RunReplicaMethod) -> fx.Result:
        return FAILED if effect.method in names else fx.Result(True, "restored")
    return answer


def run(action: Any, methods: tuple[ReplicaMethod, ...], **answers: Any) -> tuple[Script, Any]:
    script = Script(answers={getattr(fx, k): v for k, v in answers.items()})
    return script, script.run(action, replace(context(CLUSTER), replica_methods=methods))


def test_methods_are_tried_in_order_until_one_works() -> None:
    script, outcome = run(Clone("n2", "n2"), (BROKEN, PGBACKREST, BASEBACKUP), RunReplicaMethod=fails("broken"))
    assert script.kinds() == ["RunReplicaMethod", "EmptyDataDir", "RunReplicaMethod", "SanitizeRestored",
                              "WritePgConfig", "StartPg"]
    assert [e.method for e in script.of(fx.RunReplicaMethod)] == ["broken", "pgbackrest"]
    assert script.of(fx.RunReplicaMethod)[0].source == fx.Upstream("n2", "127.0.0.2", 5432)
    assert outcome.ok


def test_basebackup_is_the_fallback_and_a_kept_restore_is_cleared_first() -> None:
    script, outcome = run(Clone("n2", "n2"), (BROKEN, PGBACKREST, BASEBACKUP),
                          RunReplicaMethod=fails("broken", "pgbackrest"))
    assert script.kinds() == ["RunReplicaMethod", "EmptyDataDir", "RunReplicaMethod", "EmptyDataDir", "Basebackup",
                              "WritePgConfig", "StartPg"]
    assert outcome.ok
    warnings = [e.text for e in script.of(fx.Log)]
    assert warnings == ["replica creation method broken failed: failed; trying pgbackrest",
                        "replica creation method pgbackrest failed: failed; trying basebackup"]


def test_every_method_failing_says_each_why() -> None:
    script, outcome = run(Clone("n2", "n2"), (BROKEN, BASEBACKUP), RunReplicaMethod=fails("broken"),
                          Basebackup=FAILED)
    assert script.kinds() == ["RunReplicaMethod", "EmptyDataDir", "Basebackup"]
    assert not outcome.ok and outcome.detail == "broken: failed; basebackup: failed"


def test_a_failed_method_that_keeps_its_data_is_left_as_it_is_when_last() -> None:
    script, outcome = run(Clone("n2", "n2"), (PGBACKREST,), RunReplicaMethod=fails("pgbackrest"))
    assert script.kinds() == ["RunReplicaMethod"] and not outcome.ok


def test_without_a_source_only_no_leader_methods_run_and_the_replica_follows_nobody() -> None:
    script, outcome = run(Clone(None, None), (BASEBACKUP, NO_LEADER))
    assert script.kinds() == ["RunReplicaMethod", "SanitizeRestored", "WritePgConfig", "StartPg"]
    assert script.of(fx.RunReplicaMethod)[0].source is None
    assert script.of(fx.WritePgConfig)[0].upstream is None
    assert outcome.ok


def test_without_a_source_and_no_no_leader_method_nothing_runs() -> None:
    script, outcome = run(Clone(None, None), (BASEBACKUP, PGBACKREST))
    assert script.kinds() == [] and not outcome.ok
    assert "none has no_leader" in outcome.detail


def test_reinitialize_keeps_the_old_data_for_a_method_that_keeps_it() -> None:
    script, outcome = run(Reinitialize("n2", "n2"), (PGBACKREST, BASEBACKUP))
    assert script.kinds() == ["StandbySignal", "StopPg", "RunReplicaMethod", "SanitizeRestored", "WritePgConfig",
                              "StartPg"]
    assert outcome.ok


def test_reinitialize_empties_the_directory_for_a_method_that_does_not() -> None:
    script, _ = run(Reinitialize("n2", "n2"), (BROKEN, PGBACKREST), RunReplicaMethod=fails("broken"))
    assert script.kinds() == ["StandbySignal", "StopPg", "EmptyDataDir", "RunReplicaMethod", "EmptyDataDir",
                              "RunReplicaMethod", "SanitizeRestored", "WritePgConfig", "StartPg"]


RESTORE = BootstrapMethod("restore", recovery_conf=(("restore_command", "get %f %p"),
                                                    ("recovery_target_action", "promote")))


def bootstrap(method: BootstrapMethod | None, **answers: Any) -> tuple[Script, Any]:
    script = Script(answers={getattr(fx, k): v for k, v in answers.items()})
    return script, script.run(Bootstrap(), replace(context(None), bootstrap_method=method))


def test_a_custom_bootstrap_recovers_promotes_restarts_then_initializes() -> None:
    script, outcome = bootstrap(RESTORE)
    assert script.kinds() == [
        "WriteInitialize", "InspectDataDir", "RunBootstrapMethod", "SanitizeRestored", "WritePgConfig", "StartPg",
        "FinishRecovery", "WritePgConfig", "StopPg", "StartPg", "CreateRoles", "PostBootstrap", "AcquireLeaderKey",
        "SeedConfig", "Probe", "WriteInitialize"]
    recovery, plain = script.of(fx.WritePgConfig)
    assert recovery.recovery == RESTORE.recovery_conf and plain.recovery is None
    assert script.of(fx.SanitizeRestored) == [fx.SanitizeRestored(keep_recovery_conf=False)]
    assert outcome.ok and outcome.detail == "initialized a new cluster"


def test_a_failed_bootstrap_command_leaves_no_cluster_and_says_why() -> None:
    script, outcome = bootstrap(RESTORE, RunBootstrapMethod=fx.Result(False, "pgbackrest: no backup", "no backup"))
    assert script.kinds() == ["WriteInitialize", "InspectDataDir", "RunBootstrapMethod", "StopPg", "UndoBootstrap",
                              "CancelInitialization"]
    assert not outcome.ok and outcome.detail == "bootstrap failed at bootstrap method restore: no backup"


def test_recovery_that_does_not_end_is_a_failed_bootstrap() -> None:
    script, outcome = bootstrap(RESTORE, FinishRecovery=fx.Result(False, "PostgreSQL stopped during recovery"))
    assert script.kinds()[-3:] == ["StopPg", "UndoBootstrap", "CancelInitialization"]
    assert outcome.detail == ("bootstrap failed at waiting for end of recovery after bootstrap: PostgreSQL stopped "
                              "during recovery")


def test_initdb_stays_the_default() -> None:
    script, outcome = bootstrap(None)
    assert script.kinds()[:7] == ["WriteInitialize", "InspectDataDir", "Initdb", "WritePgConfig", "StartPg",
                                  "CreateRoles", "PostBootstrap"]
    assert outcome.ok


# -- configuration files -------------------------------------------------------------------------------------


def test_a_nostream_replica_has_no_primary_conninfo_and_no_slot() -> None:
    values = conf_values(conf.render_postgresql_conf(make_settings(nostream=True, recovery_conf={
        "restore_command": "get %f %p"}), "replica", LEADER))
    assert values["primary_conninfo"] == "''" and values["primary_slot_name"] == "''"
    assert values["restore_command"] == "'get %f %p'"
    streaming = conf_values(conf.render_postgresql_conf(make_settings(), "replica", LEADER))
    assert "host=10.0.0.1" in streaming["primary_conninfo"] and streaming["primary_slot_name"] == "'pg_2_east'"


def test_a_bootstrap_recovery_goes_over_the_replicas_own_settings() -> None:
    settings = make_settings(recovery_conf={"restore_command": "replica's", "recovery_min_apply_delay": "5min"})
    values = conf_values(conf.render_postgresql_conf(settings, "primary", None, 15, {
        "restore_command": "bootstrap's", "recovery_target": "immediate", "recovery_target_timeline": "3"}))
    assert values["restore_command"] == "'bootstrap''s'"
    assert values["recovery_target"] == "'immediate'" and values["recovery_target_timeline"] == "'3'"
    assert "recovery_target" not in conf_values(conf.render_postgresql_conf(settings, "primary", None, 15))


def test_a_backup_tools_recovery_settings_leave_postgresql_auto_conf() -> None:
    text = textwrap.dedent("""\
        # Do not edit this file manually!
        shared_buffers = '1GB'
        restore_command = 'pgbackrest --stanza=main archive-get %f "%p"'
        Primary_Conninfo='host=old'
        recovery_target_time = '2026-01-01'
        """)
    kept, dropped = conf.strip_recovery_settings(text)
    assert kept == "# Do not edit this file manually!\nshared_buffers = '1GB'\n"
    assert dropped == ["restore_command", "primary_conninfo", "recovery_target_time"]


def test_the_table_says_the_methods_are_implemented() -> None:
    from pgwarden.config.support import judge_local

    raw = yaml.safe_load(BASE) | {"watchdog": {"mode": "off"}, "tags": {"nostream": True}}
    raw["postgresql"] |= {"create_replica_methods": ["pgbackrest"], "pgbackrest": {"command": "x", "keep_data": 1},
                          "recovery_conf": {"restore_command": "x"}}
    raw["bootstrap"] = {"method": "restore", "restore": {"command": "y", "recovery_conf": {"recovery_target": "x"}}}
    assert judge_local(raw) == []


def test_a_section_only_the_standby_cluster_names_is_used_not_ignored() -> None:
    """`postgresql.pgbackrest` named by `bootstrap.dcs.standby_cluster.create_replica_methods` alone (an
    archive-fed standby cluster's first member): no "ignored" warning; a section nobody names still gets one."""
    from pgwarden.config.support import judge_local

    raw = yaml.safe_load(BASE) | {"watchdog": {"mode": "off"}}
    raw["postgresql"] |= {"pgbackrest": {"command": "x", "no_leader": True}, "unused": {"command": "y"}}
    raw["bootstrap"] = {"dcs": {"standby_cluster": {"restore_command": "x", "create_replica_methods": ["pgbackrest"]}}}
    assert [v.path for v in judge_local(raw)] == ["postgresql.unused"]


def test_a_path_in_the_command_may_hold_spaces_when_quoted(tmp_path: Path) -> None:
    script = tmp_path / "my restore.sh"
    method = MethodSpec(name="restore", command=f"'{script}' --stanza main")
    assert method_argv(method, ("--scope=s", "--datadir=/d")) == [str(script), "--stanza", "main", "--scope=s",
                                                                 "--datadir=/d"]
