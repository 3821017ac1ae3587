"""A Jepsen-style chaos suite on real processes: hosts as network namespaces, faults, a checker.

`net` builds the namespaces, `cluster` runs etcd, PostgreSQL and an agent in each host namespace,
`faults` injects and heals network, process and clock faults, `workload` writes through every host,
`checker` judges the history, `runner` ties one seeded schedule together (docs/chaos.md).
"""
