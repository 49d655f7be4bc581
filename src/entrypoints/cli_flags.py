"""Go-style flag syntax for ``virtual-kubelet``: the flag table, pflag's token rules, Go values.

What :mod:`vkubelet.entrypoints.cli_args` parses with: :func:`_build_parser` declares every flag,
:func:`_prepare` rewrites pflag spellings for argparse (bare booleans become ``--flag=true``, a
value flag takes the next word even when it starts with ``-``, ``--klog.*`` flags are dropped with
a note), :func:`parse_go_duration` reads Go durations, and the value readers (:func:`_bool`,
:func:`_positive_int`, :func:`_duration`) raise :class:`CliError` naming the flag and the value.
Underscored names are shared with the other ``cli_*`` modules only, not part of the CLI's surface.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from vkubelet.application.settings import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_LISTEN_HOST,
    DEFAULT_LISTEN_PORT,
    DEFAULT_METRICS_ADDR,
    DEFAULT_NODE_NAME,
    DEFAULT_SERVICE_NAME,
)
from vkubelet.domain.errors import InvalidInput

PROGRAM = "virtual-kubelet"
EXIT_USAGE = 2

# Boolean flags: rewritten from the bare form to `--flag=true` before argparse sees them (see
# _prepare), so a bool never swallows the next word and `--flag=false` works as in pflag.
_BOOL_FLAGS = frozenset(
    {
        "disable-taint",
        "shutdown-node-not-ready",
        "anonymous-auth",
        "authentication-token-webhook",
        "local-control-plane",
        "enable-node-lease",
        "leader-elect",
        "rotate-server-certificates",
        "serving-certificate-self-approve",
    }
)
_TRUE_WORDS = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE_WORDS = frozenset({"0", "f", "F", "false", "FALSE", "False"})
# klog's boolean flags take no separate value; every other --klog.<x> does (`--klog.v 2`).
_KLOG_BOOL_FLAGS = frozenset(
    {"logtostderr", "alsologtostderr", "add_dir_header", "skip_headers", "skip_log_headers", "one_output"}
)

_BOOL_METAVAR = "BOOL"
_INTEGER = re.compile(r"[+-]?[0-9]+")


class CliError(InvalidInput):
    """Invalid command-line input. ``main`` prints the message and exits with ``exit_code``."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------
# Go durations


_DURATION_UNITS_NS: Mapping[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_DURATION_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_DURATION_EXAMPLES = "a Go duration such as 30s, 1m, 1h30m or 500ms"


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds.

    A duration is an optional sign and a sequence of decimal numbers, each with an optional
    fraction and a unit: ``ns``, ``us`` (or ``µs``), ``ms``, ``s``, ``m``, ``h``. ``"0"`` alone
    needs no unit. Raises ``ValueError`` on anything else (``""``, ``"1d"``, ``"5"``, ``"1h 30m"``).
    Arithmetic is exact until the final conversion, so ``1.1s`` is 1.1, not 1.1000000000000001.
    """
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_EXAMPLES}")
    total = Fraction(0)
    pos = 0
    while pos < len(rest):
        start = pos
        while pos < len(rest) and rest[pos].isascii() and rest[pos].isdigit():
            pos += 1
        whole = rest[start:pos]
        fraction = ""
        if pos < len(rest) and rest[pos] == ".":
            pos += 1
            frac_start = pos
            while pos < len(rest) and rest[pos].isascii() and rest[pos].isdigit():
                pos += 1
            fraction = rest[frac_start:pos]
        if not whole and not fraction:
            raise ValueError(f"invalid duration {text!r}: expected {_DURATION_EXAMPLES}")
        unit_start = pos
        while pos < len(rest) and rest[pos] != "." and not (rest[pos].isascii() and rest[pos].isdigit()):
            pos += 1
        unit = rest[unit_start:pos]
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}: expected {_DURATION_EXAMPLES}")
        if unit not in _DURATION_UNITS_NS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}: expected {_DURATION_EXAMPLES}")
        number = Fraction(int(whole or "0"))
        if fraction:
            number += Fraction(int(fraction), 10 ** len(fraction))
        total += number * _DURATION_UNITS_NS[unit]
        if total > _MAX_DURATION_NS:
            raise ValueError(f"duration {text!r} is out of range (at most about 292 years)")
    seconds = float(total / 1_000_000_000)
    return -seconds if negative else seconds


# --------------------------------------------------------------------------------------------
# Parsing


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows boolean flags as ``--flag[=true|false]``, the only spellings that work."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if action.metavar == _BOOL_METAVAR:
            return f"{action.option_strings[0]}[=true|false]"
        return super()._format_action_invocation(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise CliError instead of printing and exiting."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value_flags: set[str] = set()  # names (without "--") of flags that take a value

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise CliError(message or f"exit {status}", exit_code=status or EXIT_USAGE)


_EPILOG = """\
commands:
  (none)               run the virtual kubelet
  version              print the version
  providers [NAME]     list the providers (with NAME: exit 1 unless it is one)

environment:
  KUBECONFIG                  kubeconfig path when --kubeconfig is not given
  DEFAULT_NODE_NAME           default of --nodename
  KUBELET_PORT                port of the kubelet API when --listen-address is not given
  VKUBELET_POD_IP             InternalIP of the node
  VKUBELET_TAINT_KEY          taint key (also VK_TAINT_KEY; overrides --taint)
  VKUBELET_TAINT_VALUE        taint value (default: the provider name)
  VKUBELET_TAINT_EFFECT       NoSchedule (default), PreferNoSchedule or NoExecute
  APISERVER_CERT_LOCATION     serving certificate (PEM) of the kubelet API
  APISERVER_KEY_LOCATION      its private key
  APISERVER_CA_CERT_LOCATION  client CA when --client-ca-file is not given

Durations use Go's syntax: 30s, 1m, 1h30m, 500ms. See docs/cli.md for details.
"""


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROGRAM,
        usage=f"{PROGRAM} [flags] [version | providers [NAME]]",
        description="A virtual kubelet: registers a Node and runs its pods in a provider.",
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
        add_help=False,
        allow_abbrev=False,
    )
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)

    def value(flag: str, help_text: str, *, metavar: str = "VALUE", hidden: bool = False) -> None:
        parser.value_flags.add(flag[2:])
        parser.add_argument(flag, metavar=metavar, help=argparse.SUPPRESS if hidden else help_text)

    def listing(flag: str, help_text: str, *, metavar: str) -> None:
        parser.value_flags.add(flag[2:])
        parser.add_argument(flag, action="append", metavar=metavar, help=help_text)

    def boolean(flag: str, help_text: str, *, hidden: bool = False) -> None:
        parser.add_argument(
            flag, nargs="?", metavar=_BOOL_METAVAR, help=argparse.SUPPRESS if hidden else help_text
        )

    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    # Cluster connection
    value(
        "--kubeconfig",
        "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config if it exists, else in-cluster "
        "config or the local control plane)",
        metavar="PATH",
    )
    boolean(
        "--local-control-plane",
        "start vkubelet's own etcd + kube-apiserver (implied when there is no kubeconfig and no cluster)",
    )
    value("--kube-api-qps", "client-side API request rate; 0 = unlimited (default 50)", metavar="QPS")
    value("--kube-api-burst", "client-side API request burst (default 100)", metavar="N")
    # Node
    value(
        "--nodename",
        "node name, or several comma-separated for one node each "
        f"(default: $DEFAULT_NODE_NAME, else {DEFAULT_NODE_NAME})",
        metavar="NAME[,NAME...]",
    )
    value("--os", "operating system of the node: linux or windows (default linux)", metavar="OS")
    value("--provider", "provider to run pods in (required)", metavar="NAME")
    value("--provider-config", "provider configuration file", metavar="PATH")
    value("--cluster-domain", f"cluster DNS domain (default {DEFAULT_CLUSTER_DOMAIN})", metavar="DOMAIN")
    boolean("--disable-taint", "do not taint the node")
    value("--taint", "deprecated: use VKUBELET_TAINT_KEY", metavar="KEY")
    boolean(
        "--shutdown-node-not-ready",
        "mark the node NotReady on shutdown (default true; --shutdown-node-not-ready=false to disable)",
    )
    # Pod controller
    value("--pod-sync-workers", "number of pod sync workers (default 10)", metavar="N")
    value("--full-resync-period", "period of the full pod reconcile (default 1m)", metavar="DURATION")
    value(
        "--startup-timeout",
        "how long to wait for readiness at startup; 0 = forever (default 0)",
        metavar="DURATION",
    )
    # Kubelet API
    value(
        "--listen-address",
        f"kubelet API address (default {DEFAULT_LISTEN_HOST}:{DEFAULT_LISTEN_PORT}); "
        "port 0: the OS picks one, reported in the Node's daemonEndpoints",
        metavar="HOST:PORT",
    )
    value(
        "--tls-cert-file",
        "serving certificate (default: $APISERVER_CERT_LOCATION, else self-signed)",
        metavar="PATH",
    )
    value("--tls-private-key-file", "serving key (default: $APISERVER_KEY_LOCATION)", metavar="PATH")
    value(
        "--client-ca-file",
        "CA for client certificates (default: $APISERVER_CA_CERT_LOCATION)",
        metavar="PATH",
    )
    boolean(
        "--rotate-server-certificates",
        "get the serving certificate from a kubernetes.io/kubelet-serving CertificateSigningRequest "
        "and renew it before it expires; self-signed until it is issued (default false)",
    )
    boolean(
        "--serving-certificate-self-approve",
        "with --rotate-server-certificates: approve the node's own CSR after checking its subject, "
        "usages and SANs (default false: an admin or an approver approves it)",
    )
    boolean("--anonymous-auth", "serve requests without credentials (default false)")
    boolean("--authentication-token-webhook", "verify bearer tokens with TokenReview (default false)")
    value(
        "--authentication-token-webhook-cache-ttl",
        "TokenReview cache lifetime (default 2m)",
        metavar="DURATION",
    )
    value(
        "--authorization-webhook-cache-authorized-ttl",
        "SubjectAccessReview cache lifetime for allowed requests (default 5m)",
        metavar="DURATION",
    )
    value(
        "--authorization-webhook-cache-unauthorized-ttl",
        "SubjectAccessReview cache lifetime for denied requests (default 30s)",
        metavar="DURATION",
    )
    value(
        "--stream-idle-timeout",
        "idle timeout of exec/attach/port-forward streams; 0 = none (default 4h)",
        metavar="DURATION",
    )
    value("--stream-creation-timeout", "timeout for creating streams (default 30s)", metavar="DURATION")
    value(
        "--metrics-addr",
        f"accepted for compatibility; unused (default {DEFAULT_METRICS_ADDR})",
        metavar="ADDR",
    )
    # Tracing
    listing(
        "--trace-exporter", "trace exporter; repeatable or comma-separated (default: none)", metavar="NAME"
    )
    value("--trace-service-name", f"service name in traces (default {DEFAULT_SERVICE_NAME})", metavar="NAME")
    listing("--trace-tag", "resource attribute added to traces; repeatable", metavar="KEY=VALUE")
    value("--trace-sample-rate", "percentage of traces recorded: 0..100, always or never", metavar="RATE")
    # Leader election (high availability)
    boolean(
        "--leader-elect",
        "run as one of several replicas of the node; only the holder of a Lease writes (default false)",
    )
    value(
        "--leader-elect-lease-duration",
        "how long a standby waits on an unrenewed leader lease before taking it (default 15s)",
        metavar="DURATION",
    )
    value(
        "--leader-elect-renew-deadline",
        "how long the leader keeps writing without a successful renewal (default 10s)",
        metavar="DURATION",
    )
    value(
        "--leader-elect-retry-period",
        "interval between tries to acquire or renew the lease (default 2s)",
        metavar="DURATION",
    )
    value(
        "--leader-elect-resource-namespace",
        "namespace of the leader Lease (default: the pod's own in a cluster, else vkubelet-system)",
        metavar="NAMESPACE",
    )
    value(
        "--leader-elect-resource-name",
        "name of the leader Lease (default vkubelet-<nodename>)",
        metavar="NAME",
    )
    # Logging
    value("--log-level", "panic, fatal, error, warn, info, debug or trace (default info)", metavar="LEVEL")
    # Deprecated and ignored, as upstream
    value("--namespace", "", hidden=True)
    boolean("--enable-node-lease", "", hidden=True)
    return parser


def _prepare(
    argv: Sequence[str], value_flags: frozenset[str]
) -> tuple[list[str], list[str], list[str], bool]:
    """Rewrite Go-style tokens for argparse, as pflag reads them.

    ``--klog.*`` flags are dropped (with a note), bare boolean flags become ``--flag=true``, and
    a flag that takes a value is joined with the next word (``--flag=word``) even when the word
    starts with ``-``: pflag does that, and it lets ``--full-resync-period -1s`` reach validation
    instead of failing as an unknown option. Returns the tokens for argparse, the words after
    ``--`` (positional whatever they look like; argparse's intermixed parsing mishandles ``--``),
    debug notes, and whether help was asked for.
    """
    tokens: list[str] = []
    trailing: list[str] = []
    notes: list[str] = []
    wants_help = False
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--":
            trailing.extend(argv[index:])
            break
        if token in ("-h", "--help"):
            wants_help = True
        elif token.startswith("--klog."):
            name, has_value, _ = token[len("--klog.") :].partition("=")
            takes_separate_value = not has_value and name not in _KLOG_BOOL_FLAGS
            if takes_separate_value and index < len(argv) and not argv[index].startswith("-"):
                token = f"{token} {argv[index]}"
                index += 1
            notes.append(f"ignoring {token}: klog flags have no effect; use --log-level")
        elif token.startswith("--") and token[2:] in _BOOL_FLAGS:
            tokens.append(f"{token}=true")
        elif token.startswith("--") and token[2:] in value_flags and index < len(argv):
            tokens.append(f"{token}={argv[index]}")
            index += 1
        else:
            tokens.append(token)
    return tokens, trailing, notes, wants_help


# --------------------------------------------------------------------------------------------
# Value readers. Each raises CliError naming the flag (or variable) and the value.


def _invalid(source: str, value: str, why: str) -> CliError:
    return CliError(f"invalid value {value!r} for {source}: {why}")


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _bool(flag: str, raw: str | None, *, absent: bool = False) -> bool:
    if raw is None:
        return absent
    if raw in _TRUE_WORDS:
        return True
    if raw in _FALSE_WORDS:
        return False
    raise _invalid(flag, raw, "must be true or false")


def _positive_int(flag: str, raw: str | None, *, default: int) -> int:
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise _invalid(flag, raw, "must be an integer >= 1")
    number = int(raw)
    if number < 1:
        raise _invalid(flag, raw, "must be an integer >= 1")
    return number


def _duration(flag: str, raw: str | None, *, default: float, zero_ok: bool) -> float:
    if raw is None:
        return default
    try:
        seconds = parse_go_duration(raw)
    except ValueError as error:
        raise _invalid(flag, raw, str(error)) from None
    if seconds < 0 or (seconds == 0 and not zero_ok):
        raise _invalid(flag, raw, "must be greater than 0" if not zero_ok else "must not be negative")
    return seconds
