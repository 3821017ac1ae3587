"""The pieces of aiohttp's server side the REST API uses, from the modules that hold them.

The API routes every request itself (one table keyed by METHOD and first path segment, see
`server.py`), so it runs on aiohttp's low-level server (`aiohttp.web_server.Server`) rather than an
`aiohttp.web.Application`: the router, middleware, signals and static-file machinery that the
`aiohttp.web` package loads (with the system's MIME type table) would cost every agent about 1.4 MB
for nothing. Import these names from here, not from `aiohttp.web`.
"""

from __future__ import annotations

from aiohttp.web_exceptions import HTTPException
from aiohttp.web_request import BaseRequest as Request
from aiohttp.web_response import Response, StreamResponse, json_response
from aiohttp.web_server import Server

__all__ = ["HTTPException", "Request", "Response", "Server", "StreamResponse", "json_response"]
