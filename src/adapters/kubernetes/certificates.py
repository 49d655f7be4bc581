"""CertificateSigningRequests, certificates.k8s.io/v1 (implements ``CertificateSigningRequests``).

``spec.request`` and ``status.certificate`` are base64 of PEM in JSON; they are decoded and
parsed here (``adapters.certs``), so the application sees a domain ``SigningRequest``.

Approval is a PUT of the whole object to the ``approval`` subresource with the Approved
condition appended. The body carries the uid and resourceVersion we checked, so the server
refuses (409, Conflict) when the object changed meanwhile; we also re-read it first and refuse
ourselves when the name now belongs to another uid, so only the object the caller checked can
ever be approved.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from vkubelet.adapters.certs import issued_certificate, parse_certificate_request
from vkubelet.adapters.kubernetes.client import KubeClient
from vkubelet.domain.errors import Conflict, InvalidInput
from vkubelet.domain.pod import format_time
from vkubelet.domain.serving_cert import CsrCondition, SigningRequest

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


class KubernetesCertificateSigningRequests:
    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        generate_name: str,
        request_pem: bytes,
        signer_name: str,
        usages: Sequence[str],
        expiration_seconds: int | None = None,
    ) -> SigningRequest:
        spec: dict[str, Any] = {
            "request": base64.b64encode(request_pem).decode(),
            "signerName": signer_name,
            "usages": list(usages),
        }
        if expiration_seconds is not None:
            spec["expirationSeconds"] = int(expiration_seconds)
        body = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"generateName": generate_name},
            "spec": spec,
        }
        manifest = await self._client.request(
            "POST", CSR_PATH, what=f"certificatesigningrequest {generate_name}*", body=body
        )
        return signing_request_from_manifest(manifest)

    async def get(self, name: str) -> SigningRequest:
        return signing_request_from_manifest(await self._get(name))

    async def approve(self, request: SigningRequest, *, reason: str, message: str) -> SigningRequest:
        manifest = await self._get(request.name)
        meta = manifest.get("metadata") or {}
        if meta.get("uid") != request.uid:
            raise Conflict(
                f"certificatesigningrequest {request.name} is now uid {meta.get('uid')}, not {request.uid}: "
                "not approving another object"
            )
        if meta.get("resourceVersion") != request.resource_version:
            raise Conflict(
                f"certificatesigningrequest {request.name} changed since it was checked "
                f"(resourceVersion {meta.get('resourceVersion')}, checked {request.resource_version})"
            )
        body = copy.deepcopy(manifest)
        status = body.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        now = format_time(datetime.now(UTC))
        conditions.append(
            {
                "type": "Approved",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
        approved = await self._client.request(
            "PUT", f"{_path(request.name)}/approval", what=_what(request.name), body=body
        )
        return signing_request_from_manifest(approved)

    async def _get(self, name: str) -> dict[str, Any]:
        return await self._client.request("GET", _path(name), what=_what(name))


def _path(name: str) -> str:
    return f"{CSR_PATH}/{quote(name, safe='')}"


def _what(name: str) -> str:
    return f"certificatesigningrequest {name}"


def signing_request_from_manifest(manifest: Mapping[str, Any]) -> SigningRequest:
    """The domain view of a CSR manifest. Raises InvalidInput when it has no name or its
    request or certificate cannot be decoded."""
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    status = manifest.get("status") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise InvalidInput("certificatesigningrequest has no metadata.name")
    content = parse_certificate_request(_decoded(spec.get("request"), name, "spec.request"))
    certificate = None
    if status.get("certificate"):
        certificate = issued_certificate(_decoded(status["certificate"], name, "status.certificate"))
    return SigningRequest(
        name=name,
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        signer_name=str(spec.get("signerName") or ""),
        usages=tuple(str(usage) for usage in spec.get("usages") or ()),
        content=content,
        conditions=tuple(
            CsrCondition(
                type=str(c.get("type") or ""),
                status=str(c.get("status") or ""),
                reason=str(c.get("reason") or ""),
                message=str(c.get("message") or ""),
            )
            for c in status.get("conditions") or ()
        ),
        certificate=certificate,
    )


def _decoded(value: Any, name: str, field: str) -> bytes:
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInput(f"certificatesigningrequest {name}: {field} is not base64: {error}") from error
