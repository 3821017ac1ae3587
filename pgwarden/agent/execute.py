"""Carry out one decided action: the executor's steps (`engine.steps`), their effects done for real.

The steps decide the order of things; this module only knows how to do each effect with the
adapters (etcd, pg_ctl and libpq, the user's hook scripts, the files in pg_wal). An expected failure
comes back as a value (`Result`, `False`); a `DcsError` is thrown into the step as `DcsFailed`. An
exception escaping from here is a bug and is turned into a failed outcome by the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from pgwarden.aio import bounded
from pgwarden.config import EffectiveConfig
from pgwarden.config.schema import MethodSpec
from pgwarden.core.actions import Action, Bootstrap, Promote, RenewLeader, Restart, StartPostgres
from pgwarden.core.snapshot import Outcome
from pgwarden.dcs.base import Dcs, DcsError
from pgwarden.engine import effects as fx
from pgwarden.engine.drive import resume
from pgwarden.engine.steps import (
    BACKGROUND,
    BASEBACKUP,
    BootstrapMethod,
    ReplicaMethod,
    StepContext,
    remote_upstream,
    run,
)
from pgwarden.model import ClusterView, DataDirState, FailsafePing
from pgwarden.postgres.controller import PgController, rewind_unreachable
from pgwarden.postgres.datadir import directory_state, replace_problem
from pgwarden.postgres.probe import probe
from pgwarden.postgres.process import PgResult, error_summary
from pgwarden.postgres.settings import Upstream
from pgwarden.rest_client import RestSettings

from .callbacks import run_hook
from .fencing import Fencing, ping_failsafe
from .pgsettings import pg_settings

__all__ = ["BACKGROUND", "ExecContext", "execute", "interpret_async"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecContext:
    dcs: Dcs
    config: EffectiveConfig
    cluster: ClusterView | None
    fencing: Fencing | None = None
    """The agent's watchdog (None: no watchdog at all, e.g. in tests of other effects)."""
    http: aiohttp.ClientSession | None = None
    """For failsafe pings to the members' REST APIs."""
    rest: RestSettings = field(default_factory=RestSettings)


async def execute(action: Action, ctx: ExecContext) -> Outcome:
    """Run `action`'s steps with the real adapters; never raises for expected failures."""
    step_ctx = StepContext(me=ctx.config.name, cluster=ctx.cluster, settings=ctx.config.ha,
                           primary_stop_timeout=float(ctx.config.dynamic.primary_stop_timeout),
                           bootstrap_dcs=ctx.config.local.bootstrap.dcs,
                           replica_methods=replica_methods(ctx.config),
                           standby_methods=standby_methods(ctx.config),
                           bootstrap_method=bootstrap_method(ctx.config))
    effects = _Effects(ctx, _role_of(action))
    return await interpret_async(run(action, step_ctx), effects.perform, (DcsError,), _dcs_failed)


def replica_methods(config: EffectiveConfig) -> tuple[ReplicaMethod, ...]:
    """`create_replica_methods` as the steps see them (the configuration was validated: each is usable)."""
    return tuple(_step_method(m) for m in config.local.postgresql.replica_methods())


def _step_method(spec: MethodSpec) -> ReplicaMethod:
    return ReplicaMethod(spec.name, keep_data=spec.keep_data, no_leader=spec.no_leader)


def bootstrap_method(config: EffectiveConfig) -> BootstrapMethod | None:
    """The custom bootstrap method as the steps see it (None: initdb)."""
    method = config.local.bootstrap.custom_method()
    if method is None:
        return None
    return BootstrapMethod(method.name, keep_existing_recovery_conf=method.keep_existing_recovery_conf,
                           recovery_conf=tuple(method.recovery_conf.items()))




def standby_methods(config: EffectiveConfig) -> tuple[ReplicaMethod, ...]:
    """`standby_cluster.create_replica_methods` as the steps see them: each name resolved to its
    `postgresql.<name>` section's switches (a name without a usable section is kept: running it fails
    with a message, and the next method is tried)."""
    standby = config.ha.standby_cluster
    if standby is None:
        return (BASEBACKUP,)
    specs = ((name, config.local.postgresql.method(name)) for name in standby.create_replica_methods)
    return tuple(_step_method(spec) if spec else ReplicaMethod(name) for name, spec in specs) or (BASEBACKUP,)


E = TypeVar("E")
R = TypeVar("R")


async def interpret_async(steps: Generator[E, Any, R], perform: Callable[[E], Awaitable[Any]],
                          failures: tuple[type[Exception], ...] = (),
                          translate: Callable[[Exception], BaseException] = lambda exc: exc) -> R:
    """`engine.drive.interpret` for coroutines: each effect of `steps` done by awaiting `perform`."""
    answer: Any = None
    failure: BaseException | None = None
    while True:
        pending, value = resume(steps, answer, failure)
        if not pending:
            result: R = value
            return result
        answer, failure = None, None
        try:
            answer = await perform(value)
        except failures as exc:
            failure = translate(exc)


def _dcs_failed(exc: Exception) -> fx.DcsFailed:
    return fx.DcsFailed(str(exc))


def _role_of(action: Action) -> str:
    """The role whose PostgreSQL settings the action's effects use (parameters and pg_hba differ)."""
    if isinstance(action, StartPostgres | Restart):
        return action.role
    return "primary" if isinstance(action, Bootstrap | Promote | RenewLeader) else "replica"


def _result(result: PgResult) -> fx.Result:
    return fx.Result(result.ok, result.message, "" if result.ok else error_summary(result.message))


class _Effects:
    """The real adapters behind each effect, for one action's steps."""

    def __init__(self, ctx: ExecContext, role: str) -> None:
        self.ctx = ctx
        self.dcs = ctx.dcs
        self.pg = PgController(pg_settings(ctx.config, role))
        self._by_role = {role: self.pg}

    def _controller(self, role: str) -> PgController:
        if role not in self._by_role:
            self._by_role[role] = PgController(pg_settings(self.ctx.config, role))
        return self._by_role[role]

    async def perform(self, effect: fx.Effect) -> Any:
        dcs, pg = self.dcs, self.pg
        match effect:
            case fx.Now():
                return time.monotonic()
            case fx.WallStamp():
                return datetime.now(UTC).isoformat()
            case fx.Log(level=level, text=text):
                log.log({"info": logging.INFO, "warning": logging.WARNING}.get(level, logging.ERROR), "%s", text)
                return None
            case fx.AcquireLeaderKey():
                return await dcs.acquire_leader()
            case fx.UpdateLeaderKey(status=status):
                return await dcs.update_leader(status)
            case fx.DeleteLeaderKey(status=status):
                return await dcs.delete_leader(status)
            case fx.WriteInitialize(sysid=sysid, create_new=create_new):
                return await dcs.initialize(sysid, create_new=create_new)
            case fx.CancelInitialization():
                return await dcs.cancel_initialization()
            case fx.SeedConfig(value=value, revision=revision):
                return await dcs.set_config(dict(value), revision=revision)
            case fx.DeleteFailoverKey(revision=revision):
                return await dcs.delete_failover(revision)
            case fx.SetHistory(rows=rows):
                return await dcs.set_history(list(rows))
            case fx.SetSyncKey(state=state, expected_revision=revision):
                return await dcs.set_sync(state, revision)
            case fx.DeleteSyncKey(expected_revision=revision):
                return await dcs.delete_sync(revision)
            case fx.SetFailsafeKey(members=members):
                return await dcs.set_failsafe(None if members is None else dict(members))
            case fx.PingFailsafe(targets=targets, timeout=timeout):
                return await self._ping(targets, timeout)
            case fx.ArmWatchdog(timeout=timeout):
                return self.ctx.fencing.arm(timeout) if self.ctx.fencing else fx.Result(False, "no watchdog")
            case fx.DisarmWatchdog():
                if self.ctx.fencing is not None:
                    self.ctx.fencing.disarm()
                return None
            case fx.Pause(seconds=seconds):
                await asyncio.sleep(seconds)
                return None
            case _:
                return await self._postgres(effect, pg)

    async def _ping(self, targets: tuple[tuple[str, str], ...], timeout: float) -> tuple[fx.PingAnswer, ...]:
        config = self.ctx.config
        if self.ctx.http is None:
            return tuple(fx.PingAnswer(name, False, "no HTTP client") for name, _ in targets)
        ping = FailsafePing(name=config.name, conn_url=config.conn_url, api_url=config.api_url)
        return await ping_failsafe(self.ctx.http, self.ctx.rest, ping, targets, timeout)

    async def _postgres(self, effect: fx.Effect, pg: PgController) -> Any:
        match effect:
            case fx.Probe():
                return await probe(pg.settings)
            case fx.StandbySignal():
                return (pg.data_dir / "standby.signal").exists()
            case fx.StopPg(mode=mode, kill_after=kill_after):
                return _result(await pg.stop(mode, kill_after=kill_after))
            case fx.StartPg():
                return _result(await pg.start())
            case fx.WritePgConfig(upstream=fx.Upstream(remote=fx.RemoteFollow()) as up):
                return _result(await remote_controller(self.ctx.config, up).write_config("replica", pg_upstream(up)))
            case fx.WritePgConfig(role=role, upstream=upstream, recovery=recovery):
                follow = None if upstream is None else Upstream(upstream.member, upstream.host, upstream.port)
                wanted = None if recovery is None else dict(recovery)
                return _result(await self._controller(role).write_config(role, follow, wanted))
            case fx.PromotePg(timeout=timeout):
                return _result(await pg.promote(timeout=timeout))
            case fx.CheckpointPg(timeout=timeout):
                return await _checkpoint(pg, timeout)
            case fx.FollowUpstream(upstream=fx.Upstream(remote=fx.RemoteFollow()) as up):
                remote = pg_upstream(up)
                return _result(await remote_controller(self.ctx.config, up).set_follow(
                    remote.member, remote.host, remote.port, remote.slot))
            case fx.FollowUpstream(upstream=up):
                return _result(await pg.set_follow(up.member, up.host, up.port))
            case fx.RewindSpace():
                return _rewind_space(pg)
            case fx.RewindPg(upstream=up, keep_slots=keep):
                rewound = _result(await pg.rewind(up.host, up.port, up.member, keep_slots=keep))
                return replace(rewound, unreachable=not rewound.ok and rewind_unreachable(rewound.message))
            case fx.Basebackup(upstream=up):
                return _result(await pg.basebackup(up.host, up.port, up.member))
            case fx.RunReplicaMethod(method=name, source=up):
                spec = self.ctx.config.local.postgresql.method(name)  # listed or not (standby_cluster's)
                if spec is None:
                    return fx.Result(False, f"replica creation method {name} is not configured")
                source = None if up is None else Upstream(up.member, up.host, up.port)
                return _result(await pg.run_replica_method(spec, source))
            case fx.RunBootstrapMethod():
                method = self.ctx.config.local.bootstrap.custom_method()
                if method is None:
                    return fx.Result(False, "no custom bootstrap method is configured")
                return _result(await pg.run_bootstrap_method(method))
            case fx.SanitizeRestored(keep_recovery_conf=keep):
                return _result(await pg.sanitize_restored(keep))
            case fx.FinishRecovery():
                return _result(await pg.finish_recovery())
            case fx.MoveDataAside():
                return _result(await pg.move_data_dir_aside())
            case fx.EmptyDataDir():
                return _result(await pg.empty_data_dir())
            case fx.EnsureSlots(names=names):
                return _result(await pg.ensure_slots(names))
            case fx.DropSlots(names=names):
                return _result(await pg.drop_slots(names))
            case fx.AdvanceSlots(targets=targets):
                return _result(await pg.advance_slots(targets))
            case fx.CreateLogicalSlots(specs=specs):
                return _result(await pg.create_logical_slots(specs))
            case fx.AdvanceLogicalSlots(targets=targets):
                return _result(await pg.advance_logical_slots(targets))
            case fx.ReadSlotStates(source=up, names=names):
                read = await pg.read_slot_states(up.host, up.port, names)
                return fx.SlotStates(read.ok, read.message, read.states, read.waiting or read.unreachable,
                                     read.snapshots, read.segments)
            case fx.WriteSlotStates(states=states, snapshots=snapshots, segments=segments):
                return _result(pg.write_slot_states(states, snapshots, segments))
            case fx.DiscardSlotWal():
                return _result(pg.discard_slot_wal())
            case fx.WriteSsn(value=value):
                return _result(await pg.set_synchronous_standby_names(value))
            case fx.ReadTimelineHistory(timeline=timeline):
                return await pg.timeline_history(timeline)
            case fx.ReserveTimelines(timelines=timelines):
                return _reserve_timelines(pg.data_dir / "pg_wal", timelines)
            case fx.UnreserveTimelines(timelines=timelines):
                return _unreserve(pg.data_dir / "pg_wal", timelines)
            case fx.InspectDataDir():
                return directory_state(pg.data_dir) is not DataDirState.MISSING, replace_problem(pg.data_dir) or ""
            case fx.Initdb():
                return _result(await pg.initdb(pg.settings.initdb_options))
            case fx.CreateRoles():
                return _result(await pg.create_roles())
            case fx.PostBootstrap():
                script = self.ctx.config.local.bootstrap.post_bootstrap
                return _result(await pg.run_post_bootstrap(script)) if script else fx.Result(True)
            case fx.UndoBootstrap(existed=existed):
                return _result(await pg.undo_bootstrap(existed))
            case fx.RunHook(name=name, timeout=timeout):
                command = getattr(self.ctx.config.local.postgresql, name)
                ok, detail = await run_hook(command, name, timeout)
                return fx.Result(ok, detail)
            case _:
                raise AssertionError(f"unhandled effect {effect!r}")


REMOTE_RECOVERY_KEYS = ("restore_command", "archive_cleanup_command", "recovery_min_apply_delay")
"""The recovery settings a standby leader takes from `standby_cluster` (those it does not set are not
written: the cluster's own archive, in `recovery_conf`, is not the remote's)."""


def remote_controller(config: EffectiveConfig, up: fx.Upstream) -> PgController:
    """The PostgreSQL adapter of a standby leader following the remote `up`: the `standby_leader` role's
    parameters and pg_hba (`parameters_standby_leader`, ...), the remote's recovery settings."""
    settings = pg_settings(config, "standby_leader")
    recovery = {k: v for k, v in settings.recovery_conf.items() if k.lower() not in REMOTE_RECOVERY_KEYS}
    recovery.update(up.remote.recovery if up.remote is not None else ())
    return PgController(replace(settings, recovery_conf=recovery))


def pg_upstream(up: fx.Upstream) -> Upstream:
    """The adapter's upstream for `up`: a remote primary streams through its own slot (or none)."""
    return Upstream(up.member, up.host, up.port, up.remote.slot if up.remote is not None else None)


def remote_target(config: EffectiveConfig, following: str | None) -> tuple[PgController, Upstream] | None:
    """When `following` names the remote primary of `standby_cluster`: the adapter and upstream to write a
    standby leader's configuration with (so a reload of changed parameters keeps it following the remote)."""
    standby = config.ha.standby_cluster
    if standby is None or following != standby.follow_name:
        return None
    up = remote_upstream(config.ha)
    assert up is not None
    return remote_controller(config, up), pg_upstream(up)


async def _checkpoint(pg: PgController, timeout: float | None) -> fx.Result:
    if timeout is None:
        return _result(await pg.checkpoint())
    try:
        return _result(await bounded(pg.checkpoint(timeout=timeout), timeout))
    except TimeoutError:
        return fx.Result(False, f"checkpoint timed out after {timeout:.1f}s")


def _rewind_space(pg: PgController) -> fx.DiskSpace | None:
    room = pg.rewind_room()
    return None if room is None else fx.DiskSpace(room.data_free, room.wal_free, room.segment_size)


def _history_path(pg_wal: Path, timeline: int) -> Path:
    return pg_wal / f"{timeline:08X}.history"


def _reserve_timelines(pg_wal: Path, timelines: tuple[int, ...]) -> tuple[int, ...]:
    """Placeholder history files for `timelines` (never over a real one); the numbers written."""
    written = []
    for timeline in timelines:
        path = _history_path(pg_wal, timeline)
        try:
            with path.open("x") as placeholder:
                placeholder.write(f"# pgwarden: timeline {timeline} was used by another member of this cluster\n")
            written.append(timeline)
            log.info("reserved timeline %d (used elsewhere in the cluster): wrote %s", timeline, path.name)
        except FileExistsError:
            pass
        except OSError as exc:
            log.warning("cannot reserve timeline %d in %s: %s", timeline, pg_wal, exc)
    return tuple(written)


def _unreserve(pg_wal: Path, timelines: tuple[int, ...]) -> None:
    for timeline in timelines:
        path = _history_path(pg_wal, timeline)
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot remove the placeholder %s: %s", path, exc)
