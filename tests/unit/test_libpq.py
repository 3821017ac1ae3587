"""The libpq options of `postgresql.authentication.<kind>` in every connection pgwarden makes or configures.

Pure: conninfo builders, the service file, the command lines of pg_basebackup and pg_rewind (captured,
never run), the configuration's way into the adapter, the CLI's and the drill's connections.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgwarden.agent import pgsettings
from pgwarden.cli.view import superuser_options
from pgwarden.config.schema import RoleCredentials
from pgwarden.drill.topology import MemberInfo, multi_host_dsn
from pgwarden.postgres import conf, controller, libpq
from pgwarden.postgres.connection import local_conninfo
from pgwarden.postgres.process import CommandOutcome
from pgwarden.postgres.settings import LIBPQ_OPTIONS, Credentials, PgSettings, Upstream

LIBPQ_15 = frozenset(libpq.known_keywords() - {"sslnegotiation"})
LIBPQ_17 = frozenset(libpq.known_keywords() | {"sslnegotiation"})

TLS = {
    "sslmode": "verify-full",
    "sslcert": "/etc/pg/client.crt",
    "sslkey": "~/client.key",  # paths are passed as written
    "sslrootcert": "certs/root.crt",
    "sslcrl": "/etc/pg/root.crl",
    "sslcrldir": "/etc/pg/crl.d",
    "gssencmode": "disable",
    "channel_binding": "require",
}
SECRET = "key pass'phrase"


@pytest.fixture(autouse=True)
def libpq_15(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test sees a libpq that does not know sslnegotiation (PostgreSQL 15's), unless it says otherwise."""
    monkeypatch.setattr(libpq, "known_keywords", lambda: LIBPQ_15)
    monkeypatch.setattr(libpq, "_warned", set())
    yield


def make_settings(**overrides: Any) -> PgSettings:
    values: dict[str, Any] = {
        "data_dir": Path("/var/lib/pg/data"),
        "name": "pg-2",
        "scope": "demo",
        "superuser": Credentials("postgres", "s3cret"),
        "replication": Credentials("replicator", "repl"),
        "rewind": Credentials("rewinder", "rw"),
        "listen_addresses": "10.0.0.2",
        "port": 5432,
        "pgpass": Path("/home/pg/pgpass"),
    }
    values.update(overrides)
    return PgSettings(**values)


def with_tls(username: str, **extra: str) -> Credentials:
    return Credentials(username, "pw", **{**TLS, **extra})


LEADER = Upstream("pg-1", "10.0.0.1", 5433)


# -------------------------------------------------------------------------------------------------
# Credentials


def test_credentials_hide_both_secrets_in_repr() -> None:
    creds = with_tls("replicator", sslpassword=SECRET)
    text = repr(creds)
    assert "pw" not in text and SECRET not in text
    assert "password=***" in text and "sslpassword='***'" in text and "sslmode='verify-full'" in text
    assert creds.libpq_options() == {**TLS, "sslpassword": SECRET}
    assert Credentials("u").libpq_options() == {}


def test_every_role_credentials_option_is_a_libpq_option_pgwarden_passes_on() -> None:
    modeled = {name for name in RoleCredentials.__dataclass_fields__ if name not in ("username", "password")}
    assert modeled == set(LIBPQ_OPTIONS)


# -------------------------------------------------------------------------------------------------
# primary_conninfo (replication role)


def test_primary_conninfo_defaults_to_sslmode_prefer() -> None:
    params = conninfo_to_dict(conf.primary_conninfo(make_settings(), LEADER))
    assert params["sslmode"] == "prefer"
    assert not set(params) & (set(LIBPQ_OPTIONS) - {"sslmode"})


@pytest.mark.parametrize("mode", ["disable", "allow", "require", "verify-ca", "verify-full"])
def test_primary_conninfo_never_changes_a_configured_sslmode(mode: str) -> None:
    settings = make_settings(replication=Credentials("replicator", sslmode=mode))
    assert conninfo_to_dict(conf.primary_conninfo(settings, LEADER))["sslmode"] == mode


def test_primary_conninfo_carries_every_replication_option() -> None:
    settings = make_settings(replication=with_tls("replicator", sslpassword=SECRET),
                             superuser=with_tls("postgres", sslcert="/superuser.crt"))
    params = conninfo_to_dict(conf.primary_conninfo(settings, LEADER))
    # sslpassword too: postgresql.conf is readable by postgres only, as with Patroni.
    assert params == {"host": "10.0.0.1", "port": "5433", "user": "replicator", "application_name": "pg-2",
                      "passfile": "/home/pg/pgpass", **TLS, "sslpassword": SECRET}
    rendered = conf.render_postgresql_conf(settings, "replica", LEADER)
    assert "sslmode=verify-full" in rendered and "/superuser.crt" not in rendered


def test_sslnegotiation_reaches_a_libpq_that_knows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # (not rendered: make_conninfo itself asks the installed libpq, PostgreSQL 15's, which refuses it)
    monkeypatch.setattr(libpq, "known_keywords", lambda: LIBPQ_17)
    creds = Credentials("replicator", sslmode="require", sslnegotiation="direct")
    assert libpq.connection_options(creds) == {"sslmode": "require", "sslnegotiation": "direct"}
    assert libpq.program_environment(make_settings(superuser=creds), "superuser")["PGSSLNEGOTIATION"] == "direct"


def test_sslnegotiation_is_left_out_with_one_warning_for_an_older_libpq(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(replication=Credentials("replicator", sslmode="require", sslnegotiation="direct"))
    with caplog.at_level("WARNING", logger="pgwarden.postgres.libpq"):
        for _ in range(3):
            params = conninfo_to_dict(conf.primary_conninfo(settings, LEADER))
            assert "sslnegotiation" not in params and params["sslmode"] == "require"
    assert [r.getMessage() for r in caplog.records] == [
        "sslnegotiation=direct left out: this libpq does not know it (libpq 17+); connecting with the "
        "standard PostgreSQL negotiation, sslmode still applies"]


def test_sslnegotiation_postgres_is_what_an_older_libpq_does_anyway(caplog: pytest.LogCaptureFixture) -> None:
    assert libpq.supported({"sslnegotiation": "postgres", "sslmode": "require"}) == {"sslmode": "require"}
    assert not caplog.records


# -------------------------------------------------------------------------------------------------
# pgwarden's own sessions (superuser role)


def test_local_conninfo_carries_the_superuser_options_and_secret_in_process() -> None:
    settings = make_settings(superuser=with_tls("postgres", sslpassword=SECRET),
                             replication=with_tls("replicator", sslcert="/repl.crt"))
    params = conninfo_to_dict(local_conninfo(settings))
    assert {k: params[k] for k in (*TLS, "sslpassword")} == {**TLS, "sslpassword": SECRET}
    assert params["user"] == "postgres" and params["host"] == "10.0.0.2" and "password" not in params


def test_local_conninfo_without_options_is_unchanged() -> None:
    params = conninfo_to_dict(local_conninfo(make_settings()))
    assert not set(params) & set(LIBPQ_OPTIONS)


# -------------------------------------------------------------------------------------------------
# use_unix_socket_repl


@pytest.mark.parametrize(
    ("parameters", "host", "expected"),
    [
        ({"unix_socket_directories": "/run/pg, /tmp"}, "127.0.0.1", "/run/pg"),
        ({"unix_socket_directories": "/run/pg"}, "10.0.0.2", "/run/pg"),  # this node's own address
        ({"unix_socket_directories": "/run/pg"}, "localhost", "/run/pg"),
        ({"unix_socket_directories": "/run/pg"}, "::1", "/run/pg"),
        ({"unix_socket_directories": "/run/pg"}, "10.0.0.1", "10.0.0.1"),  # another host: TCP
        ({"unix_socket_directories": "'', @abstract"}, "127.0.0.1", "@abstract"),
        ({"unix_socket_directories": ""}, "127.0.0.1", "127.0.0.1"),  # no socket at all: TCP
        ({}, "127.0.0.1", None),  # libpq's default directory, the server's default too
    ],
)
def test_use_unix_socket_repl_uses_the_socket_for_an_upstream_on_this_host(
        parameters: dict[str, str], host: str, expected: str | None) -> None:
    settings = make_settings(use_unix_socket_repl=True, parameters=parameters)
    assert libpq.upstream_host(settings, host) == expected
    assert libpq.upstream_host(make_settings(parameters=parameters), host) == host  # off: as published


def test_primary_conninfo_through_the_socket_keeps_the_upstream_port() -> None:
    settings = make_settings(use_unix_socket_repl=True, parameters={"unix_socket_directories": "/run/pg"})
    params = conninfo_to_dict(conf.primary_conninfo(settings, Upstream("pg-1", "127.0.0.1", 5433)))
    assert params["host"] == "/run/pg" and params["port"] == "5433"
    state = conf.render_state("replica", Upstream("pg-1", "127.0.0.1", 5433))
    assert '"host": "127.0.0.1"' in state  # bookkeeping keeps the published address
    default_dir = make_settings(use_unix_socket_repl=True)
    assert "host" not in conninfo_to_dict(conf.primary_conninfo(default_dir, Upstream("pg-1", "127.0.0.1", 5433)))


# -------------------------------------------------------------------------------------------------
# pg_basebackup, pg_rewind, post_bootstrap: options on the command line, sslpassword in a service file


def test_program_options_name_a_service_instead_of_the_secret() -> None:
    settings = make_settings(replication=with_tls("replicator", sslpassword=SECRET), rewind=None,
                             superuser=with_tls("postgres"))
    assert libpq.program_options(settings, "replication") == {**TLS, "service": "pgwarden_replication"}
    assert libpq.program_options(settings, "rewind") == TLS  # the superuser's, which has no secret
    assert libpq.program_environment(settings) == {"PGSERVICEFILE": "/home/pg/pgpass.service"}
    assert libpq.render_service_file(settings) == f"[pgwarden_replication]\nsslpassword={SECRET}\n"
    env = libpq.program_environment(settings, "superuser")
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLCERT"] == "/etc/pg/client.crt"
    assert env["PGCHANNELBINDING"] == "require" and env["PGGSSENCMODE"] == "disable"
    assert "PGSERVICE" not in env and SECRET not in str(env)


def test_no_service_file_without_a_secret() -> None:
    settings = make_settings(replication=with_tls("replicator"))
    assert libpq.render_service_file(settings) == "" and libpq.program_environment(settings) == {}


@pytest.mark.parametrize("secret", ["two\nlines", " padded", "padded "])
def test_a_secret_a_service_file_cannot_hold_is_refused(secret: str) -> None:
    settings = make_settings(rewind=Credentials("rewinder", sslpassword=secret))
    with pytest.raises(ValueError, match="rewind sslpassword"):
        libpq.render_service_file(settings)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    async def __call__(self, argv: Sequence[str], timeout: float, *, env: dict[str, str] | None = None,
                       **_: Any) -> CommandOutcome:
        self.calls.append((list(argv), dict(env or {})))
        return CommandOutcome(1, "stopped by the test")


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(controller, "run_command", recorder)
    return recorder


def _tls_settings(tmp_path: Path, **overrides: Any) -> PgSettings:
    return make_settings(data_dir=tmp_path / "data", pgpass=tmp_path / "pgpass",
                         replication=with_tls("replicator", sslpassword=SECRET),
                         rewind=with_tls("rewinder", sslcert="/rewind.crt", sslpassword="rewind-key"),
                         **overrides)


async def test_pg_basebackup_gets_the_replication_options_and_no_secret_on_its_command_line(
        tmp_path: Path, recorder: Recorder) -> None:
    settings = _tls_settings(tmp_path)
    result = await controller.PgController(settings).basebackup("10.0.0.1", 5433)
    assert not result.ok
    [(argv, env)] = recorder.calls
    assert SECRET not in " ".join(argv)
    assert argv[argv.index("-h") + 1] == "10.0.0.1" and argv[argv.index("-U") + 1] == "replicator"
    assert conninfo_to_dict(argv[argv.index("-d") + 1]) == {**TLS, "service": "pgwarden_replication"}
    assert env["PGSERVICEFILE"] == str(tmp_path / "pgpass.service") and env["PGPASSFILE"] == str(tmp_path / "pgpass")
    service = tmp_path / "pgpass.service"
    assert service.stat().st_mode & 0o777 == 0o600
    assert f"[pgwarden_replication]\nsslpassword={SECRET}\n" in service.read_text()


async def test_pg_basebackup_without_options_has_no_dsn(tmp_path: Path, recorder: Recorder) -> None:
    await controller.PgController(make_settings(data_dir=tmp_path / "data", pgpass=tmp_path / "pgpass"
                                                )).basebackup("10.0.0.1", 5433)
    [(argv, env)] = recorder.calls
    assert "-d" not in argv and "PGSERVICEFILE" not in env
    assert not (tmp_path / "pgpass.service").exists()


async def test_pg_basebackup_through_the_socket_with_use_unix_socket_repl(tmp_path: Path, recorder: Recorder) -> None:
    settings = make_settings(data_dir=tmp_path / "data", pgpass=tmp_path / "pgpass", use_unix_socket_repl=True,
                             parameters={"unix_socket_directories": str(tmp_path)})
    await controller.PgController(settings).basebackup("127.0.0.1", 5433)
    [(argv, _)] = recorder.calls
    assert argv[argv.index("-h") + 1] == str(tmp_path) and argv[argv.index("-p") + 1] == "5433"


async def test_pg_rewind_source_carries_the_rewind_options_and_no_secret(tmp_path: Path, recorder: Recorder) -> None:
    settings = _tls_settings(tmp_path)
    (tmp_path / "data").mkdir()
    result = await controller.PgController(settings).rewind("10.0.0.1", 5433)
    assert not result.ok and "stopped by the test" in result.message
    [(argv, env)] = recorder.calls
    assert "rewind-key" not in " ".join(argv)
    [source] = [a.removeprefix("--source-server=") for a in argv if a.startswith("--source-server=")]
    assert conninfo_to_dict(source) == {
        "host": "10.0.0.1", "port": "5433", "user": "rewinder", "dbname": "postgres",
        "passfile": str(tmp_path / "pgpass"), "connect_timeout": "10",
        **TLS, "sslcert": "/rewind.crt", "service": "pgwarden_rewind"}
    assert env["PGSERVICEFILE"] == str(tmp_path / "pgpass.service")
    assert "[pgwarden_rewind]\nsslpassword=rewind-key\n" in (tmp_path / "pgpass.service").read_text()


async def test_pg_rewind_falls_back_to_the_superuser_options(tmp_path: Path, recorder: Recorder) -> None:
    settings = make_settings(data_dir=tmp_path, pgpass=tmp_path / "pgpass", rewind=None,
                             superuser=Credentials("postgres", sslmode="verify-ca", sslrootcert="/ca.crt"))
    await controller.PgController(settings).rewind("10.0.0.1", 5433)
    [(argv, _)] = recorder.calls
    source = conninfo_to_dict(argv[-1].removeprefix("--source-server="))
    assert source["user"] == "postgres" and source["sslmode"] == "verify-ca" and source["sslrootcert"] == "/ca.crt"


async def test_post_bootstrap_gets_the_superuser_options_in_its_environment(tmp_path: Path,
                                                                             recorder: Recorder) -> None:
    settings = make_settings(data_dir=tmp_path, pgpass=tmp_path / "pgpass",
                             superuser=with_tls("postgres", sslpassword=SECRET))
    await controller.PgController(settings).run_post_bootstrap("/bin/true")
    [(argv, env)] = recorder.calls
    assert SECRET not in " ".join(argv) + str(env)
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLKEY"] == "~/client.key"
    assert env["PGSERVICE"] == "pgwarden_superuser" and env["PGSERVICEFILE"] == str(tmp_path / "pgpass.service")


# -------------------------------------------------------------------------------------------------
# From the configuration; the CLI and the drill


def test_pg_settings_pass_every_option_of_the_configuration() -> None:
    role = RoleCredentials(username="replicator", password="pw", sslpassword=SECRET, **TLS)
    creds = pgsettings.credentials(role)
    assert creds == Credentials("replicator", "pw", sslpassword=SECRET, **TLS)
    assert pgsettings.credentials(RoleCredentials(username="u")) == Credentials("u")


def test_query_uses_the_configured_superuser_options() -> None:
    config = {"postgresql": {"authentication": {"superuser": {"username": "postgres", "password": "x",
                                                              "sslnegotiation": "direct", **TLS}}}}
    assert superuser_options(config) == TLS  # sslnegotiation left out for this libpq; never the password
    assert superuser_options({"etcd3": {"hosts": "h:2379"}}) == {}
    assert superuser_options({"postgresql": {"authentication": None}}) == {}


def test_drill_dsn_carries_the_options() -> None:
    members = [MemberInfo("a", "postgres://10.0.0.1:5432/postgres", ""),
               MemberInfo("b", "postgres://10.0.0.2:5432/postgres", "")]
    params = conninfo_to_dict(multi_host_dsn(members, user="postgres", password=None, options=TLS))
    assert {k: params[k] for k in TLS} == TLS and params["host"] == "10.0.0.1,10.0.0.2"


def test_from_a_patroni_file_and_environment_to_the_adapter(tmp_path: Path) -> None:
    import yaml

    from pgwarden.config.loader import effective, load_local

    path = tmp_path / "patroni.yml"
    path.write_text(yaml.safe_dump({
        "scope": "demo", "name": "pg-2",
        "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
        "etcd3": {"hosts": "127.0.0.1:2379"},
        "postgresql": {
            "listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/srv/pg",
            "use_unix_socket_repl": True,
            "authentication": {"superuser": {"username": "postgres", **TLS},
                               "replication": {"username": "replicator", "sslmode": "require"},
                               "rewind": {"username": "rewinder", "sslcert": "/rewind.crt"}},
        },
    }))
    environ = {"PATRONI_REPLICATION_SSLPASSWORD": SECRET, "PATRONI_REPLICATION_SSLMODE": "verify-ca",
               "PATRONI_REWIND_CHANNEL_BINDING": "require"}
    settings = pgsettings.pg_settings(effective(load_local(path, environ), {}))
    assert settings.superuser == Credentials("postgres", **TLS)
    assert settings.replication == Credentials("replicator", sslmode="verify-ca", sslpassword=SECRET)
    assert settings.rewind == Credentials("rewinder", sslcert="/rewind.crt", channel_binding="require")
    assert settings.use_unix_socket_repl is True
