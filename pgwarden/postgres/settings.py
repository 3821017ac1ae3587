"""The adapter's configuration: one frozen value the agent builds from the `postgresql` config section."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")


LIBPQ_OPTIONS = ("sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir", "sslpassword",
                 "sslnegotiation", "gssencmode", "channel_binding")
"""The libpq connection options an `authentication.<kind>` entry may set (Patroni's list)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """One `authentication.<kind>` entry: a role and the libpq options its connections use.

    The password only ever reaches PostgreSQL through a pgpass file. `sslpassword` (the client key's
    passphrase) is a secret too: it goes into conninfo strings given to libpq in-process, into
    primary_conninfo (postgresql.conf, readable only by postgres, as with Patroni) and into a private
    service file for pg_basebackup and pg_rewind, never onto a command line or into a log.
    """

    username: str
    password: str | None = None
    sslmode: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslrootcert: str | None = None
    sslcrl: str | None = None
    sslcrldir: str | None = None
    sslpassword: str | None = None
    sslnegotiation: str | None = None
    gssencmode: str | None = None
    channel_binding: str | None = None

    def libpq_options(self) -> dict[str, str]:
        """The libpq options set for this role, by keyword (sslpassword included: never log this)."""
        return {name: str(value) for name in LIBPQ_OPTIONS if (value := getattr(self, name)) is not None}

    def __repr__(self) -> str:  # keeps passwords out of logs and tracebacks
        options = "".join(f", {name}={'***' if name == 'sslpassword' else value!r}"
                          for name, value in self.libpq_options().items())
        return f"Credentials(username={self.username!r}, password={'***' if self.password else None}{options})"


class Upstream(NamedTuple):
    """The member a standby streams from: its name (for bookkeeping) and its PostgreSQL address."""

    member: str
    host: str
    port: int
    slot: str | None = None
    """The slot to stream through when it is not this member's own (a standby leader following a remote
    primary: `standby_cluster.primary_slot_name`, "" for none); None: the member slot (`use_slots`)."""


@dataclass(frozen=True, slots=True)
class PgSettings:
    """Everything the PostgreSQL adapter needs to know, resolved from the effective configuration."""

    data_dir: Path
    name: str
    """This member's name: application_name towards the upstream and the source of its slot name."""
    scope: str
    """The cluster name; becomes PostgreSQL's `cluster_name`."""
    superuser: Credentials
    replication: Credentials
    rewind: Credentials | None = None
    """Credentials pg_rewind uses against the source; the superuser when None."""
    bin_dir: Path = DEFAULT_BIN_DIR
    listen_addresses: str = "127.0.0.1"
    port: int = 5432
    connect_address: str = ""
    """host:port other members use to reach this PostgreSQL; defaults to the first listen address."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    pg_hba: tuple[str, ...] = ()
    """pg_hba.conf lines; empty means pgwarden's loopback defaults."""
    pg_ident: tuple[str, ...] = ()
    """pg_ident.conf lines; empty leaves an existing pg_ident.conf as it is."""
    config_dir: Path | None = None
    """Where postgresql.conf, postgresql.base.conf, pg_hba.conf and pg_ident.conf live; None: data_dir."""
    custom_conf: Path | None = None
    """The user's file pgwarden's postgresql.conf includes instead of postgresql.base.conf (never written)."""
    bin_name: Mapping[str, str] = field(default_factory=dict)
    """Alternative names of the binaries in bin_dir (`postgresql.bin_name`): {'pg_ctl': 'pg_ctl.wrapped'}."""
    recovery_conf: Mapping[str, Any] = field(default_factory=dict)
    """Recovery parameters (restore_command, recovery_min_apply_delay, ...) written into postgresql.conf."""
    pgpass: Path | None = None
    """Where pgwarden writes its pgpass file; defaults to ~/.pgpass_pgwarden_<name>."""
    pg_ctl_timeout: float = 60.0
    basebackup_options: tuple[str, ...] = ()
    """Extra pg_basebackup arguments, already in argv form (see `options_to_argv`)."""
    initdb_options: tuple[str, ...] = ()
    """Extra initdb arguments, already in argv form (see `options_to_argv`)."""
    use_slots: bool = True
    nostream: bool = False
    """The `nostream` tag: as a replica, replay WAL from the archive only (no primary_conninfo, no slot)."""
    use_unix_socket: bool = False
    """Connect locally through the first `unix_socket_directories` entry instead of TCP loopback."""
    use_unix_socket_repl: bool = False
    """Replicate (primary_conninfo, pg_basebackup, pg_rewind) through a unix socket from an upstream on
    this host; see `pgwarden.postgres.libpq.upstream_host`."""
    log_file: Path | None = None
    """Where the postmaster's stderr goes (pg_ctl -l); defaults to <data_dir>/pgwarden-postgres.log."""

    def binary(self, name: str) -> str:
        """The path of binary `name` (pg_ctl, initdb, ...) in bin_dir, renamed by `bin_name`."""
        return str(self.bin_dir / (self.bin_name.get(name) or name))

    @property
    def conf_dir(self) -> Path:
        return self.config_dir if self.config_dir is not None else self.data_dir

    @property
    def config_file(self) -> Path:
        """pgwarden's own postgresql.conf."""
        return self.conf_dir / "postgresql.conf"

    @property
    def hba_path(self) -> Path:
        """The `hba_file` parameter when set (a file pgwarden then leaves alone), else conf_dir/pg_hba.conf."""
        return _path_parameter(self.parameters.get("hba_file"), self.conf_dir / "pg_hba.conf")

    @property
    def ident_path(self) -> Path:
        """The `ident_file` parameter when set (a file pgwarden then leaves alone), else conf_dir/pg_ident.conf."""
        return _path_parameter(self.parameters.get("ident_file"), self.conf_dir / "pg_ident.conf")

    @property
    def manages_hba(self) -> bool:
        return self.hba_path == self.conf_dir / "pg_hba.conf"

    @property
    def manages_ident(self) -> bool:
        return self.ident_path == self.conf_dir / "pg_ident.conf"

    @property
    def pgpass_path(self) -> Path:
        if self.pgpass is not None:
            return self.pgpass
        return Path.home() / f".pgpass_pgwarden_{slot_name_from_member_name(self.name)}"

    @property
    def postmaster_log(self) -> Path:
        return self.log_file if self.log_file is not None else self.data_dir / "pgwarden-postgres.log"

    @property
    def rewind_credentials(self) -> Credentials:
        return self.rewind if self.rewind is not None else self.superuser

    @property
    def slot_name(self) -> str:
        """The physical slot an upstream keeps for this member."""
        return slot_name_from_member_name(self.name)

    @property
    def advertised_host_port(self) -> tuple[str, int]:
        if self.connect_address:
            host, _, port = self.connect_address.rpartition(":")
            if host and port.isdigit():
                return host.strip("[]"), int(port)
            return self.connect_address, self.port
        return local_host(self.listen_addresses), self.port

    @property
    def conn_url(self) -> str:
        """The member JSON `conn_url`: postgres://host:port/postgres."""
        host, port = self.advertised_host_port
        if ":" in host:
            host = f"[{host}]"
        return f"postgres://{host}:{port}/postgres"

    def local_connect_host(self) -> str:
        """Where this node's own probes and admin sessions connect: a socket directory or loopback."""
        if self.use_unix_socket:
            dirs = str(self.parameters.get("unix_socket_directories", "/var/run/postgresql"))
            first = dirs.split(",")[0].strip()
            if first:
                return first
        return local_host(self.listen_addresses)


def _path_parameter(value: Any, default: Path) -> Path:
    """The file a parameter names (as given), else `default`."""
    return Path(str(value)) if value not in (None, "") else default


def local_host(listen_addresses: str) -> str:
    """The address to reach a server listening on `listen_addresses` from this machine."""
    first = listen_addresses.split(",")[0].strip()
    if first in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    if first == "::":
        return "::1"
    return first


def parse_listen(listen: str, default_port: int = 5432) -> tuple[str, int]:
    """Patroni's `postgresql.listen` ('host1,host2:port') -> ('host1,host2', port)."""
    hosts, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        return listen, default_port
    return hosts, int(port)


_SLOT_INVALID = re.compile(r"[^a-z0-9_]")


def slot_name_from_member_name(member: str) -> str:
    """Member name -> physical slot name: lowercase, anything outside [a-z0-9_] becomes '_'."""
    return _SLOT_INVALID.sub("_", member.lower())[:63]


OptionSpec = Sequence[str | Mapping[str, Any]] | Mapping[str, Any]
"""`bootstrap.initdb` / `postgresql.basebackup` as written in YAML: a list of names and {name: value}, or a dict."""


def options_to_argv(spec: OptionSpec | None) -> tuple[str, ...]:
    """An OptionSpec -> long options.

    ['data-checksums', {'encoding': 'UTF8'}] and {'encoding': 'UTF8'} both become
    ('--data-checksums', '--encoding=UTF8'). A value of True means a flag without a value. Strings
    already in long form ('--encoding=UTF8') pass unchanged; short options are not supported.
    """
    if spec is None:
        return ()
    items: list[tuple[str, Any]] = []
    if isinstance(spec, Mapping):
        items.extend(spec.items())
    else:
        for entry in spec:
            if isinstance(entry, Mapping):
                items.extend(entry.items())
            else:
                items.append((str(entry), True))
    argv: list[str] = []
    for key, value in items:
        option = "--" + str(key).lstrip("-")
        argv.append(option if value is True else f"{option}={value}")
    return tuple(argv)
