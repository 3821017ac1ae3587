"""pgwarden: PostgreSQL high availability, a drop-in replacement for Patroni."""

__version__ = "0.1.0"
