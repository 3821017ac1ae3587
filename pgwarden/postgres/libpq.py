"""The libpq options of `postgresql.authentication.<kind>` in every connection pgwarden makes or configures.

Which connection uses which role:

* pgwarden's probes and admin sessions to its own PostgreSQL, `post_bootstrap`, `pgwarden query` and
  `pgwarden drill`: `superuser`;
* `primary_conninfo` and pg_basebackup: `replication`;
* pg_rewind's source server: `rewind`, else `superuser`.

The options (`sslmode`, `sslcert`, `sslkey`, `sslrootcert`, `sslcrl`, `sslcrldir`, `sslpassword`,
`sslnegotiation`, `gssencmode`, `channel_binding`) are passed as written, relative paths included. Only
`primary_conninfo` has a default of its own, `sslmode=prefer` (libpq's default), and only when the
replication role sets no `sslmode`: a configured mode is never downgraded.

`sslnegotiation` exists from libpq 17 on, and libpq refuses a connection string with an option it does
not know. When the libpq pgwarden loads (psycopg's, normally the system's libpq5, the one PostgreSQL's
binaries load too) does not know it, it is left out with a warning: without it libpq uses the standard
PostgreSQL negotiation (what `sslnegotiation=postgres` means), and `sslmode` still decides whether TLS
is required and what is verified, so leaving it out never weakens a connection.

Secrets: passwords come from the pgpass file. `sslpassword` goes into conninfo strings handed to libpq
in-process and into `primary_conninfo` (postgresql.conf, readable by postgres only, as with Patroni);
pg_basebackup and pg_rewind find it in a private service file (`PGSERVICEFILE`, a `service=` name in
their conninfo), never on their command line.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pgwarden.postgres.settings import LIBPQ_OPTIONS, Credentials, PgSettings

log = logging.getLogger(__name__)

Role = Literal["superuser", "replication", "rewind"]
ROLES: tuple[Role, ...] = ("superuser", "replication", "rewind")

SECRET_OPTIONS = frozenset({"sslpassword"})
VERSION_DEPENDENT_OPTIONS = frozenset({"sslnegotiation"})
"""Options libpq may not know yet, which are left out (with a warning) rather than failing a connection."""

# libpq's environment variables, for programs pgwarden starts with a role's options (sslpassword has none).
ENVIRONMENT = {
    "sslmode": "PGSSLMODE", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR", "sslnegotiation": "PGSSLNEGOTIATION",
    "gssencmode": "PGGSSENCMODE", "channel_binding": "PGCHANNELBINDING",
}

_warned: set[str] = set()


@functools.cache
def known_keywords() -> frozenset[str]:
    """The connection options the loaded libpq understands."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def options_of(source: Any) -> dict[str, str]:
    """The libpq options set on `source`: a `Credentials`, the config's `RoleCredentials`, or a mapping."""
    if isinstance(source, Mapping):
        return {name: str(source[name]) for name in LIBPQ_OPTIONS if source.get(name) is not None}
    return {name: str(value) for name in LIBPQ_OPTIONS if (value := getattr(source, name, None)) is not None}


def supported(options: Mapping[str, str], known: frozenset[str] | None = None) -> dict[str, str]:
    """`options` without the version-dependent ones this libpq does not know (each warned about once)."""
    known = known_keywords() if known is None else known
    out = {}
    for name, value in options.items():
        if name in VERSION_DEPENDENT_OPTIONS and name not in known:
            if name not in _warned and value != "postgres":  # 'postgres' is what libpq does anyway
                _warned.add(name)
                log.warning("%s=%s left out: this libpq does not know it (libpq 17+); connecting with the "
                            "standard PostgreSQL negotiation, sslmode still applies", name, value)
            continue
        out[name] = value
    return out


def connection_options(creds: Credentials, known: frozenset[str] | None = None) -> dict[str, str]:
    """`creds`' libpq options for a conninfo handed to libpq in-process (sslpassword included)."""
    return supported(creds.libpq_options(), known)


def role_credentials(settings: PgSettings, role: Role) -> Credentials:
    if role == "replication":
        return settings.replication
    if role == "rewind":
        return settings.rewind_credentials
    return settings.superuser


# -------------------------------------------------------------------------------------------------
# Programs pgwarden starts (pg_basebackup, pg_rewind, post_bootstrap)


def service_name(role: Role) -> str:
    return f"pgwarden_{role}"


def service_file_path(settings: PgSettings) -> Path:
    """The private libpq service file holding the roles' sslpassword, next to the pgpass file."""
    pgpass = settings.pgpass_path
    return pgpass.with_name(pgpass.name + ".service")


def render_service_file(settings: PgSettings) -> str:
    """One `[pgwarden_<role>]` section with `sslpassword` per role that sets one; '' when none does.

    libpq reads a service file line by line and trims the value, so a passphrase with a line break or
    leading or trailing blanks cannot be written there: ValueError.
    """
    lines = []
    for role in ROLES:
        secret = role_credentials(settings, role).sslpassword
        if secret is None:
            continue
        if "\n" in secret or "\r" in secret or secret != secret.strip():
            raise ValueError(f"the {role} sslpassword has line breaks or leading or trailing blanks, "
                             "which a libpq service file cannot hold")
        lines += [f"[{service_name(role)}]", f"sslpassword={secret}", ""]
    return "\n".join(lines)


def program_options(settings: PgSettings, role: Role) -> dict[str, str]:
    """The role's options for a conninfo on a program's command line: no secret, but a `service=` naming
    the service file section that holds the role's sslpassword (PGSERVICEFILE: `program_environment`)."""
    options = connection_options(role_credentials(settings, role))
    out = {name: value for name, value in options.items() if name not in SECRET_OPTIONS}
    if any(name in SECRET_OPTIONS for name in options):
        out["service"] = service_name(role)
    return out


def program_environment(settings: PgSettings, role: Role | None = None) -> dict[str, str]:
    """PGSERVICEFILE when a role has an sslpassword; with `role`, also that role's options as libpq
    environment variables and PGSERVICE (for scripts, whose connections pgwarden does not build)."""
    env: dict[str, str] = {}
    if any(role_credentials(settings, r).sslpassword is not None for r in ROLES):
        env["PGSERVICEFILE"] = str(service_file_path(settings))
    if role is not None:
        for name, value in program_options(settings, role).items():
            if name == "service":
                env["PGSERVICE"] = value
            elif name in ENVIRONMENT:
                env[ENVIRONMENT[name]] = value
    return env


# -------------------------------------------------------------------------------------------------
# postgresql.use_unix_socket_repl


def on_this_host(settings: PgSettings, host: str) -> bool:
    """Is `host` this machine: a loopback address, `localhost`, or this node's own listen/connect address?"""
    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    own = {h.strip() for h in settings.listen_addresses.split(",")} | {settings.advertised_host_port[0]}
    return host in own - {"", "*", "0.0.0.0", "::"}


def upstream_host(settings: PgSettings, host: str) -> str | None:
    """Where replication connections reach an upstream published at `host`.

    With `use_unix_socket_repl` and the upstream on this host, through a unix socket: the first
    directory of this node's `unix_socket_directories` (so the instances on one host must share it, as
    they do with the same `parameters`), or None (libpq's default directory, the server's default too)
    when the parameter is not set. An upstream elsewhere, or no usable directory, keeps TCP.
    """
    if not settings.use_unix_socket_repl or host.startswith(("/", "@")) or not on_this_host(settings, host):
        return host
    if "unix_socket_directories" not in settings.parameters:
        return None
    for entry in str(settings.parameters["unix_socket_directories"]).split(","):
        directory = entry.strip().strip('"').strip()
        if directory.startswith(("/", "@")):
            return directory
    return host
