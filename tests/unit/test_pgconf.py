"""The pure parts of the PostgreSQL adapter: rendered files, option forms, names, parsed output."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from pgwarden.model import DataDirState, LocalPg, lsn_from_text
from pgwarden.postgres import conf
from pgwarden.postgres.datadir import parse_controldata
from pgwarden.postgres.probe import apply_probe_row
from pgwarden.postgres.settings import (
    Credentials,
    PgSettings,
    Upstream,
    options_to_argv,
    parse_listen,
    slot_name_from_member_name,
)

LEADER = Upstream("pg-1", "10.0.0.1", 5433)


def make_settings(**overrides: Any) -> PgSettings:
    values: dict[str, Any] = {
        "data_dir": Path("/var/lib/pg/data"),
        "name": "PG-2.east",
        "scope": "demo",
        "superuser": Credentials("postgres", "s3cret"),
        "replication": Credentials("replicator", "r:ep\\l"),
        "rewind": Credentials("rewinder", "rw"),
        "listen_addresses": "0.0.0.0",
        "port": 5432,
        "pgpass": Path("/home/pg/.pgpass_test"),
    }
    values.update(overrides)
    return PgSettings(**values)


def conf_values(text: str) -> dict[str, str]:
    """name -> raw value text, for the lines after the include."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            out[name] = value
    return out


# --- postgresql.conf -------------------------------------------------------------------------------


def test_primary_conf_includes_the_base_file_first_and_enforces_replication_settings() -> None:
    text = conf.render_postgresql_conf(make_settings(), "primary", None)
    lines = text.splitlines()
    assert lines[0] == conf.GENERATED_MARKER
    assert lines[1] == "include 'postgresql.base.conf'"
    values = conf_values(text)
    assert values["listen_addresses"] == "'0.0.0.0'"
    assert values["port"] == "5432"
    assert values["cluster_name"] == "'demo'"
    assert values["wal_level"] == "'replica'"
    assert values["hot_standby"] == "on" and values["wal_log_hints"] == "on"
    assert values["max_wal_senders"] == "10" and values["max_replication_slots"] == "10"
    assert values["wal_keep_size"] == "'128MB'"
    assert values["hba_file"] == "'/var/lib/pg/data/pg_hba.conf'"
    assert values["ident_file"] == "'/var/lib/pg/data/pg_ident.conf'"
    assert "primary_conninfo" not in values and "primary_slot_name" not in values


def test_user_parameters_are_kept_but_minimums_and_forced_values_win() -> None:
    settings = make_settings(parameters={
        "max_wal_senders": 1, "max_replication_slots": 20, "hot_standby": False, "wal_level": "minimal",
        "work_mem": "8MB", "port": 9999, "hba_file": "/etc/elsewhere", "max_connections": "200",
    })
    values = conf_values(conf.render_postgresql_conf(settings, "primary", None))
    assert values["max_wal_senders"] == "3"
    assert values["max_replication_slots"] == "20"
    assert values["max_connections"] == "200"
    assert values["hot_standby"] == "on"
    assert values["wal_level"] == "'replica'"
    assert values["work_mem"] == "'8MB'"
    assert values["port"] == "5432"
    assert values["hba_file"] == "'/etc/elsewhere'"  # the user's own file (Patroni: pg_hba is then ignored)
    assert not settings.manages_hba and settings.manages_ident


def test_logical_wal_level_is_respected() -> None:
    settings = make_settings(parameters={"wal_level": "logical"})
    assert conf.enforced_parameters(settings)["wal_level"] == "logical"


def test_replica_conf_streams_from_the_upstream_through_its_slot() -> None:
    values = conf_values(conf.render_postgresql_conf(make_settings(), "replica", LEADER))
    assert values["primary_slot_name"] == "'pg_2_east'"
    assert values["recovery_target_timeline"] == "'latest'"
    conninfo = values["primary_conninfo"]
    for part in ("host=10.0.0.1", "port=5433", "user=replicator", "application_name=PG-2.east",
                 "passfile=/home/pg/.pgpass_test", "sslmode=prefer"):
        assert part in conninfo
    assert "r:ep" not in conninfo and "password" not in conninfo


def test_restart_only_parameters_stay_in_the_file_when_the_role_changes() -> None:
    """Issue 11: PostgreSQL marks a restart-only parameter removed from the file as pending_restart,
    even when its default is the running value; a promoted replica's rewritten file must keep them."""
    restart_only = {"recovery_target_timeline"}
    for upstream in (LEADER, None):
        replica = conf_values(conf.render_postgresql_conf(make_settings(), "replica", upstream))
        primary = conf_values(conf.render_postgresql_conf(make_settings(), "primary", None))
        assert {name: primary.get(name) for name in restart_only} == {name: replica[name] for name in restart_only}


def test_replica_without_slots_or_upstream() -> None:
    no_slots = conf_values(conf.render_postgresql_conf(make_settings(use_slots=False), "replica", LEADER))
    assert no_slots["primary_slot_name"] == "''"
    archive_only = conf_values(conf.render_postgresql_conf(make_settings(), "replica", None))
    assert archive_only["primary_conninfo"] == "''"


def test_primary_conninfo_quotes_values_with_spaces_and_quotes() -> None:
    settings = make_settings(name="it's me", pgpass=Path("/tmp/dir with space/pgpass"))
    conninfo = conf.primary_conninfo(settings, LEADER)
    assert "application_name='it\\'s me'" in conninfo
    assert "passfile='/tmp/dir with space/pgpass'" in conninfo
    rendered = conf_values(conf.render_postgresql_conf(settings, "replica", LEADER))["primary_conninfo"]
    assert rendered == "'" + conninfo.replace("\\", "\\\\").replace("'", "''") + "'"


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "on"), (False, "off"), (5, "5"), (0.5, "0.5"), ("a'b", "'a''b'"), ("c:\\x", "'c:\\\\x'")],
)
def test_format_guc(value: object, text: str) -> None:
    assert conf.format_guc(value) == text


def test_cmdline_options_survive_the_shell_pg_ctl_uses() -> None:
    settings = make_settings(listen_addresses="127.0.0.1, ::1", scope="my cluster")
    words = shlex.split(conf.cmdline_options(settings))
    pairs = dict(w.split("=", 1) for w in words if w != "-c")
    assert words[0::2] == ["-c"] * len(pairs)
    assert pairs["listen_addresses"] == "127.0.0.1, ::1"
    assert pairs["cluster_name"] == "my cluster"
    assert pairs["hot_standby"] == "on"
    assert pairs["max_connections"] == "100"


# --- pg_hba, pg_ident, pgpass, state ----------------------------------------------------------------


def test_default_pg_hba_is_loopback_only_with_replication_for_the_replication_user() -> None:
    lines = conf.render_pg_hba(make_settings()).splitlines()
    assert lines[0] == conf.GENERATED_MARKER
    rules = [line.split() for line in lines[1:]]
    assert ["host", "replication", "replicator", "127.0.0.1/32", "scram-sha-256"] in rules
    addresses = {rule[3] for rule in rules if rule[0] == "host"}
    assert addresses == {"127.0.0.1/32", "::1/128"}


def test_md5_password_encryption_gives_md5_rules() -> None:
    settings = make_settings(parameters={"password_encryption": "md5"})
    assert conf.auth_method(settings) == "md5"
    assert all(line.endswith("md5") for line in conf.default_pg_hba(settings) if line.startswith("host"))


def test_configured_pg_hba_and_ident_are_used_verbatim() -> None:
    settings = make_settings(pg_hba=("host all all 0.0.0.0/0 md5",), pg_ident=("map os pg",))
    assert conf.render_pg_hba(settings).splitlines()[1:] == ["host all all 0.0.0.0/0 md5"]
    assert conf.render_pg_ident(settings).splitlines()[1:] == ["map os pg"]


def test_pgpass_escapes_and_deduplicates() -> None:
    settings = make_settings(rewind=Credentials("postgres", "other"))
    assert conf.render_pgpass(settings).splitlines() == [
        "*:*:*:postgres:s3cret",
        "*:*:*:replicator:r\\:ep\\\\l",
    ]


def test_pgpass_skips_users_without_password() -> None:
    settings = make_settings(superuser=Credentials("postgres"), rewind=None)
    assert conf.render_pgpass(settings) == "*:*:*:replicator:r\\:ep\\\\l\n"


def test_state_file_round_trip() -> None:
    assert conf.following_from_state(conf.render_state("replica", LEADER)) == "pg-1"
    assert conf.following_from_state(conf.render_state("primary", None)) is None
    assert conf.following_from_state(conf.render_state("replica", Upstream("", "h", 1))) is None
    assert conf.following_from_state("not json") is None


# --- settings helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "slot"),
    [("pg-1", "pg_1"), ("Node.A", "node_a"), ("abc_123", "abc_123"), ("é x", "__x")],
)
def test_slot_name_from_member_name(member: str, slot: str) -> None:
    assert slot_name_from_member_name(member) == slot


def test_options_to_argv_accepts_list_and_dict_forms() -> None:
    assert options_to_argv(["data-checksums", {"encoding": "UTF8"}, {"locale": "C"}]) == (
        "--data-checksums", "--encoding=UTF8", "--locale=C")
    assert options_to_argv({"max-rate": "100M", "verbose": True}) == ("--max-rate=100M", "--verbose")
    assert options_to_argv(None) == ()
    assert options_to_argv(["--encoding=UTF8", "--no-sync"]) == ("--encoding=UTF8", "--no-sync")


def test_parse_listen_and_addresses() -> None:
    assert parse_listen("0.0.0.0:5433") == ("0.0.0.0", 5433)
    assert parse_listen("127.0.0.1,10.0.0.2:6000") == ("127.0.0.1,10.0.0.2", 6000)
    assert parse_listen("localhost") == ("localhost", 5432)
    settings = make_settings(connect_address="10.1.1.1:6432")
    assert settings.conn_url == "postgres://10.1.1.1:6432/postgres"
    assert make_settings().conn_url == "postgres://127.0.0.1:5432/postgres"
    assert make_settings().local_connect_host() == "127.0.0.1"
    socket_settings = make_settings(use_unix_socket=True, parameters={"unix_socket_directories": "/run/pg, /tmp"})
    assert socket_settings.local_connect_host() == "/run/pg"


def test_credentials_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(make_settings())


# --- parsed output -----------------------------------------------------------------------------------

CONTROLDATA = """\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7312345678901234567
Database cluster state:               shut down in recovery
pg_control last modified:             Tue 05 Mar 2024 10:00:00 AM UTC
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
wal_log_hints setting:                on
Data page checksum version:           0
"""


def test_parse_controldata() -> None:
    control = parse_controldata(CONTROLDATA)
    assert control.sysid == "7312345678901234567"
    assert control.cluster_state == "shut down in recovery"
    assert control.cleanly_shut_down
    assert control.timeline == 2
    assert control.checkpoint_lsn == lsn_from_text("0/3000060")
    assert control.wal_log_hints is True and control.checksums is False


def test_parse_controldata_tolerates_garbage() -> None:
    control = parse_controldata("Latest checkpoint's TimeLineID: x\nLatest checkpoint location: nope\n")
    assert control.sysid is None and control.timeline is None and control.checkpoint_lsn is None


BASE = LocalPg(data_dir=DataDirState.VALID, running=True, postmaster_pid=42)


def probe_row(**overrides: Any) -> list[Any]:
    row: dict[str, Any] = {
        "in_recovery": False, "version": 150006, "started": "2024-03-05 10:00:00+00", "wal_lsn": "0/5000000",
        "walfile": "000000030000000000000005", "receive_lsn": None, "replay_lsn": None, "paused": False,
        "replay_ts": None, "checkpoint_tli": 2, "receiver": None, "replication": [], "slots": [],
        "pending": False, "history_tli": None, "ssn": "", "restore_command": False, "wal_level": "replica",
    }
    row.update(overrides)
    return list(row.values())


def test_probe_row_of_a_standby_whose_upstream_died_takes_the_timeline_from_history_files() -> None:
    # No WAL receiver any more and no restartpoint since the switch to timeline 3: pg_control says 2,
    # but 00000003.history in pg_wal shows the node follows timeline 3.
    pg = apply_probe_row(BASE, probe_row(in_recovery=True, walfile=None, wal_lsn=None, checkpoint_tli=2,
                                         history_tli=3))
    assert pg.is_replica and pg.timeline == 3


def test_probe_row_of_a_primary_takes_the_timeline_from_the_wal_file() -> None:
    pg = apply_probe_row(BASE, probe_row(replication=[{
        "application_name": "pg-2", "client_addr": "10.0.0.2", "state": "streaming", "sync_state": "async",
        "sync_priority": 0, "usename": "replicator", "write_lsn": "0/5000000", "flush_lsn": "0/4F00000",
        "replay_lsn": None}], slots=["pg_2"], pending=True))
    assert pg.is_primary and pg.timeline == 3
    assert pg.lsn == lsn_from_text("0/5000000")
    assert pg.replication[0].application_name == "pg-2"
    assert pg.replication[0].flush_lsn == lsn_from_text("0/4F00000")
    assert pg.slots == ("pg_2",) and pg.pending_restart and pg.server_version == 150006


def test_probe_row_of_a_streaming_replica() -> None:
    pg = apply_probe_row(BASE, probe_row(
        in_recovery=True, wal_lsn=None, walfile=None, receive_lsn="0/6000000", replay_lsn="0/5F00000",
        paused=True, replay_ts="2024-03-05 10:01:00+00", checkpoint_tli=1,
        receiver={"status": "streaming", "sender_host": "10.0.0.1", "sender_port": 5432,
                  "slot_name": "pg_2", "latest_end_lsn": "0/6000000", "received_tli": 2}))
    assert pg.is_replica and pg.streaming and pg.replay_paused
    assert pg.timeline == 2
    assert pg.lsn == lsn_from_text("0/6000000")
    assert pg.wal_receiver is not None and pg.wal_receiver.slot_name == "pg_2"


def test_probe_row_of_a_replica_without_receiver_uses_the_checkpoint_timeline() -> None:
    pg = apply_probe_row(BASE, probe_row(in_recovery=True, wal_lsn=None, walfile=None, checkpoint_tli=4))
    assert pg.timeline == 4 and not pg.streaming


def test_probe_row_of_a_replica_with_a_restore_command_is_in_archive_recovery() -> None:
    archive = apply_probe_row(BASE, probe_row(in_recovery=True, wal_lsn=None, walfile=None, replay_lsn="0/5000000",
                                              restore_command=True))
    assert archive.restore_command and archive.replication_state == "in archive recovery"
    plain = apply_probe_row(BASE, probe_row(in_recovery=True, wal_lsn=None, walfile=None, replay_lsn="0/5000000"))
    assert not plain.restore_command and plain.replication_state is None
