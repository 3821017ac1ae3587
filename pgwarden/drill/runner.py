"""One fire drill, or N of them: healthy cluster -> write workload -> fault -> what clients saw -> heal.

The runner owns the sequence and the waiting; the numbers come from `measure` (pure), the writes from
`Writer`, the faults from `faults`. It talks to the cluster only through what any operator has: the
DCS (to find members), the REST API and a libpq DSN, plus local signals for the kill faults.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgwarden.drill.faults import (
    ApiAnswer,
    Fault,
    LocalTargets,
    describe_refusal,
    find_local_targets,
    kill_host,
    kill_postmaster,
    request_failover,
    request_switchover,
)
from pgwarden.drill.measure import (
    DEFAULT_BLOCKED_AFTER,
    Measurement,
    Spread,
    acknowledged_ids,
    measure,
    missing_ids,
    spread,
)
from pgwarden.drill.topology import (
    DrillError,
    Health,
    MemberInfo,
    Topology,
    cluster_health,
    primary_instance,
)
from pgwarden.drill.workload import Writer, current_timeline, prepare_table, server_address, stored_ids
from pgwarden.rest_client import RestSettings

AgentRestarter = Callable[[str], bool]
"""Restarts the agent of the named member after a host kill; False if it cannot (the user must)."""

WARMUP_SECONDS = 1.0
WARMUP_TIMEOUT = 15.0
VERIFY_TIMEOUT = 60.0
POLL_INTERVAL = 0.05
HEALED_FOR = 2.0
REFUSED_GRACE = 1.0  # seconds of writes still logged after the API refused, to show nothing happened


@dataclass(frozen=True, slots=True)
class DrillOptions:
    fault: Fault
    rate: float = 100.0
    """Writes per second the client attempts."""
    settle: float = 10.0
    """Seconds writes must keep working after recovery (and after the new primary answers) before the
    measurement ends: a second outage in that time is part of the result."""
    candidate: str | None = None
    blocked_after: float = DEFAULT_BLOCKED_AFTER
    fault_timeout: float = 120.0
    """Give up waiting for writes to come back after this many seconds."""
    heal_timeout: float = 180.0
    api_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Progress:
    """What the display shows; emitted often while a fault is in progress."""

    repetition: int
    repetitions: int
    phase: str
    since_fault: float | None = None
    acknowledged: int = 0
    failed: int = 0
    outage_since: float | None = None
    """Seconds since the current outage started (None: writes are working)."""
    primary: str | None = None
    detail: str = ""


ProgressSink = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class RunResult:
    """One repetition's findings. `error` set: the drill could not complete this repetition."""

    repetition: int
    fault: Fault
    old_primary: str | None = None
    old_timeline: int | None = None
    new_primary: str | None = None
    new_timeline: int | None = None
    measurement: Measurement | None = None
    primary_answers_after: float | None = None
    """Seconds from the fault until a different primary instance answered 200 on GET /primary."""
    api: ApiAnswer | None = None
    missing: tuple[int, ...] | None = None
    """Acknowledged ids the new primary lacks; None when that could not be checked."""
    healed_after: float | None = None
    old_primary_rejoined: bool | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "repetition": self.repetition,
            "fault": self.fault.value,
            "old_primary": self.old_primary,
            "old_timeline": self.old_timeline,
            "new_primary": self.new_primary,
            "new_timeline": self.new_timeline,
            "writes_impossible_s": _round(m.writes_impossible) if m else None,
            "outage_windows": [[_round(w.start), _round(w.end)] for w in m.windows] if m else None,
            "total_outage_s": _round(m.total_outage) if m else None,
            "failed_transactions": m.failed_transactions if m else None,
            "acknowledged_writes": m.acknowledged if m else None,
            "writes_recovered": m.recovered if m else None,
            "primary_answers_after_s": _round(self.primary_answers_after),
            "api_status": self.api.status if self.api else None,
            "api_answer": self.api.text if self.api else None,
            "api_answered_after_s": _round(self.api.seconds) if self.api else None,
            "missing_writes": len(self.missing) if self.missing is not None else None,
            "missing_ids": list(self.missing[:100]) if self.missing else [],
            "healed_after_s": _round(self.healed_after),
            "old_primary_rejoined": self.old_primary_rejoined,
            "error": self.error,
            "notes": list(self.notes),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True, slots=True)
class Report:
    fault: Fault
    options: DrillOptions
    runs: tuple[RunResult, ...]

    def spreads(self) -> dict[str, Spread]:
        done = [r for r in self.runs if r.error is None and r.measurement is not None]
        return {
            "writes_impossible_s": spread(r.measurement.writes_impossible for r in done if r.measurement),
            "failed_transactions": spread(float(r.measurement.failed_transactions) for r in done
                                          if r.measurement),
            "primary_answers_after_s": spread(r.primary_answers_after for r in done),
            "api_answered_after_s": spread(r.api.seconds if r.api else None for r in done),
            "missing_writes": spread(float(len(r.missing)) if r.missing is not None else None for r in done),
            "healed_after_s": spread(r.healed_after for r in done),
        }

    @property
    def ok(self) -> bool:
        return all(r.error is None and not r.missing for r in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault.value,
            "rate": self.options.rate,
            "repetitions": len(self.runs),
            "summary": {k: v.as_json() for k, v in self.spreads().items()},
            "runs": [r.as_json() for r in self.runs],
            "ok": self.ok,
        }


# --------------------------------------------------------------------------------------------------


class PrimaryWatcher:
    """Polls GET /primary on every member; notes when a primary instance other than `old` answers."""

    def __init__(self, members: Sequence[MemberInfo], old: tuple[str, str | None], rest: RestSettings) -> None:
        self.members = list(members)
        self.old = old
        self.rest = rest
        self.current: str | None = old[0]
        self.new_at: float | None = None
        self.new_name: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-primary-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            answering = [i for m in self.members if (i := primary_instance(m, self.rest, 0.5)) is not None]
            self.current = answering[0][0] if len(answering) == 1 else None
            fresh = [i for i in answering if i != self.old]
            if fresh and self.new_at is None:
                self.new_at = time.monotonic()
                self.new_name = fresh[0][0]
            self._stop.wait(POLL_INTERVAL)


@dataclass
class Drill:
    """Runs `options.fault` against the cluster `topology()` describes, `repeat` times."""

    topology: Callable[[], Topology]
    dsn: str
    options: DrillOptions
    rest: RestSettings = field(default_factory=RestSettings)
    """Credentials and TLS material for the members' REST APIs."""
    restarter: AgentRestarter | None = None
    progress: ProgressSink = lambda _p: None
    members: dict[str, MemberInfo] = field(default_factory=dict)

    def run(self, repeat: int = 1) -> Report:
        runs: list[RunResult] = []
        for index in range(1, repeat + 1):
            result = self._guarded(index, repeat)
            runs.append(result)
            if result.error is not None:
                break  # a cluster that could not complete one drill is in no state for the next
        return Report(self.options.fault, self.options, tuple(runs))

    def _guarded(self, index: int, repeat: int) -> RunResult:
        try:
            return self.run_once(index, repeat)
        except DrillError as exc:
            return RunResult(index, self.options.fault, error=str(exc))
        except psycopg.Error as exc:
            return RunResult(index, self.options.fault, error=f"database error: {exc}")

    # -- one repetition ------------------------------------------------------------------------------

    def _known_members(self) -> list[MemberInfo]:
        for member in self.topology().members:
            self.members[member.name] = member  # a killed host's key expires: remember it anyway
        return sorted(self.members.values(), key=lambda m: m.name)

    def run_once(self, index: int, repeat: int) -> RunResult:
        members = self._known_members()
        self.progress(Progress(index, repeat, "waiting for a healthy cluster"))
        health, _ = self.wait_healed(members, self.options.heal_timeout, index, repeat)
        old = health.primary
        assert old is not None
        old_member = next(m for m in members if m.name == old.name)
        targets = self._preflight(old_member, members, health)
        prepare_table(self.dsn)
        run_id = uuid.uuid4().hex[:12]
        writer = Writer(self.dsn, run_id, 1.0 / self.options.rate)
        writer.start()
        try:
            self._warm_up(writer, index, repeat)
            watcher = PrimaryWatcher(members, old.instance, self.rest)
            watcher.start()
            try:
                fault_at, answer = self._inject_and_follow(old_member, targets, writer, watcher, index, repeat)
            finally:
                watcher.stop()
        finally:
            writer.stop()
        attempts = writer.attempts()
        measurement = measure(attempts, fault_at, self.options.blocked_after)
        notes: list[str] = []
        if answer is not None and not answer.accepted:
            return RunResult(index, self.options.fault, old.name, old.timeline, measurement=measurement,
                             api=answer, error=describe_refusal(self.options.fault, answer))
        if not measurement.recovered:
            notes.append(f"writes did not come back within {self.options.fault_timeout:.0f} s")
        self.progress(Progress(index, repeat, "checking acknowledged writes on the new primary"))
        missing, new_timeline, new_address = self._verify(run_id, acknowledged_ids(attempts))
        new_primary = _member_at(members, new_address) or watcher.new_name
        healed_after, rejoined = self._heal(old.name, members, notes, index, repeat)
        return RunResult(
            index, self.options.fault, old.name, old.timeline, new_primary, new_timeline, measurement,
            primary_answers_after=(watcher.new_at - fault_at) if watcher.new_at is not None else None,
            api=answer, missing=missing, healed_after=healed_after, old_primary_rejoined=rejoined,
            error=None if measurement.recovered else notes[-1], notes=tuple(notes))

    def _preflight(self, old: MemberInfo, members: Sequence[MemberInfo], health: Health) -> LocalTargets | None:
        fault = self.options.fault
        if fault.kills:
            return find_local_targets(old, need_agent=fault is Fault.HOST_KILL)
        if fault is Fault.FAILOVER and self.options.candidate is None:
            streaming = [s.name for s in health.statuses if s.is_streaming_replica]
            if not streaming:
                raise DrillError("no streaming replica to fail over to")
        if self.options.candidate is not None and self.options.candidate not in {m.name for m in members}:
            raise DrillError(f"candidate {self.options.candidate!r} is not a member of the cluster")
        return None

    def _warm_up(self, writer: Writer, index: int, repeat: int) -> None:
        started = time.monotonic()
        while True:
            ok, failed, last = writer.counts()
            elapsed = time.monotonic() - started
            self.progress(Progress(index, repeat, "warming up the write workload", acknowledged=ok, failed=failed))
            if ok and elapsed >= WARMUP_SECONDS and last is not None and last.ok:
                return
            if elapsed > WARMUP_TIMEOUT:
                reason = last.error if last is not None and last.error else "no write attempt finished"
                raise DrillError(f"cannot write to the cluster before the fault: {reason}")
            time.sleep(0.1)

    def _inject_and_follow(self, old: MemberInfo, targets: LocalTargets | None, writer: Writer,
                           watcher: PrimaryWatcher, index: int, repeat: int) -> tuple[float, ApiAnswer | None]:
        answers: list[ApiAnswer] = []
        fault_at = time.monotonic()
        api_thread = self._inject(old, targets, answers)
        while True:
            now = time.monotonic()
            attempts = writer.attempts()
            m = measure(attempts, fault_at, self.options.blocked_after)
            ok, failed, _ = writer.counts()
            outage = _open_outage(m, fault_at, now)
            self.progress(Progress(index, repeat, f"{self.options.fault.value} injected", now - fault_at, ok, failed,
                                   outage, watcher.current))
            if self._finished(now, fault_at, m, watcher, answers) or now - fault_at > self.options.fault_timeout:
                break
            time.sleep(0.1)
        if api_thread is not None:
            api_thread.join(max(0.0, self.options.api_timeout - (time.monotonic() - fault_at)))
        return fault_at, (answers[0] if answers else None)

    def _inject(self, old: MemberInfo, targets: LocalTargets | None,
                answers: list[ApiAnswer]) -> threading.Thread | None:
        fault = self.options.fault
        if fault is Fault.POSTMASTER_KILL and targets is not None:
            kill_postmaster(targets)
            return None
        if fault is Fault.HOST_KILL and targets is not None:
            kill_host(targets)
            return None
        # The API may answer only once the switchover is complete: ask from a thread, follow meanwhile.
        call: Callable[[], ApiAnswer]
        if fault is Fault.SWITCHOVER:
            call = lambda: request_switchover(old, self.options.candidate, self.rest,  # noqa: E731
                                              self.options.api_timeout)
        else:
            candidate = self.options.candidate or self._failover_candidate(old)
            call = lambda: request_failover(old, candidate, self.rest, self.options.api_timeout)  # noqa: E731
        thread = threading.Thread(target=lambda: answers.append(call()), name="drill-api", daemon=True)
        thread.start()
        return thread

    def _failover_candidate(self, old: MemberInfo) -> str:
        health = cluster_health([m for m in self.members.values() if m.name != old.name], self.rest)
        streaming = sorted(s.name for s in health.statuses if s.is_streaming_replica)
        if not streaming:
            raise DrillError("no streaming replica to fail over to")
        return streaming[0]

    def _finished(self, now: float, fault_at: float, m: Measurement, watcher: PrimaryWatcher,
                  answers: list[ApiAnswer]) -> bool:
        if answers and not answers[0].accepted:
            return now - fault_at >= REFUSED_GRACE
        if not m.recovered or (not m.windows and watcher.new_at is None):
            return False  # still in an outage, or nothing visible has happened yet
        marks = [fault_at]
        if m.windows:
            marks.append(fault_at + m.windows[-1].end)
        if watcher.new_at is not None:
            marks.append(watcher.new_at)
        return now - max(marks) >= self.options.settle

    def _verify(self, run_id: str, acknowledged: list[int]) -> tuple[tuple[int, ...] | None, int | None, str | None]:
        """Missing acknowledged ids, the timeline and the address of the primary the DSN reaches now."""
        deadline = time.monotonic() + VERIFY_TIMEOUT
        while True:
            try:
                present = stored_ids(self.dsn, run_id)
                timeline = current_timeline(self.dsn)
                address = server_address(self.dsn)
                return tuple(missing_ids(acknowledged, present)), timeline, address
            except psycopg.Error:
                if time.monotonic() > deadline:
                    return None, None, None
                time.sleep(0.5)

    # -- healing -------------------------------------------------------------------------------------

    def _heal(self, old_name: str, members: Sequence[MemberInfo],
              notes: list[str], index: int, repeat: int) -> tuple[float | None, bool | None]:
        """Bring the cluster back (restart a killed agent if we know how) and wait until it has healed.

        Returns (seconds it took, whether the old primary is back); without a way to restart a
        killed agent, only the other members are awaited and the user is told what to do.
        """
        started = time.monotonic()
        awaited = list(members)
        if self.options.fault is Fault.HOST_KILL:
            restarted = self.restarter is not None and self.restarter(old_name)
            if not restarted:
                notes.append(f"the agent of {old_name} was killed: restart it, its PostgreSQL rejoins with it")
                awaited = [m for m in members if m.name != old_name]
        waiting_from = time.monotonic()
        try:
            health, took = self.wait_healed(awaited, self.options.heal_timeout, index, repeat)
        except DrillError as exc:
            notes.append(str(exc))
            return None, False
        status = next((s for s in health.statuses if s.name == old_name), None)
        return waiting_from - started + took, (status.reachable if status is not None else None)

    def wait_healed(self, members: Sequence[MemberInfo], timeout: float, index: int = 1,
                    repeat: int = 1) -> tuple[Health, float]:
        """Wait until one primary runs and every other member streams, steadily for HEALED_FOR seconds
        (a member in a restart loop passes a single look now and then); DrillError past `timeout`."""
        started = time.monotonic()
        healed_since: float | None = None
        while True:
            health = cluster_health(members, self.rest)
            now = time.monotonic()
            if not health.healed:
                healed_since = None
            elif healed_since is None:
                healed_since = now
            if healed_since is not None and now - healed_since >= HEALED_FOR:
                return health, healed_since - started
            self.progress(Progress(index, repeat, "waiting for the cluster to heal", detail=health.describe(),
                                   primary=health.primary.name if health.primary else None))
            if now - started > timeout:
                raise DrillError(f"the cluster did not heal within {timeout:.0f} s: {health.describe()}")
            time.sleep(0.25)


def _open_outage(m: Measurement, fault_at: float, now: float) -> float | None:
    if m.recovered or not m.windows:
        return None
    return now - (fault_at + m.windows[-1].start)


def _member_at(members: Sequence[MemberInfo], address: str | None) -> str | None:
    if address is None:
        return None
    for member in members:
        pg = member.pg_address
        if pg is not None and f"{pg[0]}:{pg[1]}" == address:
            return member.name
    return None

