"""The PostgreSQL adapter's settings (`postgres.settings.PgSettings`) from the effective configuration:
a pure translation. The decision core's settings come with the configuration (`EffectiveConfig.ha`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pgwarden.config import EffectiveConfig, parse_listen
from pgwarden.config.schema import RoleCredentials
from pgwarden.postgres.libpq import options_of
from pgwarden.postgres.settings import DEFAULT_BIN_DIR, Credentials, PgSettings, options_to_argv


def credentials(role: RoleCredentials) -> Credentials:
    """One `postgresql.authentication.<kind>` entry: the role, its password and its libpq options."""
    return Credentials(role.username, role.password, **options_of(role))


def pg_settings(cfg: EffectiveConfig, role: str = "replica") -> PgSettings:
    """The PostgreSQL adapter's settings for running in `role` ("primary" or "replica")."""
    pg = cfg.local.postgresql
    auth = pg.authentication
    listen_host, port = parse_listen(pg.listen)
    hba = cfg.pg_hba_for(role) or cfg.bootstrap_pg_hba
    return PgSettings(
        data_dir=Path(pg.data_dir),
        name=cfg.name,
        scope=cfg.scope,
        superuser=credentials(auth.superuser),
        replication=credentials(auth.replication),
        rewind=credentials(auth.rewind) if auth.rewind else None,
        bin_dir=Path(pg.bin_dir) if pg.bin_dir else DEFAULT_BIN_DIR,
        listen_addresses=listen_host or "*",
        port=port,
        connect_address=pg.connect_address,
        parameters=forced_parameters(cfg, cfg.parameters_for(role)),
        pg_hba=tuple(hba),
        pg_ident=cfg.pg_ident_for(role),
        config_dir=Path(pg.config_dir) if pg.config_dir else None,
        custom_conf=Path(pg.custom_conf) if pg.custom_conf else None,
        bin_name={name: str(value) for name, value in pg.bin_name.items() if value},
        recovery_conf=cfg.recovery_conf,
        pgpass=Path(pg.pgpass) if pg.pgpass else None,
        pg_ctl_timeout=float(cfg.pg_ctl_timeout),
        basebackup_options=options_to_argv(pg.basebackup),
        initdb_options=options_to_argv(cfg.local.bootstrap.initdb),
        use_slots=cfg.ha.use_slots,
        nostream=cfg.local.tags.nostream,
        use_unix_socket=pg.use_unix_socket,
        use_unix_socket_repl=pg.use_unix_socket_repl,
    )


def forced_parameters(cfg: EffectiveConfig, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    """`parameters` with what pgwarden forces for this member: `hot_standby_feedback = on` on a member that may
    fail over while the cluster has permanent logical slots, since its copies' catalog_xmin must reach the
    primary (through its physical slot) or the primary's vacuum would remove catalog rows the copies still
    need. A reload applies it."""
    logical = any(slot.type == "logical" for slot in cfg.ha.permanent_slots)
    if not logical or cfg.ha.tags.nofailover or not cfg.ha.use_slots:
        return parameters
    if str(parameters.get("hot_standby_feedback", "")).lower() in ("on", "true", "1", "yes"):
        return parameters
    return MappingProxyType({**parameters, "hot_standby_feedback": "on"})
