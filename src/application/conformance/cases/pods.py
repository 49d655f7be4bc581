"""Conformance cases about the pod lifecycle: create, get, list, status (polled and streamed),
update, delete, pods keyed by UID, invalid input refused."""

from __future__ import annotations

from collections.abc import Mapping

from vkubelet.application.conformance.harness import (
    CaseContext,
    describe_error,
    expect_error,
    is_running,
    is_terminal,
    phase_text,
    unknown_ref,
)
from vkubelet.application.conformance.report import CaseFailed
from vkubelet.application.ports.provider import Provider
from vkubelet.domain.errors import InvalidInput, NotFound, is_error
from vkubelet.domain.pod import Pod, PodRef
from vkubelet.domain.provider import Capability


async def ping(provider: Provider, ctx: CaseContext) -> None:
    """``ping`` answers."""
    ctx.step("ping")
    await provider.ping()


async def create_and_get(provider: Provider, ctx: CaseContext) -> None:
    """A created pod is seen by get_pod, get_pod_status and list_pods, under its own UID."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    ctx.step(f"get_pod {pod.ref}")
    got = await provider.get_pod(pod.ref)
    if got.ref != pod.ref:
        raise CaseFailed(f"get_pod {pod.ref}", expected=f"the pod {pod.ref}", got=f"the pod {got.ref}")
    ctx.step(f"get_pod_status {pod.ref}")
    status = await provider.get_pod_status(pod.ref)
    if not isinstance(status, Mapping) or not status.get("phase"):
        raise CaseFailed(
            f"get_pod_status {pod.ref}", expected="a PodStatus with a phase", got=repr(status)[:200]
        )
    ctx.step("list_pods")
    uids = [p.ref.uid for p in await provider.list_pods()]
    if pod.ref.uid not in uids:
        raise CaseFailed("list_pods", expected=f"to contain UID {pod.ref.uid}", got=f"{len(uids)} other pods")


async def create_idempotent(provider: Provider, ctx: CaseContext) -> None:
    """Creating the same UID twice succeeds and leaves one pod."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    ctx.step(f"second create_pod {pod.ref}")
    try:
        await provider.create_pod(pod)
    except Exception as error:
        raise CaseFailed(
            f"second create_pod of {pod.ref}", expected="success (a no-op)", got=describe_error(error)
        ) from None
    ctx.step("list_pods")
    copies = sum(1 for p in await provider.list_pods() if p.ref.uid == pod.ref.uid)
    if copies != 1:
        raise CaseFailed(f"list_pods after two creates of {pod.ref}", expected="1 pod", got=f"{copies}")


async def status_reaches_running(provider: Provider, ctx: CaseContext) -> None:
    """Polled with get_pod_status, a created pod becomes Running (how vkubelet follows a provider
    without a status stream, and its periodic reconcile of any provider)."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)


async def status_stream_running(provider: Provider, ctx: CaseContext) -> None:
    """The status stream reports the created pod Running."""
    pod = ctx.new_pod()
    ctx.step("open pod_status_updates")
    async with ctx.watch() as watch:
        await ctx.create(pod)
        ctx.step(f"wait for {pod.ref} Running on the status stream")
        await watch.wait_for(pod.ref, is_running, what="phase 'Running'")


async def update_accepted(provider: Provider, ctx: CaseContext) -> None:
    """update_pod of a running pod (a changed label) is accepted and the pod stays."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    manifest = dict(pod.manifest)
    metadata = dict(pod.metadata)
    metadata["labels"] = {**pod.labels, "conformance/updated": "true"}
    manifest["metadata"] = metadata
    ctx.step(f"update_pod {pod.ref}")
    await provider.update_pod(Pod(pod.ref, manifest))
    ctx.step(f"get_pod {pod.ref} after update")
    got = await provider.get_pod(pod.ref)
    if got.ref.uid != pod.ref.uid:
        raise CaseFailed(f"get_pod {pod.ref} after update", expected="the same pod", got=str(got.ref))


async def delete_removes(provider: Provider, ctx: CaseContext) -> None:
    """After delete_pod, get_pod answers NotFound, list_pods omits the pod and (with a status
    stream) a terminal status is reported."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    await ctx.wait_running(pod)
    streaming = Capability.POD_STATUS_STREAM in provider.capabilities()
    if streaming:
        ctx.step("open pod_status_updates")
        async with ctx.watch() as watch:
            await _delete_and_vanish(provider, ctx, pod)
            ctx.step(f"wait for a terminal status of {pod.ref} on the status stream")
            await watch.wait_for(
                pod.ref, is_terminal, what="a terminal status (Succeeded/Failed or containers terminated)"
            )
    else:
        await _delete_and_vanish(provider, ctx, pod)
        ctx.note("no status stream: the terminal status was not checked")


async def _delete_and_vanish(provider: Provider, ctx: CaseContext, pod: Pod) -> None:
    ctx.step(f"delete_pod {pod.ref}")
    await provider.delete_pod(pod)
    ctx.deleted(pod)

    async def gone() -> tuple[bool, str]:
        try:
            got = await provider.get_pod(pod.ref)
        except Exception as error:
            if is_error(error, NotFound):
                return True, "NotFound"
            raise CaseFailed(
                f"get_pod {pod.ref} after delete_pod", expected="NotFound", got=describe_error(error)
            ) from None
        return False, f"the pod, phase {phase_text(got.status)}"

    ctx.step(f"get_pod {pod.ref} after delete")
    await ctx.eventually(gone, what=f"get_pod {pod.ref} after delete_pod: NotFound")
    ctx.step("list_pods after delete")
    if any(p.ref.uid == pod.ref.uid for p in await provider.list_pods()):
        raise CaseFailed(f"list_pods after delete_pod {pod.ref}", expected="no such UID", got="the pod")


async def delete_idempotent(provider: Provider, ctx: CaseContext) -> None:
    """A second delete_pod answers NotFound or succeeds, never another error."""
    pod = ctx.new_pod()
    await ctx.create(pod)
    ctx.step(f"delete_pod {pod.ref}")
    await provider.delete_pod(pod)
    ctx.deleted(pod)
    ctx.step(f"second delete_pod {pod.ref}")
    await expect_error(
        f"second delete_pod of {pod.ref}",
        provider.delete_pod(pod),
        (NotFound,),
        success_ok=True,
        clock=ctx.clock,
        within=ctx.timeout,
    )


async def unknown_not_found(provider: Provider, ctx: CaseContext) -> None:
    """get_pod and get_pod_status of a UID the provider never saw answer NotFound."""
    ref = unknown_ref(ctx)
    ctx.step(f"get_pod {ref}")
    await expect_error(
        f"get_pod of unknown {ref}", provider.get_pod(ref), (NotFound,), clock=ctx.clock, within=ctx.timeout
    )
    ctx.step(f"get_pod_status {ref}")
    await expect_error(
        f"get_pod_status of unknown {ref}",
        provider.get_pod_status(ref),
        (NotFound,),
        clock=ctx.clock,
        within=ctx.timeout,
    )


async def same_name_distinct_uids(provider: Provider, ctx: CaseContext) -> None:
    """Two pods with one namespace/name but different UIDs are two pods; deleting one keeps the
    other (a recreated pod is a new pod)."""
    first = ctx.new_pod(name=f"{ctx.prefix}-twin")
    second = ctx.new_pod(name=f"{ctx.prefix}-twin")
    await ctx.create(first)
    await ctx.create(second)
    ctx.step("list_pods")
    uids = {p.ref.uid for p in await provider.list_pods()}
    for pod in (first, second):
        if pod.ref.uid not in uids:
            raise CaseFailed(
                "list_pods with two pods of one name", expected=f"UID {pod.ref.uid}", got="it missing"
            )
        ctx.step(f"get_pod {pod.ref}")
        got = await provider.get_pod(pod.ref)
        if got.ref.uid != pod.ref.uid:
            raise CaseFailed(f"get_pod {pod.ref}", expected=f"UID {pod.ref.uid}", got=f"UID {got.ref.uid}")
    ctx.step(f"delete_pod {first.ref}")
    await provider.delete_pod(first)
    ctx.deleted(first)
    ctx.step(f"get_pod {second.ref} after deleting its namesake")
    try:
        await provider.get_pod(second.ref)
    except NotFound:
        raise CaseFailed(
            f"get_pod {second.ref} after deleting {first.ref}", expected="the pod", got="NotFound"
        ) from None


async def invalid_input_rejected(provider: Provider, ctx: CaseContext) -> None:
    """A pod without metadata.uid is refused with InvalidInput (over the wire: INVALID_ARGUMENT)."""
    valid = ctx.new_pod()
    manifest = dict(valid.manifest)
    manifest["metadata"] = {k: v for k, v in valid.metadata.items() if k != "uid"}
    # Bypasses Pod.from_manifest on purpose: the provider must validate what reaches it.
    broken = Pod(PodRef(valid.ref.namespace, valid.ref.name, ""), manifest)
    ctx.step("create_pod of a pod without metadata.uid")
    await expect_error(
        "create_pod of a pod without metadata.uid",
        provider.create_pod(broken),
        (InvalidInput,),
        clock=ctx.clock,
        within=ctx.timeout,
    )
