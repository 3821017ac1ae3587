"""POST/DELETE /restart, POST /reload and POST /reinitialize: validated here, performed by the agent.

The API checks the body and hands a typed request to `AgentControl`; the agent's decision core
decides whether and when the operation runs, and its `ControlResult` is the HTTP answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pgwarden.api.control import RestartRequest
from pgwarden.api.requests import Refusal, boolean, duration_seconds, schedule

RESTART_KEYS = ("schedule", "role", "postgres_version", "restart_pending", "timeout")
_ROLE_ALIASES = {
    "primary": "primary",
    "master": "primary",
    "replica": "replica",
    "standby_leader": "standby_leader",
    "standby-leader": "standby_leader",
}
_PG_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


def _role(body: Mapping[str, Any]) -> str | None:
    value = body.get("role")
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in _ROLE_ALIASES:
        raise Refusal(400, "role: PostgreSQL role should be either primary, standby_leader or replica")
    return _ROLE_ALIASES[value.lower()]


def _postgres_version(body: Mapping[str, Any]) -> str | None:
    value = body.get("postgres_version")
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    if not _PG_VERSION.match(text):
        raise Refusal(400, f"postgres_version: expected a PostgreSQL version such as 15 or 15.4, found {value!r}")
    return text


def parse_restart(body: Mapping[str, Any], now: datetime, *, paused: bool) -> RestartRequest:
    """POST /restart's body -> RestartRequest. 400 for an unknown key or a bad value, 400/422 for a bad
    schedule, and the contract's 500 for a schedule while the cluster is paused."""
    unknown = sorted(set(body) - set(RESTART_KEYS))
    if unknown:
        raise Refusal(400, f"unknown filter for the restart: {', '.join(unknown)} "
                           f"(expected {', '.join(RESTART_KEYS)})")  # fmt: skip
    when: str | None = None
    if body.get("schedule") not in (None, ""):
        if paused:
            raise Refusal(500, "Can't schedule restart in the paused state")
        when = schedule(body["schedule"], now, "restart").isoformat()
    return RestartRequest(
        role=_role(body),
        postgres_version=_postgres_version(body),
        restart_pending=boolean(body, "restart_pending"),
        timeout=duration_seconds(body, "timeout"),
        schedule=when,
    )


def parse_reinitialize(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """POST /reinitialize's body -> (force, from_leader); both default to false."""
    return boolean(body, "force"), boolean(body, "from_leader")
