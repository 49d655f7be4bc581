"""``vkubelet-provider-conformance``: run the provider conformance kit against a gRPC endpoint.

    vkubelet-provider-conformance --address 127.0.0.1:7443
        [--tls-ca F [--tls-cert F --tls-key F] [--tls-server-name N]]
        [--timeout S] [--only CASE ...] [--json] [--list]

Exit status: 0 when no case failed (skips are fine), 1 when at least one did, 2 for a usage
error, 3 when the provider could not be reached or described at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import parse_grpc_config
from vkubelet.adapters.system import SystemClock
from vkubelet.application.conformance import CASES, run_conformance, select_cases
from vkubelet.application.ports.provider import Provider
from vkubelet.domain.errors import DomainError, InvalidInput

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    address: str
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    timeout: float = 30.0
    only: tuple[str, ...] = ()
    json: bool = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vkubelet-provider-conformance",
        description="Drive a vkubelet provider (gRPC protocol vkubelet.provider.v1) through the provider "
        "contract and report PASS/FAIL/SKIP per case. It creates and deletes its own pods (namespace "
        "conformance-<run id>) on the provider.",
    )
    parser.add_argument(
        "--address", help="the provider: host:port, or unix:///path/to/socket (required unless --list)"
    )
    parser.add_argument(
        "--tls-ca", type=Path, help="CA bundle to verify the provider's certificate (enables TLS)"
    )
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mTLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="client key for mTLS (with --tls-cert)")
    parser.add_argument(
        "--tls-server-name", help="the name the provider's certificate carries, when --address differs"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds any one condition may take (a pod becoming Running, a call answering); "
        "a whole case gets four times that (default 30)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CASE",
        help="run only this case (repeatable, or comma-separated); see --list",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser


def parse_args(argv: Sequence[str] | None) -> Options | None:
    """Options, or None when ``--list`` was asked (the list is printed). Exits 2 on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        width = max(len(spec.name) for spec in CASES)
        for spec in CASES:
            needs = f"  [needs {spec.requires.value}]" if spec.requires else ""
            print(f"{spec.name:<{width}}  {spec.summary}{needs}")
        return None
    if not args.address:
        parser.error("--address is required")
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together (mTLS)")
    if args.tls_ca is None and (args.tls_cert is not None or args.tls_server_name):
        parser.error("--tls-cert/--tls-key/--tls-server-name need --tls-ca (they only apply to TLS)")
    only = tuple(name.strip() for value in args.only for name in value.split(",") if name.strip())
    try:
        select_cases(only)
    except InvalidInput as error:
        parser.error(f"--only: {error}")
    return Options(
        address=args.address,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_server_name=args.tls_server_name,
        timeout=args.timeout,
        only=only,
        json=args.json,
    )


@asynccontextmanager
async def open_provider(options: Options) -> AsyncIterator[Provider]:
    """The one place that knows how to reach a provider: a described GrpcProvider for --address.

    Without --tls-ca a TCP address is plaintext: the kit is a development tool pointed at a
    provider the developer runs. Raises Transient when the provider does not answer Describe
    within ``--timeout``.
    """
    document: dict[str, object] = {
        "address": options.address,
        "call_timeout": options.timeout,
        "connect_timeout": options.timeout,
    }
    if options.tls_ca is not None:
        document["ca_file"] = str(options.tls_ca)
        if options.tls_cert is not None and options.tls_key is not None:
            document["cert_file"] = str(options.tls_cert)
            document["key_file"] = str(options.tls_key)
        if options.tls_server_name:
            document["server_name"] = options.tls_server_name
    elif not options.address.startswith("unix:"):
        document["insecure"] = True
    provider = GrpcProvider(parse_grpc_config(document, source="the command line"))
    try:
        await provider.connect()
        yield provider
    finally:
        await provider.close()


async def check(provider: Provider, options: Options, *, out: TextIO) -> int:
    """Run the kit against ``provider``, print the report to ``out`` and return the exit status."""
    report = await run_conformance(
        provider, clock=SystemClock(), wait_seconds=options.timeout, only=options.only, target=options.address
    )
    if options.json:
        json.dump(report.to_json(), out, indent=2)
        out.write("\n")
    else:
        out.write(report.render() + "\n")
    return EXIT_OK if report.ok else EXIT_FAILED


async def _run(options: Options) -> int:
    try:
        async with open_provider(options) as provider:
            return await check(provider, options, out=sys.stdout)
    except DomainError as error:
        print(
            f"vkubelet-provider-conformance: cannot use the provider at {options.address}: {error}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options is None:
        return EXIT_OK
    return asyncio.run(_run(options))


if __name__ == "__main__":
    sys.exit(main())
