"""The sans-I/O machinery around the decision core, shared by the agent and the simulator.

`steps` turns one decided action into a generator of `effects` (read the clock, stop PostgreSQL,
update the leader key, ...) that receives each effect's result and ends in one `Outcome`. Nothing
here does IO: the agent interprets the effects with its real adapters (`agent/execute.py`), the
simulator with its simulated world (`sim/effects.py`), so the simulator runs the very step code
that runs in production.
"""
