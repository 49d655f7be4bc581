"""``virtual-kubelet``: parse the command line, set up logging, run the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
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
)
from vkubelet.entrypoints.container import EXPORTER_NAMES, PROVIDER_NAMES
from vkubelet.entrypoints.multinode import MultiNodeError, node_settings

log = logging.getLogger("vkubelet")

BUILT = "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        command = parse_command_line(
            arguments, os.environ, providers=PROVIDER_NAMES, exporters=EXPORTER_NAMES
        )
        if isinstance(command, RunCommand):
            node_settings(command.settings, command.node_names)  # port range, --leader-elect
    except (CliError, MultiNodeError) as error:
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
        return run(command.settings, node_names=command.node_names)
    except (DomainError, OSError, ValueError) as error:
        log.error("virtual-kubelet: %s", error)
        print(f"virtual-kubelet: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the daemon's own handler (e.g. during a build)
        print("virtual-kubelet: interrupted", file=sys.stderr)
        return 130


def run(settings: Settings, *, node_names: Sequence[str] = ()) -> int:
    from vkubelet.entrypoints.daemon import StartupError, run_nodes  # heavy imports: `run` only

    tune_garbage_collector()
    try:
        # cli_args decided it, once: --local-control-plane, or no kubeconfig and not in a cluster.
        with _control_plane(settings) as settings:
            nodes = node_settings(settings, node_names)  # several --nodename: one stack each
            return asyncio.run(run_nodes(nodes, internal_ip=node_ip(settings)))
    except StartupError as error:
        log.error("virtual-kubelet: %s", error)
        print(f"virtual-kubelet: {error}", file=sys.stderr)
        return 1


#: young objects allocated between two cyclic collections (CPython's default: 700)
GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Cheaper cyclic garbage collection for a daemon holding thousands of pod manifests.

    Every decoded pod is a tree of dicts and lists that the collector scans again each time the
    older generations are collected; at CPython's default threshold that doubled the cost of
    decoding with 20,000 pods held (docs/benchmarks.md). A higher young threshold makes the
    collections rarer, and ``gc.freeze`` moves everything made while importing out of their
    way for good. Cycles are still collected, only later.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def node_ip(settings: Settings) -> str:
    """The node's InternalIP: VKUBELET_POD_IP, else the host's primary address.

    As the kubelet picks its node IP: the address of the interface that holds the default
    route. The API server's node proxy (``kubectl get --raw /api/v1/nodes/<n>/proxy/...``)
    refuses loopback and link-local addresses, so 127.0.0.1 would break it even locally.
    """
    if settings.node.internal_ip:
        return settings.node.internal_ip
    address = primary_host_ip()
    if ipaddress.ip_address(address).is_loopback:
        log.warning(
            "this host has no non-loopback address: the node's InternalIP is %s, which the API "
            "server's node proxy refuses; set VKUBELET_POD_IP to an address it can reach",
            address,
        )
    return address


@contextlib.contextmanager
def _control_plane(settings: Settings) -> Iterator[Settings]:
    """Start the project's own control plane when there is no cluster to talk to, and point
    the settings at it: its kubeconfig, and its kubelet-client CA plus TokenReview for the
    kubelet API, so the API server's `kubectl logs/exec` calls authenticate with no flag; and a
    serving certificate from its signer, which its API server verifies."""
    if not settings.kube.local_control_plane:
        yield settings
        return
    from vkubelet.entrypoints.daemon import StartupError
    from vkubelet.entrypoints.localcluster.binaries import BinaryError
    from vkubelet.entrypoints.localcluster.cluster import ClusterError, LocalCluster, local_cluster_dir

    work_dir = local_cluster_dir(os.environ)
    log.info(
        "no kubeconfig found: starting a local control plane (etcd, kube-apiserver, kube-scheduler, "
        "kube-controller-manager) in %s",
        work_dir,
    )
    # Its API server verifies the kubelet API's certificate, as a production cluster should:
    # the daemon gets one from the cluster's kubelet-serving signer (a self-approved CSR), unless
    # it was given a certificate of its own, which this cluster's CA cannot have signed.
    own_certificate = settings.server.cert_path is not None
    cluster = LocalCluster(work_dir, fresh=True, verify_kubelet_certificates=not own_certificate)
    try:
        cluster.start()
    except (BinaryError, ClusterError) as error:
        raise StartupError(f"the local control plane did not start: {error}") from error
    try:
        log.info("local control plane ready: kubectl --kubeconfig %s get nodes", cluster.kubeconfig_path)
        kube = dataclasses.replace(settings.kube, kubeconfig=cluster.kubeconfig_path)
        server = dataclasses.replace(
            settings.server,
            ca_path=settings.server.ca_path or cluster.client_ca_cert_path,
            authentication_token_webhook=True,
            rotate_server_certificates=settings.server.rotate_server_certificates or not own_certificate,
            serving_certificate_self_approve=settings.server.serving_certificate_self_approve
            or not own_certificate,
        )
        yield dataclasses.replace(settings, kube=kube, server=server)
    finally:
        cluster.stop()


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def configure_logging(level_name: str) -> None:
    logging.addLevelName(5, "TRACE")
    from vkubelet.adapters.telemetry.logs import NodeNameFilter, TraceIdFilter

    handler = logging.StreamHandler(sys.stderr)
    # Lines logged inside a recorded span end with " trace_id=<hex> span_id=<hex>"; with several
    # nodes in the process, lines logged for one of them say " node=<name>" before that.
    handler.addFilter(TraceIdFilter())
    handler.addFilter(NodeNameFilter())
    handler.setFormatter(
        _UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(node_context)s%(trace_context)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level_number(level_name))
    # Client libraries are chatty at debug level; keep them at info unless asked for trace.
    if log_level_number(level_name) > 5:
        for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "asyncio"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, log_level_number(level_name)))
