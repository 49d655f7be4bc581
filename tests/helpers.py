"""Small helpers shared by every test tier."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator


async def close_stream(stream: AsyncIterator[object]) -> None:
    """Close a stream a port returned as an ``AsyncIterator``: ours are async generators, and
    closing one runs its ``finally`` (unsubscribing, cancelling the call) as a consumer's
    ``break`` would."""
    assert isinstance(stream, AsyncGenerator), f"{stream!r} is not an async generator"
    await stream.aclose()
