"""``vkubelet-mock-provider``: the in-process mock provider served over gRPC with the SDK.

    vkubelet-mock-provider --listen 127.0.0.1:7443 [--provider-config F] [--nodename N]
    vkubelet-mock-provider --listen unix:///run/vk-mock.sock

The conformance kit and the e2e tests run against it. ``--provider-config`` is the mock's own
format (JSON keyed by node name, see ``vkubelet.adapters.node_config``). SIGHUP re-reads it and
pushes the node's new capacity, labels and taints to vkubelet over the node status stream.
With ``--tls-cert`` and ``--tls-key`` it serves TLS, and with ``--client-ca`` too it requires
client certificates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.node_config import load_mock_config
from vkubelet.entrypoints.provider_server import add_serving_flags, provider_parser, run_provider_server

PROGRAM = "vkubelet-mock-provider"


def _parser() -> argparse.ArgumentParser:
    parser = provider_parser(PROGRAM, __doc__)
    parser.add_argument("--provider-config", metavar="PATH", help="mock config (JSON keyed by node name)")
    parser.add_argument("--nodename", default="virtual-kubelet", help="node whose config entry to use")
    parser.add_argument("--internal-ip", default="127.0.0.1", help="hostIP reported for pods")
    add_serving_flags(parser)
    return parser


def _build(args: argparse.Namespace) -> MockProvider:
    config = load_mock_config(args.provider_config, node_name=args.nodename)
    return MockProvider(node_name=args.nodename, config=config, internal_ip=args.internal_ip)


def _reload(args: argparse.Namespace, provider: MockProvider) -> None:
    config = load_mock_config(args.provider_config, node_name=args.nodename)
    provider.update_node(capacity=config.capacity, labels=config.labels, taints=config.taints)


def main(argv: Sequence[str] | None = None) -> int:
    return run_provider_server(_parser(), argv, _build, name="mock", reload=_reload)


if __name__ == "__main__":
    sys.exit(main())
