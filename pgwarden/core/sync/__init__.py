"""Synchronous replication, pure: no IO, no clock, no logging. Every answer is a value with a reason;
the agent executes it.

* `ssn`: parsing and writing `synchronous_standby_names`.
* `safety`: the rules that keep every acknowledged commit on whoever may be promoted (the argument).
* `plan`: the primary's next step with `synchronous_standby_names` and `/sync` (settings, memory, steps).
* `promotion`: which replica may be promoted, where a switchover may go, what a new primary sets first.
* `reasons`: why, as the operator reads it.
"""
