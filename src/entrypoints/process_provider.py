"""``vkubelet-process-provider``: run pods as local processes, served over gRPC with the SDK.

    vkubelet-process-provider --listen unix:///tmp/pp.sock [--root-dir D] [--node-name N]

Each container's command runs as a local process tree (images are ignored); see
docs/process-provider.md. Stops on SIGTERM/SIGINT, taking its processes with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vkubelet.adapters.process.config import host_and_port
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.adapters.system import primary_host_ip as detect_host_ip
from vkubelet.entrypoints.provider_server import add_serving_flags, provider_parser, run_provider_server

PROGRAM = "vkubelet-process-provider"


def _parser() -> argparse.ArgumentParser:
    parser = provider_parser(PROGRAM, __doc__)
    parser.add_argument(
        "--root-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"vkubelet-process-provider-{os.getuid()}",
        help="pod work dirs and logs live under it",
    )
    parser.add_argument("--node-name", default="virtual-kubelet", help="node name in stats")
    parser.add_argument("--host-ip", help="podIP/hostIP reported for pods (default: this host's address)")
    parser.add_argument("--cpu", help="node capacity cpu (default: this machine's CPU count)")
    parser.add_argument("--memory", help="node capacity memory (default: this machine's memory)")
    parser.add_argument("--pods", default="110", help="node capacity pods")
    parser.add_argument(
        "--max-grace-seconds", type=float, help="cap on a deleted pod's termination grace period"
    )
    parser.add_argument(
        "--api-server",
        metavar="URL",
        help="the API server pods should reach (KUBERNETES_SERVICE_HOST/PORT), e.g. https://10.0.0.1:6443",
    )
    add_serving_flags(parser)
    return parser


def _build(args: argparse.Namespace) -> ProcessProvider:
    provider = ProcessProvider(
        root_dir=args.root_dir,
        node_name=args.node_name,
        host_ip=args.host_ip or detect_host_ip(),
        cpu=args.cpu,
        memory=args.memory,
        pods=args.pods,
        max_grace_seconds=args.max_grace_seconds,
        api_server=host_and_port(args.api_server) if args.api_server else None,
    )
    provider.reap_orphans()  # processes an earlier provider on this root dir left behind
    return provider


def main(argv: Sequence[str] | None = None) -> int:
    return run_provider_server(_parser(), argv, _build, name="process")


if __name__ == "__main__":
    sys.exit(main())
