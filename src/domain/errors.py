"""Error classes of the domain.

Adapters translate their transport's failures (HTTP status codes, gRPC status codes, OS errors)
into these classes at the edge; the application decides retry-or-fail from the class alone.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every classified error."""


class NotFound(DomainError):
    """The object does not exist (for a delete: it is already gone, which counts as success)."""


class InvalidInput(DomainError):
    """The request itself is wrong; retrying the same input cannot succeed."""


class Transient(DomainError):
    """A temporary failure (network, timeout, overload); retry with backoff."""


class Permanent(DomainError):
    """The operation can never succeed for this object (e.g. the provider rejects the image)."""


class NotSupported(DomainError):
    """The provider lacks this capability; the kubelet API answers 501."""


class Conflict(DomainError):
    """An optimistic-concurrency or UID precondition failed: the object changed underneath us."""


class Expired(DomainError):
    """A watch resourceVersion is too old (HTTP 410 Gone): list again and resume from the new one."""


def classify(error: BaseException) -> type[DomainError] | None:
    """Return the domain class of ``error``, following ``__cause__`` and ``__context__``.

    Upstream only followed ``Cause()`` and so lost NotFound behind wrapped errors (its bug 19);
    here any wrapping by ``raise ... from`` or implicit chaining keeps the classification.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DomainError):
            return type(current)
        current = current.__cause__ or current.__context__
    return None


def is_error(error: BaseException, kind: type[DomainError]) -> bool:
    """True when ``error`` (or something it wraps) is of domain class ``kind``."""
    found = classify(error)
    return found is not None and issubclass(found, kind)
