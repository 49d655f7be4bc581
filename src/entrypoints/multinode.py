"""Several virtual nodes in one process: ``--nodename vk-0,vk-1,vk-2``.

Each name gets a full node stack of its own (provider, client, controllers, kubelet API), built
by the container from a copy of the Settings that differs only in the node name and the kubelet
API port: node ``i`` listens on the ``--listen-address`` port + ``i`` (port 0: each one gets an
ephemeral port of its own, reported in its Node). One name is exactly the single-node daemon.

``--leader-elect`` is refused with several names: a replica would lead some nodes and stand by
for others, and one lost lease ends the process (and so every node it leads). Run one process
per node when replicas are needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vkubelet.application.settings import Settings
from vkubelet.domain.errors import InvalidInput

_HIGHEST_PORT = 65535
_EXIT_USAGE = 2  # as cli_args.EXIT_USAGE (not imported: cli_args imports this module)


class MultiNodeError(InvalidInput):
    """The node names and the other flags do not fit together; ``main`` exits ``exit_code``."""

    exit_code = _EXIT_USAGE


def split_node_names(raw: str) -> tuple[str, ...]:
    """The comma-separated names of ``raw``, in order; a name without a comma is itself.

    Not validated here and not stripped: an empty item (``"a,,b"``) or a blank stays, so the
    caller's node-name check rejects it with the usual message.
    """
    return tuple(raw.split(","))


def duplicate_node_name(names: Sequence[str]) -> str | None:
    """The first name given twice, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def node_settings(settings: Settings, names: Sequence[str]) -> tuple[Settings, ...]:
    """One Settings per node name: ``settings`` with that name and its own kubelet API port.

    The CLI puts the first name in ``settings``; with one name (or none) that is the only node
    and ``(settings,)`` is returned unchanged. Raises :class:`MultiNodeError` when the ports run
    past 65535 or ``--leader-elect`` is on.
    """
    if len(names) <= 1:
        return (settings,)
    if settings.leader_election.enabled:
        raise MultiNodeError(
            f"--leader-elect takes one node per process, not {len(names)} (--nodename {','.join(names)}): "
            "run one process per node, each with its own lease"
        )
    first = settings.server.listen_port
    if first != 0 and first + len(names) - 1 > _HIGHEST_PORT:
        raise MultiNodeError(
            f"invalid port {first} for --listen-address: {len(names)} nodes (--nodename) listen on "
            f"ports {first}..{first + len(names) - 1}, past {_HIGHEST_PORT}"
        )
    return tuple(
        dataclasses.replace(
            settings,
            node=dataclasses.replace(settings.node, name=name),
            server=dataclasses.replace(settings.server, listen_port=first + index if first else 0),
        )
        for index, name in enumerate(names)
    )
