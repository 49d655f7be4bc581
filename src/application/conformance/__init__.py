"""The provider conformance kit: drives any provider through the Provider contract, case by case.

It is a kit, not a use case: nothing else in ``vkubelet.application`` imports it (an import-linter
contract in ``pyproject.toml``), and only ``vkubelet-provider-conformance`` and the tests drive it.
It is written against the ``Provider`` port only, so the same cases run against an in-process
provider and against a provider in another process (in any language) behind the gRPC client
adapter. ``vkubelet-provider-conformance`` wires it to an address; ``docs/conformance.md`` lists
what each case proves.

Modules:

* ``report``: the outcomes (PASS, FAIL, SKIP), how a case signals them (:class:`CaseFailed`,
  :class:`CaseSkipped`), the per-case results and the :class:`Report` with its rendering.
* ``harness``: the per-case :class:`CaseContext`, bounded waits, the status-stream watcher, the
  exec I/O stand-ins, the pod manifest the kit creates.
* ``cases``: the cases in groups (``node``, ``pods``, ``containers``) and their order, ``CASES``.
* ``runner``: selecting cases and running them into a report (:func:`run_conformance`).

Design:

* A case is an ``async`` function ``(provider, ctx) -> None``. It raises :class:`CaseFailed`
  (expected vs got) or :class:`CaseSkipped`; returning means PASS. Any other exception is a FAIL
  that names the step the case was at (``ctx.step``), so the report says which call broke.
* Cases needing an optional capability declare it and are SKIPped (naming it) when the provider
  does not declare it; ``describe_consistent`` checks the other direction (undeclared ->
  NotSupported).
* Every wait is bounded by ``timeout`` seconds measured on the injected ``Clock``, and a whole
  case by ``harness.CASE_BUDGET_FACTOR`` times that, so a hung provider call becomes a FAIL
  instead of a hung run.
* Each case gets its own pod names (a per-run namespace, a per-case name prefix, fresh UIDs) and
  the runner deletes every pod the case created and did not delete itself, even when it failed.
  Cases run one after another: a provider's status stream may support a single consumer.
"""

from __future__ import annotations

from vkubelet.application.conformance.cases import CASES
from vkubelet.application.conformance.report import Outcome, Report
from vkubelet.application.conformance.runner import run_conformance, select_cases

__all__ = ["CASES", "Outcome", "Report", "run_conformance", "select_cases"]
