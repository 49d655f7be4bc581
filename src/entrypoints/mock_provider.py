"""``vkubelet-mock-provider``: the in-process mock provider served over gRPC with the SDK.

    vkubelet-mock-provider --listen 127.0.0.1:7443 [--provider-config F] [--nodename N]
    vkubelet-mock-provider --listen unix:///run/vk-mock.sock

The conformance kit and the e2e tests run against it. ``--provider-config`` is the mock's own
format (JSON keyed by node name, see ``vkubelet.adapters.mock.config``). With ``--tls-cert`` and
``--tls-key`` it serves TLS, and with ``--client-ca`` too it requires client certificates.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vkubelet import __version__
from vkubelet.adapters.grpc.server import ServerTLS, serve
from vkubelet.adapters.mock.config import load_mock_config
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.domain.errors import InvalidInput

PROGRAM = "vkubelet-mock-provider"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, metavar="ADDR", help="host:port or unix:///path")
    parser.add_argument("--provider-config", metavar="PATH", help="mock config (JSON keyed by node name)")
    parser.add_argument("--nodename", default="virtual-kubelet", help="node whose config entry to use")
    parser.add_argument("--internal-ip", default="127.0.0.1", help="hostIP reported for pods")
    parser.add_argument("--tls-cert", type=Path, metavar="PATH")
    parser.add_argument("--tls-key", type=Path, metavar="PATH")
    parser.add_argument("--client-ca", type=Path, metavar="PATH", help="require client certs signed by it")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


async def _run(args: argparse.Namespace) -> None:
    config = load_mock_config(args.provider_config, node_name=args.nodename)
    provider = MockProvider(node_name=args.nodename, config=config, internal_ip=args.internal_ip)
    tls = None
    if args.tls_cert or args.tls_key:
        tls = ServerTLS(cert_file=args.tls_cert, key_file=args.tls_key, client_ca=args.client_ca)
    await serve(provider, address=args.listen, tls=tls, name="mock", version=__version__)


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
