"""aiohttp glue: the HTTP upgrade that hands a kubelet API connection to a :class:`SpdySession`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import hdrs, web

from vkubelet.adapters.kubeletapi.spdy.session import (
    SpdySession,
)


# -- aiohttp glue ---------------------------------------------------------------------------------
class _TransportSink:
    """A FrameSink over an aiohttp connection's transport after the 101 response."""

    def __init__(self, request: web.BaseRequest) -> None:
        self._transport = request.transport
        self._protocol = request.protocol

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # aiohttp's protocol exposes write backpressure through this helper (as its own writers use).
        await self._protocol._drain_helper()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _SessionFeeder:
    """The object aiohttp's ``set_parser`` feeds post-upgrade bytes to."""

    def __init__(self, session: SpdySession) -> None:
        self._session = session

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._session.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self._session.connection_lost()


async def upgrade(
    request: web.BaseRequest, *, protocol: str | None, idle_timeout: float
) -> tuple[SpdySession, web.StreamResponse]:
    """Answer ``101 Switching Protocols`` (``Upgrade: SPDY/3.1``, the negotiated
    ``X-Stream-Protocol-Version`` when given); a server session over the connection and the
    prepared response, which the handler must return once the session is over.

    Relies on aiohttp's ``request.protocol.set_parser``: the hook its WebSocket support uses to
    take over the bytes after an upgrade (semi-private, pinned by the integration tests).
    """
    headers: dict[str, str] = {hdrs.CONNECTION: "Upgrade", hdrs.UPGRADE: "SPDY/3.1"}
    if protocol:
        headers["X-Stream-Protocol-Version"] = protocol
    response = web.StreamResponse(status=101, headers=headers)
    session = SpdySession(_TransportSink(request), is_server=True, idle_timeout=idle_timeout)
    # aiohttp's HTTP parser only treats "websocket" upgrades as upgrades, so without this the
    # client's first frames would be parsed as HTTP. Taking the bytes over before the 101 goes
    # out leaves no window for that.
    request.protocol.keep_alive(False)
    request.protocol.set_parser(_SessionFeeder(session))  # type: ignore[arg-type]
    await response.prepare(request)
    return session, response


def is_spdy_upgrade(headers: Mapping[str, str]) -> bool:
    upgrade_header = headers.get("Upgrade", "")
    return "upgrade" in headers.get("Connection", "").lower() and upgrade_header.lower().startswith("spdy/3")


def negotiate(client: Iterable[str], supported: Iterable[str]) -> str | None:
    """The first of ``supported`` (server preference order) that the client offers; None when
    there is none. Each client header may carry a comma-separated list."""
    offered = {part.strip() for value in client for part in value.split(",") if part.strip()}
    for candidate in supported:
        if candidate in offered:
            return candidate
    return None
