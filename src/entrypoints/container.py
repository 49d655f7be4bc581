"""The composition root: every concrete class is chosen here, from the validated Settings.

Sub-containers follow dependency-injector's "decoupled packages" shape: each declares what it
needs with ``Dependency`` and the root connects them. Swapping an adapter (a metrics backend,
another provider) is one line here and nowhere else.
"""

from __future__ import annotations

import asyncio
import operator
import os
import random
import secrets
import socket
import tempfile
from pathlib import Path

from dependency_injector import containers, providers

from vkubelet import __version__
from vkubelet.adapters.certs import ServingKeyFactory
from vkubelet.adapters.grpc.client import GrpcProvider
from vkubelet.adapters.grpc.config import load_grpc_config
from vkubelet.adapters.kubeletapi.auth import AuthMiddleware, load_client_ca
from vkubelet.adapters.kubeletapi.remotecommand import StreamTimeouts
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.adapters.kubeletapi.tls import ListenerCertificate, server_tls
from vkubelet.adapters.kubernetes.certificates import KubernetesCertificateSigningRequests
from vkubelet.adapters.kubernetes.client import USER_AGENT, ConnectionPool, create_client
from vkubelet.adapters.kubernetes.config import KubernetesConfigSource
from vkubelet.adapters.kubernetes.events import KubernetesEventRecorder
from vkubelet.adapters.kubernetes.leases import KubernetesLeaseGateway
from vkubelet.adapters.kubernetes.nodes import KubernetesNodeGateway
from vkubelet.adapters.kubernetes.pods import KubernetesPodGateway
from vkubelet.adapters.kubernetes.reviews import KubernetesAccessReviewer, KubernetesTokenReviewer
from vkubelet.adapters.kubernetes.tokens import KubernetesTokenIssuer
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.node_config import load_mock_config
from vkubelet.adapters.probing import StreamProber
from vkubelet.adapters.process.config import host_and_port, load_process_config
from vkubelet.adapters.process.provider import ProcessProvider
from vkubelet.adapters.system import SystemClock
from vkubelet.adapters.telemetry import NodeIdentity, Telemetry
from vkubelet.adapters.telemetry.exporters import DEFAULT_REGISTRY
from vkubelet.application.connection import AlwaysConnected
from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.fencing import (
    FencedEventRecorder,
    FencedLeaseGateway,
    FencedNodeGateway,
    FencedPodGateway,
    FencedProvider,
)
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.kubelet_auth import auth_policy, cached_auth
from vkubelet.application.leader import ElectionSettings, LeaderElector
from vkubelet.application.node_controller import NodeController, NodeControllerSettings
from vkubelet.application.pod_controller import VOLUME_REFRESH_PERIOD, PodController, PodControllerSettings
from vkubelet.application.serving_certificate import ServingCertificateManager, ServingCertificateSettings
from vkubelet.application.settings import Settings
from vkubelet.application.tracing import NullMetrics
from vkubelet.application.volumes import VolumeResolver
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.leader import ElectionTiming
from vkubelet.domain.lease import LeaseTiming
from vkubelet.domain.node import kubelet_version

KUBELET_VERSION = kubelet_version(__version__)

# Provider names the CLI accepts, in the order `virtual-kubelet providers` lists them.
PROVIDER_NAMES = ("mock", "process", "grpc")
# Tracing exporters the CLI accepts: the built-in ones of vkubelet.adapters.telemetry's registry.
EXPORTER_NAMES = DEFAULT_REGISTRY.names()


def build_process_provider(
    *, config_path: Path | None, node_name: str, internal_ip: str, api_server_url: str, clock: SystemClock
) -> ProcessProvider:
    """The process provider inside the daemon: pods' commands run as this process's children
    and die with it; what a crashed earlier run on this node left behind is killed first. Its
    pods find the API server at the address vkubelet itself uses."""
    config = load_process_config(config_path, node_name=node_name)
    provider = ProcessProvider(
        root_dir=Path(tempfile.gettempdir()) / f"vkubelet-process-{os.getuid()}" / node_name,
        node_name=node_name,
        host_ip=internal_ip,
        cpu=config.cpu,
        memory=config.memory,
        pods=config.pods,
        labels=config.labels,
        clock=clock,
        api_server=host_and_port(api_server_url),
    )
    provider.reap_orphans()
    return provider


# Volume checks of running pods may use this share of the client's request rate (about three
# reads a pod: its ConfigMaps, Secrets and token, most answered by the TTL cache).
VOLUME_REFRESH_SHARE = 0.2
VOLUME_REFRESH_READS_PER_POD = 3


# With an unlimited client: bench/volumes.py measured 49 % of a core (154 GETs/s of each kind)
# checking 1,000 pods every 2 s; 100 a period keeps that to a tenth.
UNLIMITED_VOLUME_REFRESH_BATCH = 100


def volume_refresh_batch(qps: float, period: float) -> int:
    """How many pods' volumes one check period may look at."""
    if qps <= 0:
        return UNLIMITED_VOLUME_REFRESH_BATCH
    return max(10, int(VOLUME_REFRESH_SHARE * qps * period / VOLUME_REFRESH_READS_PER_POD))


def election_mode(settings: Settings) -> str:
    """ "on" with --leader-elect: the write-side ports are fenced by the leader elector."""
    return "on" if settings.leader_election.enabled else "off"


def serving_certificate_mode(settings: Settings) -> str:
    """ "on" with --rotate-server-certificates: the serving certificate comes from a CSR."""
    return "on" if settings.server.rotate_server_certificates else "off"


def election_identity() -> str:
    """This replica's name in the leader Lease: the host (the pod's name in a cluster) and a
    random suffix, so a restarted process is a new candidate, never mistaken for its past self."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def _setting(settings: providers.Provider[Settings], path: str) -> providers.Provider[object]:
    """One Settings field, e.g. ``"node.name"``.

    Not ``settings.provided.node.name``: dependency-injector's providers have attributes of
    their own (``.name``, ``.provider``) that shadow settings fields of the same name.
    """
    return providers.Callable(operator.attrgetter(path), settings)


class Kubernetes(containers.DeclarativeContainer):
    """The API server side: one client, one gateway per port."""

    settings: providers.Dependency[Settings] = providers.Dependency(instance_of=Settings)
    # None: the client has connections of its own. Several nodes in one process share one
    # ConnectionPool each (daemon.run_nodes overrides these), each keeping its own client and
    # rate limit.
    connection_pool: providers.Provider[ConnectionPool | None] = providers.Object(None)
    heartbeat_pool: providers.Provider[ConnectionPool | None] = providers.Object(None)
    client = providers.Singleton(
        create_client,
        _setting(settings, "kube.kubeconfig"),
        qps=_setting(settings, "kube.qps"),
        burst=_setting(settings, "kube.burst"),
        pool=connection_pool,
    )
    # The Node and its Lease go through a client of their own with no client-side rate limit,
    # as the kubelet's heartbeat client does: a burst of pod status patches queued in the rate
    # limit or waiting for a connection must not make the lease late.
    heartbeat_client = providers.Singleton(
        create_client,
        _setting(settings, "kube.kubeconfig"),
        qps=0,
        burst=0,
        user_agent=f"{USER_AGENT} heartbeat",
        pool=heartbeat_pool,
    )
    pods = providers.Singleton(KubernetesPodGateway, client, node_name=_setting(settings, "node.name"))
    nodes = providers.Singleton(KubernetesNodeGateway, heartbeat_client)
    leases = providers.Singleton(KubernetesLeaseGateway, heartbeat_client)
    # --leader-elect: the election has its own client, so its renewals never queue behind a
    # burst of status patches in the shared rate limit (kube components do the same).
    election_client = providers.Singleton(
        create_client,
        _setting(settings, "kube.kubeconfig"),
        qps=_setting(settings, "kube.qps"),
        burst=_setting(settings, "kube.burst"),
        user_agent=f"{USER_AGENT} leader-election",
    )
    election_leases = providers.Singleton(
        KubernetesLeaseGateway, election_client, namespace=_setting(settings, "leader_election.namespace")
    )
    config_source = providers.Singleton(KubernetesConfigSource, client)
    token_reviewer = providers.Singleton(KubernetesTokenReviewer, client)
    token_issuer = providers.Singleton(KubernetesTokenIssuer, client)
    access_reviewer = providers.Singleton(KubernetesAccessReviewer, client)
    certificate_signing_requests = providers.Singleton(KubernetesCertificateSigningRequests, client)
    events = providers.Singleton(
        KubernetesEventRecorder,
        client,
        component=providers.Callable("{}/pod-controller".format, _setting(settings, "node.name")),
        host=_setting(settings, "node.name"),
    )


class Backends(containers.DeclarativeContainer):
    """The provider, picked by --provider."""

    settings: providers.Dependency[Settings] = providers.Dependency(instance_of=Settings)
    clock: providers.Dependency[SystemClock] = providers.Dependency()
    internal_ip = providers.Dependency(instance_of=str)
    api_server_url = providers.Dependency(instance_of=str)
    pod_provider = providers.Selector(
        _setting(settings, "node.provider"),
        mock=providers.Singleton(
            MockProvider,
            node_name=_setting(settings, "node.name"),
            config=providers.Callable(
                load_mock_config,
                _setting(settings, "node.provider_config"),
                node_name=_setting(settings, "node.name"),
                operating_system=_setting(settings, "node.operating_system"),
            ),
            internal_ip=internal_ip,
            clock=clock,
        ),
        # Pods as local processes (docs/process-provider.md), in this process.
        process=providers.Singleton(
            build_process_provider,
            config_path=_setting(settings, "node.provider_config"),
            node_name=_setting(settings, "node.name"),
            internal_ip=internal_ip,
            api_server_url=api_server_url,
            clock=clock,
        ),
        # An out-of-process provider; describing it at build time fills capabilities() before
        # the pod controller reads them (waits up to the config's connect_timeout).
        grpc=providers.Singleton(
            GrpcProvider, providers.Callable(load_grpc_config, _setting(settings, "node.provider_config"))
        ),
    )
    # Its lifecycle (ProviderConnection): only the gRPC provider has a link to wait for and lose.
    provider_connection = providers.Selector(
        _setting(settings, "node.provider"),
        mock=providers.Singleton(AlwaysConnected),
        process=providers.Singleton(AlwaysConnected),
        grpc=pod_provider,
    )


class Application(containers.DeclarativeContainer):
    settings: providers.Dependency[Settings] = providers.Dependency(instance_of=Settings)
    internal_ip = providers.Dependency(instance_of=str)

    clock = providers.Singleton(SystemClock)
    # Tracing (docs/tracing.md): building it validates the exporters' environment; no exporter
    # means NullTracer and no request middleware. install_global: the Jaeger exporter reads it.
    telemetry = providers.Singleton(
        Telemetry,
        _setting(settings, "trace"),
        node=providers.Factory(
            NodeIdentity,
            node_name=_setting(settings, "node.name"),
            provider=_setting(settings, "node.provider"),
            operating_system=_setting(settings, "node.operating_system"),
        ),
        install_global=True,
    )
    tracer = providers.Singleton(operator.attrgetter("tracer"), telemetry)
    metrics = providers.Singleton(NullMetrics)  # Metrics: not implemented (docs/tracing.md)

    kube = providers.Container(Kubernetes, settings=settings)
    backends = providers.Container(
        Backends,
        settings=settings,
        clock=clock,
        internal_ip=internal_ip,
        api_server_url=providers.Callable(operator.attrgetter("server"), kube.client),
    )

    # --leader-elect (docs/cli.md): the elector, and the writes of the pod and node controllers
    # fenced by it; without the flag these are the plain ports and there is no elector.
    election = providers.Callable(election_mode, settings)
    leader_elector = providers.Selector(
        election,
        on=providers.Singleton(
            LeaderElector,
            leases=kube.election_leases,
            clock=clock,
            settings=providers.Factory(
                ElectionSettings,
                lease_name=_setting(settings, "leader_election.name"),
                namespace=_setting(settings, "leader_election.namespace"),
                identity=providers.Callable(election_identity),
                timing=providers.Factory(
                    ElectionTiming,
                    lease_duration=_setting(settings, "leader_election.lease_duration"),
                    renew_deadline=_setting(settings, "leader_election.renew_deadline"),
                    retry_period=_setting(settings, "leader_election.retry_period"),
                ),
            ),
        ),
        off=providers.Object(None),
    )
    # Set by the daemon once this replica leads and has registered the node.
    pod_sync_gate = providers.Selector(
        election, on=providers.Singleton(asyncio.Event), off=providers.Object(None)
    )
    pod_writes = providers.Selector(
        election, on=providers.Singleton(FencedPodGateway, kube.pods, leader_elector), off=kube.pods
    )
    node_writes = providers.Selector(
        election, on=providers.Singleton(FencedNodeGateway, kube.nodes, leader_elector), off=kube.nodes
    )
    node_lease_writes = providers.Selector(
        election, on=providers.Singleton(FencedLeaseGateway, kube.leases, leader_elector), off=kube.leases
    )
    event_writes = providers.Selector(
        election, on=providers.Singleton(FencedEventRecorder, kube.events, leader_elector), off=kube.events
    )
    provider_writes = providers.Selector(
        election,
        on=providers.Singleton(FencedProvider, backends.pod_provider, leader_elector),
        off=backends.pod_provider,
    )

    environment = providers.Singleton(
        EnvironmentResolver,
        configs=kube.config_source,
        provider=backends.pod_provider,
        host_ip=internal_ip,
    )
    volumes = providers.Singleton(
        VolumeResolver,
        configs=kube.config_source,
        tokens=kube.token_issuer,
        provider=backends.pod_provider,
        clock=clock,
    )
    prober = providers.Singleton(StreamProber, backends.pod_provider, clock=clock)
    pod_controller = providers.Singleton(
        PodController,
        pods=pod_writes,
        provider=provider_writes,
        environment=environment,
        volumes=volumes,
        prober=prober,
        events=event_writes,
        clock=clock,
        tracer=tracer,
        metrics=metrics,
        sync_gate=pod_sync_gate,
        settings=providers.Factory(
            PodControllerSettings,
            node_name=_setting(settings, "node.name"),
            workers=_setting(settings, "controller.pod_sync_workers"),
            full_resync_period=_setting(settings, "controller.full_resync_period"),
            status_poll_interval=_setting(settings, "controller.status_poll_interval"),
            volume_refresh_batch=providers.Callable(
                volume_refresh_batch, _setting(settings, "kube.qps"), VOLUME_REFRESH_PERIOD
            ),
            backoff=providers.Factory(
                Backoff,
                base=_setting(settings, "controller.backoff_base"),
                cap=_setting(settings, "controller.backoff_cap"),
            ),
        ),
    )
    server_tls = providers.Singleton(
        server_tls,
        cert_file=_setting(settings, "server.cert_path"),
        key_file=_setting(settings, "server.key_path"),
        node_name=_setting(settings, "node.name"),
        node_ip=internal_ip,
        client_ca_file=_setting(settings, "server.ca_path"),
        from_csr=_setting(settings, "server.rotate_server_certificates"),
    )
    # Raises InvalidInput (the CLI exits 1) when nobody could be authenticated.
    auth_policy = providers.Singleton(
        auth_policy,
        client_ca=providers.Callable(bool, _setting(settings, "server.ca_path")),
        token_webhook=_setting(settings, "server.authentication_token_webhook"),
        anonymous=_setting(settings, "server.anonymous_auth"),
    )
    kubelet_auth = providers.Singleton(
        cached_auth,
        policy=auth_policy,
        node_name=_setting(settings, "node.name"),
        clock=clock,
        authenticator=kube.token_reviewer,
        authorizer=kube.access_reviewer,
        token_ttl=_setting(settings, "server.authentication_token_webhook_cache_ttl"),
        allowed_ttl=_setting(settings, "server.authorization_webhook_cache_authorized_ttl"),
        denied_ttl=_setting(settings, "server.authorization_webhook_cache_unauthorized_ttl"),
    )
    client_ca = providers.Singleton(
        load_client_ca,
        _setting(settings, "server.ca_path"),
        clock=clock,
        ssl_context=server_tls.provided.context,
    )
    auth_middleware = providers.Singleton(AuthMiddleware, kubelet_auth, client_ca=client_ca)
    kubelet_api = providers.Singleton(
        KubeletApi,
        provider=backends.pod_provider,
        node_pods=pod_controller.provided.node_pods,
        node_name=_setting(settings, "node.name"),
    )
    kubelet_server = providers.Singleton(
        KubeletServer,
        kubelet_api,
        listen_host=_setting(settings, "server.listen_host"),
        listen_port=_setting(settings, "server.listen_port"),
        ssl_context=server_tls.provided.context,
        # Tracing outermost, so rejected requests are traced too.
        middlewares=providers.Callable(
            operator.add,
            telemetry.provided.middlewares,
            providers.Callable(tuple, providers.List(auth_middleware)),
        ),
        # Keyword-only on both sides: upstream passed these two durations swapped.
        stream_timeouts=providers.Factory(
            StreamTimeouts,
            creation=_setting(settings, "server.stream_creation_timeout"),
            idle=_setting(settings, "server.stream_idle_timeout"),
        ),
    )
    node_controller_settings = providers.Factory(
        NodeControllerSettings,
        name=_setting(settings, "node.name"),
        provider=_setting(settings, "node.provider"),
        taint=_setting(settings, "node.taint"),
        internal_ip=internal_ip,
        kubelet_version=KUBELET_VERSION,
        lease=providers.Factory(
            LeaseTiming,
            duration_seconds=_setting(settings, "node.lease_duration_seconds"),
            renew_interval=_setting(settings, "node.lease_renew_interval"),
        ),
        status_interval=_setting(settings, "node.node_status_interval"),
        ping_interval=_setting(settings, "node.ping_interval"),
        ping_timeout=_setting(settings, "node.ping_timeout"),
    )
    node_controller = providers.Factory(
        NodeController,
        nodes=node_writes,
        leases=node_lease_writes,
        provider=backends.pod_provider,
        clock=clock,
        events=event_writes,
        tracer=tracer,
        lease_jitter=providers.Object(random.random),
    )
    # --rotate-server-certificates: a CSR-issued certificate replaces the self-signed one in the
    # live listener (new connections get it), renewed before it expires; None without the flag.
    serving_certificate = providers.Selector(
        providers.Callable(serving_certificate_mode, settings),
        on=providers.Singleton(
            ServingCertificateManager,
            csrs=kube.certificate_signing_requests,
            nodes=kube.nodes,
            keys=providers.Singleton(ServingKeyFactory),
            sink=providers.Singleton(ListenerCertificate, server_tls.provided.context),
            events=event_writes,
            clock=clock,
            settings=providers.Factory(
                ServingCertificateSettings,
                node_name=_setting(settings, "node.name"),
                self_approve=_setting(settings, "server.serving_certificate_self_approve"),
            ),
        ),
        off=providers.Object(None),
    )
