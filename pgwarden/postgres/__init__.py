"""The PostgreSQL adapter: configuration files, process control and probing of the local instance."""

from pgwarden.postgres.controller import PgController
from pgwarden.postgres.probe import Prober, probe
from pgwarden.postgres.process import PgResult
from pgwarden.postgres.settings import (
    Credentials,
    OptionSpec,
    PgSettings,
    Upstream,
    options_to_argv,
    parse_listen,
    slot_name_from_member_name,
)

__all__ = [
    "Credentials",
    "OptionSpec",
    "PgController",
    "PgResult",
    "PgSettings",
    "Prober",
    "Upstream",
    "options_to_argv",
    "parse_listen",
    "probe",
    "slot_name_from_member_name",
]
