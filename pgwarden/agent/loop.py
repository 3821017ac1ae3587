"""The agent: observe, decide, act, on one asyncio event loop.

Concurrency lives here and only here (the core is synchronous and pure):
- the HA loop: read the DCS, probe PostgreSQL, ask peers when a race needs them, `decide`, execute,
  publish the member key, then nap until the decision's `wake_at` or an event;
- a PostgreSQL monitor probing about once a second, publishing the REST API's state and waking the
  loop the moment the postmaster dies;
- a DCS watch waking the loop when the leader key changes;
- background tasks for long actions (bootstrap, clone, rewind, start), whose outcomes feed the next
  decision while the loop keeps renewing the lock;
- the REST server, reading only the latest published `NodeState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from pgwarden import __version__
from pgwarden.aio import bounded
from pgwarden.api import NodeState, StateHolder
from pgwarden.api.control import FailsafeAnswer
from pgwarden.api.listener import server_options_from
from pgwarden.api.management import ManagementSettings, management_routes
from pgwarden.api.security import TlsConfigError, access_policy_from, ssl_context_from, tls_fingerprint
from pgwarden.api.server import ApiServer, Binding, start_api, stop_api
from pgwarden.api.state import AgentMetrics
from pgwarden.config import ConfigError, DynamicConfig, EffectiveConfig, LocalConfig, layer, parse_listen
from pgwarden.config.addresses import unauthenticated_api_warning
from pgwarden.config.checker import CheckerError, ConfigChecker
from pgwarden.config.gucs import CATALOG_QUERY, FILE_ERRORS_QUERY, GucCatalog, catalog_problems, refused_settings
from pgwarden.config.schema import CONFLICTING_TAGS
from pgwarden.config.support import dynamic_refusals
from pgwarden.core import Decision, Outcome, decide, extended_wake, render
from pgwarden.core.actions import (
    AcquireLeader,
    Bootstrap,
    BootstrapStandby,
    Clone,
    Demote,
    DemoteMode,
    Follow,
    Promote,
    Reinitialize,
    RenewLeader,
    Restart,
    Shutdown,
    StartPostgres,
    Wait,
)
from pgwarden.core.reasons import Reason, Why
from pgwarden.core.render import render_race
from pgwarden.core.snapshot import ActionKind, TaskInFlight, keepalive_period
from pgwarden.dcs import Dcs, DcsError, open_dcs
from pgwarden.engine.loop import (
    NO_REPROBE,
    Act,
    CycleEnded,
    Decided,
    DecideFailed,
    FetchPeers,
    LoopBook,
    LoopEffect,
    Moment,
    MomentSample,
    ProbeLocal,
    PublishMember,
    ReadCluster,
    RefreshSettings,
    Stopping,
    TaskRunning,
    cycle,
    must_stop_after_failed_cycle,
)
from pgwarden.model import ClusterView, DataDirState, FailsafePing, LocalPg
from pgwarden.postgres.controller import PgController
from pgwarden.postgres.datadir import become_subreaper, reap_orphaned_postgres
from pgwarden.postgres.exitwatch import ExitWatch
from pgwarden.postgres.probe import Prober
from pgwarden.postgres.settings import Upstream
from pgwarden.postgres.versions import CHANGES as VERSION_CHANGES
from pgwarden.rest_client import settings_from_config

from .callbacks import Callbacks, callback_role
from .configsync import ConfigSync
from .control import AgentControlImpl, RequestDesk
from .dyncache import CACHE_NAME, cache_path, read_cache, write_cache
from .execute import BACKGROUND, ExecContext, execute, interpret_async, remote_target
from .fencing import Fencing
from .heap import trim_heap
from .logsetup import LogSetupError, configure_logging
from .member import member_json
from .peers import fetch_peers
from .pgsettings import pg_settings
from .uniqueness import duplicate_name_line, name_in_use

log = logging.getLogger("pgwarden")
NOT_STARTED = frozenset({ActionKind.REWIND_NO_SPACE, ActionKind.REWIND_SOURCE_UNREACHABLE})
"""Outcomes of background actions that did not start (the action waits and is decided again): not failures."""

EXIT_GAVE_UP = 3
"""The agent's exit status when it stops for good (bootstrap kept failing, its name is in use): a
service manager should not restart it (the systemd unit's RestartPreventExitStatus). 2: refused
configuration."""
MONITOR_REARM = 1.0  # seconds between looks for a postmaster to watch while none is running
POSTMASTER_CHECK = 0.1
CRASH_CONFIG_WAIT = 2.0  # how long a cycle with PostgreSQL down waits for a /config validation in flight


@dataclass
class _Background:
    task: asyncio.Task[Outcome]
    info: TaskInFlight


@dataclass
class AgentState:
    """The agent's mutable bookkeeping, in one place. What the simulator's loop shares with it (the
    core's memory, outcomes, the keepalive's send time, the end of the last cycle) is in `book`."""

    book: LoopBook = field(default_factory=LoopBook)
    cluster: ClusterView | None = None
    dcs_last_seen: float | None = None
    dcs_error: str | None = None
    pg: LocalPg = field(default_factory=lambda: LocalPg(data_dir=DataDirState.MISSING))
    background: _Background | None = None
    stopping: bool = False
    finished: bool = False
    next_cycle_deadline: float = 0.0
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    pg_observed_at: float | None = None  # monotonic instant of the probe behind `pg`
    exit_status: int = 0  # non-zero once the core gave up (a fatal Shutdown: bootstrap keeps failing)
    backoff_logged: tuple[str, str] | None = None  # the backoff (why, failures) whose line was logged last


class Agent:
    def __init__(self, local: LocalConfig, config_path: Path | None = None, *, checker: ConfigChecker,
                 bootstrap_dcs: tuple[DynamicConfig, list[str]], environ: Mapping[str, str] | None = None) -> None:
        """`local` as validated by `checker` (which validates every later configuration too, in a child
        process), with its bootstrap.dcs parsed: the dynamic configuration until /config exists.
        `environ`: the PATRONI_* variables the agent started with (re-applied on reload)."""
        self.local = local
        self.config_path = config_path
        self.checker = checker
        self.environ = dict(environ or {})
        self.config: EffectiveConfig = layer(local, *bootstrap_dcs)
        self.state = AgentState()
        self.wake = asyncio.Event()
        self._timing_changed = asyncio.Event()  # a new effective configuration: the keepalive measures its period again
        self.config_sync = ConfigSync(checker, (local, None), on_ready=self.wake.set)
        self.fencing = Fencing(local.watchdog)
        self.holder = StateHolder(self._node_state(time.monotonic()), wakeup=self.wake.set)
        self.holder.set_refresher(self._refresh_pg)
        self.desk = RequestDesk(book=self.state.book.requests, wake=self.wake.set)
        self.callbacks = Callbacks(local.postgresql.callbacks.as_mapping(), local.scope)
        self._dcs: Dcs | None = None
        self._api_dcs: Dcs | None = None
        self._http: aiohttp.ClientSession | None = None
        self._applied_pg_config: tuple[object, ...] | None = None
        self.prober = Prober()  # one kept session for the monitor and the HA cycle
        self._gucs: tuple[int, GucCatalog] | None = None  # (postmaster pid, its pg_settings)
        self._reloading: asyncio.Task[str] | None = None
        self._trim_due = True
        self._api: ApiServer | None = None
        self._api_tls: tuple[object, ...] = ()  # tls_fingerprint of the TLS context the API listens with
        self._applied_log = local.log  # the `log` section in effect (agent.run applied it at start)
        self._dyn_cache = read_cache(local.postgresql.data_dir)  # patroni.dynamic.json: the last /config adopted

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> int:
        for warning in self.config.warnings:
            log_config_warning(warning)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        become_subreaper()
        self._dcs = await open_dcs(
            self.local.dcs_kind, self.local.dcs.as_mapping(), namespace=self.local.namespace,
            scope=self.local.scope, name=self.local.name, ttl=self.config.ha.lease_ttl)
        # The REST handlers get their own connection: their reads must not consume the watch
        # notifications the HA loop relies on.
        self._api_dcs = await open_dcs(
            self.local.dcs_kind, self.local.dcs.as_mapping(), namespace=self.local.namespace,
            scope=self.local.scope, name=self.local.name, ttl=self.config.ha.ttl, readonly=True)
        # One read before the first decision, for the start checks: a refused /config, a name in use.
        cluster = await self._read_cluster_at_start(self._dcs)
        refused = dynamic_refusals(cluster.config.value) if cluster and cluster.config else []
        ssl_context = None
        try:
            if refused:
                log.critical("Can't start: the cluster's /config asks for what pgwarden does not support:\n  %s",
                             "\n  ".join(refused))
            else:
                ssl_context = ssl_context_from(self.local.restapi)
        except TlsConfigError as exc:
            log.error("restapi TLS configuration: %s", exc)
            refused = [str(exc)]
        if refused:
            await self._dcs.close()
            await self._api_dcs.close()
            return 2
        if cluster is not None and await name_in_use(cluster, self.local.scope, self.local.name):
            log.critical(duplicate_name_line(self.local.name))
            await self._dcs.close()
            await self._api_dcs.close()
            return EXIT_GAVE_UP
        self._http = aiohttp.ClientSession()
        runner = self._api = await self._start_api(ssl_context)
        helpers = [asyncio.create_task(self._monitor(), name="pg-monitor"),
                   asyncio.create_task(self._watch(), name="dcs-watch"),
                   asyncio.create_task(self._keepalive(), name="lease-keepalive")]
        try:
            await self._main_loop()
        except BaseException:
            # The agent is dying (a bug, or killed from inside): a primary it leaves behind would keep
            # accepting writes after its lease lapses and another node promotes. Stop it.
            if self.state.pg.is_primary:
                await self._emergency_stop("the agent is exiting unexpectedly")
            raise
        finally:
            self.state.finished = True
            for task in helpers:
                task.cancel()
            # asyncio.wait_for can swallow a cancellation that races with its inner future finishing
            # (Python < 3.12), so the helpers also check `finished`, and we never wait on them unboundedly.
            await asyncio.wait(helpers, timeout=5)
            log.debug("helpers stopped")
            await stop_api(runner)
            log.debug("api stopped")
            await self._http.close()
            await self.prober.close()
            await self.config_sync.close()
            await self.callbacks.close()
            await self._dcs.close()
            await self._api_dcs.close()
            self.fencing.close()
            log.info("pgwarden agent stopped")
        return self.state.exit_status

    async def _read_cluster_at_start(self, dcs: Dcs) -> ClusterView | None:
        """The cluster as the start checks see it; None when the DCS cannot be read now. Then the
        /config check is left to ConfigSync (which never adopts a refused /config) and the name check
        is skipped."""
        try:
            return await bounded(dcs.get_cluster(), self.config.ha.retry_timeout)
        except (DcsError, TimeoutError):
            return None

    def request_stop(self) -> None:
        if not self.state.stopping:
            log.info("received a stop request: shutting down")
        self.state.stopping = True
        background = self.state.background
        if background is not None and not background.task.done():
            background.task.cancel()
        self.wake.set()

    async def _start_api(self, ssl_context: ssl.SSLContext | None) -> ApiServer:
        restapi = self.local.restapi
        host, port = parse_listen(restapi.listen)
        exposed = unauthenticated_api_warning(restapi)
        if exposed:
            log.warning("REST API: %s", exposed)
        self._api_tls = tls_fingerprint(restapi)
        return await start_api(self.holder, host, port, access=access_policy_from(restapi), ssl_context=ssl_context,
                               routes=self._management_routes(), options=server_options_from(restapi))

    async def _reconfigure_api(self) -> None:
        """A reloaded `restapi`: access rules and answer headers apply to the next request; a changed
        address, backlog or TLS setting (or a rotated certificate file) gets a new listening socket.
        A TLS or address that cannot be used is logged and the listener stays as it was."""
        api, restapi = self._api, self.local.restapi
        if api is None:
            return
        options = server_options_from(restapi)
        api.reconfigure(access_policy_from(restapi), options)
        host, port = parse_listen(restapi.listen)
        fingerprint = tls_fingerprint(restapi)
        binding = Binding(host, port, api.binding.ssl_context, options.request_queue_size)
        try:
            if fingerprint != self._api_tls:
                binding = Binding(host, port, ssl_context_from(restapi), options.request_queue_size)
            await api.rebind(binding)
        except TlsConfigError as exc:
            log.error("reload: restapi TLS configuration: %s; the REST API keeps its current TLS settings", exc)
            return
        except OSError as exc:
            log.error("reload: cannot listen on %s: %s; the REST API keeps listening as before", restapi.listen, exc)
            return
        self._api_tls = fingerprint

    def control(self) -> AgentControlImpl:
        assert self._api_dcs is not None
        return AgentControlImpl(dcs=self._api_dcs, desk=self.desk, cluster=lambda: self.state.cluster,
                                paused=lambda: bool(self.config.dynamic.pause), reload=self.reload_local_config,
                                wake=self.wake.set, failsafe=self._failsafe_ping)

    def _failsafe_ping(self, ping: FailsafePing) -> FailsafeAnswer:
        """POST /failsafe: the loop's rule (`LoopBook.accept_failsafe_ping`), on the last probe and the task
        in flight, without an await between the check and the record. Accepted: the HA loop looks again now
        (a member racing for the key it saw expire must learn that the leader lives)."""
        pg = self.state.pg
        background = self._running_background()
        accepted = self.state.book.accept_failsafe_ping(
            ping.name, self.local.name, time.monotonic(), enabled=self.config.ha.failsafe_mode,
            primary=pg.is_primary, task=background.info if background else None)
        if accepted:
            self.holder.publish(self._node_state(time.monotonic()))
        return FailsafeAnswer(accepted, pg.lsn if accepted else None)

    def _management_routes(self) -> Any:
        return management_routes(self.control(), ManagementSettings(config_problems=self._config_problems))

    async def _config_problems(self, values: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """PATCH/PUT /config's check: validation.config_problems (in a child), plus what this member's
        PostgreSQL would refuse among the parameters (`gucs.catalog_problems`), when it runs."""
        results = await self.checker.config_problems(values)
        catalog = await self._guc_catalog()
        if catalog is None:
            return results
        return [found + catalog_problems(catalog, value, skip=VERSION_CHANGES)
                for found, value in zip(results, values, strict=True)]

    async def _guc_catalog(self) -> GucCatalog | None:
        """This member's pg_settings, read once per postmaster (None while PostgreSQL does not answer)."""
        pg = self.state.pg
        if not pg.running or pg.postmaster_pid is None:
            return None
        if self._gucs is None or self._gucs[0] != pg.postmaster_pid:
            rows = await self.prober.rows(pg_settings(self.config), CATALOG_QUERY)
            if rows is None:
                return None
            self._gucs = (pg.postmaster_pid, GucCatalog.from_rows(rows))
        return self._gucs[1]

    def _reload_on_signal(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self.reload_local_config(), name="reload")

    async def reload_local_config(self) -> str:
        """SIGHUP / POST /reload: re-read the local configuration; keep the old one if the new is invalid."""
        try:
            fresh, _, _ = await self.checker.load_local_async(self.config_path, {**os.environ, **self.environ})
        except ConfigError as exc:
            log.error("reload: the configuration is invalid, keeping the current one:\n%s", exc)
            return "the new configuration is invalid; see the agent's log"
        except CheckerError as exc:
            log.error("reload: %s; keeping the current configuration", exc)
            return "the new configuration could not be checked; see the agent's log"
        if (fresh.name, fresh.scope, fresh.namespace) != (self.local.name, self.local.scope, self.local.namespace):
            log.error("reload: name, scope and namespace cannot change at runtime; restart the agent")
            return "name, scope and namespace cannot change at runtime"
        self.local = fresh
        self.fencing.reconfigure(fresh.watchdog)
        await self._reconfigure_api()
        self.callbacks = Callbacks(fresh.postgresql.callbacks.as_mapping(), fresh.scope)
        if fresh.log != self._applied_log:
            try:
                configure_logging(fresh.log)
                self._applied_log = fresh.log
            except LogSetupError as exc:
                log.error("reload: %s; logging stays as it was", exc)
        log.info("reload: local configuration re-read")
        self.wake.set()
        return ""

    # -- the HA loop ---------------------------------------------------------------------------------

    async def _main_loop(self) -> None:
        while not self.state.finished:
            started = time.monotonic()
            try:
                decision = await self._cycle()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are really being cancelled
                decision = await self._cycle_failed()  # a library leaked a cancellation: a bug, not a stop
            except Exception:
                decision = await self._cycle_failed()
            if self._trim_due:
                trim_heap()  # after start-up, and after a new configuration: free pages go back
                self._trim_due = False
            if self.state.finished:
                break
            await self._nap_after(decision, self.state.book.nap(decision, started, time.monotonic()))

    async def _cycle_failed(self) -> Decision:
        """A cycle raised: a bug. The fallback is fixed in advance and does not depend on the failing
        code: a primary whose lease cannot be shown to hold for another second is stopped at once, so
        the keepalive (which stops when cycles stop completing) can never leave a writer behind."""
        log.exception("Unexpected exception raised, please report it as a BUG")
        now = time.monotonic()
        deadline = self._published_lock_deadline(self.state.book.memory.lock_deadline is not None)
        if must_stop_after_failed_cycle(self.state.pg.is_primary, deadline, now):
            await self._emergency_stop("the HA cycle is failing and the lease may run out")
        return Decision(Wait(), Reason(Why.NO_ACTION), now + 1.0, self.state.book.memory)

    async def _emergency_stop(self, why: str) -> None:
        log.error("stopping PostgreSQL immediately: %s", why)
        with contextlib.suppress(Exception):
            await PgController(pg_settings(self.config)).stop("immediate")

    async def _nap_after(self, decision: Decision, seconds: float) -> None:
        """Nap `seconds`, or until woken. A leader whose nap ends only to renew before its lock
        deadline naps on while keepalives have moved that deadline on (`extended_wake`)."""
        while await self._nap(seconds) is False and not self.state.finished:
            now = time.monotonic()
            deadline = self._published_lock_deadline(self.state.book.memory.lock_deadline is not None)
            later = extended_wake(decision, deadline, now)
            if later is None:
                return
            seconds = later - now

    async def _nap(self, seconds: float) -> bool:
        """True when woken, False when the time ran out."""
        woken = True
        if seconds > 0:
            try:
                await bounded(self.wake.wait(), seconds)
            except TimeoutError:
                woken = False
        self.wake.clear()
        return woken

    async def _cycle(self) -> Decision:
        """One HA cycle (`engine.loop.cycle`, which the simulator runs too), its effects done for real."""
        return await interpret_async(cycle(self.state.book, self.local.name, decide), self._perform)

    async def _perform(self, effect: LoopEffect) -> Any:
        dcs = self._require_dcs()
        match effect:
            case ReadCluster():
                return await self._read_cluster(dcs)
            case TaskRunning():
                return self._running_background() is not None
            case ProbeLocal():
                return await self._probe_pg()
            case RefreshSettings(cluster=cluster, pg=pg):
                await self._refresh_config(dcs, cluster)
                if not pg.running and self.config_sync.validating:
                    # PostgreSQL is down (a crash, say) while a changed configuration is being validated:
                    # what happens now may depend on it (primary_start_timeout: 0 fails over instead of
                    # restarting in place), so wait for it, briefly, rather than decide with the old one.
                    await self.config_sync.settle(CRASH_CONFIG_WAIT)
                    await self._refresh_config(dcs, cluster)
                return self.config.ha
            case Stopping():
                return self.state.stopping
            case FetchPeers(cluster=cluster):
                assert self._http is not None
                rest = settings_from_config(self.local.ctl, self.local.restapi)
                return await fetch_peers(self._http, cluster.members, self.local.name, settings=rest)
            case Moment():
                now, wall = time.monotonic(), time.time()
                self.desk.due_request(wall)  # a scheduled restart whose time has come becomes the pending request
                background = self._running_background()
                return MomentSample(now, wall, background.info if background else None, self.state.stopping,
                                    watchdog_failed=self.fencing.failed())
            case DecideFailed(error=error):
                log.error("Unexpected exception in the decision core, please report it as a BUG", exc_info=error)
                return None
            case Decided(snapshot=snapshot, decision=decision, request=request, started=started):
                self._log_decision(decision, snapshot.paused)
                if request is not None:
                    self.desk.answer(request, started, decision)
                self.state.next_cycle_deadline = decision.wake_at
                self.holder.publish(self._node_state(snapshot.now))
                return None
            case Act(decision=decision, snapshot=snapshot):
                await self._act(decision, snapshot.dcs, snapshot.paused)
                return None
            case PublishMember(cluster=cluster):
                await self._seed_config(dcs, cluster)
                await self._touch_member(dcs, cluster)
                return None
            case CycleEnded(decision=decision, cluster=cluster, started=started_at):
                self.state.book.last_cycle_end = end = time.monotonic()
                self._count(decision, cluster, end - started_at)
                return end
            case _:
                raise AssertionError(f"unhandled loop effect {effect!r}")

    def _count(self, decision: Decision, cluster: ClusterView | None, seconds: float) -> None:
        """Update pgwarden's own metrics from what this cycle decided and how its action went."""
        m = self.state.metrics
        m = replace(m, ha_cycles=m.ha_cycles + 1, last_cycle_seconds=seconds)
        last = self.state.book.outcomes[-1] if self.state.book.outcomes else None
        ok = last is not None and last.ok and last.action == decision.action.kind
        if isinstance(decision.action, RenewLeader) and ok and last is not None:
            renewal = max(0.0, self.state.book.last_cycle_end - last.sent_at)
            m = replace(m, lease_renewals=m.lease_renewals.observe(renewal))
        if isinstance(decision.action, Promote) and ok:
            planned = cluster is not None and cluster.failover is not None
            m = replace(m, promotions=m.promotions + 1, switchovers=m.switchovers + planned,
                        failovers=m.failovers + (not planned))
        if isinstance(decision.action, Demote) and ok:
            planned = decision.action.mode is DemoteMode.GRACEFUL
            m = replace(m, demotions=m.demotions + 1, switchovers=m.switchovers + planned)
        holds = self._holds_lock()
        if holds and m.leader_since is None:
            m = replace(m, leader_since=time.monotonic())
        elif not holds and cluster is not None:
            m = replace(m, leader_since=None)
        self.state.metrics = m

    def _log_decision(self, decision: Decision, paused: bool, outcome: Outcome | None = None) -> None:
        line = decision_line(decision, outcome)
        if line is None:
            return
        if decision.reason.why in (Why.DCS_DOWN, Why.PAUSED_DCS_DOWN) and self.state.dcs_error:
            line = f"{line}: {self.state.dcs_error}"
        fatal = isinstance(decision.action, Shutdown) and decision.action.fatal
        level = logging.CRITICAL if fatal else logging.INFO
        backoff = (decision.reason.why, decision.reason.fact("failures"))
        if decision.reason.why in (Why.BOOTSTRAP_BACKOFF, Why.CLONE_BACKOFF, Why.START_BACKOFF):
            # Said once per failed attempt; the cycles that wait out the same backoff stay quiet.
            level = logging.DEBUG if backoff == self.state.backoff_logged else level
            self.state.backoff_logged = backoff
        else:
            self.state.backoff_logged = None
        log.log(level, "%s%s", "PAUSE: " if paused else "", line)

    async def _act(self, decision: Decision, cluster: ClusterView | None, paused: bool = False) -> None:
        action = decision.action
        ctx = ExecContext(dcs=self._require_dcs(), config=self.config, cluster=cluster, fencing=self.fencing,
                          http=self._http, rest=settings_from_config(self.local.ctl, self.local.restapi))
        kind = BACKGROUND.get(type(action))
        if kind is not None:
            task = asyncio.create_task(self._run_background(action, ctx), name=f"action-{kind}")
            self.state.background = _Background(task, TaskInFlight(kind, time.monotonic()))
            return
        outcome = await _safe_execute(action, ctx)
        self.state.book.outcomes.append(outcome)
        self._notify(action, outcome)
        if isinstance(action, AcquireLeader):
            self._log_decision(decision, paused, outcome)  # the race's line says how it ended
        elif not outcome.ok and not isinstance(action, Wait):
            log.warning("%s failed: %s", action.kind, outcome.detail)
        if isinstance(action, Shutdown):
            self.state.finished = True
            if action.fatal:
                self.state.exit_status = EXIT_GAVE_UP
        if not isinstance(action, NO_REPROBE):
            await self._probe_and_publish()  # PostgreSQL changed: publish the truth now, not at the next probe

    def _notify(self, action: Any, outcome: Outcome) -> None:
        """Fire the user's callbacks for what an action did to PostgreSQL (Patroni's events)."""
        if not outcome.ok or outcome.action != action.kind:
            return
        match action:
            case Bootstrap():
                self.callbacks.fire("on_start", "primary")
            case BootstrapStandby():
                self.callbacks.fire("on_start", "standby_leader")
            case Clone() | Reinitialize():
                self.callbacks.fire("on_start", "replica")
            case StartPostgres():
                standby = self.config.ha.standby_cluster
                self.callbacks.fire("on_start", callback_role(action.role, action.follow, standby))
            case Follow() if callback_role("replica", action.leader, self.config.ha.standby_cluster) != "replica":
                self.callbacks.fire("on_role_change", "standby_leader")
            case Restart():
                self.callbacks.fire("on_restart", callback_role(action.role, action.follow,
                                                                 self.config.ha.standby_cluster))
            case Promote():
                self.callbacks.fire("on_role_change", "primary")
            case Demote():
                self.callbacks.fire("on_role_change", "demoted")
            case Shutdown() if action.stop_postgres:
                self.callbacks.fire("on_stop", "primary" if action.release or action.optime else "replica")
            case _:
                pass

    async def _run_background(self, action: Any, ctx: ExecContext) -> Outcome:
        try:
            outcome = await _safe_execute(action, ctx)
        except asyncio.CancelledError:
            outcome = Outcome(action=action.kind, ok=False, detail="cancelled", sent_at=time.monotonic())
        if outcome.ok:
            log.info("%s finished: %s", action.kind, outcome.detail or "ok")
        elif outcome.action in NOT_STARTED:  # nothing was tried: the core starts it again (no "failed")
            log.warning("%s not started: %s", action.kind, outcome.detail.removeprefix("pg_rewind not started: "))
        else:
            log.warning("%s failed: %s", action.kind, outcome.detail)
        self.state.book.outcomes.append(outcome)
        self.state.background = None
        self.desk.finished(outcome)
        self._notify(action, outcome)
        self.wake.set()
        return outcome

    def _running_background(self) -> _Background | None:
        background = self.state.background
        return background if background is not None and not background.task.done() else None

    # -- observation helpers -----------------------------------------------------------------------

    async def _read_cluster(self, dcs: Dcs) -> ClusterView | None:
        """One read of the scope. A leader bounds it by its lock deadline: a read that hangs until
        its timeout must never carry the leader past the point where it has to stop writes."""
        budget = self.state.book.read_budget(self.config.ha, time.monotonic())
        try:
            if budget is not None and budget <= 0:
                raise DcsError("not reading the DCS: the lock deadline is too close")
            cluster = await (bounded(dcs.get_cluster(), budget) if budget is not None
                             else dcs.get_cluster())
        except (DcsError, TimeoutError) as exc:
            self.state.dcs_error = str(exc) or "read timed out before the lock deadline"
            return None
        self.state.dcs_error = None
        cluster = self._with_running_config(cluster)
        self.state.cluster = cluster
        self.state.dcs_last_seen = time.time()
        return cluster

    def _with_running_config(self, cluster: ClusterView) -> ClusterView:
        """An unreadable `/config` (garbage; the DCS client logs it once) decodes as `{}`: the agent
        keeps the configuration it runs with instead, `pause` included, until a readable one is
        written, rather than fall back to every default (and out of maintenance mode)."""
        if "config" not in cluster.unreadable or cluster.config is None:
            return cluster
        running = self.config_sync.running_dynamic
        return replace(cluster, config=replace(cluster.config, value=dict(running) if running is not None else {}))

    async def _refresh_config(self, dcs: Dcs, cluster: ClusterView | None) -> None:
        """Take a configuration validated since the last cycle, and ask for one when the inputs
        changed (`ConfigSync`: validation runs in the background, never in the cycle)."""
        # While the DCS is away, or its /config is unreadable (see _with_running_config), the last
        # effective configuration stays.
        if cluster is not None and "config" not in cluster.unreadable:
            # No /config (a wiped DCS): the copy in the data directory stands in, as in Patroni.
            raw = dict(cluster.config.value) if cluster.config else self._dyn_cache
            self.config_sync.want((self.local, raw))
        fresh = self.config_sync.take()
        if fresh is not None:
            if fresh.warnings != self.config.warnings:
                for warning in fresh.warnings:
                    log_config_warning(warning)
            if fresh.ha.lease_ttl != self.config.ha.lease_ttl:
                await dcs.set_ttl(fresh.ha.lease_ttl)
            self.config = fresh
            self._timing_changed.set()
            self._trim_due = True
        self._save_dynamic_cache()
        await self._apply_pg_config()

    def _save_dynamic_cache(self) -> None:
        """Keep `patroni.dynamic.json` equal to the /config in force (rewritten when it changed or when
        the file went away, e.g. with a rewind or a re-clone)."""
        adopted = self.config_sync.adopted_dynamic
        data_dir = self.local.postgresql.data_dir
        if adopted is None or (adopted == self._dyn_cache and cache_path(data_dir).exists()):
            return
        if write_cache(data_dir, adopted):
            self._dyn_cache = dict(adopted)

    async def _seed_config(self, dcs: Dcs, cluster: ClusterView | None) -> None:
        """A leader that finds no /config (the DCS was wiped) writes back the dynamic configuration
        it runs with, as Patroni does: the copy from the data directory, else bootstrap.dcs."""
        if (cluster is None or cluster.config is not None or "config" in cluster.unreadable or not cluster.initialize
                or not cluster.led_by(self.local.name) or self._running_background() is not None):
            return
        cached = self._dyn_cache is not None
        value = self._dyn_cache if self._dyn_cache is not None else dict(self.local.bootstrap.dcs)
        with contextlib.suppress(DcsError):
            if await dcs.set_config(value, revision=0):
                log.info("wrote /config from %s: the DCS held none", CACHE_NAME if cached else "bootstrap.dcs")

    async def _apply_pg_config(self) -> None:
        """Make a running PostgreSQL follow parameter and pg_hba changes (from /config or a reload).

        Reloadable parameters take effect at once; the others show up as pending_restart in the
        probe (pg_settings.pending_restart) until an operator restarts. Not an HA decision: the role
        and the upstream stay exactly what they are.
        """
        pg = self.state.pg
        if not pg.running or self._running_background() is not None:
            return
        role = "primary" if pg.in_recovery is False else "replica"
        remote = remote_target(self.config, pg.following) if role == "replica" else None
        # A standby leader's settings are the standby_leader role's with standby_cluster's recovery settings:
        # compared as such, so that a changed standby_cluster.restore_command alone is written and reloaded.
        settings = remote[0].settings if remote is not None else pg_settings(self.config, role)
        wanted = (role, tuple(sorted((k, str(v)) for k, v in settings.parameters.items())), settings.pg_hba,
                  settings.pg_ident, tuple(sorted((k, str(v)) for k, v in settings.recovery_conf.items())))
        # The first time (None) it is written and reloaded too: the configuration may have changed
        # between the start of PostgreSQL and this agent's first look.
        if wanted == self._applied_pg_config:
            return
        controller = PgController(settings)
        cluster = self.state.cluster
        upstream = None
        if remote is not None:  # a standby leader: it keeps following the remote primary
            controller, upstream = remote
        elif role == "replica" and pg.following and cluster is not None:
            member = cluster.member(pg.following)
            address = member.host_port if member else None
            upstream = Upstream(pg.following, *address) if address else None
        written = await controller.write_config("primary" if role == "primary" else "replica", upstream)
        if written.ok:
            await controller.reload()
            refused = await self._refused_settings()
            if refused:
                log.error("PostgreSQL refused part of the changed configuration (it keeps the old values): %s",
                          "; ".join(refused))
            else:
                log.info("applied changed PostgreSQL configuration (reloaded)")
            self.callbacks.fire("on_reload", role)
        self._applied_pg_config = wanted

    async def _refused_settings(self) -> list[str]:
        """What PostgreSQL cannot apply from its configuration files (pg_file_settings), [] if it cannot tell."""
        rows = await self.prober.rows(pg_settings(self.config), FILE_ERRORS_QUERY)
        return refused_settings(rows or [], await self._guc_catalog())

    async def _touch_member(self, dcs: Dcs, cluster: ClusterView | None) -> None:
        if cluster is None or self.state.finished:
            return
        background = self._running_background()
        data = member_json(pg=self.state.pg, conn_url=self.config.conn_url, api_url=self.config.api_url,
                           tags=self.config.ha.tags, task=str(background.info.kind) if background else None,
                           proxy_url=self.config.proxy_url,
                           standby_leader=self._holds_lock() and self.config.ha.standby_cluster is not None,
                           logical_slots_ready=self.state.book.memory.logical_slots_ready)
        if self.desk.scheduled_restart is not None:
            data["scheduled_restart"] = {"schedule": self.desk.scheduled_restart[2]}
        if self.config.dynamic.pause:
            data["pause"] = True
        with contextlib.suppress(DcsError):
            await dcs.touch_member(data)

    def _require_dcs(self) -> Dcs:
        assert self._dcs is not None, "the DCS is created before the loop starts"
        return self._dcs

    # -- background helpers --------------------------------------------------------------------------

    async def _probe_pg(self) -> LocalPg:
        """Probe the local PostgreSQL and remember the result (what the HA cycle and the REST API see)."""
        pg = await self.prober.probe(pg_settings(self.config))
        self.state.pg, self.state.pg_observed_at = pg, time.monotonic()
        return pg

    async def _probe_and_publish(self) -> None:
        await self._probe_pg()
        self.holder.publish(self._node_state(time.monotonic()))

    async def _refresh_pg(self) -> None:
        """The REST API's refresher (StateHolder.fresh): a new probe, published at once."""
        if not self.state.finished:
            await self._probe_and_publish()

    async def _monitor(self) -> None:
        """Wait for the postmaster to exit: its death is published (so /primary stops answering 200)
        and wakes the HA loop the moment it happens (`ExitWatch`: no polling, no CPU while waiting).

        Between deaths nothing is probed here: the HA cycle probes every loop, and a REST request
        that finds the published probe stale asks for a new one (`StateHolder.fresh`).
        """
        watch = ExitWatch(POSTMASTER_CHECK)
        try:
            while not self.state.finished:
                pg = self.state.pg
                pid = pg.postmaster_pid if pg.running else None
                # Without a postmaster, look again soon for one an action or a probe found meanwhile.
                if not await watch.wait(pid, MONITOR_REARM if pid is None else self.config.ha.loop_wait):
                    continue
                if self.state.finished:
                    break
                reap_orphaned_postgres()
                await self._probe_and_publish()
                if pg.running and not self.state.pg.running and self._running_background() is None:
                    log.warning("PostgreSQL is not running any more")
                    self.wake.set()
        finally:
            watch.close()

    async def _keepalive(self) -> None:
        """Refresh this agent's lease (member key, and the leader key while leading) on its own cadence,
        so slow work in the HA cycle (a rewind, a slow query) never lets a short lease lapse.

        It only ever extends what the HA loop holds, and only while that loop is alive: if the loop
        stalls for longer than two cycles, the keepalive stops and the lease runs out, exactly as if
        the agent had died. Its outcomes go to the next decision like any other.
        """
        dcs = self._require_dcs()
        while not self.state.finished:
            await self._keepalive_nap()
            if not self.state.book.keepalive_allowed(time.monotonic(), self.config.ha.loop_wait, self.state.stopping):
                continue
            sent = time.monotonic()
            try:
                ok = await dcs.keepalive()
            except DcsError:
                ok = False
            self.state.book.outcomes.append(self.state.book.keepalive_done(ok, sent, dcs.leads_on_lease()))
            if self.state.book.wake_after_keepalive(self.config.ha, ok):
                self.wake.set()
            if ok:
                if self.state.book.may_feed_watchdog(self.config.ha, sent, time.monotonic()):
                    self.fencing.feed()
                self.holder.publish(self._node_state(time.monotonic()))

    async def _keepalive_nap(self) -> None:
        """Sleep one keepalive period from now, measured again whenever the effective configuration
        changes: after a long lease (`ttl: 600`) goes back to a short one, the next keepalive is due by
        the short lease's period, not at the end of the old one (the new lease would lapse meanwhile)."""
        started = time.monotonic()
        while not self.state.finished:
            ha = self.config.ha
            period = keepalive_period(self.config.dynamic.pgwarden.keepalive_interval, ha.lease_ttl,
                                      leading=self._holds_lock(),
                                      watchdog_timeout=ha.watchdog_timeout if ha.watchdog.active else None)
            left = started + period - time.monotonic()
            if left <= 0:
                return
            self._timing_changed.clear()
            try:
                await bounded(self._timing_changed.wait(), left)
            except TimeoutError:
                return

    def _holds_lock(self) -> bool:
        """The last DCS read names this agent as the leader."""
        return self.state.cluster is not None and self.state.cluster.led_by(self.local.name)

    def _published_lock_deadline(self, holds_lock: bool) -> float | None:
        """The core's lock deadline, moved on by keepalives sent since the last decision."""
        return self.state.book.published_lock_deadline(self.config.ha, holds_lock)

    async def _watch(self) -> None:
        dcs = self._require_dcs()
        while not self.state.finished:
            try:
                if await dcs.wait_for_change(self.config.ha.loop_wait):
                    self.wake.set()
            except DcsError:
                await asyncio.sleep(1.0)

    def _node_state(self, now: float) -> NodeState:
        cluster = self.state.cluster
        holds_lock = self._holds_lock()
        return NodeState(
            name=self.local.name, scope=self.local.scope, version=__version__,
            api_url=self.config.api_url, conn_url=self.config.conn_url, pg=self.state.pg, cluster=cluster,
            dcs_last_seen=self.state.dcs_last_seen,
            lock_deadline=self._published_lock_deadline(holds_lock),
            tags=self.config.ha.tags, paused=bool(self.config.dynamic.pause),
            standby_cluster=self.config.dynamic.standby_cluster is not None,
            maximum_lag_on_failover=self.config.ha.maximum_lag_on_failover, ttl=self.config.ha.ttl,
            loop_wait=self.config.ha.loop_wait,
            next_cycle_deadline=max(self.state.next_cycle_deadline, now),
            dcs_reachable=self.state.dcs_error is None,
            metrics=self.state.metrics,
            watchdog_failed=self.fencing.failed(),
            failsafe_mode_is_active=self.state.book.failsafe_active(self.config.ha, now),
            pg_observed_at=self.state.pg_observed_at,
            logical_slots_ready=self.state.book.memory.logical_slots_ready,
        )


def decision_line(decision: Decision, outcome: Outcome | None) -> str | None:
    """The cycle's log line, or None while it must wait for `outcome`: a race (AcquireLeader) is
    logged once the acquisition is done, saying whether it won, not before, as if it had."""
    if isinstance(decision.action, AcquireLeader):
        return None if outcome is None else render_race(decision.reason, outcome.ok, outcome.detail)
    return render(decision.reason)


def log_config_warning(warning: str) -> None:
    """A configuration warning: Patroni's own sentences (conflicting tags) verbatim, so log alerts
    written for Patroni match; pgwarden's own after a `configuration: ` prefix."""
    log.warning("%s" if warning.startswith(CONFLICTING_TAGS) else "configuration: %s", warning)


def _dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (for diagnosing a stuck agent)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack()
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames)) or "(no frames)"
        log.warning("task %s: %s", task.get_name(), where)


async def _safe_execute(action: Any, ctx: ExecContext) -> Outcome:
    try:
        return await execute(action, ctx)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug in an adapter: report it as a failed outcome, keep the agent alive
        log.exception("Unexpected exception while executing %s", action.kind)
        return Outcome(action=action.kind, ok=False, detail=f"{type(exc).__name__}: {exc}", sent_at=time.monotonic())
