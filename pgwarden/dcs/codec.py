"""Pure codecs between the DCS wire format (Patroni's keys and JSON) and `pgwarden.model` values.

Every backend stores the same text under the same keys, so decoding lives here once. Nothing here
does IO. The rule for reading: a value somebody else wrote must never crash us. A malformed member
becomes a `Member` in state `unknown` that keeps the text; a malformed `failover`, `sync`, `status`,
`history` or `failsafe` is treated as absent, and the decoder says why in a note (`DecodedCluster.notes`;
the DCS client logs each once), keeping the key's revision in `ClusterView.unreadable` so that it can
still be replaced or deleted. Numbers are checked for range (timelines 1..2**32-1, LSNs 0..2**64-1) and timelines
for plausibility against each other (`TIMELINE_RESERVE_MARGIN`): garbage must never start a cascade.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pgwarden.model import (
    FAILSAFE_MAX_ENTRIES,
    FAILSAFE_MAX_NAME,
    FAILSAFE_MAX_URL,
    LSN,
    MAX_LSN,
    MAX_TIMELINE,
    TIMELINE_RESERVE_MARGIN,
    ClusterStatus,
    ClusterView,
    FailoverRequest,
    HistoryEntry,
    LeaderKey,
    Member,
    PgState,
    Role,
    RouterState,
    SyncState,
    Tags,
    Versioned,
    is_plain_text,
    lsn_from_text,
)

# Key names relative to `/<namespace>/<scope>/`.
INITIALIZE = "initialize"
CONFIG = "config"
LEADER = "leader"
MEMBERS = "members/"
STATUS = "status"
FAILOVER = "failover"
SYNC = "sync"
HISTORY = "history"
FAILSAFE = "failsafe"
LEGACY_OPTIME = "optime/leader"

UNPARSED_KEY = "_unparsed"
"""Key in `Member.raw` holding the original text of a member value that could not be decoded."""

KeyValues = Mapping[str, tuple[str, int]]
"""Key relative to the scope prefix (e.g. "members/n1") -> (value text, mod_revision)."""


_T = TypeVar("_T")


class MalformedValue(ValueError):
    """A DCS value that does not have the shape its key requires."""


def _dumps(value: Any) -> str:
    # Compact and stable, so that "unchanged" can be detected by comparing strings.
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise MalformedValue(f"not JSON: {exc}") from exc


def _object(text: str) -> Mapping[str, Any]:
    value = _loads(text)
    if not isinstance(value, dict):
        raise MalformedValue(f"expected a JSON object, got {type(value).__name__}")
    return value


def _optional_str(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MalformedValue(f"{field}: expected a string, got {_short(value)}")


def _lsn(value: Any, field: str) -> LSN:
    """Patroni writes LSNs as integers; accept the textual 'X/Y' form too. 0 to 2**64 - 1."""
    if isinstance(value, bool):
        raise MalformedValue(f"{field}: expected an LSN, got {_short(value)}")
    if isinstance(value, int) and 0 <= value <= MAX_LSN:
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text and _LSN_TEXT.fullmatch(text):
        lsn = int(text) if text.isdigit() else lsn_from_text(text)
        if lsn <= MAX_LSN:
            return lsn
    raise MalformedValue(f"{field}: expected an LSN, got {_short(value)}")


_LSN_TEXT = re.compile(r"[0-9]{1,20}|[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def _short(value: Any) -> str:
    """`repr` of a value from the DCS, cut short: a note must not carry megabytes of garbage."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _timeline(value: Any, field: str) -> int:
    """A PostgreSQL timeline: 1 to 2**32 - 1."""
    timeline = _int(value, field)
    if not 1 <= timeline <= MAX_TIMELINE:
        raise MalformedValue(f"{field}: not a timeline: {_short(value)}")
    return timeline


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise MalformedValue(f"{field}: expected an integer, got {_short(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= 40:
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise MalformedValue(f"{field}: expected an integer, got {_short(value)}")


_TRUE_WORDS = frozenset({"true", "yes", "on", "1", "y", "t"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0", "n", "f", ""})


def _bool(value: Any, field: str) -> bool:
    """Tags come from hand-written YAML, so 'true'/'on'/1 all count."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise MalformedValue(f"{field}: expected a boolean, got {_short(value)}")


# -- tags --------------------------------------------------------------------------------------------

_BOOL_TAGS = ("nofailover", "clonefrom", "noloadbalance", "nosync", "nostream")
_INT_TAGS = ("failover_priority", "sync_priority")


def tags_from_json(value: Any) -> Tags:
    """Member `tags` object -> Tags. Unknown tags land in `custom`.

    A boolean tag is read the way YAML authors mean it ("false"/"no"/"off"/0 are false, any other
    value is true), so an odd `nofailover: "maybe"` errs on the side of not promoting. An unreadable
    priority keeps its default.
    """
    if not isinstance(value, Mapping):
        return Tags()
    known: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, item in value.items():
        if key in _BOOL_TAGS:
            known[key] = _truthy(item)
        elif key in _INT_TAGS:
            try:
                known[key] = _int(item, key)
            except MalformedValue:
                continue
        elif key == "replicatefrom":
            known[key] = item if isinstance(item, str) and item else None
        else:
            custom[key] = item
    return Tags(custom=custom, **known)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


# -- members -----------------------------------------------------------------------------------------


def member_from_json(name: str, text: str) -> Member:
    """Decode `members/<name>`. Never raises: unreadable values give a Member in state `unknown`."""
    try:
        data = _loads(text)
    except MalformedValue:
        return _legacy_member(name, text) or _unparsed_member(name, text)
    if not isinstance(data, dict):
        return _unparsed_member(name, text)
    return member_from_mapping(name, data)


def _unparsed_member(name: str, text: str) -> Member:
    return Member(name=name, state=PgState.UNKNOWN, raw={UNPARSED_KEY: text})


def _legacy_member(name: str, text: str) -> Member | None:
    """Very old Patroni stored `postgres://host:port/db?application_name=<api_url>` as the member value."""
    try:
        parts = urlsplit(text.strip())
    except ValueError:
        return None
    if parts.scheme not in ("postgres", "postgresql") or not parts.netloc:
        return None
    api_url = parse_qs(parts.query).get("application_name", [""])[0]
    conn_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return Member(name=name, conn_url=conn_url, api_url=api_url, raw={"conn_url": conn_url, "api_url": api_url})


def member_from_mapping(name: str, data: Mapping[str, Any]) -> Member:
    """Decode a member's JSON object once it is parsed (`member_from_json` after the JSON text layer; the
    simulator reads the agent's `member_json` mapping back with it). Field by field, so one bad field costs
    only that field; never raises."""
    fields: dict[str, Any] = {}
    for field, parse in _MEMBER_FIELDS.items():
        if data.get(field) is None:
            continue
        try:
            fields[field] = parse(data[field], field)
        except MalformedValue:
            continue
    if "tags" in data:
        fields["tags"] = tags_from_json(data["tags"])
    role = fields.get("role")
    if role == "master":  # Patroni < 4 published "master"; same meaning
        fields["role"] = Role.PRIMARY.value
    return Member(name=name, raw=dict(data), **fields)


def _str(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    raise MalformedValue(f"{field}: expected a string, got {_short(value)}")


_MEMBER_FIELDS: Mapping[str, Any] = {
    "conn_url": _str,
    "api_url": _str,
    "state": _str,
    "role": _str,
    "version": _str,
    "timeline": _timeline,
    "xlog_location": _lsn,
    "receive_lsn": _lsn,
    "replay_lsn": _lsn,
    "replication_state": _str,
    "pending_restart": _bool,
    "checkpoint_after_promote": _bool,
    "logical_slots_ready": _bool,
}


def member_to_dict(member: Member) -> dict[str, Any]:
    """The member JSON object Patroni publishes: `raw` (unknown fields survive), overlaid with our fields."""
    out: dict[str, Any] = {k: v for k, v in member.raw.items() if k != UNPARSED_KEY}
    out.update(conn_url=member.conn_url, api_url=member.api_url, state=member.state, role=member.role)
    if member.version:
        out["version"] = member.version
    optional = {
        "timeline": member.timeline,
        "xlog_location": member.xlog_location,
        "receive_lsn": member.receive_lsn,
        "replay_lsn": member.replay_lsn,
        "replication_state": member.replication_state,
        "checkpoint_after_promote": member.checkpoint_after_promote,
        "logical_slots_ready": member.logical_slots_ready,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if member.pending_restart:
        out["pending_restart"] = True
    tags = member.tags.as_json()
    if tags:
        out["tags"] = tags
    else:
        out.pop("tags", None)
    return out


def member_to_json(fields: Mapping[str, Any] | Member) -> str:
    """Member JSON text for `members/<name>`: from a ready mapping (the agent's) or a Member."""
    return _dumps(member_to_dict(fields) if isinstance(fields, Member) else dict(fields))


# -- leader, initialize, config ------------------------------------------------------------------------


def leader_from_text(text: str, revision: int) -> LeaderKey:
    """`leader` holds the plain member name."""
    return LeaderKey(name=text.strip(), revision=revision)


def config_from_json(text: str, revision: int) -> Versioned:
    """`config` must be a JSON object; raises MalformedValue otherwise."""
    return Versioned(value=_object(text), revision=revision)


def config_to_json(value: Mapping[str, Any]) -> str:
    return _dumps(dict(value))


# -- status --------------------------------------------------------------------------------------------


def status_from_json(text: str) -> ClusterStatus:
    """`{"optime": int, "slots": {name: int}, "retain_slots": [name], "timeline": int}`; raises MalformedValue."""
    data = _object(text)
    optime = data.get("optime")
    slots = {} if data.get("slots") is None else data["slots"]
    retain = [] if data.get("retain_slots") is None else data["retain_slots"]
    if not isinstance(slots, dict):
        raise MalformedValue(f"slots: expected an object, got {_short(slots)}")
    if not isinstance(retain, list) or not all(isinstance(s, str) for s in retain):
        raise MalformedValue(f"retain_slots: expected a list of names, got {_short(retain)}")
    timeline = data.get("timeline")  # ours; a value we cannot use is ignored, not fatal
    return ClusterStatus(
        optime=None if optime is None else _lsn(optime, "optime"),
        slots={str(name): _lsn(lsn, f"slots.{name}") for name, lsn in slots.items()},
        retain_slots=tuple(retain),
        timeline=timeline if isinstance(timeline, int) and not isinstance(timeline, bool)
        and 0 < timeline <= MAX_TIMELINE else None,
    )


def status_to_json(status: ClusterStatus) -> str:
    data: dict[str, Any] = {"slots": dict(status.slots), "retain_slots": list(status.retain_slots)}
    if status.optime is not None:
        data["optime"] = status.optime
    if status.timeline is not None:
        data["timeline"] = status.timeline
    return _dumps(data)


# -- failover ----------------------------------------------------------------------------------------


def failover_from_json(text: str, revision: int) -> FailoverRequest:
    """JSON `{"leader", "member", "scheduled_at"}` or legacy `"leader:member"`; raises MalformedValue."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return _legacy_failover(stripped, revision)
    data = _object(stripped)
    return FailoverRequest(
        leader=_optional_str(data.get("leader"), "leader") or None,
        member=_optional_str(data.get("member"), "member") or None,
        scheduled_at=_optional_str(data.get("scheduled_at"), "scheduled_at") or None,
        revision=revision,
    )


def _legacy_failover(text: str, revision: int) -> FailoverRequest:
    leader, sep, member = text.partition(":")
    if not sep:
        raise MalformedValue(f"failover: neither JSON nor 'leader:member': {_short(text)}")
    return FailoverRequest(leader=leader.strip() or None, member=member.strip() or None, revision=revision)


def failover_to_json(value: Mapping[str, Any]) -> str:
    """Only the fields that are set, as Patroni writes them."""
    return _dumps({k: v for k, v in value.items() if v is not None})


# -- sync --------------------------------------------------------------------------------------------


def sync_from_json(text: str, revision: int) -> SyncState:
    """`{"leader", "sync_standby": "a,b" | null, "quorum": int}`; raises MalformedValue.

    `quorum` is kept as written, with Patroni's meaning everywhere in pgwarden: how many voters other
    than a promoting candidate it must see (`voters - k` for `ANY k`; 0 in `on` mode).
    """
    data = _object(text)
    standby = data.get("sync_standby")
    if standby is None:
        names: tuple[str, ...] = ()
    elif isinstance(standby, str):
        names = tuple(n.strip() for n in standby.split(",") if n.strip())
    elif isinstance(standby, list) and all(isinstance(n, str) for n in standby):
        names = tuple(standby)
    else:
        raise MalformedValue(f"sync_standby: expected 'a,b' or null, got {_short(standby)}")
    quorum = data.get("quorum")
    return SyncState(
        leader=_optional_str(data.get("leader"), "leader") or None,
        sync_standby=names,
        quorum=0 if quorum is None else _int(quorum, "quorum"),
        revision=revision,
    )


def sync_to_json(sync: SyncState) -> str:
    return _dumps(
        {
            "leader": sync.leader,
            "sync_standby": ",".join(sync.sync_standby) if sync.sync_standby else None,
            "quorum": sync.quorum,
        }
    )


# -- history -----------------------------------------------------------------------------------------


def history_from_json(text: str) -> tuple[HistoryEntry, ...]:
    """List of `[timeline, lsn, reason, timestamp?, new_leader?]`; raises MalformedValue on any bad row."""
    data = _loads(text)
    if not isinstance(data, list):
        raise MalformedValue(f"history: expected a list, got {type(data).__name__}")
    return tuple(_history_row(row) for row in data)


def _history_row(row: Any) -> HistoryEntry:
    if not isinstance(row, list) or not 3 <= len(row) <= 5:
        raise MalformedValue(f"history row: expected 3 to 5 items, got {_short(row)}")
    timestamp = row[3] if len(row) > 3 else None
    new_leader = row[4] if len(row) > 4 else None
    return HistoryEntry(
        timeline=_timeline(row[0], "history timeline"),
        lsn=_lsn(row[1], "history lsn"),
        reason=str(row[2]),
        timestamp=_optional_str(timestamp, "history timestamp"),
        new_leader=_optional_str(new_leader, "history new_leader"),
    )


def history_to_json(history: Sequence[HistoryEntry]) -> str:
    rows: list[list[Any]] = []
    for h in history:
        row: list[Any] = [h.timeline, h.lsn, h.reason, h.timestamp, h.new_leader]
        while len(row) > 3 and row[-1] is None:  # older rows have fewer columns; keep them short
            row.pop()
        rows.append(row)
    return json.dumps(rows, separators=(",", ":"))


# -- failsafe ----------------------------------------------------------------------------------------


def failsafe_from_json(text: str, notes: list[str] | None = None) -> dict[str, str]:
    """`{member name: api_url}`; raises MalformedValue for anything but a JSON object of at most
    FAILSAFE_MAX_ENTRIES entries. An entry whose name or URL is not plain text of bounded length
    (`model.is_plain_text`: FAILSAFE_MAX_NAME, FAILSAFE_MAX_URL) is dropped, with a note in `notes`."""
    data = _object(text)
    if len(data) > FAILSAFE_MAX_ENTRIES:
        raise MalformedValue(f"{len(data)} entries, more than {FAILSAFE_MAX_ENTRIES}")
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, url in data.items():
        if is_plain_text(name, FAILSAFE_MAX_NAME) and is_plain_text(url, FAILSAFE_MAX_URL):
            kept[name] = url
        else:
            dropped.append(name)
    if dropped and notes is not None:
        notes.append(f"{FAILSAFE!r}: ignored {len(dropped)} entries that are not a member name with its API URL: "
                     f"{_short(dropped[:3])}")
    return kept


def failsafe_to_json(value: Mapping[str, str]) -> str:
    return _dumps(dict(value))


# -- the whole scope -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedCluster:
    """A decoded scope plus one note per value that had to be ignored or degraded."""

    view: ClusterView
    notes: tuple[str, ...] = ()


def decode_cluster(scope: str, kvs: KeyValues, *, revision: int = 0) -> DecodedCluster:
    """Turn one read of the scope (keys relative to the prefix) into a ClusterView. Never raises."""
    notes: list[str] = []
    unreadable: dict[str, int] = {}
    config = _decode_optional(kvs, CONFIG, config_from_json, notes, unreadable)
    if config is None and CONFIG in kvs:
        # Keep the revision, so a malformed config can still be replaced with compare-and-swap.
        config = Versioned(value={}, revision=kvs[CONFIG][1])
    status = _decode_optional(kvs, STATUS, lambda text, _: status_from_json(text), notes, unreadable)
    history = _decode_optional(kvs, HISTORY, lambda text, _: history_from_json(text), notes, unreadable)
    members = _members(kvs, notes)
    history = _plausible_history(history or (), members, notes)
    members = _plausible_members(members, history, notes)
    status = _plausible_status(status or _legacy_status(kvs, notes), history, members, notes)
    failsafe = _decode_optional(kvs, FAILSAFE, lambda text, _: failsafe_from_json(text, notes), notes, unreadable)
    view = ClusterView(
        scope=scope,
        initialize=kvs[INITIALIZE][0] if INITIALIZE in kvs else None,
        config=config,
        leader=leader_from_text(*kvs[LEADER]) if LEADER in kvs else None,
        members=members,
        status=status,
        failover=_decode_optional(kvs, FAILOVER, failover_from_json, notes, unreadable),
        sync=_decode_optional(kvs, SYNC, sync_from_json, notes, unreadable),
        history=history,
        routers=_routers(kvs),
        revision=revision,
        unreadable=unreadable,
        failsafe=failsafe,
    )
    return DecodedCluster(view=view, notes=tuple(notes))


ROUTERS = "routers/"


def _routers(kvs: KeyValues) -> tuple[RouterState, ...]:
    """Routers' keys; a malformed one is simply not a router (it can only make an agent wait less)."""
    routers = []
    for key in sorted(kvs):
        if not key.startswith(ROUTERS) or "/" in key[len(ROUTERS):]:
            continue
        try:
            value = json.loads(kvs[key][0])
        except (ValueError, RecursionError):
            continue
        if not isinstance(value, dict):
            continue
        kinds = value.get("kinds")
        held = value.get("held_for")
        primary = value.get("primary")
        routers.append(RouterState(
            name=key[len(ROUTERS):],
            kinds=tuple(str(k) for k in kinds) if isinstance(kinds, list) else (),
            primary=primary if isinstance(primary, str) else None,
            held_for=held if isinstance(held, int) and not isinstance(held, bool) else None,
        ))
    return tuple(routers)


def _decode_optional(kvs: KeyValues, key: str, decode: Callable[[str, int], _T], notes: list[str],
                     unreadable: dict[str, int] | None = None) -> _T | None:
    """The decoded value of `key`, or None when absent or malformed (then with a note, and the key's
    revision in `unreadable`)."""
    if key not in kvs:
        return None
    text, mod_revision = kvs[key]
    try:
        return decode(text, mod_revision)
    except MalformedValue as exc:
        notes.append(f"ignored malformed {key!r}: {exc}")
        if unreadable is not None:
            unreadable[key] = mod_revision
        return None


def _known_timeline(members: Sequence[Member]) -> int | None:
    """The highest timeline the members publish (what their PostgreSQL reports), if any does."""
    published = [m.timeline for m in members if m.timeline is not None]
    return max(published) if published else None


def _plausible_history(history: tuple[HistoryEntry, ...], members: Sequence[Member],
                       notes: list[str]) -> tuple[HistoryEntry, ...]:
    """`history` unless a row ends a timeline far beyond any a member runs on (garbage: trusting it
    would put every member "behind the cluster's timeline", demote the primary and bar any race).
    Ignored, the leader rewrites it from its PostgreSQL's own timeline history."""
    known = _known_timeline(members)
    if not history or known is None:
        return history
    highest = max(h.timeline for h in history)
    if highest >= known + TIMELINE_RESERVE_MARGIN:
        notes.append(f"ignored implausible 'history': a row ends timeline {highest}, yet no member is on a "
                     f"timeline above {known}")
        return ()
    return history


def _plausible_members(members: tuple[Member, ...], history: Sequence[HistoryEntry],
                       notes: list[str]) -> tuple[Member, ...]:
    """Members whose published timeline is far beyond the history's get an unknown timeline: a
    leader's key saying 20000 would otherwise make every replica look off the leader's lineage (and be
    rewound or moved aside) until the leader rewrites its key. Without history nothing is judged."""
    if not history:
        return members
    limit = max(h.timeline for h in history) + 1 + TIMELINE_RESERVE_MARGIN
    out = []
    for m in members:
        if m.timeline is not None and m.timeline > limit:
            notes.append(f"member {m.name!r}: ignored implausible timeline {m.timeline} (the history ends "
                         f"at timeline {limit - TIMELINE_RESERVE_MARGIN})")
            m = replace(m, timeline=None)
        out.append(m)
    return tuple(out)


def _plausible_status(status: ClusterStatus, history: Sequence[HistoryEntry], members: Sequence[Member],
                      notes: list[str]) -> ClusterStatus:
    """`status` without a reserved `timeline` far beyond every timeline the history and the members
    show (model.TIMELINE_RESERVE_MARGIN): garbage, which a promotion would otherwise jump to."""
    if status.timeline is None:
        return status
    known = max([1, *(h.timeline + 1 for h in history), _known_timeline(members) or 1])
    if status.timeline > known + TIMELINE_RESERVE_MARGIN:
        notes.append(f"ignored implausible 'status' timeline {status.timeline}: the history and the members "
                     f"show timeline {known} at most")
        return replace(status, timeline=None)
    return status


def _legacy_status(kvs: KeyValues, notes: list[str]) -> ClusterStatus:
    """Before 2.1 the leader published only `optime/leader`: a plain integer."""
    if LEGACY_OPTIME not in kvs:
        return ClusterStatus()
    try:
        return ClusterStatus(optime=_lsn(kvs[LEGACY_OPTIME][0].strip(), LEGACY_OPTIME))
    except MalformedValue as exc:
        notes.append(f"ignored malformed {LEGACY_OPTIME!r}: {exc}")
        return ClusterStatus()


def _members(kvs: KeyValues, notes: list[str]) -> tuple[Member, ...]:
    members = []
    for key in sorted(kvs):
        name = key[len(MEMBERS) :] if key.startswith(MEMBERS) else ""
        if not name or "/" in name:
            continue
        member = member_from_json(name, kvs[key][0])
        if UNPARSED_KEY in member.raw:
            notes.append(f"member {name!r}: value is not member JSON, state shown as unknown")
        members.append(member)
    return tuple(members)


def cluster_from_kv(scope: str, kvs: KeyValues, *, revision: int = 0) -> ClusterView:
    """`decode_cluster` without the notes."""
    return decode_cluster(scope, kvs, revision=revision).view
