"""The adapters: one package per technology, each implementing ports of the application.

``kubernetes`` (the API server), ``grpc`` (the provider protocol, both sides), ``mock`` and
``process`` (in-process providers), ``kubeletapi`` (the kubelet's HTTPS API and its streams),
``telemetry`` (OpenTelemetry). The packages import none of each other (an import-linter
contract); what several share are the flat modules here: ``system``, ``certs``, ``node_config``,
``probing``. Errors from libraries are translated into ``vkubelet.domain.errors`` at this edge.
"""
