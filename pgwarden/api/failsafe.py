"""`GET /failsafe` and `POST /failsafe`: Patroni's failsafe mode as the REST API sees it (contract 2.8, 4.4).

In failsafe mode (`failsafe_mode: true` in /config) the leader keeps `/failsafe` = {member: api_url}
in the DCS; when it cannot reach the DCS it posts `{name, conn_url, api_url, slots}` to every member
listed there, and keeps running only if every one answers 200 "Accepted" (a replica, with the header
`lsn`: its received/replayed position); a running primary answers 500 "Running as a leader".

`GET /failsafe` answers from the latest DCS read (it must answer during the very outage it is for):
200 with the `/failsafe` mapping ({} when the key is absent) while /config enables failsafe mode,
else 502 (503 before the first DCS read). `POST /failsafe` passes the access checks of every unsafe
endpoint except the members allowlist (contract 4.1; `server.MEMBERS_ALLOWLIST_EXEMPT`), answers 502
(503) the same way, validates the body (400 naming the key), and hands the ping to the agent
(`AgentControl.failsafe_ping`), whose answer it turns into the contract's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgwarden.api.control import AgentControl
from pgwarden.api.http import Request, Response, json_response
from pgwarden.api.requests import Refusal, json_object
from pgwarden.api.state import NodeState
from pgwarden.model import (
    FAILSAFE_MAX_ENTRIES,
    FAILSAFE_MAX_NAME,
    FAILSAFE_MAX_URL,
    LSN,
    MAX_LSN,
    ClusterView,
    FailsafePing,
    is_plain_text,
)

ACCEPTED = "Accepted"
"""The 200 text of an accepted ping (contract 2.8)."""
REFUSED = "Running as a leader"
"""The 500 text of a refused ping (contract 2.8)."""
NOT_ENABLED = "failsafe mode is not enabled"
"""The 502 text while /config does not enable failsafe mode (the contract gives the code, not a text)."""
UNKNOWN = "failsafe state unknown: no successful DCS read yet"
LSN_HEADER = "lsn"


def _in_failsafe_mode(state: NodeState) -> ClusterView | None:
    """The latest DCS read when its /config enables failsafe mode, else None."""
    cluster = state.cluster
    return cluster if cluster is not None and cluster.dynamic.failsafe_mode else None


def _mode_refusal(state: NodeState) -> Response:
    """503 before any DCS read, else 502 (/config does not enable failsafe mode)."""
    if state.cluster is None:
        return Response(status=503, text=UNKNOWN)
    return Response(status=502, text=NOT_ENABLED)


def get_failsafe(state: NodeState) -> Response:
    """GET /failsafe: 200 with the `/failsafe` mapping as of the latest DCS read, or the refusal."""
    cluster = _in_failsafe_mode(state)
    if cluster is None:
        return _mode_refusal(state)
    return json_response(dict(cluster.failsafe or {}))


async def post_failsafe(request: Request, state: NodeState, control: AgentControl) -> Response:
    """POST /failsafe: the refusal while failsafe mode is off, 400 for a bad body, else the agent's
    answer (`answer_ping`)."""
    if _in_failsafe_mode(state) is None:
        return _mode_refusal(state)
    return answer_ping(control, parse_failsafe_ping(await json_object(request)))


def _text(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    """body[key]: None when absent, null or empty; else a string of at most `limit` printable characters."""
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refusal(400, f"{key}: expected a string, found {type(value).__name__}")
    if not is_plain_text(value, limit):
        raise Refusal(400, f"{key}: expected at most {limit} printable characters")
    return value


def _lsn(value: Any) -> LSN | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LSN:
        return value
    return None


def _slots(value: Any) -> dict[str, LSN]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Refusal(400, f"slots: expected an object of slot name -> LSN, found {type(value).__name__}")
    if len(value) > FAILSAFE_MAX_ENTRIES:
        raise Refusal(400, f"slots: more than {FAILSAFE_MAX_ENTRIES} slots")
    slots: dict[str, LSN] = {}
    for name, position in value.items():
        if not is_plain_text(name, FAILSAFE_MAX_NAME):
            raise Refusal(400, f"slots: a slot name must have 1 to {FAILSAFE_MAX_NAME} printable characters")
        lsn = _lsn(position)
        if lsn is None:
            raise Refusal(400, f"slots: the LSN of each slot must be an integer from 0 to {MAX_LSN}")
        slots[name] = lsn
    return slots


def parse_failsafe_ping(body: Mapping[str, Any]) -> FailsafePing:
    """A `POST /failsafe` body (`{name, conn_url, api_url, slots}`) validated; Refusal(400) naming the
    key otherwise (never echoing the value: a conn_url may carry a password). Unknown keys are ignored,
    as a newer leader may send more."""
    name = _text(body, "name", FAILSAFE_MAX_NAME)
    if name is None:
        raise Refusal(400, "name: the leader's member name is required")
    return FailsafePing(
        name=name,
        conn_url=_text(body, "conn_url", FAILSAFE_MAX_URL),
        api_url=_text(body, "api_url", FAILSAFE_MAX_URL),
        slots=_slots(body.get("slots")),
    )


def answer_ping(control: AgentControl, ping: FailsafePing) -> Response:
    """The agent's answer to `ping` as the contract's HTTP answer."""
    answer = control.failsafe_ping(ping)
    if not answer.accepted:
        return Response(status=500, text=REFUSED)
    response = Response(status=200, text=ACCEPTED)
    if answer.lsn is not None:
        response.headers[LSN_HEADER] = str(answer.lsn)
    return response
