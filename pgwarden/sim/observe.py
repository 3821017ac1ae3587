"""The simulated world as the agent observes it: the pieces of a `Snapshot`.

The local PostgreSQL as a probe would report it (`LocalPg`), the member JSON an agent publishes
(built by the real `pgwarden.agent.member.member_json`), and the peers' statuses (the real REST
status document, `pgwarden.api.health.status_json`, read back with the real
`pgwarden.agent.peers.peer_from_json`). Actions are carried out by the agent's own steps
(`pgwarden.sim.effects`). When the snapshot grows, this is the file to extend.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pgwarden import __version__
from pgwarden.agent.member import member_json
from pgwarden.agent.peers import peer_from_json
from pgwarden.api.health import status_json
from pgwarden.api.state import NodeState
from pgwarden.core.snapshot import PeerStatus
from pgwarden.dcs.codec import member_from_mapping
from pgwarden.model import (
    ClusterView,
    LocalPg,
    LogicalSlot,
    Member,
    WalReceiver,
)
from pgwarden.sim.kernel import Step
from pgwarden.sim.postgres import SimPg
from pgwarden.sim.world import PEER_TIMEOUT, World

if TYPE_CHECKING:
    from pgwarden.sim.agent import SimAgent

# ---------------------------------------------------------------------------------------------------
# World -> snapshot


def conn_url(name: str) -> str:
    return f"postgres://{name}:5432/postgres"


def api_url(name: str) -> str:
    return f"http://{name}:8008/patroni"


def local_pg(world: World, name: str) -> LocalPg:
    """What `pgwarden.postgres.probe` would report for this node right now."""
    pg = world.nodes[name].pg
    accepting = pg.accepting
    common: dict[str, Any] = dict(
        data_dir=pg.data, sysid=pg.sysid, cluster_state=pg.control_state, controldata_timeline=pg.control_tl,
        checkpoint_lsn=pg.checkpoint_lsn, running=pg.running, accepting=accepting,
        slots=tuple(sorted(pg.slots)), slot_lsns=tuple((s, pg.slot_pos.get(s)) for s in sorted(pg.slots)),
        standby_signal=pg.standby_signal, following=pg.following,
        server_version=150000 if accepting else None,
    )
    if not accepting:
        return LocalPg(**common)
    common["synchronous_standby_names"] = pg.ssn
    if world.opts.logical_slots:
        common["wal_level"] = "logical"
    if not pg.in_recovery:
        _consume(world, pg)
        common["slot_lsns"] = tuple((s, pg.slot_pos.get(s)) for s in sorted(pg.slots))
        common["logical_slots"] = _logical(pg)
        return LocalPg(**common, in_recovery=False, timeline=pg.timeline, wal_lsn=pg.lsn,
                       postmaster_pid=1)
    receiver = None
    if pg.streaming_from is not None:
        receiver = WalReceiver(status="streaming", sender_host=pg.streaming_from, latest_end_lsn=pg.lsn,
                               received_tli=pg.timeline)
    return LocalPg(**common, in_recovery=True, timeline=pg.timeline, receive_lsn=pg.lsn, replay_lsn=pg.lsn,
                   wal_receiver=receiver, postmaster_pid=1, logical_slots=_logical(pg))


def _logical(pg: SimPg) -> tuple[LogicalSlot, ...]:
    return tuple(LogicalSlot(slot, "app", "pgoutput", lsn, lsn, 1) for slot, lsn in sorted(pg.logical.items()))


CONSUMER_LAG = 65536
"""How far behind a primary's WAL the consumer of each permanent slot confirms (SimOptions.permanent_slots)."""


def _consume(world: World, pg: SimPg) -> None:
    """The consumers of the permanent slots: each confirms up to CONSUMER_LAG behind the primary, so the
    positions the primary publishes move and the replicas' copies are advanced. A logical consumer resumes
    from what it confirmed last (`World.consumed`, never backwards): a slot behind it jumps there."""
    for slot in world.opts.permanent_slots:
        if slot in pg.slots:
            pg.slot_pos[slot] = max(pg.slot_pos.get(slot, 0), pg.lsn - CONSUMER_LAG)
    for slot in world.opts.logical_slots:
        if slot in pg.logical and pg.writable:
            confirmed = max(pg.logical[slot], min(world.consumed.get(slot, 0), pg.lsn), pg.lsn - CONSUMER_LAG)
            pg.logical[slot] = confirmed
            world.consumed[slot] = max(world.consumed.get(slot, 0), confirmed)


def member(agent: SimAgent, pg: LocalPg) -> Member:
    """The member key value this agent publishes, as the DCS codec reads it back: the real
    `member_json` mapping through the real codec's field parser (the JSON text layer in between has
    its own tests and would cost a fifth of a run)."""
    data = member_json(pg=pg, conn_url=conn_url(agent.name), api_url=api_url(agent.name),
                       tags=agent.settings.tags, task=agent.task_label,
                       logical_slots_ready=agent.book.memory.logical_slots_ready)
    return member_from_mapping(agent.name, data)


def node_state(agent: SimAgent, pg: LocalPg) -> NodeState:
    """What the agent's REST API would serve (pgwarden.agent.loop.Agent._node_state)."""
    cluster = agent.cluster
    holds = cluster is not None and cluster.led_by(agent.name)
    s = agent.settings
    return NodeState(
        name=agent.name, scope="sim", version=__version__, api_url=api_url(agent.name),
        conn_url=conn_url(agent.name), pg=pg, cluster=cluster, dcs_last_seen=None,
        lock_deadline=agent.published_lock_deadline(holds), tags=s.tags,
        paused=cluster is not None and cluster.paused,
        maximum_lag_on_failover=s.maximum_lag_on_failover, ttl=s.ttl, loop_wait=s.loop_wait,
        next_cycle_deadline=0.0, dcs_reachable=agent.dcs_error is None,
        failsafe_mode_is_active=agent.book.failsafe_active(s, agent.local_now()))


def fetch_peers(world: World, me: str, cluster: ClusterView) -> Generator[Step, None, tuple[PeerStatus, ...]]:
    """GET every other member's status in parallel: the slowest answer (or a timeout) sets the pace."""
    results: list[PeerStatus] = []
    slowest = 0.0
    for m in sorted((m for m in cluster.members if m.name != me), key=lambda m: m.name):
        peer = world.nodes.get(m.name)
        if not m.api_url or peer is None or not world.peer_answers(me, m.name):
            results.append(PeerStatus(name=m.name, reachable=False))
            slowest = PEER_TIMEOUT
            continue
        agent = peer.agent
        assert agent is not None
        agent.catch_up()
        body = status_json(node_state(agent, local_pg(world, m.name)), world.local_time(m.name))
        results.append(peer_from_json(m.name, body))
        slowest = max(slowest, 2 * world.peer_delay)
    yield slowest
    return tuple(results)
