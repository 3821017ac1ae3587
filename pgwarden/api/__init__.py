"""pgwarden's REST API: Patroni-compatible health checks, status, cluster view and (later) management.

The agent publishes `NodeState` values into a `StateHolder`; the server only reads them.
"""

from pgwarden.api.server import BasicAuthCredentials, build_app, start_api, stop_api
from pgwarden.api.state import NodeState, StateHolder

__all__ = ["BasicAuthCredentials", "NodeState", "StateHolder", "build_app", "start_api", "stop_api"]
