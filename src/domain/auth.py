"""Who is asking and what they ask for: the kubelet API's authentication and authorization values.

Pure data; the rules that build them live in ``vkubelet.application.kubelet_auth`` and the
reviews that judge them behind the ``vkubelet.application.ports.security`` ports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"


@dataclass(frozen=True, slots=True)
class UserInfo:
    """An authenticated (or the anonymous) user. Hashable: it is part of the decision cache key."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    # TokenReview's user.extra, as sorted (key, values) pairs so the value stays hashable.
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS_USER


ANONYMOUS = UserInfo(name=ANONYMOUS_USER, groups=(UNAUTHENTICATED_GROUP,))


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """The attributes of one SubjectAccessReview: ``user`` may ``verb`` ``resource/subresource``
    named ``name`` (cluster-scoped, core API group, version v1)."""

    user: UserInfo
    verb: str
    resource: str
    subresource: str
    name: str
    api_version: str = "v1"

    def describe(self) -> str:
        """The kubelet's wording, e.g. ``user=alice, verb=get, resource=nodes, subresource=proxy``."""
        return (
            f"user={self.user.name}, verb={self.verb}, resource={self.resource}, "
            f"subresource={self.subresource}"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = field(default="", compare=False)
