"""Selecting the conformance cases and running them one after another into a Report."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from vkubelet.application.conformance.cases import CASES
from vkubelet.application.conformance.harness import (
    CASE_BUDGET_FACTOR,
    CaseContext,
    CaseSpec,
    WaitExpired,
    await_within,
    describe_error,
)
from vkubelet.application.conformance.report import CaseFailed, CaseResult, CaseSkipped, Outcome, Report
from vkubelet.application.ports.provider import Provider
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.provider import Capability


def case_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in CASES)


def select_cases(only: Iterable[str] | None) -> tuple[CaseSpec, ...]:
    """The cases named in ``only`` (all when None or empty), in the kit's order.

    Raises InvalidInput naming the unknown names and the known ones.
    """
    wanted = set(only or ())
    if not wanted:
        return CASES
    unknown = sorted(wanted - set(case_names()))
    if unknown:
        raise InvalidInput(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(case_names())}")
    return tuple(spec for spec in CASES if spec.name in wanted)


async def run_conformance(
    provider: Provider,
    *,
    clock: Clock,
    wait_seconds: float = 30.0,
    only: Iterable[str] | None = None,
    target: str = "in-process provider",
    run_id: str | None = None,
) -> Report:
    """Run the selected cases one after another and report each; never raises for a provider fault.

    ``wait_seconds`` bounds every wait for a condition and every single call the kit makes on its own
    (seconds of ``clock`` time); a case as a whole gets ``CASE_BUDGET_FACTOR`` times that.
    """
    specs = select_cases(only)
    run_id = run_id or uuid.uuid4().hex[:8]
    declared = frozenset(provider.capabilities())
    results = []
    for index, spec in enumerate(specs):
        ctx = CaseContext(
            provider=provider,
            clock=clock,
            timeout=wait_seconds,
            namespace=f"conformance-{run_id}",
            prefix=f"c{index:02d}",
        )
        results.append(await _run_case(spec, provider, ctx, declared))
    return Report(target=target, capabilities=declared, results=tuple(results))


async def _run_case(
    spec: CaseSpec, provider: Provider, ctx: CaseContext, declared: frozenset[Capability]
) -> CaseResult:
    if spec.requires is not None and spec.requires not in declared:
        return CaseResult(spec.name, Outcome.SKIP, f"capability {spec.requires.value!r} not declared")
    budget = ctx.timeout * CASE_BUDGET_FACTOR
    started = ctx.clock.monotonic()
    outcome, reason = Outcome.PASS, ""
    try:
        await await_within(ctx.clock, budget, spec.run(provider, ctx))
    except CaseFailed as failure:
        outcome, reason = Outcome.FAIL, str(failure)
    except CaseSkipped as skip:
        outcome, reason = Outcome.SKIP, str(skip)
    except WaitExpired:
        outcome = Outcome.FAIL
        reason = f"{ctx.current_step}: no answer; the case did not finish within {budget:g}s"
    except Exception as error:
        outcome, reason = Outcome.FAIL, f"{ctx.current_step}: expected success, got {describe_error(error)}"
    await ctx.cleanup()
    seconds = ctx.clock.monotonic() - started
    return CaseResult(spec.name, outcome, reason, seconds, tuple(ctx.notes))
