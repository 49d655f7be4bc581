"""``GET /containerLogs/{namespace}/{pod}/{container}``: query parsing and chunked streaming.

Query parameters as the kubelet's: ``follow``, ``timestamps``, ``previous`` (booleans as Go's
``strconv.ParseBool``), ``tailLines`` (>= 0), ``limitBytes`` (>= 1), ``sinceSeconds`` (>= 1),
``sinceTime`` (RFC 3339; not together with ``sinceSeconds``). A bad value is InvalidInput (400)
naming the parameter.

Each chunk is written as it arrives (aiohttp hands it to the transport at once: no buffering).
When the client goes away the server cancels the handler, and closing the use case's iterator
closes the provider's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime

from aiohttp import hdrs, web

from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import InvalidInput

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# How long the first chunk may take before the headers go out anyway. Waiting lets an error the
# provider raises at once (unknown container, ...) get its status code; not waiting longer lets
# `kubectl logs -f` of a quiet container see the stream open.
FIRST_CHUNK_WAIT = 0.5


def _bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return False
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInput(f"invalid query parameter {name}={value!r}: must be a boolean (true or false)")


def _int(query: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value, 10)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise InvalidInput(f"invalid query parameter {name}={value!r}: must be an integer >= {minimum}")
    return number


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value) if "T" in value.upper() else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(
            f"invalid query parameter {name}={value!r}: must be an RFC 3339 time such as 2024-01-02T03:04:05Z"
        )
    return parsed


def parse_log_options(query: Mapping[str, str]) -> LogOptions:
    """The LogOptions of a /containerLogs query. Raises InvalidInput naming the parameter."""
    options = LogOptions(
        follow=_bool(query, "follow"),
        tail_lines=_int(query, "tailLines", minimum=0),
        since_seconds=_int(query, "sinceSeconds", minimum=1),
        since_time=_time(query, "sinceTime"),
        timestamps=_bool(query, "timestamps"),
        limit_bytes=_int(query, "limitBytes", minimum=1),
        previous=_bool(query, "previous"),
    )
    if options.since_seconds is not None and options.since_time is not None:
        raise InvalidInput("at most one of the query parameters sinceSeconds and sinceTime may be given")
    return options


async def serve_container_logs(request: web.Request, api: KubeletApi) -> web.StreamResponse:
    options = parse_log_options(request.query)
    chunks = await api.container_logs(
        namespace=request.match_info["namespace"],
        pod=request.match_info["pod"],
        container=request.match_info["container"],
        options=options,
    )
    first: asyncio.Future[bytes] = asyncio.ensure_future(_next(chunks))
    try:
        await asyncio.wait({first}, timeout=FIRST_CHUNK_WAIT)
        if first.done():
            first.result()  # an error before any output still gets its status code
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "text/plain; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = await first
        while chunk:
            await response.write(chunk)
            chunk = await _next(chunks)
        await response.write_eof()
        return response
    finally:
        if not first.done():
            first.cancel()
            with contextlib.suppress(BaseException):
                await first
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    """The next non-empty chunk; ``b""`` at the end."""
    async for chunk in chunks:
        if chunk:
            return chunk
    return b""
