"""The composition root: every concrete class is chosen here, from the validated Settings.

Sub-containers follow dependency-injector's "decoupled packages" shape: each declares what it
needs with ``Dependency`` and the root connects them. Swapping an adapter (a metrics backend,
another provider) is one line here and nowhere else.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from vkubelet import __version__
from vkubelet.adapters.kubeletapi.server import KubeletServer
from vkubelet.adapters.kubeletapi.tls import server_tls
from vkubelet.adapters.kubernetes.client import create_client
from vkubelet.adapters.kubernetes.config import KubernetesConfigSource
from vkubelet.adapters.kubernetes.events import KubernetesEventRecorder
from vkubelet.adapters.kubernetes.leases import KubernetesLeaseGateway
from vkubelet.adapters.kubernetes.nodes import KubernetesNodeGateway
from vkubelet.adapters.kubernetes.pods import KubernetesPodGateway
from vkubelet.adapters.mock.config import load_mock_config
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.system import SystemClock
from vkubelet.application.environment import EnvironmentResolver
from vkubelet.application.kubelet_api import KubeletApi
from vkubelet.application.node_controller import NodeController
from vkubelet.application.pod_controller import PodController, PodControllerSettings
from vkubelet.application.tracing import NullMetrics, NullTracer
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.lease import LeaseTiming

KUBELET_VERSION = f"v1.36.3-vk-{__version__}"

# Provider names the CLI accepts, in the order `virtual-kubelet providers` lists them.
PROVIDER_NAMES = ("mock",)
# Tracing exporters; wired in the tracing issue (names are validated already).
EXPORTER_NAMES = ("jaeger", "otlp", "zpages")


class Kubernetes(containers.DeclarativeContainer):
    """The API server side: one client, one gateway per port."""

    settings = providers.Dependency()
    client = providers.Singleton(
        create_client,
        settings.provided.kube.kubeconfig,
        qps=settings.provided.kube.qps,
        burst=settings.provided.kube.burst,
    )
    pods = providers.Singleton(KubernetesPodGateway, client, node_name=settings.provided.node.name)
    nodes = providers.Singleton(KubernetesNodeGateway, client)
    leases = providers.Singleton(KubernetesLeaseGateway, client)
    config_source = providers.Singleton(KubernetesConfigSource, client)
    events = providers.Singleton(
        KubernetesEventRecorder,
        client,
        component=providers.Callable("{}/pod-controller".format, settings.provided.node.name),
        host=settings.provided.node.name,
    )


class Backends(containers.DeclarativeContainer):
    """The provider, picked by --provider."""

    settings = providers.Dependency()
    clock = providers.Dependency()
    internal_ip = providers.Dependency(instance_of=str)
    provider = providers.Selector(
        settings.provided.node.provider,
        mock=providers.Singleton(
            MockProvider,
            node_name=settings.provided.node.name,
            config=providers.Callable(
                load_mock_config,
                settings.provided.node.provider_config,
                node_name=settings.provided.node.name,
                operating_system=settings.provided.node.operating_system,
            ),
            internal_ip=internal_ip,
            clock=clock,
        ),
    )


class Application(containers.DeclarativeContainer):
    settings = providers.Dependency()
    internal_ip = providers.Dependency(instance_of=str)

    clock = providers.Singleton(SystemClock)
    tracer = providers.Singleton(NullTracer)
    metrics = providers.Singleton(NullMetrics)  # Metrics: not implemented (docs/tracing.md)

    kube = providers.Container(Kubernetes, settings=settings)
    backends = providers.Container(Backends, settings=settings, clock=clock, internal_ip=internal_ip)

    environment = providers.Singleton(
        EnvironmentResolver,
        configs=kube.config_source,
        provider=backends.provider,
        host_ip=internal_ip,
    )
    pod_controller = providers.Singleton(
        PodController,
        pods=kube.pods,
        provider=backends.provider,
        environment=environment,
        events=kube.events,
        clock=clock,
        tracer=tracer,
        settings=providers.Factory(
            PodControllerSettings,
            node_name=settings.provided.node.name,
            workers=settings.provided.controller.pod_sync_workers,
            full_resync_period=settings.provided.controller.full_resync_period,
            status_poll_interval=settings.provided.controller.status_poll_interval,
            backoff=providers.Factory(
                Backoff,
                base=settings.provided.controller.backoff_base,
                cap=settings.provided.controller.backoff_cap,
            ),
        ),
    )
    server_tls = providers.Singleton(
        server_tls,
        cert_file=settings.provided.server.cert_path,
        key_file=settings.provided.server.key_path,
        node_name=settings.provided.node.name,
        node_ip=internal_ip,
    )
    kubelet_api = providers.Singleton(
        KubeletApi,
        provider=backends.provider,
        node_pods=pod_controller.provided.node_pods,
        node_name=settings.provided.node.name,
    )
    kubelet_server = providers.Singleton(
        KubeletServer,
        kubelet_api,
        listen_host=settings.provided.server.listen_host,
        listen_port=settings.provided.server.listen_port,
        ssl_context=server_tls.provided.context,
    )
    node_controller = providers.Factory(
        NodeController,
        nodes=kube.nodes,
        leases=kube.leases,
        provider=backends.provider,
        clock=clock,
        tracer=tracer,
        node_name=settings.provided.node.name,
        provider_name=settings.provided.node.provider,
        taint=settings.provided.node.taint,
        internal_ip=internal_ip,
        kubelet_version=KUBELET_VERSION,
        lease_timing=providers.Factory(
            LeaseTiming,
            duration_seconds=settings.provided.node.lease_duration_seconds,
            renew_interval=settings.provided.node.lease_renew_interval,
        ),
        status_interval=settings.provided.node.node_status_interval,
        ping_interval=settings.provided.node.ping_interval,
        ping_timeout=settings.provided.node.ping_timeout,
    )
