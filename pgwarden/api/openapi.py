"""The OpenAPI 3 description of every REST endpoint, served at GET /openapi.json.

Written by hand, path by path, so each endpoint has a real description; a unit test compares it with
the server's actual routing tables (health checks, read endpoints, management routes) in both
directions, so an endpoint cannot be added or removed without updating this document.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
TEXT = "text/plain"

HEALTH_DOCS: dict[str, str] = {
    "": "Primary check (same as /primary).",
    "primary": "200 if this node holds the leader lock and runs as a writable primary.",
    "read-write": "Same as /primary.",
    "leader": "200 if this node holds the leader lock (primary or standby leader).",
    "standby-leader": "200 if this node is the leader of a standby cluster.",
    "standby_leader": "Same as /standby-leader.",
    "replica": "200 if this node is a running, streaming replica without noloadbalance, within ?lag, "
    "matching ?replication_state and ?tag_<key>=<value>.",
    "read-only": "200 on the primary or standby leader, else the replica check.",
    "synchronous": "Replica check, and this node is a synchronous standby.",
    "sync": "Same as /synchronous.",
    "read-only-sync": "200 on the primary or standby leader, or a synchronous standby.",
    "read-only-synchronous": "Same as /read-only-sync.",
    "quorum": "Replica check, and this node is a quorum standby.",
    "read-only-quorum": "200 on the primary or standby leader, or a quorum standby.",
    "asynchronous": "Replica check, and this node is neither a synchronous nor a quorum standby.",
    "async": "Same as /asynchronous.",
    "health": "200 if PostgreSQL is running.",
}
"""Health paths answered with the status JSON (keys: first path segment, as in health.HEALTH_CHECKS)."""

STATUS_ONLY_DOCS: dict[str, str] = {
    "liveness": "200 while the HA loop runs on time (or the cluster is paused); no body.",
    "readiness": "200 on the leader, or on a replica that runs, streams and is within ?lag (?mode=apply|write); "
    "no body.",
}

_HEALTH_PARAMETERS: list[dict[str, Any]] = [
    {"name": "lag", "in": "query", "required": False, "description": "Maximum lag: bytes or a size such as 16MB.",
     "schema": {"type": "string"}},
    {"name": "replication_state", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "Required replication state, e.g. streaming."},
    {"name": "tag_key", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "tag_<key>=<value>: the member tag <key> must have this value (any tag name)."},
]  # fmt: skip

_TEXT_REPLY = {"content": {TEXT: {"schema": {"type": "string"}}}}
_JSON_REPLY = {"content": {JSON: {"schema": {"type": "object"}}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, **_TEXT_REPLY}


def _json(description: str) -> dict[str, Any]:
    return {"description": description, **_JSON_REPLY}


def _body(properties: dict[str, Any], required: list[str] | None = None, optional: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": not optional, "content": {JSON: {"schema": schema}}}


_UNSAFE = {
    "401": _text("Missing or wrong HTTP Basic credentials (restapi.authentication)."),
    "403": _text("Client address not in restapi.allowlist, or no client certificate."),
}
_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}
_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601 with a time zone."}


def _op(summary: str, responses: dict[str, Any], *, unsafe: bool = False, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if unsafe:
        operation["responses"].update(_UNSAFE)
        operation["security"] = [{"basic": []}]
    operation.update(extra)
    return operation


def _health_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for segment, summary in HEALTH_DOCS.items():
        paths["/" + segment] = {"get": _op(summary, {
            "200": _json("The check passed; the status JSON."),
            "503": _json("The check failed; the status JSON."),
            "400": _text("A malformed query parameter."),
        }, parameters=_HEALTH_PARAMETERS)}  # fmt: skip
    for segment, summary in STATUS_ONLY_DOCS.items():
        paths["/" + segment] = {"get": _op(summary, {"200": {"description": "OK"}, "503": {"description": "Not"}})}
    return paths


def _read_paths() -> dict[str, Any]:
    return {
        "/patroni": {"get": _op("This node's status JSON.", {"200": _json("The status JSON.")})},
        "/cluster": {"get": _op("All members with role, state, lag; pause and scheduled switchover.", {
            "200": _json("The cluster JSON."), "503": _text("No DCS read yet.")})},
        "/history": {"get": _op("Timeline history: [timeline, lsn, reason, timestamp, new_leader] rows.", {
            "200": {"description": "The history", "content": {JSON: {"schema": {"type": "array"}}}},
            "503": _text("No DCS read yet.")})},
        "/metrics": {"get": _op("Prometheus metrics (patroni_* and pgwarden_*), labels scope and name.", {
            "200": {"description": "Prometheus text format", **_TEXT_REPLY}})},
        "/openapi.json": {"get": _op("This document.", {"200": _json("OpenAPI 3 document.")})},
    }  # fmt: skip


def _config_path() -> dict[str, Any]:
    bad = {"400": _text("Bad JSON, or the result is not a valid dynamic configuration (names the key)."),
           "411": _text("No Content-Length.")}  # fmt: skip
    return {"/config": {
        "get": _op("The dynamic configuration (/config in the DCS).", {
            "200": _json("The configuration."), "502": _text("No /config in the DCS."),
            "503": _text("DCS unavailable.")}),
        "patch": _op("JSON merge patch (null deletes a key), compare-and-swap on the DCS revision.", {
            "200": _json("The new configuration."), **bad, "409": _text("Changed concurrently; retry."),
            "503": _text("No /config yet, or DCS unavailable.")}, unsafe=True,
            requestBody=_body({}, optional=False)),
        "put": _op("Replace the dynamic configuration unconditionally.", {
            "200": _json("The new configuration."), **bad, "502": _text("The DCS write failed.")},
            unsafe=True, requestBody=_body({}, optional=False)),
    }}  # fmt: skip


def _switchover_paths() -> dict[str, Any]:
    outcome = {
        "200": _text('Successfully switched (failed) over to "x", or ... to "x" instead of "y".'),
        "400": _text("Bad body or a request impossible in this state (e.g. paused)."),
        "411": _text("No Content-Length."),
        "412": _text("The cluster does not allow it (leader name does not match, candidate does not exists, ...)."),
        "422": _text("scheduled_at unparsable or in the past."),
        "503": _text("Failed, status unknown, or DCS unavailable."),
    }
    return {
        "/switchover": {
            "post": _op("Planned switchover from `leader`, now or at `scheduled_at`.", {
                **outcome, "202": _text("Switchover scheduled"),
                "409": _text("The failover key changed concurrently.")}, unsafe=True,
                requestBody=_body({"leader": _STRING, "candidate": _STRING, "scheduled_at": _ISO},
                                  ["leader"], optional=False)),
            "delete": _op("Cancel a scheduled switchover.", {
                "200": _text("scheduled switchover deleted"), "404": _text("no switchover is scheduled"),
                "409": _text("Changed concurrently.")}, unsafe=True),
        },
        "/failover": {"post": _op("Manual failover to `candidate` (works without a healthy leader).", {
            **outcome, "409": _text("The failover key changed concurrently.")}, unsafe=True,
            requestBody=_body({"candidate": _STRING, "leader": _STRING}, ["candidate"], optional=False))},
    }  # fmt: skip


def _operation_paths() -> dict[str, Any]:
    restart_body = {
        "schedule": _ISO,
        "role": {"type": "string", "enum": ["primary", "replica", "standby_leader"]},
        "postgres_version": _STRING,
        "restart_pending": _BOOLEAN,
        "timeout": {"type": ["number", "string"], "description": "Seconds, or e.g. '30s'."},
    }
    return {
        "/restart": {
            "post": _op("Restart PostgreSQL now or at `schedule`, if the conditions hold.", {
                "200": _text("restarted successfully"), "202": _text("Restart scheduled"),
                "400": _text("Bad body or filter."), "409": _text("Another restart is already scheduled"),
                "422": _text("schedule unparsable or in the past."),
                "500": _text("Can't schedule restart in the paused state"),
                "503": _text("Conditions not met, still starting, or the restart failed.")},
                unsafe=True, requestBody=_body(restart_body)),
            "delete": _op("Cancel a scheduled restart.", {
                "200": _text("scheduled restart deleted"), "404": _text("no restarts are scheduled")}, unsafe=True),
        },
        "/reload": {"post": _op("Re-read the configuration (as SIGHUP).", {
            "202": _text("reload scheduled")}, unsafe=True)},
        "/reinitialize": {"post": _op("Wipe and re-clone this replica.", {
            "200": _text("reinitialize started"), "400": _text("Bad body."),
            "503": _text("Refused, e.g. I am the leader, can not reinitialize.")}, unsafe=True,
            requestBody=_body({"force": _BOOLEAN, "from_leader": _BOOLEAN}))},
    }  # fmt: skip


def _failsafe_path() -> dict[str, Any]:
    disabled = {"502": _text("failsafe mode is not enabled in /config."), "503": _text("No DCS read yet.")}
    ping = {
        "name": {"type": "string", "description": "The leader's member name."},
        "conn_url": _STRING,
        "api_url": _STRING,
        "slots": {"type": "object", "additionalProperties": {"type": "integer"},
                  "description": "The leader's replication slots -> LSN (bytes)."},
    }  # fmt: skip
    accepted = {**_text("Accepted"), "headers": {"lsn": {
        "description": "This replica's received/replayed WAL position (bytes).", "schema": {"type": "integer"}}}}
    return {"/failsafe": {
        "get": _op("Failsafe mode: the members the leader lists in /failsafe ({name: api_url}), from the "
                   "latest DCS read.", {"200": _json("The /failsafe mapping."), **disabled}),
        "post": _op("A leader that cannot reach the DCS asks this member to confirm it may keep running.", {
            "200": accepted, "400": _text("Bad body (names the key)."), "411": _text("No Content-Length."),
            "500": _text("Running as a leader"), **disabled}, unsafe=True,
            requestBody=_body(ping, ["name"], optional=False)),
    }}  # fmt: skip


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of pgwarden `version`'s REST API."""
    paths = (_health_paths() | _read_paths() | _config_path() | _switchover_paths() | _operation_paths()
             | _failsafe_path())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pgwarden REST API",
            "version": version,
            "description": "Patroni-compatible REST API. Every health GET also answers HEAD and OPTIONS with "
            "the status code only; any path containing 'master' is the primary check; unknown GET paths "
            "are 503 with the status JSON.",
        },
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "paths": paths,
    }
