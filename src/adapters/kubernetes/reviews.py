"""TokenReview and SubjectAccessReview against the API server: the security ports' adapters.

Both are ``create`` calls of cluster-scoped review objects that the API server answers in the
response without storing anything; deploy/rbac.yaml grants them. Transport failures surface as
the client's domain errors (Transient, Permanent for missing RBAC), never as a decision, so the
caches in front of these never remember an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from vkubelet.adapters.kubernetes.client import KubeClient
from vkubelet.domain.auth import AccessRequest, Decision, UserInfo

log = logging.getLogger(__name__)

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class KubernetesTokenReviewer:
    """RequestAuthenticator by TokenReview. ``audiences`` empty: the API server's own."""

    def __init__(self, client: KubeClient, *, audiences: Sequence[str] = ()) -> None:
        self._client = client
        self._audiences = list(audiences)

    async def authenticate_token(self, token: str) -> UserInfo | None:
        spec: dict[str, Any] = {"token": token}
        if self._audiences:
            spec["audiences"] = self._audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        review = await self._client.request("POST", TOKEN_REVIEWS, what="token review", body=body)
        status = review.get("status") or {}
        if not status.get("authenticated"):
            if status.get("error"):
                log.debug("kubelet API: token rejected by TokenReview: %s", status["error"])
            return None
        return user_from_review(status.get("user") or {})


def user_from_review(user: Mapping[str, Any]) -> UserInfo:
    extra = user.get("extra") or {}
    return UserInfo(
        name=str(user.get("username") or ""),
        uid=str(user.get("uid") or ""),
        groups=tuple(str(group) for group in user.get("groups") or ()),
        extra=tuple(sorted((str(key), tuple(str(v) for v in values or ())) for key, values in extra.items())),
    )


class KubernetesAccessReviewer:
    """RequestAuthorizer by SubjectAccessReview."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def authorize(self, request: AccessRequest) -> Decision:
        review = await self._client.request(
            "POST", ACCESS_REVIEWS, what="subject access review", body=access_review(request)
        )
        status = review.get("status") or {}
        reason = str(status.get("reason") or "")
        if status.get("evaluationError"):
            reason = f"{reason} (evaluation error: {status['evaluationError']})".strip()
        return Decision(allowed=bool(status.get("allowed")) and not status.get("denied"), reason=reason)


def access_review(request: AccessRequest) -> dict[str, Any]:
    """The SubjectAccessReview body for ``request``."""
    user = request.user
    spec: dict[str, Any] = {
        "user": user.name,
        "groups": list(user.groups),
        "resourceAttributes": {
            "verb": request.verb,
            "group": "",
            "version": request.api_version,
            "resource": request.resource,
            "subresource": request.subresource,
            "name": request.name,
        },
    }
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {key: list(values) for key, values in user.extra}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
