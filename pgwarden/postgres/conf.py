"""Pure renderers for the files pgwarden owns in a data directory. No IO here.

pgwarden writes its own `postgresql.conf`, which first includes `postgresql.base.conf` (the file
initdb or the user wrote, kept verbatim) and then sets the values pgwarden needs, so later lines win.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from psycopg.conninfo import make_conninfo

from pgwarden.config.gucs import name_problem
from pgwarden.config.layering import RESERVED_RECOVERY_KEYS
from pgwarden.postgres.libpq import connection_options, upstream_host
from pgwarden.postgres.settings import Credentials, PgSettings, Upstream
from pgwarden.postgres.versions import for_version, wal_keep_size

ConfRole = Literal["primary", "replica"]

GENERATED_MARKER = "# Managed by pgwarden: edit postgresql.base.conf or the pgwarden configuration instead."
BASE_CONF = "postgresql.base.conf"
STATE_FILE = "pgwarden.state.json"

# GUCs pgwarden fixes (Patroni's CMDLINE_OPTIONS): name -> (default, minimum or None).
_CMDLINE_DEFAULTS: dict[str, tuple[Any, int | None]] = {
    "max_connections": (100, 25),
    "max_locks_per_transaction": (64, 32),
    "max_worker_processes": (8, 2),
    "max_prepared_transactions": (0, None),
    "max_wal_senders": (10, 3),
    "max_replication_slots": (10, 4),
    "track_commit_timestamp": (False, None),
    "wal_keep_size": ("128MB", None),
}
# Not overridable: replication and pg_rewind depend on them.
_FORCED = {"hot_standby": True, "wal_log_hints": True}


def auth_method(settings: PgSettings) -> str:
    """The password method for pg_hba and initdb, following `password_encryption`."""
    wanted = str(settings.parameters.get("password_encryption", "")).lower()
    return "md5" if wanted == "md5" else "scram-sha-256"


def enforced_parameters(settings: PgSettings) -> dict[str, Any]:
    """The values pgwarden sets whatever the user asked: they go on the command line and into the file."""
    params = settings.parameters
    out: dict[str, Any] = {
        "listen_addresses": settings.listen_addresses,
        "port": settings.port,
        "cluster_name": settings.scope,
        # 'logical' is a superset of 'replica'; anything lower breaks streaming.
        "wal_level": "logical" if str(params.get("wal_level", "")).lower() == "logical" else "replica",
        **_FORCED,
    }
    for name, (default, minimum) in _CMDLINE_DEFAULTS.items():
        value = params.get(name, default)
        if name == "wal_keep_size" and name not in params and "wal_keep_segments" in params:
            value = wal_keep_size(params["wal_keep_segments"]) or default  # Patroni's translation
        if minimum is not None:
            value = max(_as_int(value, default), minimum)
        out[name] = value
    return out


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(default)


def primary_conninfo(settings: PgSettings, upstream: Upstream) -> str:
    """libpq conninfo for streaming from `upstream`; the password comes from the pgpass file.

    It carries the replication role's libpq options (sslpassword included, as with Patroni: the file
    is readable by postgres only); `sslmode=prefer` only when the role sets none. The host is the
    upstream's, or a socket directory with `use_unix_socket_repl` (`libpq.upstream_host`).
    """
    return make_conninfo(
        host=upstream_host(settings, upstream.host),
        port=str(upstream.port),
        user=settings.replication.username,
        application_name=settings.name,
        passfile=str(settings.pgpass_path),
        **{"sslmode": "prefer", **connection_options(settings.replication)},
    )


def file_parameters(settings: PgSettings, role: ConfRole, upstream: Upstream | None,
                    recovery: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting pgwarden's postgresql.conf carries after the include, in file order. `recovery`: a
    custom bootstrap's archive recovery settings, over everything else (its recovery_target_timeline too).

    A `nostream` replica gets no primary_conninfo and no slot: it replays the archive only."""
    out = {k: v for k, v in settings.parameters.items() if k not in ("hba_file", "ident_file")}
    out.update(enforced_parameters(settings))
    out.update(recovery_parameters(settings))
    out["hba_file"] = str(settings.hba_path)
    out["ident_file"] = str(settings.ident_path)
    # For both roles, although only recovery reads it: it can only change at a restart, and PostgreSQL
    # marks a restart-only parameter that disappears from the file as pending_restart even when its
    # default is the running value, so dropping it when a promoted replica's file is rewritten and
    # reloaded made every new primary report a restart it does not need (checked on PostgreSQL 15).
    out["recovery_target_timeline"] = "latest"
    if role == "replica":
        streams = upstream is not None and not settings.nostream
        out["primary_conninfo"] = primary_conninfo(settings, upstream) if upstream and streams else ""
        out["primary_slot_name"] = settings.slot_name if streams and settings.use_slots else ""
    if role == "replica" and upstream is not None and upstream.slot is not None:
        # A standby leader follows a remote primary through the slot standby_cluster names (or none), and
        # with no host it only restores WAL (restore_command).
        out["primary_slot_name"] = upstream.slot if upstream.host else ""
        if not upstream.host:
            out["primary_conninfo"] = ""
    if recovery:
        out.update(recovery)
    return out


RECOVERY_SETTINGS = frozenset({
    "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_min_apply_delay",
    "recovery_target", "recovery_target_lsn", "recovery_target_name", "recovery_target_time",
    "recovery_target_xid", "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action",
    "primary_conninfo", "primary_slot_name", "promote_trigger_file", "standby_mode", "trigger_file",
})
"""What a backup tool may leave in postgresql.auto.conf to drive recovery (PostgreSQL 12+ names, and the
old recovery.conf-only ones): settings there win over pgwarden's postgresql.conf."""
_AUTO_CONF_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|\s)")


def strip_recovery_settings(text: str) -> tuple[str, list[str]]:
    """postgresql.auto.conf without its recovery settings (`RECOVERY_SETTINGS`), and their names."""
    kept, dropped = [], []
    for line in text.splitlines(keepends=True):
        match = _AUTO_CONF_NAME.match(line)
        if match and match.group(1).lower() in RECOVERY_SETTINGS:
            dropped.append(match.group(1).lower())
        else:
            kept.append(line)
    return "".join(kept), dropped


def recovery_parameters(settings: PgSettings) -> dict[str, Any]:
    """`recovery_conf` as PostgreSQL 12+ reads it: plain parameters in postgresql.conf (never a
    recovery.conf, which would stop PostgreSQL from starting), less the keys pgwarden sets itself.
    Written for both roles, like recovery_target_timeline: a primary ignores them (it is not in
    recovery), and a restart-only one vanishing at a promotion would report a needless pending_restart."""
    return {k: v for k, v in settings.recovery_conf.items() if k.lower() not in RESERVED_RECOVERY_KEYS}


def versioned_parameters(settings: PgSettings, role: ConfRole, upstream: Upstream | None,
                         major: int | None, recovery: Mapping[str, Any] | None = None,
                         ) -> tuple[dict[str, Any], list[str]]:
    """`file_parameters` fit for PostgreSQL `major` (versions.for_version), and what was changed or
    ignored to get there, for the log."""
    values, notes = for_version(file_parameters(settings, role, upstream, recovery), major)
    for name in [name for name in values if name_problem(name) is not None]:
        del values[name]  # validation refuses such names; never let one write a line of its own
        notes.append(f"postgresql.parameters: {name!r} is not a valid parameter name; not written")
    if not settings.manages_hba and settings.pg_hba:
        notes.append(f"pg_hba: ignored, hba_file points at {settings.hba_path} (left as it is)")
    if not settings.manages_ident and settings.pg_ident:
        notes.append(f"pg_ident: ignored, ident_file points at {settings.ident_path} (left as it is)")
    return values, notes


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def format_guc(value: Any) -> str:
    """A value as postgresql.conf syntax: booleans as on/off, numbers bare, everything else quoted.

    Nothing can end the line: control characters (validation refuses newlines and NUL in values, this
    is the last line of defence) become the octal escapes PostgreSQL's GUC_scanstr reads back."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return "'" + _CONTROL.sub(lambda match: f"\\{ord(match.group()):03o}", text) + "'"


def render_postgresql_conf(settings: PgSettings, role: ConfRole, upstream: Upstream | None,
                           major: int | None = None, recovery: Mapping[str, Any] | None = None) -> str:
    """pgwarden's postgresql.conf for `role`; a replica streams from `upstream` (None: archive only).

    It includes `custom_conf` when one is configured, else postgresql.base.conf next to it; `major`
    (the data directory's PostgreSQL version, None: unknown) translates parameters of other versions.
    """
    include = str(settings.custom_conf) if settings.custom_conf is not None else BASE_CONF
    lines = [GENERATED_MARKER, f"include {format_guc(include)}", ""]
    values, _ = versioned_parameters(settings, role, upstream, major, recovery)
    lines += [f"{name} = {format_guc(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def cmdline_options(settings: PgSettings, major: int | None = None) -> str:
    """The `pg_ctl -o` string: enforced GUCs as `-c name=value`, quoted for the shell pg_ctl uses, and
    `config_file` when the configuration lives outside the data directory (`config_dir`)."""
    parts = []
    options, _ = for_version(enforced_parameters(settings), major)
    if settings.conf_dir != settings.data_dir:
        options = {"config_file": str(settings.config_file), **options}
    for name, value in options.items():
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        parts.append("-c " + shlex.quote(f"{name}={text}"))
    return " ".join(parts)


def default_pg_hba(settings: PgSettings) -> tuple[str, ...]:
    """Loopback-only rules: local peer, password over TCP, replication for the replication user."""
    method = auth_method(settings)
    repl = settings.replication.username
    return (
        "local   all          all                   peer",
        f"host    all          all    127.0.0.1/32   {method}",
        f"host    all          all    ::1/128        {method}",
        f"host    replication  {repl}  127.0.0.1/32   {method}",
        f"host    replication  {repl}  ::1/128        {method}",
    )


def render_pg_hba(settings: PgSettings) -> str:
    lines = settings.pg_hba or default_pg_hba(settings)
    return "\n".join([GENERATED_MARKER, *lines]) + "\n"


def render_pg_ident(settings: PgSettings) -> str:
    return "\n".join([GENERATED_MARKER, *settings.pg_ident]) + "\n"


def _pgpass_field(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def render_pgpass(settings: PgSettings) -> str:
    """One wildcard line per distinct user with a password; the first line for a user wins in libpq."""
    seen: set[str] = set()
    lines = []
    creds: list[Credentials | None] = [settings.superuser, settings.replication, settings.rewind]
    for cred in creds:
        if cred is None or cred.password is None or cred.username in seen:
            continue
        seen.add(cred.username)
        lines.append(f"*:*:*:{_pgpass_field(cred.username)}:{_pgpass_field(cred.password)}")
    return "".join(line + "\n" for line in lines)


def render_state(role: ConfRole, upstream: Upstream | None) -> str:
    """pgwarden.state.json: what the configuration was written for, read back by the probe."""
    # An upstream given only by address (no member name) is not "following a member".
    state: dict[str, Any] = {"role": role, "following": upstream.member if upstream and upstream.member else None}
    if upstream:
        state["upstream"] = {"host": upstream.host, "port": upstream.port}
    return json.dumps(state, sort_keys=True) + "\n"


def following_from_state(text: str) -> str | None:
    """The member name recorded by `render_state`, or None for a primary or an unreadable file."""
    try:
        state = json.loads(text)
    except ValueError:
        return None
    if not isinstance(state, Mapping) or state.get("role") != "replica":
        return None
    following = state.get("following")
    return following if isinstance(following, str) and following else None
