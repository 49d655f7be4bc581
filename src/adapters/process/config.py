"""The process provider's ``--provider-config`` when it runs inside the daemon.

The mock provider's format (a JSON object keyed by node name, see
:mod:`vkubelet.adapters.node_config`), so one file serves both; the keys that matter here are
``cpu``, ``memory``, ``pods`` and ``labels``. What the file leaves out comes from this machine
(its CPU count and memory, 110 pods as the kubelet's default), not from the mock's invented
defaults: the processes really run here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vkubelet.adapters.node_config import MockConfigError, parse_mock_config
from vkubelet.domain.errors import InvalidInput

DEFAULT_PODS = "110"


@dataclass(frozen=True, slots=True)
class ProcessNodeConfig:
    #: None: this machine's value
    cpu: str | None = None
    memory: str | None = None
    pods: str = DEFAULT_PODS
    labels: dict[str, str] = field(default_factory=dict)


def host_and_port(url: str) -> tuple[str, int]:
    """``https://10.0.0.1:6443`` -> ("10.0.0.1", 6443); the scheme's default port when absent."""
    parsed = urlsplit(url)
    if not parsed.hostname:
        raise InvalidInput(f"API server address {url!r} has no host")
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def load_process_config(path: str | os.PathLike[str] | None, *, node_name: str) -> ProcessNodeConfig:
    """``node_name``'s entry of the file at ``path``; this machine's capacity without a file.

    Raises :class:`MockConfigError` naming the file, the key and the value.
    """
    if path is None or str(path) == "":
        return ProcessNodeConfig()
    source = str(path)
    try:
        document: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise MockConfigError(f"process provider config {source}: cannot read it: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise MockConfigError(f"process provider config {source}: not valid JSON: {exc}") from exc
    checked = parse_mock_config(document, node_name=node_name, source=source)  # validates every key
    given = document[node_name]
    return ProcessNodeConfig(
        cpu=checked.cpu if given.get("cpu") not in (None, "") else None,
        memory=checked.memory if given.get("memory") not in (None, "") else None,
        pods=checked.pods if given.get("pods") not in (None, "") else DEFAULT_PODS,
        labels=dict(checked.labels),
    )
