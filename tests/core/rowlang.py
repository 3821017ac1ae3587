"""The small row language of the core's case tables and transcripts (see tests/core/cases/README.txt).

A situation is written as four short phrases, one per aspect, each a first word and/or `key=value`
tokens separated by spaces; anything left out keeps the healthy default of `tests.core.builders`:

    pg      primary lsn=100 tl=1 | replica lsn=90 following=n1 streaming=no | stopped state=in-production
            checkpoint=300 | starting | empty | missing | invalid | inaccessible
            (+ sysid=other|none, slots=a,b, datadir=inaccessible: what the data directory probe said,
            pending-restart, version=150001)
    dcs     down | leader=n1|none init=<sysid>|other|empty|none members=n1,n2:stopped,n3:clonefrom:nostream
            history=1@400,2@900 optime=120 retain=n4 failover=n1:n2@+60 paused
    node    me=n2 lease=20 start-deadline=-1 start-failures=2 rewind-failed seen=n4@-2000 was-paused
            bootstrap-failures=1 clone-failures=2 retry=+5 failure='text'
            last=renew:ok@-1 task=promote shutdown request=restart:replica:pending:version=150001|reinit:from-leader
            wall=+30, any HaSettings field (use_pg_rewind, maximum_lag_on_failover=10, ...) and
            any tag (nofailover, failover_priority=2, replicatefrom=n3)
    peers   n2=120 n3=down n1=primary n2=100,prio=2 n2=100,nofailover n2=100,watchdog-failed

Expectations: `-> action field=value ...` (fields compared as text: none, yes/no, a,b for tuples, - for an
empty tuple) and `WHY_NAME fact=value ...`. Times are relative to builders.NOW.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from pgwarden.core.actions import Action, Decision
from pgwarden.core.classify import slot_name
from pgwarden.core.reasons import Why
from pgwarden.core.render import render
from pgwarden.core.slots import failover_capable
from pgwarden.core.snapshot import (
    FailsafePingSeen,
    HaSettings,
    Memory,
    OperatorRequest,
    Outcome,
    PeerStatus,
    PermanentSlot,
    ReinitRequested,
    RestartRequested,
    SlotMatcher,
    Snapshot,
    StandbyCluster,
    TaskInFlight,
    TaskKind,
    WatchdogMode,
    WatchdogSettings,
)
from pgwarden.model import (
    LSN,
    ClusterView,
    DataDirState,
    FailoverRequest,
    LocalPg,
    LogicalSlot,
    Member,
    PgState,
    Role,
    Tags,
)
from tests.core import builders as b

ACTION_ALIASES = {
    "wait": "wait",
    "bootstrap": "bootstrap",
    "clone": "clone",
    "acquire": "acquire leader",
    "renew": "renew leader",
    "promote": "promote",
    "demote": "demote",
    "start": "start",
    "follow": "follow",
    "rewind": "rewind",
    "rewind-no-space": "rewind waiting for disk space",
    "rewind-unreachable": "rewind source unreachable",
    "remove": "remove data directory",
    "release": "release leader",
    "shutdown": "shutdown",
    "restart": "restart",
    "reinit": "reinitialize",
    "slots": "ensure slots",
    "copy": "copy logical slots",
    "pre_promote": "pre_promote",
    "keepalive": "keepalive",
    "race": "initialize race",
    "ping": "failsafe ping",
    "watchdog": "watchdog",
}
KIND_TO_ALIAS = {kind: alias for alias, kind in ACTION_ALIASES.items()}
TASK_ALIASES = {"remove": TaskKind.REMOVE_DATA} | {k.name.lower(): k for k in TaskKind}
_SETTING_FIELDS = {f.name for f in fields(HaSettings)} - {"tags", "watchdog", "permanent_slots", "ignore_slots",
                                                            "standby_cluster"}
_TAG_FIELDS = {f.name for f in fields(Tags)} - {"custom"}


class RowError(ValueError):
    """A row of a case file or transcript that the row language does not understand."""


# ---------------------------------------------------------------------------------------------------
# Tokens


def _tokens(text: str) -> tuple[str | None, dict[str, str]]:
    """'replica lsn=90 streaming=no' -> ('replica', {'lsn': '90', 'streaming': 'no'}). Bare words after the
    first become flags with the value 'yes'. '-' or blank means 'all defaults'."""
    words = [] if text.strip() in ("", "-") else shlex.split(text)
    head: str | None = None
    kv: dict[str, str] = {}
    for i, word in enumerate(words):
        key, sep, value = word.partition("=")
        if not sep and i == 0:
            head = word
        else:
            kv[key.replace("-", "_")] = value if sep else "yes"
    return head, kv


def _int(text: str) -> int:
    return int(text, 0)


def _bool(text: str) -> bool:
    if text in ("yes", "true", "on"):
        return True
    if text in ("no", "false", "off"):
        return False
    raise RowError(f"not a yes/no value: {text!r}")


def _sysid(text: str) -> str | None:
    return {"other": b.OTHER_SYSID, "none": None, "empty": ""}.get(text, text)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x and x != "-")


def _lsn_or_none(text: str) -> LSN | None:
    return None if text == "none" else _int(text)


def _positions(text: str) -> tuple[tuple[str, Any], ...]:
    """'n2@90,barman' -> (('n2', 90), ('barman', None)): slots and their positions (none if not given)."""
    items = (item.partition("@") for item in _names(text))
    return tuple((name, _lsn_or_none(lsn) if sep else None) for name, sep, lsn in items)


def _permanent(text: str) -> tuple[PermanentSlot, ...]:
    """'barman,old:standby,cdc:logical' -> permanent slots (physical unless ':logical'; ':primary' or
    ':standby' set cluster_type)."""
    out = []
    for item in _names(text):
        name, *attrs = item.split(":")
        kind = "logical" if "logical" in attrs else "physical"
        cluster = next((a for a in attrs if a in ("primary", "standby")), None)
        db, plugin = ("app", "pgoutput") if kind == "logical" else (None, None)
        out.append(PermanentSlot(name, kind, db, plugin, cluster))
    return tuple(sorted(out, key=lambda p: p.name))


def _logical(text: str) -> tuple[LogicalSlot, ...]:
    """'cdc@80,old:test_decoding' -> logical slots present (database app, plugin pgoutput unless given after
    ':'; confirmed_flush after '@', none if not given; restart_lsn 10 below it)."""
    out = []
    for item in _names(text):
        spec, _, lsn = item.partition("@")
        name, _, plugin = spec.partition(":")
        flush = _lsn_or_none(lsn) if lsn else None
        out.append(LogicalSlot(name, "app", plugin or "pgoutput", flush, None if flush is None else flush - 10, 700))
    return tuple(sorted(out, key=lambda slot: slot.name))


def _matchers(text: str) -> tuple[SlotMatcher, ...]:
    """'foo,type:physical+name:bar' -> ignore_slots matchers (a bare item is a name)."""
    out = []
    for item in _names(text):
        if ":" not in item:
            out.append(SlotMatcher(name=item))
            continue
        attrs = dict(part.partition(":")[::2] for part in item.split("+"))
        out.append(SlotMatcher(**attrs))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# Aspects


def build_pg(text: str) -> LocalPg | None:
    """The `pg` phrase; None when it is blank (the snapshot builder then picks by role)."""
    head, kv = _tokens(text)
    if head is None and not kv:
        return None
    sysid = _sysid(kv.pop("sysid", b.SYSID))
    slot_lsns = _positions(kv.pop("slots", ""))
    slots = tuple(name for name, _ in slot_lsns)
    data_dir = kv.pop("datadir", None)
    pending_restart = _bool(kv.pop("pending_restart", "no"))
    version = kv.pop("version", None)
    forked = kv.pop("forked", None)
    tl = _int(kv.pop("tl", "1"))
    logical = _logical(kv.pop("logical", ""))
    wal_level = kv.pop("wal", "logical")
    if head == "primary":
        pg = b.pg_primary(lsn=_int(kv.pop("lsn", str(b.LSN0))), tl=tl, sysid=sysid, slots=slots)
    elif head == "replica":
        following = kv.pop("following", "n1")
        pg = b.pg_replica(lsn=_int(kv.pop("lsn", str(b.LSN0))), tl=tl, sysid=sysid, slots=slots,
                          following=None if following == "none" else following,
                          streaming=_bool(kv.pop("streaming", "yes")))
    elif head == "stopped":
        signal = kv.pop("signal", None)
        pg = b.pg_stopped(state=kv.pop("state", "shut-down").replace("-", " "), tl=tl, sysid=sysid,
                          checkpoint=_lsn_or_none(kv.pop("checkpoint", str(b.LSN0))),
                          standby_signal=None if signal is None else _bool(signal))
    elif head == "starting":
        following = kv.pop("following", "none")
        pg = replace(b.pg_starting(tl=tl, sysid=sysid), following=None if following == "none" else following,
                     standby_signal=_bool(kv.pop("signal", "no")))
    elif head in ("empty", "missing", "invalid", "inaccessible"):
        pg = b.pg_empty(DataDirState(head))
    else:
        raise RowError(f"unknown pg shape {head!r}")
    _no_leftovers("pg", kv)
    if pending_restart:
        pg = replace(pg, pending_restart=True)
    if version is not None:
        pg = replace(pg, server_version=_int(version))
    if forked is not None:
        pg = replace(pg, forked_timeline=_int(forked))
    if slots:
        pg = replace(pg, slot_lsns=tuple(sorted(slot_lsns)))
    if head in ("primary", "replica"):
        pg = replace(pg, logical_slots=logical, wal_level=wal_level)
    return pg if data_dir is None else replace(pg, data_dir=DataDirState(data_dir))


def _member(spec: str, leader: str | None, timeline: int) -> Member:
    name, *attrs = spec.split(":")
    state: str = PgState.RUNNING
    tags: dict[str, Any] = {}
    role = Role.PRIMARY if name == leader else Role.REPLICA
    tl = timeline
    ready: bool | None = None
    for attr in attrs:
        key, _, value = attr.partition("=")
        if key == "stopped":
            state = PgState.STOPPED
        elif key == "starting":
            state = PgState.STARTING
        elif key == "tl":
            tl = _int(value)
        elif key in ("clonefrom", "nostream", "nofailover"):
            tags[key] = True
        elif key in ("ready", "notready"):
            ready = key == "ready"
        elif key == "replicatefrom":
            tags[key] = value
        elif key == "failover_priority":
            tags[key] = _int(value)
        else:
            raise RowError(f"unknown member attribute {attr!r} in {spec!r}")
    return replace(b.member(name, role=role, state=state, tl=tl, tags=Tags(**tags)), logical_slots_ready=ready)


def build_dcs(text: str) -> ClusterView | None:
    """The `dcs` phrase; 'down' gives None (the DCS could not be read)."""
    head, kv = _tokens(text)
    if head == "down":
        return None
    if head == "paused":
        head, kv["paused"] = None, "yes"
    if head is not None:
        raise RowError(f"dcs phrase starts with {head!r}; expected 'down' or key=value tokens")
    leader_text = kv.pop("leader", "n1")
    leader = None if leader_text == "none" else leader_text
    init = kv.pop("init", b.SYSID)
    rows = (h.partition("@") for h in _names(kv.pop("history", "")))
    history = tuple((_int(tl), _int(lsn)) for tl, _, lsn in rows)
    timeline = max((tl for tl, _ in history), default=0) + 1
    member_specs = _names(kv.pop("members", ",".join(b.NAMES)))
    members = [_member(spec, leader, timeline) for spec in member_specs]
    optime = kv.pop("optime", None)
    failover = kv.pop("failover", None)
    failsafe = kv.pop("failsafe", None)
    published = _positions(kv.pop("published", ""))
    view = b.cluster(leader=leader, members=members, initialize=None if init == "none" else _sysid(init),
                     history=history, optime=None if optime is None else _int(optime),
                     retain_slots=_names(kv.pop("retain", "")), paused=_bool(kv.pop("paused", "no")),
                     failover=None if failover is None else parse_failover(failover),
                     failsafe=None if failsafe is None else _names(failsafe))
    _no_leftovers("dcs", kv)
    if published:
        view = replace(view, status=replace(view.status, slots=dict(published)))
    return view


def parse_failover(text: str) -> FailoverRequest:
    """'n1:n2' (switchover n1 -> n2), 'n1:' (switchover to any healthy member), ':n2' (manual failover
    to n2), then optionally '@+60' / '@-60' (scheduled that many seconds from builders.WALL) or '@<ISO text>'
    (scheduled_at verbatim). The key's revision is builders.FAILOVER_REVISION."""
    names, at, when = text.partition("@")
    leader, sep, candidate = names.partition(":")
    if not sep:
        raise RowError(f"failover {text!r}: expected leader:candidate (either may be empty)")
    scheduled: str | None = None
    if at:
        scheduled = b.wall_iso(float(when)) if when[:1] in ("+", "-") else when
    return b.failover_key(leader or None, candidate or None, scheduled_at=scheduled)


def parse_request(text: str) -> OperatorRequest:
    """'restart' with ':'-separated conditions (a role: primary|replica|master|leader|any, 'pending' for
    restart_pending, 'version=N' for postgres_version), or 'reinit' with an optional ':from-leader'."""
    kind, *opts = text.split(":")
    if kind == "reinit":
        if opts not in ([], ["from-leader"]):
            raise RowError(f"request {text!r}: reinit takes only ':from-leader'")
        return ReinitRequested(from_leader=bool(opts))
    if kind != "restart":
        raise RowError(f"unknown request {text!r}; expected restart[:...] or reinit[:from-leader]")
    role: str | None = None
    pending, version = False, None
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key == "pending" and not sep:
            pending = True
        elif key == "version" and sep:
            version = _int(value)
        elif not sep:
            role = key
        else:
            raise RowError(f"unknown restart condition {opt!r}")
    return RestartRequested(role=role, postgres_version=version, restart_pending=pending)


def build_peers(text: str) -> tuple[PeerStatus, ...]:
    """The `peers` phrase: name=lsn|down|primary, then ',option' (prio=N nofailover watchdog-failed
    failsafe-active tl=N)."""
    _, kv = _tokens(text)
    peers = []
    for name, spec in kv.items():
        first, *opts = spec.split(",")
        options: dict[str, Any] = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if key == "prio":
                options["priority"] = _int(value)
            elif key == "tl":
                options["tl"] = _int(value)
            elif key in ("nofailover", "watchdog-failed", "failsafe-active") and not sep:
                options[key.replace("-", "_")] = True
            else:
                raise RowError(f"unknown peer option {opt!r}")
        if first == "down":
            peers.append(b.peer(name, reachable=False))
        elif first == "primary":
            peers.append(b.peer(name, primary=True, **options))
        else:
            peers.append(b.peer(name, lsn=_lsn_or_none(first), **options))
    return tuple(peers)


@dataclass
class NodeSpec:
    """The `node` phrase: who I am, my settings and tags, what I remember and how the last action went."""

    me: str = "n1"
    settings: HaSettings = field(default_factory=HaSettings)
    memory: Memory | None = None
    last: tuple[Outcome, ...] = ()
    task: TaskInFlight | None = None
    shutting_down: bool = False
    request: OperatorRequest | None = None
    wall: float = b.WALL
    failsafe_ping: FailsafePingSeen | None = None
    watchdog_failed: bool = False


def build_node(text: str, now: float = b.NOW) -> NodeSpec:
    head, kv = _tokens(text)
    if head is not None:
        kv[head.replace("-", "_")] = "yes"
    spec = NodeSpec(me=kv.pop("me", "n1"), shutting_down=_bool(kv.pop("shutdown", "no")))
    mem_args: dict[str, Any] = {}
    if "lease" in kv:
        lease = kv.pop("lease")
        mem_args["lease_in"] = None if lease == "none" else float(lease)
    if "start_deadline" in kv:
        mem_args["start_deadline_in"] = float(kv.pop("start_deadline"))
    if "start_failures" in kv:
        mem_args["start_failures"] = _int(kv.pop("start_failures"))
    if "rewind_failed" in kv:
        mem_args["rewind_failed"] = _bool(kv.pop("rewind_failed"))
    if "was_paused" in kv:
        mem_args["paused_when_last_seen"] = _bool(kv.pop("was_paused"))
    for key in ("bootstrap_failures", "clone_failures"):
        if key in kv:
            mem_args[key] = _int(kv.pop(key))
    if "retry" in kv:
        mem_args["retry_in"] = float(kv.pop("retry"))
    if "failure" in kv:
        mem_args["last_failure"] = kv.pop("failure")
    if "failsafe_members" in kv:
        mem_args["failsafe_members"] = _names(kv.pop("failsafe_members"))
    if "failsafe_active" in kv:
        mem_args["failsafe_active"] = _bool(kv.pop("failsafe_active"))
    if "seen" in kv:
        seen = (item.partition("@") for item in _names(kv.pop("seen")))
        mem_args["slots_seen"] = tuple((name, float(rel)) for name, _, rel in seen)
    if "managed" in kv:
        mem_args["permanent_slots"] = tuple(sorted(_names(kv.pop("managed"))))
    copied = tuple(sorted(tuple(item.split("@", 1)) for item in _names(kv.pop("copied", ""))))
    copy_retry = kv.pop("copy_retry", None)
    if mem_args or copied or copy_retry is not None:
        spec.memory = b.memory(now=now, **mem_args)
        spec.memory = replace(spec.memory, logical_copies=copied,  # type: ignore[arg-type]
                              slot_copy_retry_at=None if copy_retry is None else now + float(copy_retry))
    if "last" in kv:
        spec.last = tuple(parse_outcome(item, now) for item in _names(kv.pop("last")))
    if "task" in kv:
        spec.task = b.task(TASK_ALIASES[kv.pop("task")], now=now)
    if "request" in kv:
        spec.request = parse_request(kv.pop("request"))
    if "wall" in kv:
        spec.wall = b.WALL + float(kv.pop("wall"))
    if "ping" in kv:
        leader, _, rel = kv.pop("ping").partition("@")
        spec.failsafe_ping = FailsafePingSeen(leader, now + float(rel or "-1"))
    spec.watchdog_failed = _bool(kv.pop("watchdog_failed", "no"))
    watchdog = kv.pop("watchdog", None)
    permanent, ignore = _permanent(kv.pop("permanent", "")), _matchers(kv.pop("ignore", ""))
    spec.settings = replace(_settings(kv), permanent_slots=permanent, ignore_slots=ignore)
    if watchdog is not None:
        spec.settings = replace(spec.settings, watchdog=WatchdogSettings(WatchdogMode(watchdog)))
    if "standby" in kv:
        spec.settings = replace(spec.settings, standby_cluster=_standby(kv.pop("standby")))
    _no_leftovers("node", kv)
    return spec


def _standby(text: str) -> StandbyCluster:
    """'10.0.0.9:5433/dr' -> standby_cluster {host, port, primary_slot_name} (the slot optional)."""
    address, _, slot = text.partition("/")
    host, _, port = address.rpartition(":")
    return StandbyCluster(host=host, port=_int(port), primary_slot_name=slot or None)


def parse_outcome(text: str, now: float) -> Outcome:
    """'renew:ok@-1' -> Outcome('renew leader', ok=True, sent_at=now-1); '@' part optional (default -1)."""
    kind_ok, _, sent = text.partition("@")
    alias, _, result = kind_ok.partition(":")
    if result not in ("ok", "fail"):
        raise RowError(f"outcome {text!r}: expected kind:ok or kind:fail")
    return b.outcome(ACTION_ALIASES[alias], ok=result == "ok", sent_in=float(sent or "-1"), now=now)


def _settings(kv: dict[str, str]) -> HaSettings:
    defaults = HaSettings()
    values: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    for key in list(kv):
        if key in _SETTING_FIELDS:
            target, default = values, getattr(defaults, key)
        elif key in _TAG_FIELDS:
            target, default = tags, getattr(defaults.tags, key)
        else:
            continue
        raw = kv.pop(key)
        if isinstance(default, bool):
            target[key] = _bool(raw)
        elif isinstance(default, int):
            target[key] = _int(raw)
        else:
            target[key] = None if raw == "none" else raw
    return b.settings(tags=Tags(**tags), **values)


def _no_leftovers(aspect: str, kv: dict[str, str]) -> None:
    if kv:
        raise RowError(f"{aspect}: unknown key(s) {', '.join(sorted(kv))}")


def build_snapshot(pg: str, dcs: str, node: str, peers: str, now: float = b.NOW,
                   memory: Memory | None = None, last: tuple[Outcome, ...] = ()) -> Snapshot:
    """A snapshot from the four phrases; `memory` and `last` (if given) override the node phrase's."""
    spec = build_node(node, now)
    snap = b.snapshot(me=spec.me, pg=build_pg(pg), dcs=build_dcs(dcs), peers=build_peers(peers),
                      memory=memory or spec.memory, last=last or spec.last, now=now, settings=spec.settings,
                      task=spec.task, shutting_down=spec.shutting_down, wall=spec.wall, request=spec.request,
                      failsafe_ping=spec.failsafe_ping, watchdog_failed=spec.watchdog_failed)
    return snap if "slots=" in pg else _with_member_copies(snap)


def _with_member_copies(s: Snapshot) -> Snapshot:
    """The healthy default of a replica whose slots the row does not give: it holds the other members'
    slots (the copies a failover-capable replica keeps), without positions."""
    if not s.pg.is_replica or s.dcs is None or not failover_capable(s) or (
            s.dcs.leader is not None and s.dcs.leader.name == s.me):
        return s
    names = {slot_name(m.name) for m in s.dcs.members if m.name != s.me and not m.tags.nostream}
    return replace(s, pg=replace(s.pg, slots=tuple(sorted(names | set(s.pg.slots)))))


# ---------------------------------------------------------------------------------------------------
# Expectations and descriptions


def show(value: object) -> str:
    """A value as the row language writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return ",".join(f"{show(k)}@{show(v)}" for k, v in value)  # pairs: slot@lsn
        if value and all(isinstance(v, tuple) for v in value):
            return ",".join(":".join(show(x) for x in v) for v in value)  # triples: slot:database:plugin|lsn
        return ",".join(show(v) for v in value) or "-"
    return str(value)


def action_fields(action: Action) -> dict[str, str]:
    out = {f.name: show(getattr(action, f.name)) for f in fields(action) if f.name != "kind"}
    return out


QUIET_WHEN_DEFAULT = frozenset({"create_logical", "error", "advance_logical", "keep_slots"})
"""Fields of permanent logical slots, left out of a description while at their default: the transcripts
of clusters without logical slots read as they did before those existed."""


def describe_action(action: Action) -> str:
    """'demote mode=offline': the alias and every payload field."""
    quiet = {f.name for f in fields(action) if f.name in QUIET_WHEN_DEFAULT and getattr(action, f.name) == f.default}
    shown = {k: v for k, v in action_fields(action).items() if k not in quiet}
    parts = [KIND_TO_ALIAS[action.kind]] + [f"{k}={v}" for k, v in shown.items()]
    return " ".join(parts)


def describe_reason(decision: Decision) -> str:
    reason = decision.reason
    return " ".join([reason.why.name] + [f"{k}={v}" for k, v in reason.facts])


@dataclass(frozen=True)
class Expected:
    """What a row expects: an action (alias + some payload fields) and a reason (Why + some facts)."""

    action: str
    action_fields: tuple[tuple[str, str], ...]
    why: Why
    facts: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, action_text: str, why_text: str) -> Expected:
        action_text = action_text.strip()
        if not action_text.startswith("->"):
            raise RowError(f"expected action must start with '->': {action_text!r}")
        head, kv = _tokens(action_text[2:])
        if head not in ACTION_ALIASES:
            raise RowError(f"unknown action {head!r}; known: {', '.join(ACTION_ALIASES)}")
        why_head, facts = _tokens(why_text)
        if why_head is None or why_head not in Why.__members__:
            raise RowError(f"unknown Why {why_head!r}")
        return cls(head, tuple(kv.items()), Why[why_head], tuple(facts.items()))

    def mismatches(self, decision: Decision) -> list[str]:
        """Human-readable differences between this expectation and a decision (empty when it matches)."""
        problems = []
        action = decision.action
        if action.kind != ACTION_ALIASES[self.action]:
            problems.append(f"action {KIND_TO_ALIAS[action.kind]!r}, expected {self.action!r}")
        else:
            actual = action_fields(action)
            for key, want in self.action_fields:
                if key not in actual:
                    problems.append(f"action has no field {key!r} (fields: {', '.join(actual)})")
                elif actual[key] != want:
                    problems.append(f"action {key}={actual[key]}, expected {want}")
        if decision.reason.why is not self.why:
            problems.append(f"why {decision.reason.why.name}, expected {self.why.name}")
        for key, want in self.facts:
            if decision.reason.fact(key) != want:
                problems.append(f"fact {key}={decision.reason.fact(key)!r}, expected {want!r}")
        return problems


def explain(decision: Decision) -> str:
    return (f"{describe_action(decision.action)} | {describe_reason(decision)} | "
            f"log: {render(decision.reason)}")


# ---------------------------------------------------------------------------------------------------
# Case tables


@dataclass(frozen=True)
class Case:
    """One row of a case table."""

    name: str
    where: str  # file:line, for failure messages
    snapshot: Snapshot
    expected: Expected
    bug: str | None  # a known bug: the row is an expected (strict) failure


def load_table(path: Path) -> list[Case]:
    """Rows: name | pg | dcs | node | peers | -> action | WHY [| BUG: ...]. '#' starts a comment line."""
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path.name}:{number}"
        cols = [c.strip() for c in line.split("|")]
        if len(cols) not in (7, 8):
            raise RowError(f"{where}: expected 7 or 8 columns, got {len(cols)}")
        name, pg, dcs, node, peers, action, why = cols[:7]
        bug = cols[7] if len(cols) == 8 else None
        if bug is not None and not bug.startswith("BUG:"):
            raise RowError(f"{where}: the 8th column must start with 'BUG:'")
        try:
            snap = build_snapshot(pg, dcs, node, peers)
            expected = Expected.parse(action, why)
        except (RowError, KeyError, ValueError) as exc:
            raise RowError(f"{where}: {exc}") from exc
        cases.append(Case(name, where, snap, expected, bug))
    return cases
