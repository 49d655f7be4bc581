"""The shared command line of the bundled provider servers (mock and process).

Each program adds its own flags; this module adds the serving ones (``--listen``, TLS, log level),
validates them, builds the provider and serves it with the gRPC SDK until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from vkubelet import __version__
from vkubelet.adapters.grpc.server import ServerTLS, serve
from vkubelet.application.ports.provider import Provider
from vkubelet.domain.errors import InvalidInput

P = TypeVar("P", bound=Provider)
log = logging.getLogger(__name__)


def provider_parser(program: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser with ``--listen``; the caller adds its flags, then :func:`add_serving_flags`."""
    parser = argparse.ArgumentParser(prog=program, description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--listen", required=True, metavar="ADDR", help="host:port or unix:///path")
    return parser


def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, metavar="PATH")
    parser.add_argument("--tls-key", type=Path, metavar="PATH")
    parser.add_argument("--client-ca", type=Path, metavar="PATH", help="require client certs signed by it")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run_provider_server(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    build: Callable[[argparse.Namespace], P],
    *,
    name: str,
    reload: Callable[[argparse.Namespace, P], None] | None = None,
) -> int:
    """Parse, build the provider with ``build`` and serve it. Exit codes: 0 stopped by a signal,
    2 invalid input (flags or provider config), 1 an OS error (e.g. the address is taken).

    With ``reload``, SIGHUP calls it (to re-read the provider config, as daemons do); an
    InvalidInput it raises is logged and the provider keeps its old configuration."""
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        parser.error("--client-ca needs --tls-cert and --tls-key")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def run() -> None:
        provider = build(args)
        if reload is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _reload, args, provider)
        tls = None
        if args.tls_cert:
            tls = ServerTLS(cert_file=args.tls_cert, key_file=args.tls_key, client_ca=args.client_ca)
        await serve(provider, address=args.listen, tls=tls, name=name, version=__version__)

    def _reload(args: argparse.Namespace, provider: P) -> None:
        assert reload is not None
        try:
            reload(args, provider)
            log.info("%s: reloaded the provider config on SIGHUP", parser.prog)
        except InvalidInput as error:
            log.error("%s: SIGHUP: keeping the old config: %s", parser.prog, error)

    try:
        asyncio.run(run())
    except InvalidInput as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    return 0
