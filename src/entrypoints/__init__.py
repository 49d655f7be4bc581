"""The entrypoints: the composition root and the programs.

``cli`` (``virtual-kubelet``) parses the Go-compatible flags into ``Settings`` (``cli_args`` and
its ``cli_flags``, ``cli_discovery``, ``cli_settings``), ``container`` wires the adapters to the
use cases (the only place that picks concrete classes), ``daemon`` starts and stops them, one
node stack per ``--nodename`` (``multinode``). ``mock_provider``, ``process_provider`` and
``conformance_cli`` are the other console scripts; ``localcluster`` is the local control plane
for ``tools/run``, the tests and the benchmarks.
"""
