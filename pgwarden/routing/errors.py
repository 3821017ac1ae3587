"""The one error the routing pushers raise."""


class RoutingError(Exception):
    """A router (HAProxy, PgBouncer, etcd v2 mirror) could not be reached or refused a command."""
