"""Reading management request bodies: JSON objects, booleans, durations and schedules.

Every helper raises `Refusal` with the HTTP status and a text that names the offending key, so a
handler is a straight line of parsing calls and a malformed request can only ever end in a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import hdrs

from pgwarden.api.control import ControlResult
from pgwarden.api.http import Request, Response, StreamResponse
from pgwarden.api.server import Handler
from pgwarden.api.state import StateHolder
from pgwarden.dcs.base import Dcs, DcsError
from pgwarden.model import ClusterView

BODY_TIMEOUT = 10.0  # seconds a client gets to send a management request's body (slow senders hold a connection)
MAX_JSON_DEPTH = 32  # nesting levels of a management body; real bodies use 4 at most
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


class Refusal(Exception):
    """A refused request: `status` is a 4xx (or the contract's 5xx for DCS trouble), `text` the body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def reply(result: ControlResult) -> Response:
    """A ControlResult as a plain-text HTTP response."""
    return Response(status=result.status, text=result.text)


def refusing_bad_requests(handler: Handler) -> Handler:
    """Wrap a handler so that a `Refusal` it raises becomes its status and text."""

    async def wrapped(request: Request, holder: StateHolder) -> StreamResponse:
        try:
            return await handler(request, holder)
        except Refusal as exc:
            response = Response(status=exc.status, text=exc.text)
            if exc.status == 408:  # the rest of the body may still trickle in: do not wait for it
                response.force_close()
            return response

    return wrapped


def _has_body_framing(request: Request) -> bool:
    return request.content_length is not None or "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "")


async def json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object. `optional`: an absent or empty body is `{}`.

    411 without Content-Length (and not chunked) when a body is required; 400 for bad JSON, a JSON
    value that is not an object, or a body that is not UTF-8.
    """
    if not _has_body_framing(request):
        if optional:
            return {}
        raise Refusal(411, "a JSON body with a Content-Length header is required")
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        raise Refusal(408, f"the request body did not arrive within {BODY_TIMEOUT:g} s") from None
    if not raw.strip():
        if optional:
            return {}
        raise Refusal(400, "a JSON body is required, the request body is empty")
    try:
        text = raw.decode("utf-8")
        if _nesting(text) > MAX_JSON_DEPTH:
            raise RecursionError
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(400, f"invalid JSON body: {_short(str(exc))}") from None
    except RecursionError:  # checked before parsing: json.loads would raise it, later code might too
        raise Refusal(400, f"invalid JSON body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise Refusal(400, f"the JSON body must be an object, found {type(value).__name__}")
    return value


def _nesting(text: str) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings not counted."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def optional_str(body: Mapping[str, Any], key: str) -> str | None:
    """body[key] as a non-empty string, None when absent, null or empty; 400 for any other type."""
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refusal(400, f"{key}: expected a string, found {type(value).__name__}")
    return value


_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def boolean(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """body[key] as a boolean; JSON booleans and the words true/false/yes/no/on/off/1/0 are accepted."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise Refusal(400, f"{key}: expected a boolean (true/false), found {json.dumps(value)[:40]}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|h|d)?\s*$")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(body: Mapping[str, Any], key: str) -> float | None:
    """body[key] as positive seconds: a number, or a string such as "30", "30s", "2min", "1h"."""
    value = body.get(key)
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2) or "s"]
    if seconds is None or seconds <= 0:
        raise Refusal(
            400, f"{key}: expected a positive number of seconds or a duration such as '30s', "
            f"found {json.dumps(value)[:40]}"
        )  # fmt: skip
    return seconds


def schedule(value: Any, now: datetime, what: str) -> datetime:
    """An ISO 8601 instant with a time zone, not in the past (contract 4.4).

    400 without a time zone; 422 when unparsable or in the past. `now` must be aware (UTC).
    """
    if not isinstance(value, str):
        raise Refusal(422, f"Unable to parse scheduled timestamp for the {what}: expected an ISO 8601 string")
    try:
        instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Refusal(
            422, f"Unable to parse scheduled timestamp {value[:60]!r} for the {what}: "
            "expected ISO 8601 such as 2030-01-01T10:00:00+00:00"
        ) from None  # fmt: skip
    if instant.tzinfo is None:
        raise Refusal(400, f"Timezone information is mandatory for the scheduled {what}")
    if instant < now:
        raise Refusal(422, f"Cannot schedule {what} in the past")
    return instant


async def fresh_cluster(dcs: Dcs, timeout: float) -> ClusterView:
    """One fresh DCS read for a management request; 503 with the reason when the DCS cannot answer."""
    try:
        async with asyncio.timeout(timeout):
            return await dcs.get_cluster()
    except (DcsError, TimeoutError) as exc:
        raise Refusal(503, f"DCS unavailable: {_short(str(exc) or type(exc).__name__)}") from None
