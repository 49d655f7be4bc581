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

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vkubelet.application.settings import (
    DEFAULT_LOG_LEVEL,
    TRACE_EXPORTERS,
    Settings,
)
from vkubelet.entrypoints.cli_discovery import (
    SERVICE_ACCOUNT_NAMESPACE_FILE,
    wants_local_control_plane,
)
from vkubelet.entrypoints.cli_flags import (
    _FALSE_WORDS,
    _TRUE_WORDS,
    EXIT_USAGE,
    PROGRAM,
    CliError,
    _build_parser,
    _invalid,
    _listing,
    _prepare,
    parse_go_duration,
)
from vkubelet.entrypoints.cli_settings import OPERATING_SYSTEMS, RESERVED_TRACE_TAGS, assemble_settings

# The surface other modules import: the commands here; the flag syntax, discovery and settings
# assembly in cli_flags, cli_discovery and cli_settings.
__all__ = [
    "DEFAULT_EXPORTERS",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "LOG_LEVELS",
    "OPERATING_SYSTEMS",
    "PROGRAM",
    "RESERVED_TRACE_TAGS",
    "SERVICE_ACCOUNT_NAMESPACE_FILE",
    "TRACE_LEVEL",
    "CliError",
    "Command",
    "HelpCommand",
    "ProvidersCommand",
    "RunCommand",
    "VersionCommand",
    "log_level_number",
    "parse_command_line",
    "parse_go_duration",
    "wants_local_control_plane",
]

EXIT_FAILURE = 1

DEFAULT_EXPORTERS: tuple[str, ...] = TRACE_EXPORTERS

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


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Run the daemon with these settings."""

    settings: Settings
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # debug-level remarks, e.g. ignored --klog.* flags
    # Every --nodename, settings.node.name first; several: one node each (multinode.py).
    node_names: tuple[str, ...] = ()


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
    warnings: list[str] = []
    settings, node_names = assemble_settings(
        ns,
        environ,
        log_level,
        providers=providers,
        exporters=exporters,
        namespace_file=SERVICE_ACCOUNT_NAMESPACE_FILE,
        warnings=warnings,
        notes=notes,
    )
    return RunCommand(settings, warnings=tuple(warnings), notes=tuple(notes), node_names=node_names)


def log_level_number(name: str) -> int:
    """The :mod:`logging` level of a validated ``--log-level`` name (``trace`` is 5)."""
    return LOG_LEVELS[name]


# --------------------------------------------------------------------------------------------
# Value helpers. Each raises CliError naming the flag (or variable) and the value.


def _log_level(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_LOG_LEVEL
    level = raw.lower()
    if level not in LOG_LEVELS:
        raise _invalid("--log-level", raw, f"must be one of {_listing(list(LOG_LEVELS))}")
    return "warn" if level == "warning" else level
