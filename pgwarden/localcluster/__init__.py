"""Real etcd and PostgreSQL processes on this machine, on loopback: `pgwarden demo`, the tests, the benchmarks.

- `ports`: free loopback ports (the one `free_port`);
- `processes`: waiting for a condition, stopping a started process by its PID;
- `etcd`: one single-member etcd (`LocalEtcd`), started in a given directory and stopped by PID;
- `postgres`: the PostgreSQL binaries and the OS user PostgreSQL runs as (it refuses to run as root);
- `cluster`: `LocalCluster`, one etcd and N agents with their PostgreSQL.
"""
