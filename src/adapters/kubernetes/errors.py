"""Kubernetes API failures translated into domain errors, at the edge.

Everything this package sends goes through aiohttp (lightkube's typed client, offered on the
side, uses httpx2); a failed call surfaces as an HTTP status with a ``meta/v1 Status`` body, as an
``ERROR`` event inside a watch stream, or as a transport exception. All three end up in
:func:`error_for_status`, so one table decides the domain class:

====================================  =====================
HTTP status                           domain error
====================================  =====================
404                                   NotFound
409, 412                              Conflict
410                                   Expired
400, 422, other 4xx                   InvalidInput
401, 403                              Permanent (credentials or RBAC: retrying cannot help
                                      until an operator acts)
408, 429, 5xx                         Transient
connect/read/write/pool timeouts,     Transient
network and protocol errors
====================================  =====================

The translated error names the object (``pod default/web-0: ...``) and keeps the original
exception as ``__cause__`` (a lightkube :class:`~lightkube.ApiError` whenever the server sent a
Status body, so callers that need the details can read ``error.__cause__.status``, and an
:class:`HttpStatusError` for any other error response).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import aiohttp
import httpx2
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from vkubelet.domain.errors import (
    Conflict,
    DomainError,
    Expired,
    InvalidInput,
    NotFound,
    Permanent,
    Transient,
)

_BY_CODE: dict[int, type[DomainError]] = {
    400: InvalidInput,
    401: Permanent,
    403: Permanent,
    404: NotFound,
    408: Transient,
    409: Conflict,
    410: Expired,
    412: Conflict,
    422: InvalidInput,
    429: Transient,
}


def error_class(code: int) -> type[DomainError]:
    """The domain class for an HTTP status code of a failed API call."""
    known = _BY_CODE.get(code)
    if known is not None:
        return known
    if 400 <= code < 500:
        return InvalidInput
    # 5xx, and anything odd (a 3xx from a misconfigured proxy): worth another try.
    return Transient


def error_for_status(code: int, *, what: str, reason: str = "", message: str = "") -> DomainError:
    """Build (not raise) the domain error for a failed call on ``what``."""
    detail = message or reason or "request failed"
    label = f"{code} {reason}".strip()
    return error_class(code)(f"{what}: {detail} ({label})")


class HttpStatusError(Exception):
    """An error response whose body is not a ``meta/v1 Status`` (a proxy's 502 page, say)."""

    def __init__(self, status_code: int, reason: str, body: bytes) -> None:
        self.status_code = status_code
        self.reason = reason
        self.body = body
        snippet = body[:200].decode("utf-8", "replace").strip()
        super().__init__(f"{status_code} {reason}" + (f": {snippet}" if snippet else ""))


def translate_error(error: BaseException, *, what: str) -> DomainError:
    """The domain error for an exception raised by aiohttp, lightkube or httpx2 on ``what``.

    The caller raises the result ``from error`` so the original stays the ``__cause__``.
    Already-translated domain errors are returned unchanged.
    """
    if isinstance(error, DomainError):
        return error
    if isinstance(error, ApiError):
        status = error.status
        code = _response_code(error) or int(getattr(status, "code", 0) or 0)
        return error_for_status(
            code,
            what=what,
            reason=str(getattr(status, "reason", "") or ""),
            message=str(getattr(status, "message", "") or ""),
        )
    if isinstance(error, HttpStatusError):
        return error_for_status(error.status_code, what=what, reason=error.reason)
    if isinstance(error, httpx2.HTTPStatusError):
        code = error.response.status_code
        return error_for_status(code, what=what, reason=error.response.reason_phrase)
    if isinstance(error, (httpx2.TimeoutException, TimeoutError)):
        return Transient(f"{what}: timed out talking to the API server ({type(error).__name__})")
    if isinstance(error, (httpx2.HTTPError, aiohttp.ClientError)):
        # Transport, protocol and stream errors: the connection broke, the request may be fine.
        return Transient(f"{what}: {type(error).__name__}: {error}")
    if isinstance(error, json.JSONDecodeError):
        return Transient(f"{what}: the API server sent malformed JSON ({error})")
    if isinstance(error, OSError):
        return Transient(f"{what}: {error}")
    return Transient(f"{what}: unexpected {type(error).__name__}: {error}")


def error_for_response(
    status_code: int, *, reason: str, content_type: str, body: bytes, what: str
) -> DomainError:
    """The domain error for a non-2xx response with this (already read) ``body``.

    Its ``__cause__`` is a lightkube ApiError when the body is a JSON ``Status`` (what a client
    library would raise, so :func:`status_causes` can read the field causes), otherwise an
    :class:`HttpStatusError`.
    """
    original = _exception_for_response(status_code, reason=reason, content_type=content_type, body=body)
    if isinstance(original, ApiError):
        # The HTTP status wins over the body's code (a proxy may relay a Status with another code).
        code = status_code
        status = original.status
        translated = error_for_status(
            code,
            what=what,
            reason=str(getattr(status, "reason", "") or ""),
            message=str(getattr(status, "message", "") or ""),
        )
    else:
        translated = translate_error(original, what=what)
    translated.__cause__ = original
    return translated


def error_for_watch_status(status: Mapping[str, Any], *, what: str) -> DomainError:
    """The domain error for the object of an ``ERROR`` watch event (a meta/v1 Status)."""
    original = _api_error_from_status(status)
    code = int(status.get("code") or 0) or 500
    translated = error_for_status(
        code,
        what=what,
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
    )
    translated.__cause__ = original
    return translated


def status_causes(error: BaseException) -> list[tuple[str, str]]:
    """``(field, reason)`` of every cause in the Status behind a translated ``error``."""
    cause = error.__cause__ if isinstance(error, DomainError) else error
    if not isinstance(cause, ApiError):
        return []
    details = getattr(cause.status, "details", None)
    found = []
    for item in getattr(details, "causes", None) or ():
        found.append((str(item.field or ""), str(item.reason or "")))
    return found


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Translate transport and decoding exceptions raised inside the block; domain errors pass."""
    try:
        yield
    except DomainError:
        raise
    except (aiohttp.ClientError, httpx2.HTTPError, json.JSONDecodeError, OSError) as exc:
        raise translate_error(exc, what=what) from exc


def _response_code(error: httpx2.HTTPStatusError) -> int:
    # An ApiError built from a watch ERROR event has no response attached.
    try:
        return error.response.status_code
    except (AttributeError, RuntimeError):
        return 0


def _exception_for_response(
    status_code: int, *, reason: str, content_type: str, body: bytes
) -> ApiError | HttpStatusError:
    if content_type.startswith("application/json"):
        try:
            decoded = json.loads(body)
            if isinstance(decoded, dict) and decoded.get("kind") == "Status":
                return _api_error_from_status(decoded)
        except (ValueError, TypeError, AttributeError):  # not a Status: the bare HTTP error
            pass
    return HttpStatusError(status_code, reason, body)


def _api_error_from_status(status: Mapping[str, Any]) -> ApiError:
    return ApiError(status=cast(Status, Status.from_dict(dict(status))))
