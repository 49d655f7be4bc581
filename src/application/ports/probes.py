"""Running a probe or lifecycle-hook handler against a container (see :mod:`vkubelet.domain.probes`)."""

from __future__ import annotations

from typing import Protocol

from vkubelet.domain.pod import PodRef
from vkubelet.domain.probes import Handler, ProbeResult


class ContainerProber(Protocol):
    """Runs one handler once, the way the kubelet's prober does, through the provider.

    ``exec`` runs the command in the container (the provider's exec stream); ``httpGet``,
    ``tcpSocket`` and ``grpc`` reach the pod's port through the provider's port-forward stream
    (a handler with an explicit ``host`` is dialled directly). ``sleep`` is not handled here.
    """

    async def run(
        self, ref: PodRef, container: str, handler: Handler, *, timeout_seconds: float
    ) -> ProbeResult:
        """SUCCESS: exec exit code 0, HTTP status 200-399, TCP connection made, gRPC SERVING.
        FAILURE with the kubelet's message otherwise, including when ``timeout_seconds`` passed
        (the call returns by then). ERROR when the handler could not be run at all (the
        provider lacks the stream, the pod or container is unknown to it). Never raises,
        except ``asyncio.CancelledError``.
        """
        ...
