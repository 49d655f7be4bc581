"""The mock provider served over gRPC with injected faults, for the fault-tolerance e2e tests.

    python faulty_provider.py --listen unix:///tmp/p.sock --nodename N [--delay 2] \
        [--fail-rate 0.3 --seed 7] [--hang-name bad-pod]

Every pod call (create, update, delete, get) first waits ``--delay`` seconds, then fails with
Transient with probability ``--fail-rate`` (seeded, so a run is reproducible). A pod whose name is
``--hang-name`` never finishes being created: its CreatePod hangs until the client gives up.
Each CreatePod call is logged as ``fault: CreatePod <uid>`` so a test can count calls per UID
(the mock's own create is idempotent, so its log alone cannot show a duplicate call).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, cast

from vkubelet.adapters.grpc.server import serve
from vkubelet.adapters.mock.provider import MockProvider
from vkubelet.adapters.node_config import load_mock_config
from vkubelet.application.ports.provider import Provider
from vkubelet.domain.errors import Transient
from vkubelet.domain.pod import Pod, PodRef

log = logging.getLogger("fault")


class FaultyProvider:
    """Delegates to a MockProvider; pod calls are slowed down and/or fail transiently."""

    def __init__(
        self, inner: MockProvider, *, delay: float, fail_rate: float, seed: int, hang_name: str | None
    ) -> None:
        self._inner = inner
        self._delay = delay
        self._fail_rate = fail_rate
        self._random = random.Random(seed)
        self._hang_name = hang_name

    def __getattr__(self, name: str) -> Any:  # everything not faulted goes straight through
        return getattr(self._inner, name)

    async def _fault(self, call: str, ref: PodRef) -> None:
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._random.random() < self._fail_rate:
            log.info("fault: %s %s fails (injected)", call, ref.uid)
            raise Transient(f"injected transient failure of {call}")

    async def create_pod(self, pod: Pod) -> None:
        log.info("fault: CreatePod %s", pod.ref.uid)
        if pod.ref.name == self._hang_name:
            await asyncio.Event().wait()  # until the client's deadline cancels the call
        await self._fault("CreatePod", pod.ref)
        await self._inner.create_pod(pod)

    async def update_pod(self, pod: Pod) -> None:
        await self._fault("UpdatePod", pod.ref)
        await self._inner.update_pod(pod)

    async def delete_pod(self, pod: Pod) -> None:
        log.info("fault: DeletePod %s", pod.ref.uid)
        await self._fault("DeletePod", pod.ref)
        await self._inner.delete_pod(pod)

    async def get_pod(self, ref: PodRef) -> Pod:
        await self._fault("GetPod", ref)
        return await self._inner.get_pod(ref)


async def _run(args: argparse.Namespace) -> None:
    config = load_mock_config(args.provider_config, node_name=args.nodename)
    inner = MockProvider(node_name=args.nodename, config=config, internal_ip=args.internal_ip)
    provider = FaultyProvider(
        inner, delay=args.delay, fail_rate=args.fail_rate, seed=args.seed, hang_name=args.hang_name
    )
    # The Provider calls it does not fault reach the mock through __getattr__.
    await serve(cast(Provider, provider), address=args.listen, name="faulty-mock")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the mock provider with injected faults")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--provider-config")
    parser.add_argument("--nodename", required=True)
    parser.add_argument("--internal-ip", default="127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each pod call")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="chance a pod call raises Transient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-name", help="the pod whose CreatePod never returns")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
