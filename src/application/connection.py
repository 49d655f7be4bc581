"""The provider connection of an in-process provider: nothing to wait for, nothing to lose."""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class AlwaysConnected:
    """``ProviderConnection`` for a provider living in this process: ``connect`` returns at
    once and the link never breaks, so reconnect hooks never run."""

    async def connect(self) -> None:
        return None

    def add_reconnect_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        return None
