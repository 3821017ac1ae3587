"""Local superuser sessions: short timeouts, passwords from the pgpass file only."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from pgwarden.postgres.libpq import connection_options
from pgwarden.postgres.settings import PgSettings

CONNECT_TIMEOUT = 2
DEFAULT_STATEMENT_TIMEOUT_MS = 5000


def local_conninfo(settings: PgSettings, statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS) -> str:
    """conninfo for this node's own PostgreSQL as the superuser (no password: passfile= points at pgpass),
    with the superuser's libpq options (sslmode, sslcert, ...: `pgwarden.postgres.libpq`)."""
    return make_conninfo(
        host=settings.local_connect_host(),
        port=str(settings.port),
        user=settings.superuser.username,
        dbname="postgres",
        passfile=str(settings.pgpass_path),
        connect_timeout=str(CONNECT_TIMEOUT),
        application_name="pgwarden",
        # psycopg returns bytes for text from SQL_ASCII databases unless the client side names an encoding
        client_encoding="UTF8",
        options=f"-c statement_timeout={statement_timeout_ms}",
        **connection_options(settings.superuser),
    )


async def connect_local(
    settings: PgSettings, statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """An autocommit session on the local PostgreSQL. Raises psycopg.Error when it cannot connect."""
    return await psycopg.AsyncConnection.connect(
        local_conninfo(settings, statement_timeout_ms), autocommit=True
    )
