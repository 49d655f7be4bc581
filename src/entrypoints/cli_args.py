"""The ``virtual-kubelet`` command line: flags and environment in, a validated command out.

:func:`parse_command_line` is the whole surface. It reads nothing but its arguments and, for
kubeconfig discovery, whether a few files exist; it prints nothing and never exits. The result is
one of :class:`RunCommand` (with the :class:`~vkubelet.application.settings.Settings` the daemon
is built from), :class:`VersionCommand`, :class:`ProvidersCommand` or :class:`HelpCommand`.
Warnings (deprecated flags, flags without effect) and debug notes (ignored ``--klog.*`` flags)
travel inside the command, so ``main`` logs them once logging is configured with the parsed
``--log-level``. Invalid input raises :class:`CliError`, whose message names the flag or
environment variable and the offending value, and whose ``exit_code`` is 2 (argparse's
convention for usage errors).

Flag spellings, defaults and environment variables follow the Go virtual-kubelet CLI
(upstream-behavior.md section 6), with its bugs fixed; docs/cli.md lists every difference. Go
conventions kept for compatibility:

* durations use Go's syntax (``30s``, ``1m``, ``1h30m``, ``500ms``, ``0``), see
  :func:`parse_go_duration`;
* boolean flags are given bare (``--disable-taint``) or as ``--flag=true|false`` (pflag's
  spellings: ``1 t T true TRUE True`` and ``0 f F false FALSE False``); ``--flag false`` with a
  space is *not* a value, as in pflag;
* repeatable list flags also split on commas (``--trace-exporter jaeger,zpages``);
* ``--klog.*`` flags are accepted and ignored (vkubelet logs through ``--log-level``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vkubelet.application.settings import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_LISTEN_HOST,
    DEFAULT_LISTEN_PORT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_METRICS_ADDR,
    DEFAULT_NODE_NAME,
    DEFAULT_SERVICE_NAME,
    DEFAULT_TAINT_EFFECT,
    DEFAULT_TAINT_KEY,
    ControllerSettings,
    KubeSettings,
    LeaderElectionSettings,
    NodeSettings,
    ServerSettings,
    Settings,
    TraceSettings,
)
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.leader import ElectionTiming
from vkubelet.domain.provider import Taint
from vkubelet.domain.sampling import SampleRate, parse_sample_rate

PROGRAM = "virtual-kubelet"
EXIT_USAGE = 2
EXIT_FAILURE = 1

DEFAULT_EXPORTERS: tuple[str, ...] = ("jaeger", "zpages", "otlp")
OPERATING_SYSTEMS = ("linux", "windows")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
RESERVED_TRACE_TAGS = ("operatingSystem", "provider", "nodeName")

TRACE_LEVEL = 5  # below logging.DEBUG, for logrus' "trace"
LOG_LEVELS: Mapping[str, int] = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LEVEL,
}

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

# Defaults of the values that flags may override: one source of truth, the settings classes.
_CONTROLLER_DEFAULTS = ControllerSettings()
_SERVER_DEFAULTS = ServerSettings()
_KUBE_DEFAULTS = KubeSettings()
_ELECTION_DEFAULTS = LeaderElectionSettings()
# The namespace of the pod vkubelet runs in, as the kubelet mounts it for its ServiceAccount.
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_DNS_LABEL_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")

_BOOL_METAVAR = "BOOL"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_HOSTNAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?", re.IGNORECASE)
_QUALIFIED_NAME_PART = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")


class CliError(InvalidInput):
    """Invalid command-line input. ``main`` prints the message and exits with ``exit_code``."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Run the daemon with these settings."""

    settings: Settings
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # debug-level remarks, e.g. ignored --klog.* flags


@dataclass(frozen=True, slots=True)
class VersionCommand:
    """``virtual-kubelet version``: print "Version: <v>, Built: <date>"."""

    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProvidersCommand:
    """``virtual-kubelet providers [NAME]``: list the providers, or check that NAME is one."""

    name: str | None
    available: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def render(self) -> tuple[int, str]:
        """The exit code and the text to print (stdout on 0, stderr otherwise).

        As upstream, an unknown NAME exits 1 (not 2: the command line itself was fine).
        """
        if self.name is None:
            return 0, "".join(f"{name}\n" for name in self.available)
        if self.name in self.available:
            return 0, f"{self.name}\n"
        return EXIT_FAILURE, f"no such provider: {self.name!r} (available: {_listing(self.available)})\n"


@dataclass(frozen=True, slots=True)
class HelpCommand:
    """``--help``, ``-h`` or ``help``: print ``text`` and exit 0."""

    text: str


Command = RunCommand | VersionCommand | ProvidersCommand | HelpCommand


def parse_command_line(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    providers: Sequence[str],
    exporters: Sequence[str] = DEFAULT_EXPORTERS,
) -> Command:
    """Parse ``argv`` (without the program name) and ``environ`` into a :data:`Command`.

    ``providers`` and ``exporters`` are the names the composition root can build; ``--provider``
    and ``--trace-exporter`` are validated against them. Raises :class:`CliError`.
    """
    parser = _build_parser()
    tokens, trailing, notes, wants_help = _prepare(argv, frozenset(parser.value_flags))
    if wants_help:
        return HelpCommand(parser.format_help())
    ns = parser.parse_intermixed_args(tokens)
    log_level = _log_level(ns.log_level)
    positionals: list[str] = [*ns.command, *trailing]
    if positionals:
        verb, args = positionals[0], positionals[1:]
        if verb == "help":
            return HelpCommand(parser.format_help())
        if verb == "version":
            if args:
                raise CliError(f"unexpected arguments for version: {' '.join(args)!r}")
            return VersionCommand(notes=tuple(notes))
        if verb == "providers":
            if len(args) > 1:
                raise CliError(f"providers takes at most one provider name, got {' '.join(args)!r}")
            return ProvidersCommand(args[0] if args else None, tuple(providers), notes=tuple(notes))
        if verb in _TRUE_WORDS or verb in _FALSE_WORDS:
            raise CliError(
                f"unexpected argument {verb!r}: a boolean flag takes its value after '=' (--flag={verb})"
            )
        raise CliError(f"unknown command {verb!r} (commands: version, providers, help)")
    return _run_command(ns, environ, log_level, notes, providers=providers, exporters=exporters)


def wants_local_control_plane(*, requested: bool, kubeconfig: Path | None, in_cluster: bool) -> bool:
    """Whether vkubelet should start its own etcd + kube-apiserver.

    Yes when ``--local-control-plane`` asks for it, and also when there is nothing else to talk
    to: no kubeconfig was found and the process is not running inside a cluster.
    """
    return requested or (kubeconfig is None and not in_cluster)


def log_level_number(name: str) -> int:
    """The :mod:`logging` level of a validated ``--log-level`` name (``trace`` is 5)."""
    return LOG_LEVELS[name]


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
    value("--nodename", f"node name (default: $DEFAULT_NODE_NAME, else {DEFAULT_NODE_NAME})", metavar="NAME")
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


def _run_command(
    ns: argparse.Namespace,
    environ: Mapping[str, str],
    log_level: str,
    notes: list[str],
    *,
    providers: Sequence[str],
    exporters: Sequence[str],
) -> RunCommand:
    warnings: list[str] = []

    # Deprecated flags: accepted, ignored, and said so.
    if ns.namespace is not None:
        warnings.append(
            "--namespace is deprecated and ignored: pods bound to the node are watched in every namespace"
        )
    if ns.enable_node_lease is not None:
        _bool("--enable-node-lease", ns.enable_node_lease)
        warnings.append("--enable-node-lease is deprecated and ignored: node leases are always used")
    if ns.taint is not None:
        warnings.append("--taint is deprecated: use VKUBELET_TAINT_KEY")
    if ns.metrics_addr is not None:
        warnings.append(
            "--metrics-addr is accepted for compatibility but unused: metrics are not implemented"
        )

    provider = _provider(ns.provider, providers)
    node_name, node_source = _first(
        ("--nodename", ns.nodename), ("DEFAULT_NODE_NAME", environ.get("DEFAULT_NODE_NAME"))
    )
    node_name = node_name or DEFAULT_NODE_NAME
    if not _is_subdomain(node_name):
        raise _invalid(
            node_source or "--nodename",
            node_name,
            "a node name must be a lowercase DNS subdomain (a-z, 0-9, '-' and '.', at most 253 characters)",
        )
    operating_system = ns.os if ns.os is not None else "linux"
    if operating_system not in OPERATING_SYSTEMS:
        raise _invalid("--os", operating_system, "must be linux or windows (lowercase)")
    cluster_domain = ns.cluster_domain if ns.cluster_domain is not None else DEFAULT_CLUSTER_DOMAIN
    if not _is_subdomain(cluster_domain):
        raise _invalid("--cluster-domain", cluster_domain, "must be a lowercase DNS subdomain")
    provider_config = Path(_expand_home(ns.provider_config, environ)) if ns.provider_config else None
    taint = (
        None if _bool("--disable-taint", ns.disable_taint) else _taint(ns.taint, provider, environ, warnings)
    )

    controller = ControllerSettings(
        pod_sync_workers=_positive_int(
            "--pod-sync-workers", ns.pod_sync_workers, default=_CONTROLLER_DEFAULTS.pod_sync_workers
        ),
        full_resync_period=_duration(
            "--full-resync-period",
            ns.full_resync_period,
            default=_CONTROLLER_DEFAULTS.full_resync_period,
            zero_ok=False,
        ),
        startup_timeout=_duration(
            "--startup-timeout",
            ns.startup_timeout,
            default=_CONTROLLER_DEFAULTS.startup_timeout,
            zero_ok=True,
        ),
    )

    in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST")) and bool(environ.get("KUBERNETES_SERVICE_PORT"))
    kubeconfig = _kubeconfig(ns.kubeconfig, environ)
    requested_local = _bool("--local-control-plane", ns.local_control_plane)
    local = wants_local_control_plane(requested=requested_local, kubeconfig=kubeconfig, in_cluster=in_cluster)
    if local:
        if requested_local and ns.kubeconfig:
            raise CliError(
                f"--local-control-plane and --kubeconfig {ns.kubeconfig!r} are mutually exclusive: "
                "the local control plane is its own cluster"
            )
        if kubeconfig is not None:
            notes.append(f"--local-control-plane: not using kubeconfig {str(kubeconfig)!r}")
        elif not requested_local:
            warnings.append(
                "no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a "
                "cluster: starting a local control plane (--local-control-plane)"
            )
        kubeconfig = None
    qps = _qps(ns.kube_api_qps)
    kube = KubeSettings(
        kubeconfig=kubeconfig,
        qps=qps,
        burst=_positive_int("--kube-api-burst", ns.kube_api_burst, default=_KUBE_DEFAULTS.burst),
        local_control_plane=local,
    )

    pod_ip = environ.get("VKUBELET_POD_IP") or None
    if pod_ip is not None:
        try:
            pod_ip = str(ipaddress.ip_address(pod_ip))
        except ValueError:
            raise _invalid("VKUBELET_POD_IP", pod_ip, "must be an IPv4 or IPv6 address") from None

    node = NodeSettings(
        name=node_name,
        provider=provider,
        operating_system=operating_system,
        provider_config=provider_config,
        internal_ip=pod_ip,
        taint=taint,
        cluster_domain=cluster_domain,
        shutdown_node_not_ready=_bool("--shutdown-node-not-ready", ns.shutdown_node_not_ready, absent=True),
    )
    server = _server(ns, environ, warnings)
    trace = _trace(ns, exporters, warnings)
    leader_election = _leader_election(ns, node_name, in_cluster=in_cluster, warnings=warnings)
    settings = Settings(
        node=node,
        controller=controller,
        server=server,
        kube=kube,
        trace=trace,
        leader_election=leader_election,
        metrics_addr=ns.metrics_addr if ns.metrics_addr is not None else DEFAULT_METRICS_ADDR,
        log_level=log_level,
    )
    return RunCommand(settings, warnings=tuple(warnings), notes=tuple(notes))


def _server(ns: argparse.Namespace, environ: Mapping[str, str], warnings: list[str]) -> ServerSettings:
    host, port = _listen_address(ns.listen_address, environ, warnings)
    cert, cert_source = _first(
        ("--tls-cert-file", ns.tls_cert_file),
        ("APISERVER_CERT_LOCATION", environ.get("APISERVER_CERT_LOCATION")),
    )
    key, key_source = _first(
        ("--tls-private-key-file", ns.tls_private_key_file),
        ("APISERVER_KEY_LOCATION", environ.get("APISERVER_KEY_LOCATION")),
    )
    if bool(cert) != bool(key):
        given, missing = (
            (cert_source, "--tls-private-key-file or APISERVER_KEY_LOCATION")
            if cert
            else (key_source, "--tls-cert-file or APISERVER_CERT_LOCATION")
        )
        raise CliError(f"{given} {cert or key!r} is set but {missing} is not: a certificate needs its key")
    rotate = _bool("--rotate-server-certificates", ns.rotate_server_certificates)
    self_approve = _bool("--serving-certificate-self-approve", ns.serving_certificate_self_approve)
    if self_approve and not rotate:
        raise CliError("--serving-certificate-self-approve needs --rotate-server-certificates")
    if rotate and cert:
        # Two sources of one certificate: which one is served would be a surprise.
        raise CliError(
            f"--rotate-server-certificates and {cert_source} {cert!r} are mutually exclusive: the "
            "serving certificate comes either from a file or from a CertificateSigningRequest"
        )
    ca, _ = _first(
        ("--client-ca-file", ns.client_ca_file),
        ("APISERVER_CA_CERT_LOCATION", environ.get("APISERVER_CA_CERT_LOCATION")),
    )
    return ServerSettings(
        listen_host=host,
        listen_port=port,
        cert_path=Path(_expand_home(cert, environ)) if cert else None,
        key_path=Path(_expand_home(key, environ)) if key else None,
        ca_path=Path(_expand_home(ca, environ)) if ca else None,
        stream_idle_timeout=_duration(
            "--stream-idle-timeout",
            ns.stream_idle_timeout,
            default=_SERVER_DEFAULTS.stream_idle_timeout,
            zero_ok=True,
        ),
        stream_creation_timeout=_duration(
            "--stream-creation-timeout",
            ns.stream_creation_timeout,
            default=_SERVER_DEFAULTS.stream_creation_timeout,
            zero_ok=False,
        ),
        rotate_server_certificates=rotate,
        serving_certificate_self_approve=self_approve,
        anonymous_auth=_bool("--anonymous-auth", ns.anonymous_auth),
        authentication_token_webhook=_bool("--authentication-token-webhook", ns.authentication_token_webhook),
        authentication_token_webhook_cache_ttl=_duration(
            "--authentication-token-webhook-cache-ttl",
            ns.authentication_token_webhook_cache_ttl,
            default=_SERVER_DEFAULTS.authentication_token_webhook_cache_ttl,
            zero_ok=True,
        ),
        authorization_webhook_cache_authorized_ttl=_duration(
            "--authorization-webhook-cache-authorized-ttl",
            ns.authorization_webhook_cache_authorized_ttl,
            default=_SERVER_DEFAULTS.authorization_webhook_cache_authorized_ttl,
            zero_ok=True,
        ),
        authorization_webhook_cache_unauthorized_ttl=_duration(
            "--authorization-webhook-cache-unauthorized-ttl",
            ns.authorization_webhook_cache_unauthorized_ttl,
            default=_SERVER_DEFAULTS.authorization_webhook_cache_unauthorized_ttl,
            zero_ok=True,
        ),
    )


def _trace(ns: argparse.Namespace, exporters: Sequence[str], warnings: list[str]) -> TraceSettings:
    chosen: list[str] = []
    for raw in ns.trace_exporter or ():
        for name in (part.strip() for part in raw.split(",")):
            if not name:
                continue
            if name not in exporters:
                raise _invalid(
                    "--trace-exporter", name, f"unknown trace exporter (available: {_listing(exporters)})"
                )
            if name not in chosen:
                chosen.append(name)
    service_name = ns.trace_service_name if ns.trace_service_name is not None else DEFAULT_SERVICE_NAME
    if not service_name.strip():
        raise _invalid("--trace-service-name", service_name, "must not be empty")
    tags: dict[str, str] = {}
    for raw in ns.trace_tag or ():
        key, sep, tag_value = raw.partition("=")
        if not sep:
            raise _invalid("--trace-tag", raw, "invalid format, must be key=value")
        if not key:
            raise _invalid("--trace-tag", raw, "the key must not be empty")
        if key in RESERVED_TRACE_TAGS:
            raise _invalid(
                "--trace-tag",
                raw,
                f"{key!r} is reserved: operatingSystem, provider and nodeName are set automatically",
            )
        if key in tags:
            raise _invalid("--trace-tag", raw, f"duplicate key {key!r}")
        tags[key] = tag_value
    sample_rate: SampleRate | None = None
    if ns.trace_sample_rate is not None:
        try:
            sample_rate = parse_sample_rate(ns.trace_sample_rate)
        except InvalidInput as error:
            raise CliError(
                f"invalid value {ns.trace_sample_rate!r} for --trace-sample-rate: {error}"
            ) from None
    if not chosen:
        ignored = [
            flag
            for flag, given in (
                ("--trace-sample-rate", ns.trace_sample_rate is not None),
                ("--trace-tag", bool(tags)),
            )
            if given
        ]
        if ignored:
            warnings.append(f"{' and '.join(ignored)} have no effect without --trace-exporter")
    return TraceSettings(
        exporters=tuple(chosen), service_name=service_name, tags=tags, sample_rate=sample_rate
    )


def _leader_election(
    ns: argparse.Namespace, node_name: str, *, in_cluster: bool, warnings: list[str]
) -> LeaderElectionSettings:
    enabled = _bool("--leader-elect", ns.leader_elect)
    durations = {
        "--leader-elect-lease-duration": (ns.leader_elect_lease_duration, _ELECTION_DEFAULTS.lease_duration),
        "--leader-elect-renew-deadline": (ns.leader_elect_renew_deadline, _ELECTION_DEFAULTS.renew_deadline),
        "--leader-elect-retry-period": (ns.leader_elect_retry_period, _ELECTION_DEFAULTS.retry_period),
    }
    seconds = {
        flag: _duration(flag, raw, default=default, zero_ok=False)
        for flag, (raw, default) in durations.items()
    }
    lease, deadline, retry = seconds.values()
    if deadline >= lease:
        raise _invalid(
            "--leader-elect-renew-deadline",
            _shown(ns.leader_elect_renew_deadline, deadline),
            "must be shorter than --leader-elect-lease-duration "
            f"({_shown(ns.leader_elect_lease_duration, lease)})",
        )
    if retry >= deadline:
        raise _invalid(
            "--leader-elect-retry-period",
            _shown(ns.leader_elect_retry_period, retry),
            "must be shorter than --leader-elect-renew-deadline "
            f"({_shown(ns.leader_elect_renew_deadline, deadline)})",
        )
    try:
        ElectionTiming(lease_duration=lease, renew_deadline=deadline, retry_period=retry)
    except InvalidInput as error:
        raise _invalid(
            "--leader-elect-lease-duration", _shown(ns.leader_elect_lease_duration, lease), str(error)
        ) from None
    namespace = (
        ns.leader_elect_resource_namespace or _own_namespace(in_cluster) or _ELECTION_DEFAULTS.namespace
    )
    if len(namespace) > 63 or not _DNS_LABEL_NAME.fullmatch(namespace):
        raise _invalid(
            "--leader-elect-resource-namespace", namespace, "a namespace must be a lowercase DNS label"
        )
    name = ns.leader_elect_resource_name or f"vkubelet-{node_name}"
    if not _is_subdomain(name):
        raise _invalid("--leader-elect-resource-name", name, "a Lease name must be a lowercase DNS subdomain")
    if not enabled:
        given = [
            flag
            for flag, raw in (
                *((flag, raw) for flag, (raw, _) in durations.items()),
                ("--leader-elect-resource-namespace", ns.leader_elect_resource_namespace),
                ("--leader-elect-resource-name", ns.leader_elect_resource_name),
            )
            if raw is not None
        ]
        if given:
            warnings.append(
                f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect without --leader-elect"
            )
    return LeaderElectionSettings(
        enabled=enabled,
        lease_duration=lease,
        renew_deadline=deadline,
        retry_period=retry,
        namespace=namespace,
        name=name,
    )


def _shown(raw: str | None, seconds: float) -> str:
    """The value as the user gave it, or the default in Go's syntax."""
    return raw if raw is not None else f"{seconds:g}s"


def _own_namespace(in_cluster: bool) -> str | None:
    """The namespace of the pod vkubelet runs in (its ServiceAccount's), when in a cluster."""
    if not in_cluster:
        return None
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Value helpers. Each raises CliError naming the flag (or variable) and the value.


def _invalid(source: str, value: str, why: str) -> CliError:
    return CliError(f"invalid value {value!r} for {source}: {why}")


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _first(*candidates: tuple[str, str | None]) -> tuple[str | None, str | None]:
    """The first non-empty value and where it came from (an empty variable counts as unset)."""
    for source, candidate in candidates:
        if candidate:
            return candidate, source
    return None, None


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


def _qps(raw: str | None) -> float:
    if raw is None:
        return _KUBE_DEFAULTS.qps
    if not _DECIMAL.fullmatch(raw):
        raise _invalid("--kube-api-qps", raw, "must be a number >= 0")
    qps = float(raw)
    if not 0.0 <= qps < float("inf"):
        raise _invalid("--kube-api-qps", raw, "must be a number >= 0")
    return qps


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


def _log_level(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_LOG_LEVEL
    level = raw.lower()
    if level not in LOG_LEVELS:
        raise _invalid("--log-level", raw, f"must be one of {_listing(list(LOG_LEVELS))}")
    return "warn" if level == "warning" else level


def _provider(raw: str | None, providers: Sequence[str]) -> str:
    if not raw:
        raise CliError(f"--provider is required (available: {_listing(providers)})")
    if raw not in providers:
        raise _invalid("--provider", raw, f"unknown provider (available: {_listing(providers)})")
    return raw


def _is_subdomain(name: str) -> bool:
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def _taint(flag_key: str | None, provider: str, environ: Mapping[str, str], warnings: list[str]) -> Taint:
    """The node taint: key from the environment, then --taint, then the default.

    VKUBELET_TAINT_KEY is what upstream's code reads; VK_TAINT_KEY is what its deprecation
    message (and the sync-core issue) named, so both are honoured, the former first.
    """
    canonical, alias = environ.get("VKUBELET_TAINT_KEY"), environ.get("VK_TAINT_KEY")
    if canonical and alias and canonical != alias:
        warnings.append(
            f"VKUBELET_TAINT_KEY={canonical!r} and VK_TAINT_KEY={alias!r} differ: using VKUBELET_TAINT_KEY"
        )
    key, key_source = _first(
        ("VKUBELET_TAINT_KEY", canonical), ("VK_TAINT_KEY", alias), ("--taint", flag_key)
    )
    key = key or DEFAULT_TAINT_KEY
    if not _is_qualified_name(key):
        raise _invalid(
            key_source or "--taint",
            key,
            "a taint key must be a qualified name "
            "([prefix/]name, name of at most 63 characters: letters, digits, '-', '_', '.')",
        )
    value = environ.get("VKUBELET_TAINT_VALUE") or provider
    if len(value) > 63 or not _QUALIFIED_NAME_PART.fullmatch(value):
        raise _invalid(
            "VKUBELET_TAINT_VALUE",
            value,
            "a taint value must be at most 63 characters: letters, "
            "digits, '-', '_', '.', starting and ending with a letter or digit",
        )
    effect = environ.get("VKUBELET_TAINT_EFFECT") or DEFAULT_TAINT_EFFECT
    if effect not in TAINT_EFFECTS:
        raise _invalid("VKUBELET_TAINT_EFFECT", effect, f"must be one of {_listing(TAINT_EFFECTS)}")
    return Taint(key=key, value=value, effect=effect)


def _is_qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and _is_subdomain(prefix)):
        return False
    return len(name) <= 63 and _QUALIFIED_NAME_PART.fullmatch(name) is not None


def _expand_home(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        return _home(environ) + path[1:]
    return path


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def _kubeconfig(flag: str | None, environ: Mapping[str, str]) -> Path | None:
    """The kubeconfig file: --kubeconfig, else the first existing $KUBECONFIG entry, else
    ~/.kube/config when it exists, else None (in-cluster config or the local control plane).

    Upstream silently fell back to in-cluster config when the file named did not exist; a
    missing file that was asked for by name is an error here.
    """
    if flag is not None:
        if not flag:
            return None  # --kubeconfig="" explicitly asks for no file, as upstream
        path = Path(_expand_home(flag, environ))
        if not path.is_file():
            raise _invalid("--kubeconfig", flag, "no such file")
        return path
    env = environ.get("KUBECONFIG")
    if env:
        entries = [entry for entry in env.split(os.pathsep) if entry]
        for entry in entries:
            path = Path(_expand_home(entry, environ))
            if path.is_file():
                return path
        if entries:
            raise _invalid("KUBECONFIG", env, "no such file")
    default = Path(_home(environ)) / ".kube" / "config"
    return default if default.is_file() else None


def _listen_address(raw: str | None, environ: Mapping[str, str], warnings: list[str]) -> tuple[str, int]:
    """--listen-address, with KUBELET_PORT as upstream's way to choose the port.

    Precedence: an explicit --listen-address, then KUBELET_PORT (on the default host), then
    0.0.0.0:10250. When both are given and disagree the flag wins, with a warning.
    """
    env_port = environ.get("KUBELET_PORT") or None
    port_from_env = _port("KUBELET_PORT", env_port) if env_port is not None else None
    if raw is None:
        return DEFAULT_LISTEN_HOST, port_from_env if port_from_env is not None else DEFAULT_LISTEN_PORT
    if raw.startswith("["):
        close = raw.find("]")
        host, rest = (raw[1:close], raw[close + 1 :]) if close > 0 else ("", "")
        if not rest.startswith(":") or not _is_ip(host, version=6):
            raise _invalid("--listen-address", raw, "expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep:
            raise _invalid("--listen-address", raw, "expected HOST:PORT, e.g. 0.0.0.0:10250")
        if ":" in host:
            raise _invalid("--listen-address", raw, "an IPv6 host must be in brackets: [::1]:10250")
        if host and not (_is_ip(host, version=4) or _HOSTNAME.fullmatch(host)):
            raise _invalid("--listen-address", raw, f"{host!r} is not an IP address or host name")
    # Port 0: the OS picks a free port, which the Node reports (status.daemonEndpoints), so
    # replicas sharing one network (e.g. pods of the process provider) need no port plan. Only
    # with an IP: a host name may resolve to two addresses, each given its own ephemeral port.
    port = _port(
        "--listen-address",
        port_text,
        shown=raw,
        zero_ok=not host or _is_ip(host, version=4) or _is_ip(host, version=6),
    )
    if port_from_env is not None and port_from_env != port:
        warnings.append(f"KUBELET_PORT={env_port} is ignored: --listen-address {raw!r} sets the port")
    return host or DEFAULT_LISTEN_HOST, port


def _port(source: str, text: str, *, shown: str | None = None, zero_ok: bool = False) -> int:
    lowest = 0 if zero_ok else 1
    if not text.isascii() or not text.isdigit() or not lowest <= int(text) <= 65535:
        raise _invalid(source, shown or text, f"the port must be a number {lowest}..65535")
    return int(text)


def _is_ip(host: str, *, version: int) -> bool:
    try:
        return ipaddress.ip_address(host).version == version
    except ValueError:
        return False
