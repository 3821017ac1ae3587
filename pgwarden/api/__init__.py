"""pgwarden's REST API: Patroni-compatible health checks, status, cluster view and management.

The agent publishes `NodeState` values into a `StateHolder`; the server only reads them. Management
requests reach the agent through `AgentControl` (pgwarden.api.control).
"""

from pgwarden.api.management import ManagementSettings, management_routes
from pgwarden.api.security import (
    AccessPolicy,
    BasicAuthCredentials,
    TlsConfigError,
    access_policy_from,
    ssl_context_from,
)
from pgwarden.api.server import build_app, start_api, stop_api
from pgwarden.api.state import AgentMetrics, DurationSummary, NodeState, StateHolder

__all__ = [
    "AccessPolicy",
    "AgentMetrics",
    "BasicAuthCredentials",
    "DurationSummary",
    "ManagementSettings",
    "NodeState",
    "StateHolder",
    "TlsConfigError",
    "access_policy_from",
    "build_app",
    "management_routes",
    "ssl_context_from",
    "start_api",
    "stop_api",
]
