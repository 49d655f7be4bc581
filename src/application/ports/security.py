"""Who may use the kubelet API: bearer-token authentication and access review.

Implemented against the API server (TokenReview, SubjectAccessReview) by
``vkubelet.adapters.kubernetes.reviews``; cached by ``vkubelet.application.kubelet_auth``.
Client certificates are verified at the HTTP edge and need no port.
"""

from __future__ import annotations

from typing import Protocol

from vkubelet.domain.auth import AccessRequest, Decision, UserInfo


class RequestAuthenticator(Protocol):
    async def authenticate_token(self, token: str) -> UserInfo | None:
        """The user ``token`` belongs to, or None when the token is not valid (expired,
        revoked, unknown: the client gets 401). Raises Transient when the answer could not be
        obtained; such failures must not be cached."""
        ...


class RequestAuthorizer(Protocol):
    async def authorize(self, request: AccessRequest) -> Decision:
        """Whether ``request.user`` may do what ``request`` describes. A denial is a Decision,
        not an error; raises Transient when no answer could be obtained (not cached)."""
        ...
