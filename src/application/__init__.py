"""The application: use cases over ports.

``ports/`` holds the Protocols (their contracts in the docstrings) the use cases depend on:
the provider, the cluster (pods, nodes, leases, events, config, tokens, CSRs), the clock, the
tracer, metrics. The use cases drive them: ``pod_controller`` (pod sync with a keyed work
queue), ``node_controller`` (registration, status, lease), ``leader`` (election), ``environment``
and ``volumes`` (resolving what a pod references), ``probes``, ``kubelet_api`` (its read-only
endpoints), ``serving_certificate``. No technology package is imported here (an import-linter
contract); ``conformance/`` is the provider conformance kit, which no use case imports.
"""
