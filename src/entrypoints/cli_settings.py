"""Settings assembly for ``virtual-kubelet``: parsed flags and the environment in, Settings out.

:func:`assemble_settings` builds the :class:`~vkubelet.application.settings.Settings` of a run from the
argparse namespace of :mod:`vkubelet.entrypoints.cli_flags`, with the environment variables and
discovery of :mod:`vkubelet.entrypoints.cli_discovery`; it validates every value, appends
warnings and debug notes to the lists it is given, and raises
:class:`~vkubelet.entrypoints.cli_flags.CliError` naming the flag or variable and the value.
Underscored names are shared with the other ``cli_*`` modules only.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from vkubelet.application.settings import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_LISTEN_HOST,
    DEFAULT_LISTEN_PORT,
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
from vkubelet.domain.names import (
    is_dns_label,
    is_dns_subdomain,
    node_name_problem,
    taint_effect_problem,
    taint_key_problem,
    taint_value_problem,
)
from vkubelet.domain.provider import Taint
from vkubelet.domain.sampling import SampleRate, parse_sample_rate
from vkubelet.entrypoints.cli_discovery import (
    _expand_home,
    _first,
    _in_cluster,
    _kubeconfig,
    _own_namespace,
    wants_local_control_plane,
)
from vkubelet.entrypoints.cli_flags import (
    CliError,
    _bool,
    _duration,
    _invalid,
    _listing,
    _positive_int,
)
from vkubelet.entrypoints.multinode import duplicate_node_name, split_node_names

OPERATING_SYSTEMS = ("linux", "windows")
RESERVED_TRACE_TAGS = ("operatingSystem", "provider", "nodeName")

# Defaults of the values that flags may override: one source of truth, the settings classes.
_CONTROLLER_DEFAULTS = ControllerSettings()
_SERVER_DEFAULTS = ServerSettings()
_KUBE_DEFAULTS = KubeSettings()
_ELECTION_DEFAULTS = LeaderElectionSettings()

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?", re.IGNORECASE)


def assemble_settings(
    ns: argparse.Namespace,
    environ: Mapping[str, str],
    log_level: str,
    *,
    providers: Sequence[str],
    exporters: Sequence[str],
    namespace_file: Path,
    warnings: list[str],
    notes: list[str],
) -> tuple[Settings, tuple[str, ...]]:
    """The settings of a run and every node name (``settings.node.name`` first).

    ``namespace_file`` is where the pod's ServiceAccount namespace is read from when in a
    cluster (the default of ``--leader-elect-resource-namespace``).
    """
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
    # "vk-0,vk-1": one node each in this process (multinode.py); one name is the usual daemon.
    node_names = split_node_names(node_name or DEFAULT_NODE_NAME)
    for node_name in node_names:
        node_name_why = node_name_problem(node_name)
        if node_name_why:
            raise _invalid(node_source or "--nodename", node_name, node_name_why)
    if (duplicate := duplicate_node_name(node_names)) is not None:
        raise _invalid(node_source or "--nodename", ",".join(node_names), f"{duplicate!r} is given twice")
    node_name = node_names[0]
    operating_system = ns.os if ns.os is not None else "linux"
    if operating_system not in OPERATING_SYSTEMS:
        raise _invalid("--os", operating_system, "must be linux or windows (lowercase)")
    cluster_domain = ns.cluster_domain if ns.cluster_domain is not None else DEFAULT_CLUSTER_DOMAIN
    if not is_dns_subdomain(cluster_domain):
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

    in_cluster = _in_cluster(environ)
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
    leader_election = _leader_election(
        ns, node_name, in_cluster=in_cluster, namespace_file=namespace_file, warnings=warnings
    )
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
    return settings, node_names


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
    ns: argparse.Namespace, node_name: str, *, in_cluster: bool, namespace_file: Path, warnings: list[str]
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
        ns.leader_elect_resource_namespace
        or _own_namespace(in_cluster, namespace_file=namespace_file)
        or _ELECTION_DEFAULTS.namespace
    )
    if not is_dns_label(namespace):
        raise _invalid(
            "--leader-elect-resource-namespace", namespace, "a namespace must be a lowercase DNS label"
        )
    name = ns.leader_elect_resource_name or f"vkubelet-{node_name}"
    if not is_dns_subdomain(name):
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


# --------------------------------------------------------------------------------------------
# Value helpers. Each raises CliError naming the flag (or variable) and the value.


def _qps(raw: str | None) -> float:
    if raw is None:
        return _KUBE_DEFAULTS.qps
    if not _DECIMAL.fullmatch(raw):
        raise _invalid("--kube-api-qps", raw, "must be a number >= 0")
    qps = float(raw)
    if not 0.0 <= qps < float("inf"):
        raise _invalid("--kube-api-qps", raw, "must be a number >= 0")
    return qps


def _provider(raw: str | None, providers: Sequence[str]) -> str:
    if not raw:
        raise CliError(f"--provider is required (available: {_listing(providers)})")
    if raw not in providers:
        raise _invalid("--provider", raw, f"unknown provider (available: {_listing(providers)})")
    return raw


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
    key_why = taint_key_problem(key)
    if key_why:
        raise _invalid(key_source or "--taint", key, key_why)
    # Never empty here (an empty variable means the provider's name), though Kubernetes allows it.
    value = environ.get("VKUBELET_TAINT_VALUE") or provider
    value_why = taint_value_problem(value)
    if value_why:
        raise _invalid("VKUBELET_TAINT_VALUE", value, value_why)
    effect = environ.get("VKUBELET_TAINT_EFFECT") or DEFAULT_TAINT_EFFECT
    effect_why = taint_effect_problem(effect)
    if effect_why:
        raise _invalid("VKUBELET_TAINT_EFFECT", effect, effect_why)
    return Taint(key=key, value=value, effect=effect)


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
