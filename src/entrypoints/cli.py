"""``virtual-kubelet``: parse the command line, set up logging, run the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from vkubelet import __version__
from vkubelet.adapters.system import primary_host_ip
from vkubelet.application.settings import Settings
from vkubelet.domain.errors import DomainError
from vkubelet.entrypoints.cli_args import (
    CliError,
    HelpCommand,
    ProvidersCommand,
    RunCommand,
    VersionCommand,
    log_level_number,
    parse_command_line,
    wants_local_control_plane,
)
from vkubelet.entrypoints.container import EXPORTER_NAMES, PROVIDER_NAMES

log = logging.getLogger("vkubelet")

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
BUILT = "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        command = parse_command_line(
            arguments, os.environ, providers=PROVIDER_NAMES, exporters=EXPORTER_NAMES
        )
    except CliError as error:
        print(f"virtual-kubelet: {error}", file=sys.stderr)
        return error.exit_code
    if isinstance(command, HelpCommand):
        print(command.text, end="")
        return 0
    if isinstance(command, VersionCommand):
        print(f"Version: {__version__}, Built: {BUILT}")
        return 0
    if isinstance(command, ProvidersCommand):
        code, text = command.render()
        print(text, end="", file=sys.stdout if code == 0 else sys.stderr)
        return code
    assert isinstance(command, RunCommand)
    configure_logging(command.settings.log_level)
    for warning in command.warnings:
        log.warning("%s", warning)
    for note in command.notes:
        log.debug("%s", note)
    try:
        return run(command.settings)
    except (DomainError, OSError, ValueError) as error:
        log.error("virtual-kubelet: %s", error)
        print(f"virtual-kubelet: {error}", file=sys.stderr)
        return 1


def run(settings: Settings) -> int:
    from vkubelet.entrypoints.daemon import run_daemon  # the heavy imports only for `run`

    local = wants_local_control_plane(
        requested=settings.kube.local_control_plane,
        kubeconfig=settings.kube.kubeconfig,
        in_cluster=os.path.exists(IN_CLUSTER_TOKEN),
    )
    with _control_plane(settings, local) as settings:
        internal_ip = settings.node.internal_ip or ("127.0.0.1" if local else primary_host_ip())
        return asyncio.run(run_daemon(settings, internal_ip=internal_ip))


@contextlib.contextmanager
def _control_plane(settings: Settings, local: bool) -> Iterator[Settings]:
    """Start the project's own etcd + kube-apiserver when there is no cluster to talk to."""
    if not local:
        yield settings
        return
    from vkubelet.adapters.localcluster.cluster import LocalCluster

    log.info("no kubeconfig found: starting a local control plane (etcd + kube-apiserver)")
    with LocalCluster() as cluster:
        log.info("local control plane ready: kubectl --kubeconfig %s get nodes", cluster.kubeconfig_path)
        kube = dataclasses.replace(settings.kube, kubeconfig=cluster.kubeconfig_path)
        yield dataclasses.replace(settings, kube=kube)


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def configure_logging(level_name: str) -> None:
    logging.addLevelName(5, "TRACE")
    from vkubelet.adapters.telemetry.logs import TraceIdFilter

    handler = logging.StreamHandler(sys.stderr)
    # Lines logged inside a recorded span end with " trace_id=<hex> span_id=<hex>".
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(trace_context)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level_number(level_name))
    # Client libraries are chatty at debug level; keep them at info unless asked for trace.
    if log_level_number(level_name) > 5:
        for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "asyncio"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, log_level_number(level_name)))
