"""Fetch what a pod's volumes reference, then project them with the pure domain rules.

ConfigMaps (``data`` and ``binaryData`` as files) and Secrets come from the ConfigSource
(per-object GETs behind its short TTL cache, the same reads env resolution makes; a pod's first
resolution reads them fresh, past the cache);
service-account tokens from the TokenRequest API, bound to the pod. A token is requested once
per pod and (audience, expiration) and kept until the kubelet's refresh rule says it is due
(80 % of its lifetime, or 24 h), so the periodic volume check costs no token request until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from vkubelet.application.environment import lookups
from vkubelet.application.ports.cluster import ConfigSource, IssuedToken, TokenIssuer
from vkubelet.application.ports.provider import NodeHealth
from vkubelet.application.ports.runtime import Clock
from vkubelet.domain.env import MISSING, Found, Lookup, ReadFailed
from vkubelet.domain.errors import DomainError, NotFound
from vkubelet.domain.pod import Pod
from vkubelet.domain.volumes import (
    TokenRequestSpec,
    VolumeResolution,
    project_volumes,
    required_volume_sources,
    token_refresh_due,
)


class VolumeResolver:
    """Resolves a pod's configMap, secret, downwardAPI, projected and emptyDir volumes."""

    def __init__(
        self, *, configs: ConfigSource, tokens: TokenIssuer, provider: NodeHealth, clock: Clock
    ) -> None:
        self._configs = configs
        self._tokens = tokens
        self._provider = provider
        self._clock = clock
        # pod UID -> token spec -> (the token, the clock's now() when it was issued)
        self._held: dict[str, dict[TokenRequestSpec, tuple[IssuedToken, datetime]]] = {}
        self._allocatable: Mapping[str, str] | None = None

    async def resolve(
        self, pod: Pod, *, native_kinds: frozenset[str] = frozenset(), fresh: bool = False
    ) -> VolumeResolution:
        """The pod's volume contents; volumes of ``native_kinds`` (the provider's
        ``native_volume_kinds``) are neither fetched nor warned about. ``fresh``: read the
        configmaps and secrets past any cache (the pod's first resolution)."""
        sources = required_volume_sources(pod, native_kinds=native_kinds)
        namespace = sources.namespace
        config_maps, secrets, tokens = await asyncio.gather(
            lookups(
                sources.config_maps,
                lambda name: self._configs.get_config_map_files(namespace, name, fresh=fresh),
            ),
            lookups(sources.secrets, lambda name: self._configs.get_secret(namespace, name, fresh=fresh)),
            self._tokens_for(pod, sources.service_account, sources.tokens),
        )
        return project_volumes(
            pod,
            config_maps=config_maps,
            secrets=secrets,
            tokens=tokens,
            node_allocatable=await self._node_allocatable(),
            native_kinds=native_kinds,
        )

    def forget(self, uid: str) -> None:
        """The pod is gone: drop its tokens."""
        self._held.pop(uid, None)

    async def _tokens_for(
        self, pod: Pod, service_account: str, specs: tuple[TokenRequestSpec, ...]
    ) -> dict[TokenRequestSpec, Lookup[str]]:
        held = self._held.setdefault(pod.ref.uid, {})
        now = self._clock.now()

        async def one(spec: TokenRequestSpec) -> tuple[TokenRequestSpec, Lookup[str]]:
            current = held.get(spec)
            if current is not None and not token_refresh_due(
                issued_at=current[1], expires_at=current[0].expires_at, now=now
            ):
                return spec, Found(current[0].token)
            try:
                issued = await self._tokens.request_token(
                    pod.ref,
                    service_account=service_account,
                    audiences=(spec.audience,) if spec.audience else (),
                    expiration_seconds=spec.expiration_seconds,
                )
            except NotFound:
                return spec, MISSING
            except DomainError as error:
                if current is not None:  # keep serving the old token until it really expires
                    return spec, Found(current[0].token)
                return spec, ReadFailed(str(error))
            held[spec] = (issued, now)
            return spec, Found(issued.token)

        return dict(await asyncio.gather(*(one(spec) for spec in specs)))

    async def _node_allocatable(self) -> Mapping[str, str]:
        if self._allocatable is None:
            template = await self._provider.node_template()
            self._allocatable = dict(template.allocatable or template.capacity)
        return self._allocatable
