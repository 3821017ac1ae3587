"""Traffic follows the primary: HAProxy, PgBouncer and virtual-IP routing for a pgwarden cluster.

- `haproxy_config`: `pgwarden haproxy-config`, a complete HAProxy configuration built from the members;
- `plan`: the pure routing planner (what to tell the load balancer / pooler when the roles change);
- `haproxy_runtime`, `pgbouncer`: the two pushers, over HAProxy's admin socket and PgBouncer's console;
- `sidecar`: `pgwarden route`, the process that watches the DCS and drives the pushers;
- `run`: the wiring of `pgwarden route` (pushers, registry, signals) and `pgwarden haproxy-config`;
- `etcd2_mirror`: copies the leader key into etcd's v2 keyspace for vip-manager 1.x.
"""
