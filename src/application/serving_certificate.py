"""The kubelet API's serving certificate from the CertificateSigningRequest API
(``--rotate-server-certificates``), renewed before it expires.

One round (:meth:`ServingCertificateManager.rotate_once`): read the Node (its uid for events,
its ``status.addresses`` for the SANs), make a new key and a ``kubernetes.io/kubelet-serving``
CSR for ``system:node:<name>``, optionally approve it (``--serving-certificate-self-approve``),
wait for the signer's certificate, and install it in the running listener (new connections get
it; open ones keep theirs). :meth:`~ServingCertificateManager.run` repeats that at 70-90 % of
each certificate's validity (``domain.serving_cert.RenewalPolicy``), with a new key and a new
CSR every time, and retries a failed round with back-off while the previous certificate keeps
being served.

Self-approval approves only the CSR this round created, identified by name *and* uid, and only
after ``domain.serving_cert.serving_request_problems`` found nothing: signer, subject, usages and
SANs exactly as this node's. Anything else is left for a human (an Event says why).

Events on the Node: ``CertificateSigningRequestPending`` once per CSR that a re-read finds still
waiting (naming it and how to approve it); ``CertificateSigningRequestDenied`` / ``...Failed``
/ ``...Timeout`` / ``...NotApproved`` (self-approval refused) as warnings.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vkubelet.application.ports.certificates import (
    CertificateSigningRequests,
    ServingCertificateSink,
    ServingKeys,
)
from vkubelet.application.ports.cluster import EventRecorder, EventType, NodeGateway, ObjectRef
from vkubelet.application.ports.runtime import Clock
from vkubelet.application.waiting import call_with_timeout, retry_until_done
from vkubelet.domain.backoff import Backoff
from vkubelet.domain.errors import Conflict, DomainError, Permanent, Transient
from vkubelet.domain.serving_cert import (
    KUBELET_SERVING_SIGNER,
    CsrPhase,
    IssuedCertificate,
    RenewalPolicy,
    ServingIdentity,
    SigningRequest,
    allowed_usages,
    serving_identity,
    serving_request_problems,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

REASON_PENDING = "CertificateSigningRequestPending"
REASON_DENIED = "CertificateSigningRequestDenied"
REASON_FAILED = "CertificateSigningRequestFailed"
REASON_TIMEOUT = "CertificateSigningRequestTimeout"
REASON_NOT_APPROVED = "CertificateSigningRequestNotApproved"
REASON_INSTALLED = "ServingCertificateInstalled"
SELF_APPROVE_REASON = "VirtualKubeletSelfApprove"


@dataclass(frozen=True, slots=True)
class ServingCertificateSettings:
    node_name: str
    self_approve: bool = False
    # spec.expirationSeconds of each CSR; None: the signer's default (a year for kube's).
    expiration_seconds: int | None = None
    # How long one CSR may stay unissued before a new one replaces it (the kubelet: 15 min).
    wait_timeout: float = 900.0
    # Re-reads while waiting: quick at first (the signer answers an approved CSR at once),
    # then every 5 s for a CSR waiting for a human.
    poll: Backoff = field(default_factory=lambda: Backoff(base=0.25, cap=5.0))
    # After a failed round (denied, failed, timed out, API errors): a new CSR after this.
    retry: Backoff = field(default_factory=lambda: Backoff(base=2.0, cap=300.0))
    renewal: RenewalPolicy = field(default_factory=RenewalPolicy)
    api_timeout: float = 30.0


class ServingCertificateManager:
    """Obtains, installs and renews the serving certificate (see the module doc)."""

    def __init__(
        self,
        *,
        csrs: CertificateSigningRequests,
        nodes: NodeGateway,
        keys: ServingKeys,
        sink: ServingCertificateSink,
        events: EventRecorder,
        clock: Clock,
        settings: ServingCertificateSettings,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._csrs = csrs
        self._nodes = nodes
        self._keys = keys
        self._sink = sink
        self._events = events
        self._clock = clock
        self.settings = settings
        self._jitter = jitter
        self.current: IssuedCertificate | None = None
        self.installed = asyncio.Event()  # set once the first issued certificate is served

    @property
    def node_name(self) -> str:
        return self.settings.node_name

    async def run(self) -> None:
        """Obtain a certificate, then renew it for ever (cancel to stop)."""
        while True:
            issued = await retry_until_done(
                self.rotate_once,
                clock=self._clock,
                backoff=self.settings.retry,
                what="kubelet API serving certificate",
                retryable=lambda error: isinstance(error, DomainError),
                log=log,
            )
            renew_at = self.settings.renewal.renew_at(issued, jitter=self._jitter())
            log.info(
                "kubelet API serving certificate valid until %s; renewing at %s",
                issued.not_after.isoformat(),
                renew_at.isoformat(),
            )
            wait = (renew_at - self._clock.now()).total_seconds()
            # A certificate already due (clock skew, a signer shortening the validity a lot):
            # renew soon, but never in a loop of CSRs.
            await self._clock.sleep(max(wait, self.settings.retry.base))

    async def rotate_once(self) -> IssuedCertificate:
        """One round: a new key and CSR, approval (if enabled), the certificate, installed.

        Raises a domain error when this CSR ends without a certificate (denied, failed, timed
        out, replaced, the API failing); nothing was installed then."""
        node = await self._api(self._nodes.get_node(self.node_name))
        node_ref = ObjectRef("Node", "", self.node_name, _uid(node))
        identity = serving_identity(self.node_name, _addresses(node))
        pair = self._keys.new_request(identity)
        created = await self._api(
            self._csrs.create(
                generate_name=f"csr-{self.node_name}-",
                request_pem=pair.request_pem,
                signer_name=KUBELET_SERVING_SIGNER,
                usages=sorted(allowed_usages(pair.algorithm)),
                expiration_seconds=self.settings.expiration_seconds,
            )
        )
        log.info(
            "created CSR %s (uid %s) for the kubelet API serving certificate of %s (%s)",
            created.name,
            created.uid,
            identity.common_name,
            identity.describe_sans(),
        )
        issued = await self._wait_issued(created, identity, node_ref)
        try:
            self._sink.install(cert_pem=issued.cert_pem, key_pem=pair.key_pem)
        except DomainError as error:
            raise Permanent(f"the certificate of CSR {created.name} cannot be served: {error}") from error
        self.current = issued
        self.installed.set()
        log.info(
            "kubelet API: serving the certificate of CSR %s (valid %s to %s)",
            created.name,
            issued.not_before.isoformat(),
            issued.not_after.isoformat(),
        )
        self._record(
            node_ref,
            EventType.NORMAL,
            REASON_INSTALLED,
            f"kubelet API serving certificate from CertificateSigningRequest {created.name} "
            f"installed, valid until {issued.not_after.isoformat()}",
        )
        return issued

    async def _wait_issued(
        self, created: SigningRequest, identity: ServingIdentity, node_ref: ObjectRef
    ) -> IssuedCertificate:
        deadline = self._clock.monotonic() + self.settings.wait_timeout
        current = created
        announced = refused = False
        polls = 0
        while True:
            phase = current.phase
            if phase is CsrPhase.ISSUED and current.certificate is not None:
                return current.certificate
            if phase in (CsrPhase.DENIED, CsrPhase.FAILED):
                raise self._ended(current, phase, node_ref)
            if phase is CsrPhase.PENDING and self.settings.self_approve and not refused:
                refused = not await self._approve_own(current, identity, node_ref)
            elif polls and not announced:
                announced = True
                self._announce(current, phase, node_ref)
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                message = (
                    f"CertificateSigningRequest {created.name} was not issued within "
                    f"{self.settings.wait_timeout:g} s ({phase}); requesting a new one"
                )
                self._record(node_ref, EventType.WARNING, REASON_TIMEOUT, message)
                raise Transient(message)
            polls += 1
            await self._clock.sleep(min(self.settings.poll.delay(polls), remaining))
            try:
                current = await self._api(self._csrs.get(created.name))
            except Transient as error:
                log.warning("cannot read CSR %s (will retry): %s", created.name, error)
                continue
            if current.uid != created.uid:
                raise Conflict(
                    f"CSR {created.name} was replaced by another object "
                    f"(uid {current.uid}, ours {created.uid})"
                )

    async def _approve_own(
        self, request: SigningRequest, identity: ServingIdentity, node_ref: ObjectRef
    ) -> bool:
        """Approve our own pending CSR after checking it; False when it fails the check or the
        API refuses the approval for good (then it is left for a human)."""
        problems = serving_request_problems(request, identity)
        if problems:
            message = (
                f"not self-approving CertificateSigningRequest {request.name}: {'; '.join(problems)}. "
                f"It waits for a human: kubectl certificate approve {request.name}"
            )
            log.error("%s", message)
            self._record(node_ref, EventType.WARNING, REASON_NOT_APPROVED, message)
            return False
        try:
            await self._api(
                self._csrs.approve(
                    request,
                    reason=SELF_APPROVE_REASON,
                    message=f"virtual-kubelet approved the serving certificate request of its own node "
                    f"{self.node_name}",
                )
            )
        except Conflict as error:
            # Changed since we read it (another actor's label, approval or denial): re-read.
            log.info("CSR %s changed while approving it; reading it again: %s", request.name, error)
            return True
        except Transient as error:
            log.warning("cannot approve CSR %s yet (will retry): %s", request.name, error)
            return True
        except Permanent as error:
            # RBAC without the approval rules, typically: a new CSR would fare no better, so this
            # one waits for a human instead of a trail of pending CSRs piling up.
            message = (
                f"cannot self-approve CertificateSigningRequest {request.name}: {error}. "
                f"It waits for a human: kubectl certificate approve {request.name}"
            )
            log.error("%s", message)
            self._record(node_ref, EventType.WARNING, REASON_NOT_APPROVED, message)
            return False
        log.info("self-approved CSR %s of node %s", request.name, self.node_name)
        return True

    def _announce(self, request: SigningRequest, phase: CsrPhase, node_ref: ObjectRef) -> None:
        if phase is CsrPhase.PENDING:
            message = (
                f"CertificateSigningRequest {request.name} for the kubelet API serving certificate "
                f"is waiting for approval: kubectl certificate approve {request.name}"
            )
        else:
            message = (
                f"CertificateSigningRequest {request.name} for the kubelet API serving certificate "
                f"is approved and waiting for the {request.signer_name} signer"
            )
        log.info("%s", message)
        self._record(node_ref, EventType.NORMAL, REASON_PENDING, message)

    def _ended(self, request: SigningRequest, phase: CsrPhase, node_ref: ObjectRef) -> Permanent:
        """Report a denied or failed CSR; the error to raise."""
        condition = request.condition(phase.value)
        why = ": ".join(part for part in (condition.reason, condition.message) if part) if condition else ""
        message = f"CertificateSigningRequest {request.name} was {phase.value.lower()}" + (
            f" ({why})" if why else ""
        )
        reason = REASON_DENIED if phase is CsrPhase.DENIED else REASON_FAILED
        log.error("kubelet API serving certificate: %s", message)
        self._record(node_ref, EventType.WARNING, reason, message)
        return Permanent(message)

    def _record(self, node_ref: ObjectRef, type_: EventType, reason: str, message: str) -> None:
        self._events.record(node_ref, type=type_, reason=reason, message=message)

    async def _api(self, call: Awaitable[T]) -> T:
        return await call_with_timeout(self._clock, call, seconds=self.settings.api_timeout)


def _uid(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("uid") or "")


def _addresses(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((node.get("status") or {}).get("addresses") or [])
