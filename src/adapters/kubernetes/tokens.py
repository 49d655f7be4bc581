"""Service-account tokens bound to pods (implements ``TokenIssuer``) through the TokenRequest API,
as the kubelet requests them for projected ``serviceAccountToken`` volumes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from vkubelet.adapters.kubernetes.client import KubeClient
from vkubelet.application.ports.cluster import IssuedToken
from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.pod import PodRef, parse_time


class KubernetesTokenIssuer:
    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def request_token(
        self, pod: PodRef, *, service_account: str, audiences: Sequence[str], expiration_seconds: int
    ) -> IssuedToken:
        path = (
            f"/api/v1/namespaces/{quote(pod.namespace, safe='')}/serviceaccounts/"
            f"{quote(service_account, safe='')}/token"
        )
        spec: dict[str, Any] = {
            "expirationSeconds": expiration_seconds,
            # Bound to the pod: the API server rejects the token once this UID is gone.
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid},
        }
        if audiences:
            spec["audiences"] = list(audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        what = f"token of serviceaccount {pod.namespace}/{service_account} for pod {pod.name}"
        answer = await self._client.request("POST", path, what=what, body=body)
        status = answer.get("status") or {}
        token, expires = status.get("token"), parse_time(status.get("expirationTimestamp"))
        if not isinstance(token, str) or not token or expires is None:
            raise InvalidInput(f"{what}: the TokenRequest answer has no token or expirationTimestamp")
        return IssuedToken(token=token, expires_at=expires)
