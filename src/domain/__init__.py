"""The domain: what a kubelet decides, as frozen dataclasses and pure functions.

No I/O, no asyncio, no clock of its own, standard library only (an import-linter contract and
``tests/unit/test_layers.py``): every rule here is tested with plain values. The main modules:
``pod`` and ``sync`` (one pod's sync decision, the status merge, deletion rules), ``env`` and
``volumes`` (what a pod's environment and volumes resolve to), ``probes``, ``node`` and ``lease``
(the Node object and its heartbeat), ``leader``, ``sampling`` (the trace sampling policy),
``names`` and ``quantity`` (Kubernetes' value rules), ``errors`` (the error classes every layer
raises and the edges translate).
"""
