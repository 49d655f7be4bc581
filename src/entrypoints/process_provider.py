"""``vkubelet-process-provider``: run pods as local processes, served over gRPC with the SDK.

    vkubelet-process-provider --listen unix:///tmp/pp.sock [--root-dir D] [--node-name N]

Each container's command runs as a local process tree (images are ignored); see
docs/process-provider.md. Stops on SIGTERM/SIGINT, taking its processes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vkubelet import __version__
from vkubelet.adapters.grpc.server import ServerTLS, serve
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.adapters.system import primary_host_ip as detect_host_ip
from vkubelet.domain.errors import InvalidInput

PROGRAM = "vkubelet-process-provider"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, metavar="ADDR", help="host:port or unix:///path")
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
    parser.add_argument("--tls-cert", type=Path, metavar="PATH")
    parser.add_argument("--tls-key", type=Path, metavar="PATH")
    parser.add_argument("--client-ca", type=Path, metavar="PATH", help="require client certs signed by it")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


async def _run(args: argparse.Namespace) -> None:
    provider = ProcessProvider(
        root_dir=args.root_dir,
        node_name=args.node_name,
        host_ip=args.host_ip or detect_host_ip(),
        cpu=args.cpu,
        memory=args.memory,
        pods=args.pods,
        max_grace_seconds=args.max_grace_seconds,
    )
    provider.reap_orphans()
    tls = None
    if args.tls_cert or args.tls_key:
        tls = ServerTLS(cert_file=args.tls_cert, key_file=args.tls_key, client_ca=args.client_ca)
    await serve(provider, address=args.listen, tls=tls, name="process", version=__version__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        parser.error("--client-ca needs --tls-cert and --tls-key")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_run(args))
    except InvalidInput as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
