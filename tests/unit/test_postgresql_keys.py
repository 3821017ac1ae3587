"""Patroni's `postgresql` keys, the pure parts: config_dir, custom_conf, bin_name, pg_ctl_timeout,
primary_stop_timeout, pg_ident (+ role variants), proxy_address, recovery_conf, and parameters of
other PostgreSQL versions. The running side is in tests/integration/test_postgresql_keys.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pgwarden.agent.member import member_json
from pgwarden.agent.pgsettings import pg_settings
from pgwarden.config import ConfigError, effective
from pgwarden.config.loader import validate_local
from pgwarden.dcs import codec
from pgwarden.model import DataDirState, LocalPg, Tags
from pgwarden.postgres import conf
from pgwarden.postgres.controller import PgController
from pgwarden.postgres.settings import Credentials, PgSettings, Upstream
from pgwarden.postgres.versions import for_version, server_major, wal_keep_size
from tests.unit.test_pgconf import conf_values

LEADER = Upstream("pg-1", "10.0.0.1", 5433)


def make_settings(**overrides: Any) -> PgSettings:
    values: dict[str, Any] = {
        "data_dir": Path("/var/lib/postgresql/15/main"),
        "name": "pg-2",
        "scope": "demo",
        "superuser": Credentials("postgres", "s3cret"),
        "replication": Credentials("replicator", "rep"),
        "pgpass": Path("/home/pg/.pgpass_test"),
    }
    values.update(overrides)
    return PgSettings(**values)


def local_config(**postgresql: Any) -> Any:
    return validate_local({
        "scope": "demo",
        "name": "pg-2",
        "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
        "etcd3": {"hosts": "127.0.0.1:2379"},
        "postgresql": {
            "listen": "127.0.0.1:5432",
            "connect_address": "127.0.0.1:5432",
            "data_dir": "/var/lib/postgresql/15/main",
            "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "replicator"}},
            **postgresql,
        },
    })


# --- parameters of other versions --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "gone_in"), [
    ("operator_precedence_warning", 14),
    ("vacuum_cleanup_index_scale_factor", 14),
    ("stats_temp_directory", 15),
    ("promote_trigger_file", 16),
    ("vacuum_defer_cleanup_age", 16),
    ("old_snapshot_threshold", 17),
    ("db_user_namespace", 17),
    ("trace_recovery_messages", 17),
])
def test_a_parameter_the_version_no_longer_knows_is_dropped_with_a_note(name: str, gone_in: int) -> None:
    kept, notes = for_version({name: "x", "work_mem": "4MB"}, gone_in - 1)
    assert kept == {name: "x", "work_mem": "4MB"} and notes == []
    dropped, notes = for_version({name: "x", "work_mem": "4MB"}, gone_in)
    assert dropped == {"work_mem": "4MB"}
    assert len(notes) == 1 and name in notes[0] and "dropped" in notes[0]


def test_wal_keep_segments_becomes_wal_keep_size_from_13() -> None:
    assert wal_keep_size(8) == "128MB" and wal_keep_size("10") == "160MB" and wal_keep_size("many") is None
    params, notes = for_version({"wal_keep_segments": 8}, 13)
    assert params == {"wal_keep_size": "128MB"}
    assert notes and "wal_keep_segments" in notes[0] and "wal_keep_size" in notes[0]
    # An explicit wal_keep_size wins; the old name goes.
    params, _ = for_version({"wal_keep_segments": 8, "wal_keep_size": "1GB"}, 15)
    assert params == {"wal_keep_size": "1GB"}
    # Before 13 the reverse: the size pgwarden always sets becomes segments.
    assert for_version({"wal_keep_size": "1GB"}, 12)[0] == {"wal_keep_segments": 64}
    assert for_version({"wal_keep_size": "1GB", "wal_keep_segments": 3}, 12)[0] == {"wal_keep_segments": 3}


def test_renamed_parameters_keep_their_value() -> None:
    assert for_version({"force_parallel_mode": "on"}, 15)[0] == {"force_parallel_mode": "on"}
    assert for_version({"force_parallel_mode": "on"}, 16)[0] == {"debug_parallel_query": "on"}
    assert for_version({"trigger_file": "/tmp/t"}, 15)[0] == {"promote_trigger_file": "/tmp/t"}
    params, notes = for_version({"trigger_file": "/tmp/t"}, 16)  # renamed in 12, removed in 16
    assert params == {} and "removed" in notes[0]


def test_checkpoint_segments_is_gone_on_every_version_pgwarden_runs() -> None:
    params, notes = for_version({"checkpoint_segments": 32}, 13)
    assert params == {} and "9.5" in notes[0]


def test_an_unknown_version_changes_nothing() -> None:
    assert for_version({"wal_keep_segments": 8, "stats_temp_directory": "x"}, None) == (
        {"wal_keep_segments": 8, "stats_temp_directory": "x"}, [])
    assert server_major("15\n") == 15 and server_major("9.6") == 9 and server_major("junk") is None


def test_rendered_conf_and_command_line_translate_for_the_server_version() -> None:
    settings = make_settings(parameters={"wal_keep_segments": 10, "stats_temp_directory": "/run/pg"})
    assert conf.enforced_parameters(settings)["wal_keep_size"] == "160MB"
    values = conf_values(conf.render_postgresql_conf(settings, "primary", None, 15))
    assert values["wal_keep_size"] == "'160MB'"
    assert "wal_keep_segments" not in values and "stats_temp_directory" not in values
    _, notes = conf.versioned_parameters(settings, "primary", None, 15)
    assert any("stats_temp_directory" in n for n in notes) and any("wal_keep_segments" in n for n in notes)
    assert "wal_keep_size=160MB" in conf.cmdline_options(settings, 15)
    assert "wal_keep_segments=10" in conf.cmdline_options(settings, 12)
    older = conf_values(conf.render_postgresql_conf(settings, "primary", None, 14))
    assert older["stats_temp_directory"] == "'/run/pg'"


# --- config_dir, custom_conf, hba_file / ident_file ----------------------------------------------------


def test_config_dir_holds_the_files_and_the_postmaster_is_told() -> None:
    settings = make_settings(config_dir=Path("/etc/postgresql/15/main"))
    values = conf_values(conf.render_postgresql_conf(settings, "primary", None, 15))
    assert values["hba_file"] == "'/etc/postgresql/15/main/pg_hba.conf'"
    assert values["ident_file"] == "'/etc/postgresql/15/main/pg_ident.conf'"
    assert settings.config_file == Path("/etc/postgresql/15/main/postgresql.conf")
    assert "-c config_file=/etc/postgresql/15/main/postgresql.conf" in conf.cmdline_options(settings, 15)
    assert "config_file" not in conf.cmdline_options(make_settings(), 15)


def test_custom_conf_is_included_instead_of_the_base_file() -> None:
    text = conf.render_postgresql_conf(make_settings(custom_conf=Path("/etc/pg/it's.conf")), "primary", None)
    assert text.splitlines()[1] == "include '/etc/pg/it''s.conf'"
    assert conf.render_postgresql_conf(make_settings(), "primary", None).splitlines()[1] == (
        "include 'postgresql.base.conf'")


def test_user_hba_and_ident_files_are_left_alone_with_a_note() -> None:
    settings = make_settings(parameters={"hba_file": "/srv/hba", "ident_file": "/srv/ident"},
                             pg_hba=("local all all peer",), pg_ident=("m a b",))
    assert not settings.manages_hba and not settings.manages_ident
    values, notes = conf.versioned_parameters(settings, "primary", None, 15)
    assert (values["hba_file"], values["ident_file"]) == ("/srv/hba", "/srv/ident")
    assert any(n.startswith("pg_hba: ignored") for n in notes) and any(n.startswith("pg_ident: ignored") for n in notes)


def _data_dir(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "postgresql.conf").write_text("shared_buffers = 64MB\n")
    (data / "pg_hba.conf").write_text("# initdb's\n")
    return data


def test_write_config_with_config_dir_and_custom_conf(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    custom = tmp_path / "custom.conf"
    custom.write_text("work_mem = '7MB'\n")
    etc = tmp_path / "etc"
    settings = make_settings(data_dir=data, config_dir=etc, custom_conf=custom, pgpass=tmp_path / "pgpass",
                             pg_ident=("map a b",), parameters={"wal_keep_segments": 4},
                             recovery_conf={"recovery_min_apply_delay": "5s"})
    result = asyncio.run(PgController(settings).write_config("replica", LEADER))
    assert result.ok, result.message
    generated = (etc / "postgresql.conf").read_text()
    assert generated.startswith(conf.GENERATED_MARKER) and f"include '{custom}'" in generated
    assert "wal_keep_size = '64MB'" in generated and "wal_keep_segments" not in generated
    assert "recovery_min_apply_delay = '5s'" in generated
    assert (etc / conf.BASE_CONF).read_text() == "shared_buffers = 64MB\n"  # initdb's, copied
    assert (data / "postgresql.conf").read_text() == "shared_buffers = 64MB\n"  # left as it was
    assert (data / "pg_hba.conf").read_text() == "# initdb's\n"
    assert (etc / "pg_hba.conf").read_text().startswith(conf.GENERATED_MARKER)
    assert (etc / "pg_ident.conf").read_text().endswith("map a b\n")
    assert custom.read_text() == "work_mem = '7MB'\n"  # never written
    assert (data / "standby.signal").exists() and (data / conf.STATE_FILE).exists()
    assert not (data / "recovery.conf").exists()
    # Written again (a restart, a reload): the base file stays the first copy.
    assert asyncio.run(PgController(settings).write_config("primary")).ok
    assert (etc / conf.BASE_CONF).read_text() == "shared_buffers = 64MB\n"


def test_write_config_leaves_a_users_hba_file_alone(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    hba = tmp_path / "my_hba.conf"
    hba.write_text("local all all trust\n")
    settings = make_settings(data_dir=data, pgpass=tmp_path / "pgpass", parameters={"hba_file": str(hba)},
                             pg_hba=("host all all 0.0.0.0/0 trust",))
    assert asyncio.run(PgController(settings).write_config("primary")).ok
    assert hba.read_text() == "local all all trust\n"
    assert (data / "pg_hba.conf").read_text() == "# initdb's\n"
    assert f"hba_file = '{hba}'" in (data / "postgresql.conf").read_text()


# --- bin_name, pg_ctl_timeout, primary_stop_timeout ----------------------------------------------------


def test_bin_name_renames_binaries_within_bin_dir() -> None:
    settings = make_settings(bin_dir=Path("/opt/pg/bin"), bin_name={"pg_ctl": "pg_ctl.wrapped", "initdb": ""})
    assert settings.binary("pg_ctl") == "/opt/pg/bin/pg_ctl.wrapped"
    assert settings.binary("initdb") == "/opt/pg/bin/initdb"
    assert settings.binary("pg_rewind") == "/opt/pg/bin/pg_rewind"


def test_bin_name_keys_are_the_known_binaries() -> None:
    with pytest.raises(ConfigError, match="bin_name: expected keys among pg_ctl"):
        local_config(bin_name={"pgctl": "x"})


def test_pg_settings_map_the_postgresql_keys() -> None:
    local = local_config(
        config_dir="/etc/postgresql/15/main", custom_conf="/etc/postgresql/custom.conf",
        bin_name={"pg_ctl": "pg_ctl15"}, pg_ident=["local-map a b"], pg_ctl_timeout=33,
        recovery_conf={"restore_command": "cp /arch/%f %p", "primary_slot_name": "mine"},
        proxy_address="10.0.0.9:6432",
    )
    config = effective(local, {"postgresql": {"pg_ctl_timeout": 99, "pg_ident_replica": ["replica-map a b"],
                                              "recovery_conf": {"recovery_min_apply_delay": "1min"}}})
    primary, replica = pg_settings(config, "primary"), pg_settings(config, "replica")
    assert primary.config_dir == Path("/etc/postgresql/15/main")
    assert primary.custom_conf == Path("/etc/postgresql/custom.conf")
    assert primary.binary("pg_ctl").endswith("/pg_ctl15")
    assert primary.pg_ctl_timeout == 33  # local over dynamic
    assert primary.pg_ident == ("local-map a b",) and replica.pg_ident == ("replica-map a b",)
    assert dict(primary.recovery_conf) == {"restore_command": "cp /arch/%f %p"}  # local recovery_conf wins whole
    assert any("recovery_conf.primary_slot_name: ignored" in w for w in config.warnings)
    assert config.proxy_url == "postgres://10.0.0.9:6432/postgres"


def test_dynamic_pg_ident_recovery_conf_and_pg_ctl_timeout_apply_without_local_ones() -> None:
    config = effective(local_config(), {"postgresql": {
        "pg_ident": ["dyn a b"], "pg_ctl_timeout": 99,
        "recovery_conf": {"recovery_min_apply_delay": "1min", "primary_conninfo": "host=x", "standby_mode": True},
    }})
    settings = pg_settings(config, "replica")
    assert settings.pg_ident == ("dyn a b",) and settings.pg_ctl_timeout == 99
    assert dict(settings.recovery_conf) == {"recovery_min_apply_delay": "1min"}
    assert sum("recovery_conf" in w and "ignored" in w for w in config.warnings) == 2
    assert config.proxy_url is None
    assert pg_settings(effective(local_config(), {}), "replica").pg_ctl_timeout == 60  # Patroni's default


def test_recovery_conf_is_written_for_both_roles_without_pgwardens_own_keys() -> None:
    settings = make_settings(recovery_conf={"restore_command": "cp %f %p", "primary_conninfo": "host=x",
                                            "recovery_target_timeline": "current"})
    for role, upstream in (("replica", LEADER), ("primary", None)):
        values = conf_values(conf.render_postgresql_conf(settings, role, upstream, 15))  # type: ignore[arg-type]
        assert values["restore_command"] == "'cp %f %p'"
        assert values["recovery_target_timeline"] == "'latest'"
        assert "host=x" not in values.get("primary_conninfo", "")


# --- proxy_address -------------------------------------------------------------------------------------


def test_proxy_url_is_published_and_survives_the_codec() -> None:
    data = member_json(pg=LocalPg(data_dir=DataDirState.MISSING), conn_url="postgres://10.0.0.2:5432/postgres",
                       api_url="http://10.0.0.2:8008/patroni", tags=Tags(), task=None,
                       proxy_url="postgres://10.0.0.9:6432/postgres")
    assert data["proxy_url"] == "postgres://10.0.0.9:6432/postgres"
    member = codec.member_from_json("pg-2", codec.member_to_json(data))
    assert codec.member_to_dict(member)["proxy_url"] == "postgres://10.0.0.9:6432/postgres"
    plain = member_json(pg=LocalPg(data_dir=DataDirState.MISSING), conn_url="c", api_url="a", tags=Tags(), task=None)
    assert "proxy_url" not in plain
