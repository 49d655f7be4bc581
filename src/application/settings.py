"""Settings: the validated configuration of one vkubelet process.

The command line (``vkubelet.entrypoints.cli_args``) is the only producer: it parses flags and
environment variables, validates them, and hands a :class:`Settings` to the composition root.
Everything here is already checked, so consumers never re-validate; the classes only carry
values, grouped by the component that reads them. Durations are seconds as ``float``; ``0``
means "none" only where a field says so.

Defaults that differ from upstream virtual-kubelet, and why:

* ``ping_timeout`` (5 s): upstream pings without a timeout, so a hung provider kept the last good
  ping result and the lease renewing forever (its bug 13). Half the ping interval lets a hung
  ping fail before the next one is due.
* ``stream_idle_timeout`` (4 h): the kubelet's value; upstream used 30 s, which cut idle
  ``kubectl exec`` sessions (bug 6).
* ``qps``/``burst`` (50/100): the kubelet's defaults since Kubernetes 1.27; upstream used the
  client-go defaults of 5/10, which throttle a node with many pods (bug 4).
* ``backoff_cap`` (5 min, the kubelet's container back-off cap): upstream capped at 1000 s and
  then abandoned the pod after 20 attempts; here the cap only bounds the delay, and the periodic
  full reconcile (``full_resync_period``) retries everything that still differs (bug 8).
* ``shutdown_node_not_ready`` (on): upstream left the node Ready on exit (bug 26).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from vkubelet.domain.provider import Taint
from vkubelet.domain.sampling import SampleRate

DEFAULT_NODE_NAME = "virtual-kubelet"
DEFAULT_TAINT_KEY = "virtual-kubelet.io/provider"
DEFAULT_TAINT_EFFECT = "NoSchedule"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_LISTEN_HOST = "0.0.0.0"
DEFAULT_LISTEN_PORT = 10250
DEFAULT_METRICS_ADDR = ":10255"
DEFAULT_SERVICE_NAME = "virtual-kubelet"
# The built-in trace exporters, in the order help and errors list them: the one list of their
# names. vkubelet.adapters.telemetry.exporters has a factory for each; --trace-exporter accepts
# them (and any the composition root registers besides).
TRACE_EXPORTERS: tuple[str, ...] = ("jaeger", "otlp", "zpages")
DEFAULT_LOG_LEVEL = "info"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """The Node object, its lease, and how its health is checked."""

    name: str
    provider: str
    operating_system: str = "linux"
    provider_config: Path | None = None
    # InternalIP of the node. None: the composition root detects the host's primary address.
    internal_ip: str | None = None
    # None when --disable-taint is given.
    taint: Taint | None = None
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    # Lease in kube-node-lease: 40 s duration renewed every 10 s (a quarter), as the kubelet does.
    lease_duration_seconds: int = 40
    lease_renew_interval: float = 10.0
    # Full status patch period. Liveness travels through the lease, so like upstream (and the
    # kubelet's nodeStatusReportFrequency) the status is re-sent every minute, and at once whenever
    # the provider reports a change.
    node_status_interval: float = 60.0
    ping_interval: float = 10.0
    # A ping slower than this counts as failed: the Ready condition turns False with a reason.
    ping_timeout: float = 5.0
    # On SIGTERM, mark the node NotReady before exiting.
    shutdown_node_not_ready: bool = True


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """The pod controller: work queue, reconcile loop, and startup."""

    pod_sync_workers: int = 10
    # Period of the full reconcile that re-enqueues every pod whose API and provider states
    # differ (and deletes dangling provider pods). Always > 0.
    full_resync_period: float = 60.0
    # How long to wait for the node and pod controllers to become ready. 0: wait forever.
    startup_timeout: float = 0.0
    # Poll period for providers without a pod status stream (upstream: a fixed 5 s).
    status_poll_interval: float = 5.0
    # Per-pod retry delay: backoff_base * 2**(attempt-1), at most backoff_cap. Never abandoned.
    backoff_base: float = 0.01
    backoff_cap: float = 300.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The kubelet HTTPS API (logs, exec, attach, port-forward, stats, metrics)."""

    listen_host: str = DEFAULT_LISTEN_HOST
    listen_port: int = DEFAULT_LISTEN_PORT
    # Serving certificate and key. None: a self-signed pair is generated at startup.
    cert_path: Path | None = None
    key_path: Path | None = None
    # CA that client certificates are verified against (--client-ca-file).
    ca_path: Path | None = None
    # 0: no idle timeout (as the kubelet's streamingConnectionIdleTimeout).
    stream_idle_timeout: float = 4 * 3600.0
    stream_creation_timeout: float = 30.0
    # Requests without credentials are served only when this is explicitly on.
    anonymous_auth: bool = False
    # Verify bearer tokens with TokenReview.
    authentication_token_webhook: bool = False
    # Cache lifetimes of TokenReview and SubjectAccessReview answers (the kubelet's defaults).
    authentication_token_webhook_cache_ttl: float = 120.0
    authorization_webhook_cache_authorized_ttl: float = 300.0
    authorization_webhook_cache_unauthorized_ttl: float = 30.0
    # --rotate-server-certificates: the serving certificate comes from a kubernetes.io/kubelet-serving
    # CertificateSigningRequest (self-signed until it is issued), renewed before it expires.
    rotate_server_certificates: bool = False
    # --serving-certificate-self-approve: approve that CSR ourselves, after checking it is ours.
    serving_certificate_self_approve: bool = False


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """How the Kubernetes API server is reached."""

    # None: in-cluster configuration, or the local control plane when local_control_plane is set.
    kubeconfig: Path | None = None
    # Client-side rate limit of API requests. qps 0: unlimited.
    qps: float = 50.0
    burst: int = 100
    # Start the project's own etcd + kube-apiserver and register the node there.
    local_control_plane: bool = False


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """Tracing as described in docs/tracing.md. No exporters: nothing is exported."""

    exporters: tuple[str, ...] = ()
    service_name: str = DEFAULT_SERVICE_NAME
    # Resource attributes from --trace-tag. operatingSystem, provider and nodeName are reserved
    # (the tracing wiring adds them). Stored read-only.
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # None: --trace-sample-rate was not given; the tracing wiring applies its documented default.
    sample_rate: SampleRate | None = None

    def __post_init__(self) -> None:
        # A private read-only copy: the caller's dict cannot change a frozen settings object.
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))


@dataclass(frozen=True, slots=True)
class LeaderElectionSettings:
    """``--leader-elect``: several replicas serve one node, the holder of a Lease writes.

    Off by default (one replica, which writes from the start). The timing is checked by
    :class:`vkubelet.domain.leader.ElectionTiming` (retry < renew deadline < lease duration).
    """

    enabled: bool = False
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    # The Lease: the CLI defaults the name to vkubelet-<nodename> and the namespace to the
    # pod's own (in a cluster) or vkubelet-system (deploy/rbac.yaml's).
    namespace: str = "vkubelet-system"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    node: NodeSettings
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    trace: TraceSettings = field(default_factory=TraceSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    # Accepted for compatibility with upstream's flag; nothing listens on it (metrics are not
    # implemented, see docs/tracing.md).
    metrics_addr: str = DEFAULT_METRICS_ADDR
    # One of panic, fatal, error, warn, info, debug, trace ("warning" is stored as "warn").
    log_level: str = DEFAULT_LOG_LEVEL
