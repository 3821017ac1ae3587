"""A deterministic cluster simulator that runs the real, unmodified decision core under random faults.

Entry points: `pgwarden.sim.run.run(seed)` for one run, `pgwarden.sim.campaign.campaign(...)` for
many, `pgwarden.sim.shrink.shrink(...)` to minimise a failing schedule, `pgwarden.sim.cli:main` for
the `pgwarden-sim` command.
"""
