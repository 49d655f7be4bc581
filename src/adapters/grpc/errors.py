"""gRPC status codes <-> domain errors, both directions (the table in provider.proto).

The client turns a failed call into a domain error naming the call; the server turns a domain
error raised by a provider into the mapped status code with the error's message as details.
"""

from __future__ import annotations

import grpc

from vkubelet.domain.errors import (
    Conflict,
    DomainError,
    Expired,
    InvalidInput,
    NotFound,
    NotSupported,
    Permanent,
    Transient,
)

# One code per class for the server side; the client side also accepts the codes below.
CODE_FOR_ERROR: dict[type[DomainError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Transient: grpc.StatusCode.UNAVAILABLE,
    Permanent: grpc.StatusCode.FAILED_PRECONDITION,
    NotSupported: grpc.StatusCode.UNIMPLEMENTED,
    Conflict: grpc.StatusCode.ABORTED,
    # Expired is an API-server notion (a stale resourceVersion); a provider has no use for it,
    # and the nearest meaning is "list again", i.e. retry.
    Expired: grpc.StatusCode.UNAVAILABLE,
}

ERROR_FOR_CODE: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.UNAVAILABLE: Transient,
    grpc.StatusCode.DEADLINE_EXCEEDED: Transient,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Transient,
    grpc.StatusCode.FAILED_PRECONDITION: Permanent,
    grpc.StatusCode.UNIMPLEMENTED: NotSupported,
    grpc.StatusCode.ABORTED: Conflict,
}


def code_for(error: DomainError) -> grpc.StatusCode:
    """The status code a provider's domain error is sent as (subclasses follow their base)."""
    for kind in type(error).__mro__:
        code = CODE_FOR_ERROR.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.UNAVAILABLE  # a bare DomainError: unclassified, so retryable


def error_for(code: grpc.StatusCode | None, details: str | None, *, call: str) -> DomainError:
    """The domain error for a failed call. Unlisted codes (INTERNAL, UNKNOWN, CANCELLED, ...)
    become Transient: vkubelet retries, and the provider's message is kept."""
    kind = ERROR_FOR_CODE.get(code, Transient) if code is not None else Transient
    name = code.name if code is not None else "no status"
    return kind(f"provider {call}: {details or 'no message'} ({name})")


def from_rpc_error(error: grpc.RpcError, *, call: str) -> DomainError:
    """Classify a grpc(.aio) RpcError; chain it with ``raise ... from error``."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return error_for(code, details, call=call)
