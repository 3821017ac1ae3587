"""`pgwarden drill`: a write workload, one injected fault, and what the clients saw.

Public entry points: `Drill` (runs the drill), `DrillOptions`, `Fault`, `Report`; `measure` holds the
pure measurement logic, `topology` the cluster discovery and REST/DSN helpers.
"""

from pgwarden.drill.faults import Fault
from pgwarden.drill.measure import Attempt, Measurement, measure
from pgwarden.drill.runner import AgentRestarter, Drill, DrillOptions, Progress, Report, RunResult
from pgwarden.drill.topology import DrillError, Topology, multi_host_dsn, read_topology

__all__ = [
    "AgentRestarter",
    "Attempt",
    "Drill",
    "DrillError",
    "DrillOptions",
    "Fault",
    "Measurement",
    "Progress",
    "Report",
    "RunResult",
    "Topology",
    "measure",
    "multi_host_dsn",
    "read_topology",
]
