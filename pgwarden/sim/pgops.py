"""PostgreSQL operations as the agent's controller runs them, each taking seeded simulated time.

Every operation is a generator (it yields the time it waits) returning `(ok, message)`, the shape of
the real controller's `PgResult`. The server's own transitions (a promotion finishing, a start
completing) are tied to the postmaster's incarnation, so a crash in between cancels them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from pgwarden.model import DataDirState
from pgwarden.sim.invariants import (
    REWIND_UNREACHABLE,
    on_bootstrapped,
    on_data_removed,
    on_data_replaced,
    on_promoted,
    on_rewound,
)
from pgwarden.sim.kernel import Step
from pgwarden.sim.postgres import CHECKPOINT_RECORD, Proc, has_timeline, switch_point, timeline_history, truncate
from pgwarden.sim.world import World

PG_CTL_TIMEOUT = 60.0  # pg_ctl -w -t, from postgresql.pg_ctl_timeout's default
Result = tuple[bool, str]
PgOp = Generator[Step, None, Result]


def _span(world: World, low: float, high: float) -> float:
    return world.rng.uniform(low, high)


def write_config(world: World, name: str, role: str, follow: str | None) -> None:
    """PgController.write_config: standby.signal and primary_conninfo for `role`, read at the next start."""
    pg = world.nodes[name].pg
    pg.standby_signal = role != "primary"
    pg.following = follow if role != "primary" else None


def start(world: World, name: str) -> PgOp:
    """Start with the configuration written last (`write_config`): a standby if standby.signal is there."""
    pg = world.nodes[name].pg
    if pg.running:
        return False, "postmaster already running"
    if pg.data is not DataDirState.VALID:
        return False, "no data directory"
    role = "replica" if pg.standby_signal else "primary"
    crashed = pg.control_state in ("in production", "in crash recovery", "in archive recovery")
    pg.proc, incarnation = Proc.STARTING, pg.incarnation
    world.pg_changed = True
    world.recorder.event(world.now, name, f"pg starting as {role}" + (" (crash recovery)" if crashed else ""))
    yield from _server_side(world, _span(world, 1.0, 8.0) if crashed else _span(world, 0.3, 2.0),
                            lambda: _finish_start(world, name, incarnation))
    if not _finish_start(world, name, incarnation):
        return False, "postmaster died during startup"
    return True, "started"


def _server_side(world: World, duration: float, finish: Callable[[], object]) -> Generator[Step, None, None]:
    """Wait `duration` for the server to complete a transition. If the waiting task is cancelled
    meanwhile (the agent stopped), the transition still completes when due: the postmaster goes on
    without its pg_ctl (without this a stop or start cut short left the server "stopping" or
    "starting" for good: seed 13914 of the CI campaign)."""
    due = world.now + duration
    try:
        yield duration
    except GeneratorExit:
        world.kernel.at(due, finish)
        raise


def _finish_start(world: World, name: str, incarnation: int) -> bool:
    """The postmaster of `incarnation` accepts connections (False: it died, or another took its place)."""
    pg = world.nodes[name].pg
    if pg.incarnation != incarnation or pg.proc is not Proc.STARTING:
        return False
    world.refresh()
    pg.proc = Proc.RUNNING
    pg.in_recovery = pg.standby_signal
    world.pg_changed = True
    if pg.in_recovery:
        pg.control_state = "in archive recovery"
    else:
        pg.control_state = "in production"
        pg.checkpoint()  # end-of-recovery checkpoint
        pg.start_writes(world.now, world.opts.write_rate)
    world.recorder.event(world.now, name, f"pg running ({'replica' if pg.in_recovery else 'PRIMARY'}, "
                         f"tl {pg.timeline}, lsn {pg.lsn})")
    return True


def stop(world: World, name: str, mode: str) -> PgOp:
    node = world.nodes[name]
    pg = node.pg
    if not pg.running:
        return True, "not running"
    world.refresh()
    pg.stop_writes(world.now)  # a stop request ends new commits at once (fast and immediate modes)
    pg.proc, incarnation = Proc.STOPPING, pg.incarnation
    world.pg_changed = True
    world.recorder.event(world.now, name, f"pg stopping ({mode})")
    duration = _span(world, 0.05, 0.3) if mode == "immediate" else _span(world, 0.2, 2.0) + node.slow_checkpoint
    yield from _server_side(world, duration, lambda: _finish_stop(world, name, incarnation, mode))
    if not _finish_stop(world, name, incarnation, mode):
        return True, "postmaster already gone"
    return True, f"stopped ({mode})"


def _finish_stop(world: World, name: str, incarnation: int, mode: str) -> bool:
    """The postmaster of `incarnation` completes its shutdown (False: it was gone already)."""
    node = world.nodes[name]
    pg = node.pg
    if mode != "immediate":
        node.slow_checkpoint = 0.0
    if pg.incarnation != incarnation:
        return False
    world.refresh()
    pg.shut_down(world.now, checkpoint=mode != "immediate")
    world.pg_changed = True
    world.recorder.event(world.now, name, f"pg stopped ({pg.control_state}, tl {pg.timeline}, lsn {pg.lsn})")
    return True


def promote(world: World, name: str, timeout: float = PG_CTL_TIMEOUT) -> PgOp:
    node = world.nodes[name]
    pg = node.pg
    if not pg.accepting or not pg.in_recovery:
        return False, "server is not in standby mode"
    duration = node.slow_promote or _span(world, 0.2, 1.5)
    node.slow_promote = 0.0
    incarnation = pg.incarnation
    world.recorder.event(world.now, name, f"pg promote requested (takes {duration:.1f}s)")
    world.kernel.at(world.now + duration, lambda: _finish_promote(world, name, incarnation))
    yield min(duration, timeout, PG_CTL_TIMEOUT)
    if pg.writable:
        return True, "promoted"
    return False, "pg_ctl promote: server did not promote in time"


def _finish_promote(world: World, name: str, incarnation: int) -> None:
    pg = world.nodes[name].pg
    if pg.incarnation != incarnation or not pg.accepting or not pg.in_recovery:
        return
    world.refresh()
    parent_uid, fork = pg.uid, pg.lsn
    new_timeline = pg.timeline + 1
    while new_timeline in pg.reserved:  # PostgreSQL: 1 + the newest consecutive N.history in pg_wal
        new_timeline += 1
    pg.lineage = (*pg.lineage, (world.new_uid(), new_timeline, pg.lsn))
    pg.in_recovery = False
    world.pg_changed = True
    pg.standby_signal = False
    pg.following = None
    pg.streaming_from = None
    pg.control_state = "in production"
    pg.start_writes(world.now, world.opts.write_rate)
    world.recorder.event(world.now, name, f"pg PROMOTED: timeline {pg.timeline} from uid {parent_uid} at {fork}")
    on_promoted(world, name, parent_uid, fork)


def checkpoint(world: World, name: str, timeout: float | None = None) -> PgOp:
    """CHECKPOINT; with `timeout`, the client gives up after that long (the checkpoint's work is left to
    the next one: a slow checkpoint stays slow for the shutdown checkpoint of a stop)."""
    node = world.nodes[name]
    if not node.pg.accepting:
        return False, "not running"
    duration = _span(world, 0.05, 0.5) + node.slow_checkpoint
    if timeout is not None and duration > timeout:
        yield timeout
        return False, f"checkpoint timed out after {timeout:.1f}s"
    yield duration
    node.slow_checkpoint = 0.0
    world.refresh()
    node.pg.checkpoint()
    return True, "checkpoint"


def set_follow(world: World, name: str, leader: str) -> PgOp:
    pg = world.nodes[name].pg
    yield 0.05
    pg.following = leader
    if not pg.running:
        return False, "reload failed: not running"
    world.refresh()
    return True, f"following {leader}"


def rewind(world: World, name: str, source: str, keep_slots: tuple[str, ...] = ()) -> PgOp:
    """pg_rewind, deciding by timeline numbers as the real tool does; the checker learns how it ended."""
    ok, message = yield from _rewind(world, name, source, keep_slots)
    on_rewound(world, name, ok, message)
    return ok, message


def _rewind(world: World, name: str, source: str, keep_slots: tuple[str, ...]) -> PgOp:
    pg, src = world.nodes[name].pg, world.nodes[source].pg
    if pg.running:
        return False, "pg_rewind: target server must be shut down"
    if not src.accepting or not world.link_ok(name, source):
        yield 2.0
        return False, f"{REWIND_UNREACHABLE}: could not connect to {source}"
    yield _span(world, 2.0, 15.0)
    if not src.accepting or not world.link_ok(name, source) or pg.running:
        return False, f"{REWIND_UNREACHABLE}: source went away"
    world.refresh()
    if pg.control_state in ("in production", "in crash recovery"):
        # pg_rewind (PG 13+) first runs single-user crash recovery on a primary that was not shut
        # down cleanly: its end-of-recovery checkpoint record extends the WAL on the old timeline.
        pg.checkpoint_lsn, pg.control_tl, pg.control_state = pg.lsn, pg.timeline, "shut down"
        pg.lsn += CHECKPOINT_RECORD
    mine, theirs = pg.timeline, src.timeline
    if mine == theirs:
        return True, "no rewind required (same timeline)"
    if mine > theirs or not has_timeline(src.lineage, mine):
        return False, "pg_rewind: could not find common ancestor of the source and target cluster's timelines"
    switch = switch_point(src.lineage, mine)
    if switch is not None and pg.lsn <= switch:
        return True, "no rewind required"
    world.recorder.event(world.now, name, f"pg_rewind from {source}: {pg.lsn} on tl {mine} -> {src.lsn} on tl {theirs}")
    pg.lineage, pg.lsn = truncate(src.lineage, src.lsn), src.lsn
    pg.reserved = frozenset()
    world.pg_changed = True
    pg.checkpoint_lsn, pg.control_tl = switch, src.timeline
    pg.control_state = "in archive recovery"
    pg.logical = {}  # PgController.rewind clears pg_replslot: the old slots describe a history that is gone
    pg.slots &= set(keep_slots)  # ... but the permanent physical slots' copies
    pg.slot_pos = {slot: lsn for slot, lsn in pg.slot_pos.items() if slot in keep_slots}
    return True, "rewound"


def basebackup(world: World, name: str, source: str) -> PgOp:
    pg, src = world.nodes[name].pg, world.nodes[source].pg
    if pg.data not in (DataDirState.EMPTY, DataDirState.MISSING):
        return False, "pg_basebackup: data directory not empty"
    if not src.accepting or not world.link_ok(name, source):
        yield 2.0
        return False, f"pg_basebackup: could not connect to {source}"
    yield _span(world, 5.0, 40.0)
    if not src.accepting or not world.link_ok(name, source):
        return False, "pg_basebackup: connection lost"
    world.refresh()
    pg.data, pg.sysid = DataDirState.VALID, src.sysid
    pg.lineage, pg.lsn = truncate(src.lineage, src.lsn), src.lsn
    pg.reserved = frozenset()
    world.pg_changed = True
    pg.checkpoint_lsn, pg.control_tl = src.lsn, src.timeline
    pg.control_state, pg.standby_signal, pg.slots = "in archive recovery", True, set()
    pg.logical = {}  # pg_basebackup copies no slot
    pg.ssn = src.ssn  # postgresql.auto.conf comes with the copy
    on_data_replaced(world, name)
    world.recorder.event(world.now, name, f"base backup from {source} done (tl {pg.timeline}, lsn {pg.lsn})")
    return True, "base backup done"


def initdb(world: World, name: str) -> PgOp:
    pg = world.nodes[name].pg
    if pg.data not in (DataDirState.EMPTY, DataDirState.MISSING):
        return False, "initdb: directory not empty"
    yield _span(world, 1.0, 3.0)
    pg.data, pg.sysid = DataDirState.VALID, world.new_sysid()
    pg.lineage, pg.lsn = ((world.new_uid(), 1, 0),), 0x1000000
    pg.reserved = frozenset()
    world.pg_changed = True
    pg.checkpoint_lsn, pg.control_tl, pg.control_state = pg.lsn, 1, "shut down"
    on_bootstrapped(world, name)
    world.recorder.event(world.now, name, f"initdb: system identifier {pg.sysid}")
    return True, "initdb"


def move_data_aside(world: World, name: str, *, permitted: bool = False) -> PgOp:
    """Move the data directory aside. `permitted`: undoing a failed bootstrap (nothing to lose) or an
    operator's reinitialize request; otherwise the configuration must allow it (invariant 5)."""
    pg = world.nodes[name].pg
    if pg.running:
        return False, "postmaster running"
    yield 0.1
    if not permitted:
        on_data_removed(world, name)
    pg.data, pg.sysid, pg.lineage, pg.lsn = DataDirState.MISSING, None, (), 0
    pg.reserved = frozenset()
    world.pg_changed = True
    pg.checkpoint_lsn = pg.control_tl = pg.control_state = None
    pg.standby_signal, pg.following, pg.slots, pg.ssn = False, None, set(), ""
    return True, "moved aside"


def ensure_slots(world: World, name: str, names: tuple[str, ...], drop: bool = False) -> PgOp:
    pg = world.nodes[name].pg
    if not pg.accepting:
        return False, "not running"
    yield 0.005
    if drop:
        pg.slots -= set(names)
        for slot in names:
            pg.logical.pop(slot, None)
    else:
        for slot in set(names) - pg.slots:
            pg.slot_pos[slot] = pg.lsn  # reserved at once, where this node is
        pg.slots |= set(names)
    return True, "slots"


def advance_slots(world: World, name: str, targets: tuple[tuple[str, int], ...]) -> PgOp:
    """PgController.advance_slots: on a standby, move slots forwards, never past what it replayed."""
    pg = world.nodes[name].pg
    if not pg.accepting:
        return False, "not running"
    yield 0.005
    if pg.in_recovery:
        for slot, lsn in targets:
            if slot in pg.slots:
                pg.slot_pos[slot] = max(pg.slot_pos.get(slot, 0), min(lsn, pg.lsn))
    return True, "slots advanced"


def create_logical_slots(world: World, name: str, specs: tuple[tuple[str, str, str], ...]) -> PgOp:
    """PgController.create_logical_slots on a primary: a new slot starts at the current WAL position."""
    pg = world.nodes[name].pg
    if not pg.accepting or pg.in_recovery:
        return False, "cannot create a logical slot here"
    yield 0.01
    for slot, _, _ in specs:
        if slot not in pg.logical and pg.writable:
            pg.logical[slot] = pg.lsn
    return True, "logical slots"


def advance_logical_slots(world: World, name: str, targets: tuple[tuple[str, str, int], ...]) -> PgOp:
    """PgController.advance_logical_slots: on a standby, forwards only, never past what it replayed."""
    pg = world.nodes[name].pg
    if not pg.accepting:
        return False, "not running"
    yield 0.005
    if pg.in_recovery:
        for slot, _, lsn in targets:
            if slot in pg.logical:
                pg.logical[slot] = max(pg.logical[slot], min(lsn, pg.lsn))
    return True, "logical slots advanced"


def read_slot_states(world: World, name: str, source: str,
                     names: tuple[str, ...]) -> Generator[Step, None, tuple[bool, str, tuple[tuple[str, bytes], ...]]]:
    """PgController.read_slot_states: the leader's slots' state (their confirmed_flush, as text) over the
    network; the copy waits when the leader is unreachable or lacks a slot."""
    src = world.nodes[source].pg
    if not src.accepting or not world.link_ok(name, source):
        yield 2.0
        return False, f"could not connect to {source}", ()
    yield 0.02
    missing = [slot for slot in names if slot not in src.logical]
    if missing or not src.accepting:
        return False, f"the leader has no slot {', '.join(missing)}", ()
    return True, "read", tuple((slot, str(src.logical[slot]).encode()) for slot in names)


def write_slot_states(world: World, name: str, states: tuple[tuple[str, bytes], ...]) -> PgOp:
    """PgController.write_slot_states: only with PostgreSQL stopped."""
    pg = world.nodes[name].pg
    if pg.running:
        return False, "refusing to write slot state files: PostgreSQL is running"
    yield 0.01
    for slot, data in states:
        pg.logical[slot] = int(data.decode())
    world.recorder.event(world.now, name, f"wrote logical slot states {sorted(pg.logical.items())}")
    return True, "wrote slot state files"


def set_ssn(world: World, name: str, value: str) -> PgOp:
    """PgController.set_synchronous_standby_names: ALTER SYSTEM, then reload. Only the setting is
    modelled (the probe reports it); commits do not wait for synchronous standbys in the simulator."""
    pg = world.nodes[name].pg
    if not pg.accepting:
        return False, "setting synchronous_standby_names: not running"
    yield 0.01
    if not pg.accepting:
        return False, "setting synchronous_standby_names: connection lost"
    pg.ssn = value
    return True, f"synchronous_standby_names = {value!r}"


def read_timeline_history(world: World, name: str) -> Generator[Step, None, list[tuple[int, int, str]]]:
    """PgController.timeline_history for the server's current timeline: [] when it cannot be read."""
    pg = world.nodes[name].pg
    if not pg.accepting:
        return []
    yield 0.005
    return timeline_history(pg.lineage) if pg.accepting else []
