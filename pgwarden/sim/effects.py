"""The simulator's interpreter of the executor's effects: the agent's own steps (`engine.steps`), each
effect done to the simulated world (its etcd through `SimDcsClient`, its PostgreSQL through `pgops`).

Nothing here decides an order of operations: that is the steps' job, and they are the code the agent
runs. What is simulated is only how long each effect takes and what it does to the world. Effects
with nothing to simulate (the user's hooks, creating roles) succeed at once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pgwarden.core.actions import Action, Demote, ReleaseLeader, RenewLeader, Shutdown, Wait
from pgwarden.core.snapshot import Outcome
from pgwarden.engine import effects as fx
from pgwarden.engine.drive import interpret
from pgwarden.engine.steps import StepContext, StepGen, run
from pgwarden.model import ClusterView, DataDirState
from pgwarden.sim import fencing, pgops
from pgwarden.sim.dcs_client import SimDcsError
from pgwarden.sim.invariants import REWIND_UNREACHABLE, on_published
from pgwarden.sim.kernel import Step
from pgwarden.sim.observe import local_pg

if TYPE_CHECKING:
    from pgwarden.sim.agent import SimAgent

PROBE_TIME = 0.005  # one probe of the local PostgreSQL
PUBLISHING = (RenewLeader, ReleaseLeader, Shutdown, Demote)
"""Actions whose `/status` optime the leader vouches for (it observed it as a running primary): the
durability checker remembers it. A promotion's timeline claim republishes the old optime, not its own."""


def execute(agent: SimAgent, action: Action, cluster: ClusterView | None) -> Generator[Step, None, Outcome]:
    """Run `action`'s steps against the simulated world."""
    ctx = StepContext(me=agent.name, cluster=cluster, settings=agent.settings,
                      bootstrap_dcs=agent.world.config)
    steps: StepGen[Outcome] = (agent.world.steps or run)(action, ctx)
    outcome = yield from interpret(steps, lambda effect: _perform(agent, action, effect), (SimDcsError,),
                                   lambda exc: fx.DcsFailed(str(exc)))
    if outcome.detail and not isinstance(action, Wait):
        agent.world.recorder.event(agent.world.now, agent.name, f"{outcome.action}: {outcome.detail}")
    return outcome


def _perform(agent: SimAgent, action: Action, effect: fx.Effect) -> Generator[Step, None, Any]:
    world, name, dcs = agent.world, agent.name, agent.dcs
    pg = world.nodes[name].pg
    match effect:
        case fx.Now():
            return agent.local_now()
        case fx.WallStamp():
            return None
        case fx.Log(text=text):
            world.recorder.event(world.now, name, text)
            return None
        case fx.AcquireLeaderKey():
            sent = world.now
            won = yield from dcs.acquire_leader()
            if won:
                world.nodes[name].lease_sent = sent
            return won
        case fx.UpdateLeaderKey(status=status):
            sent = world.now
            ok = yield from dcs.update_leader(status)
            if ok:
                world.nodes[name].lease_sent = sent
                if status is not None and isinstance(action, PUBLISHING):
                    on_published(world, name, status.optime)
            return ok
        case fx.DeleteLeaderKey(status=status):
            released = yield from dcs.delete_leader(status)
            if released and status is not None and isinstance(action, PUBLISHING):
                on_published(world, name, status.optime)
            return released
        case fx.WriteInitialize(sysid=sysid, create_new=create_new):
            return (yield from dcs.initialize(sysid, create_new=create_new))
        case fx.CancelInitialization():
            return (yield from dcs.cancel_initialization())
        case fx.SeedConfig(value=value, revision=revision):
            return (yield from dcs.set_config(dict(value), revision=revision))
        case fx.DeleteFailoverKey(revision=revision):
            return (yield from dcs.delete_failover(revision))
        case fx.SetHistory(rows=rows):
            return (yield from dcs.set_history(list(rows)))
        case fx.SetSyncKey(state=state, expected_revision=revision):
            return (yield from dcs.set_sync(state, revision))
        case fx.DeleteSyncKey(expected_revision=revision):
            return (yield from dcs.delete_sync(revision))
        case fx.SetFailsafeKey(members=members):
            return (yield from dcs.set_failsafe(members))
        case fx.PingFailsafe(targets=targets, timeout=timeout):
            node, sent = world.nodes[name], world.now
            answers = yield from fencing.ping(agent, targets, timeout / node.clock.rate)
            if all(a.accepted for a in answers):
                node.lease_sent = max(node.lease_sent, sent)  # an accepted round proves the lease like a renewal
            return answers
        case fx.ArmWatchdog(timeout=timeout):
            fencing.arm(agent, timeout)
            return fx.Result(True)
        case fx.DisarmWatchdog():
            fencing.disarm(world, name)
            return None
        case fx.Probe():
            yield PROBE_TIME
            world.refresh()
            return local_pg(world, name)
        case fx.StandbySignal():
            return pg.standby_signal
        case fx.InspectDataDir():
            return pg.data is not DataDirState.MISSING, ""
        case fx.ReserveTimelines(timelines=timelines):
            new = tuple(t for t in timelines if t not in pg.reserved)
            pg.reserved = pg.reserved | frozenset(new)
            return new
        case fx.UnreserveTimelines(timelines=timelines):
            pg.reserved = pg.reserved - frozenset(timelines)
            return None
        case fx.ReadTimelineHistory():
            return (yield from pgops.read_timeline_history(world, name))
        case fx.WritePgConfig(role=role, upstream=upstream):
            pgops.write_config(world, name, role, upstream.member if upstream else None)
            return fx.Result(True)
        case fx.CreateRoles() | fx.PostBootstrap() | fx.RunHook() | fx.SanitizeRestored() | fx.FinishRecovery():
            return fx.Result(True)
        case fx.RewindSpace():
            # The simulated world has no file systems to fill: the room is unknown and a rewind goes ahead.
            return None
        case fx.Pause(seconds=seconds):
            yield seconds / world.nodes[name].clock.rate
            return None
        case fx.ReadSlotStates(source=up, names=names):
            # The simulated world keeps no WAL files: a copy never lacks WAL here, which matches the real
            # copy fetching what it lacks from the leader (its bounds and failures are tested on real
            # PostgreSQL, tests/integration/test_logical_slot_copy.py). It waits only for the leader's slot
            # or the link, as the real one does.
            ok, message, states = yield from pgops.read_slot_states(world, name, up.member, names)
            return fx.SlotStates(ok, message, states, waiting=not ok)
        case fx.DiscardSlotWal():
            return fx.Result(True)
        case fx.RunReplicaMethod(source=None):
            # The simulated world has no backup repository: a no_leader method finds nothing to restore.
            return fx.Result(False, "no backup repository in the simulated world")
        case _:
            ok, message = yield from _postgres(agent, effect)
            return fx.Result(ok, message, unreachable=not ok and message.startswith(REWIND_UNREACHABLE))


def _postgres(agent: SimAgent, effect: fx.Effect) -> pgops.PgOp:
    world, name = agent.world, agent.name
    match effect:
        case fx.StopPg(mode=mode):
            return (yield from pgops.stop(world, name, mode))
        case fx.StartPg():
            return (yield from pgops.start(world, name))
        case fx.PromotePg(timeout=timeout):
            return (yield from pgops.promote(world, name, timeout))
        case fx.CheckpointPg(timeout=timeout):
            rate = world.nodes[name].clock.rate
            return (yield from pgops.checkpoint(world, name, None if timeout is None else timeout / rate))
        case fx.FollowUpstream(upstream=up):
            return (yield from pgops.set_follow(world, name, up.member))
        case fx.RewindPg(upstream=up, keep_slots=keep):
            return (yield from pgops.rewind(world, name, up.member, keep))
        case fx.Basebackup(upstream=up) | fx.RunReplicaMethod(source=fx.Upstream() as up):
            # A custom method (a backup tool) is simulated as a copy of its source, like pg_basebackup.
            return (yield from pgops.basebackup(world, name, up.member))
        case fx.MoveDataAside():
            return (yield from pgops.move_data_aside(world, name))
        case fx.EmptyDataDir() | fx.UndoBootstrap():
            # An operator's reinitialize, or what a failed bootstrap created: nothing of value is lost.
            return (yield from pgops.move_data_aside(world, name, permitted=True))
        case fx.EnsureSlots(names=names):
            return (yield from pgops.ensure_slots(world, name, names))
        case fx.DropSlots(names=names):
            return (yield from pgops.ensure_slots(world, name, names, drop=True))
        case fx.AdvanceSlots(targets=targets):
            return (yield from pgops.advance_slots(world, name, targets))
        case fx.CreateLogicalSlots(specs=specs):
            return (yield from pgops.create_logical_slots(world, name, specs))
        case fx.AdvanceLogicalSlots(targets=targets):
            return (yield from pgops.advance_logical_slots(world, name, targets))
        case fx.WriteSlotStates(states=states):
            return (yield from pgops.write_slot_states(world, name, states))
        case fx.WriteSsn(value=value):
            return (yield from pgops.set_ssn(world, name, value))
        case fx.Initdb() | fx.RunBootstrapMethod():
            # A custom bootstrap method is simulated as a new cluster, like initdb.
            return (yield from pgops.initdb(world, name))
        case _:
            raise UnknownEffect(f"the simulator does not know how to do {effect!r}")


class UnknownEffect(Exception):
    """A step yielded an effect the simulator cannot do: extend `sim.effects`."""
