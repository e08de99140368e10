"""The admission gate a request passes before it is forwarded: who sent it, at which tier,
within which limits."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from gateway.admission.keys import KeyTable, Principal
from gateway.admission.limits import LimitStore, MemoryLimits, Verdict
from gateway.admission.queue import AdmissionQueue
from gateway.admission.tiers import Tier, TierPolicy
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.proxy.forward import AttemptLimits
from gateway.settings import GatewaySettings, IndexSettings, LimitSettings

log = logging.getLogger("gateway.admission")

T = TypeVar("T")


def build_limit_store(
    settings: IndexSettings, metrics: GatewayMetrics, replicas: Callable[[], int]
) -> LimitStore:
    """Limits in Redis beside a Redis index (shared by the replicas), else in memory."""
    if settings.kind != "redis":
        return MemoryLimits()
    from gateway.admission.redis_limits import RedisLimits
    from gateway.prefix.redis_guard import script_client

    assert settings.redis_url is not None
    timeout_s = settings.record_timeout_ms / 1000

    def degraded(on: bool) -> None:
        metrics.limits_degraded.set(1 if on else 0)

    return RedisLimits(
        script_client(settings.redis_url, max_connections=16, socket_timeout_s=timeout_s),
        settings.key_prefix,
        timeout_s=timeout_s,
        replicas=replicas,
        on_degraded=degraded,
    )


class Gate:
    """Keys, tiers and limits of one configuration (a reload keeps the limit store)."""

    def __init__(
        self,
        keys: KeyTable,
        tiers: TierPolicy,
        store: LimitStore,
        tenant_limits: Mapping[str, LimitSettings],
        default_output_tokens: int,
        metrics: GatewayMetrics,
        queue: AdmissionQueue,
    ) -> None:
        self.keys = keys
        self.tiers = tiers
        self.store = store
        self._tenant_limits = dict(tenant_limits)
        self._default_output = default_output_tokens
        self._rejections = metrics.admission_rejections
        self.queue = queue

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        store: LimitStore,
        metrics: GatewayMetrics,
        environ: Mapping[str, str] | None = None,
    ) -> Gate:
        """The gate of `settings` over `store` (keys from the environment read now)."""
        keys = KeyTable.from_settings(settings.auth, os.environ if environ is None else environ)
        defaults = AttemptLimits.from_settings(settings.upstream)
        tenants = {
            name: tenant.limits
            for name, tenant in settings.auth.tenants.items()
            if tenant.limits is not None
        }
        admission = settings.admission
        weights = {name: tenant.weight for name, tenant in settings.auth.tenants.items()}
        queue = AdmissionQueue(
            metrics, aging_s=admission.aging_s, max_waiting=admission.max_waiting, weights=weights
        )
        return cls(
            keys,
            TierPolicy(admission, defaults),
            store,
            tenants,
            admission.default_output_tokens,
            metrics,
            queue,
        )

    def authenticate(self, authorization: bytes | None) -> Principal:
        """The request's principal (401 when its key is missing or unknown)."""
        return self.keys.authenticate(authorization)

    def tier(self, principal: Principal, data: dict[str, object]) -> Tier:
        """The request's tier (400 for a `service_tier` it may not have)."""
        return self.tiers.choose(principal, data)

    def limits_of(self, tenant: str, tier: Tier) -> LimitSettings | None:
        """The tenant's own limits, else its tier's; None when nothing is limited."""
        limits = self._tenant_limits.get(tenant, tier.settings.limits)
        if limits.requests_per_min or limits.tokens_per_min or limits.max_concurrent:
            return limits
        return None

    def reserved_tokens(
        self,
        prompt_bytes: int,
        output_tokens: float | None,
        model: str,
        candidates: Sequence[Backend],
        exact_prompt_tokens: int | None = None,
    ) -> int:
        """Tokens reserved at admission: the prompt as counted by its tokenizer when it was,
        else as the candidate that counts the most tokens counts it (calibrated), plus the
        output asked for (settled after the reply)."""
        output = output_tokens if output_tokens is not None else self._default_output
        if exact_prompt_tokens is not None:
            return max(1, round(exact_prompt_tokens + output))
        per_token = min(backend.calibration.bytes_per_token(model) for backend in candidates)
        return max(1, round(prompt_bytes / per_token + output))

    async def admit(
        self,
        tenant: str,
        tier: Tier,
        limits: LimitSettings,
        tokens: int,
        lease: str,
        placing: Awaitable[T],
    ) -> tuple[Verdict, T]:
        """Check the limits and await `placing`; with a store across the network the check
        runs while the request is placed, so its round trip hides behind the index lookup.

        When placing fails (a lane's refusal, say) what the check took is given back.
        """
        if not self.store.remote:
            placed = await placing
            return await self.acquire(tenant, tier, limits, tokens, lease), placed
        checking = asyncio.ensure_future(self.acquire(tenant, tier, limits, tokens, lease))
        try:
            placed = await placing
        except asyncio.CancelledError:
            checking.cancel()  # the lease expires if the script had already run
            raise
        except BaseException:
            if (await checking).allowed:
                await self.finish(tenant, limits, lease, -tokens)
            raise
        return await checking, placed

    async def acquire(
        self, tenant: str, tier: Tier, limits: LimitSettings, tokens: int, lease: str
    ) -> Verdict:
        """Check the tenant's limits (a refusal is counted)."""
        verdict = await self.store.acquire(tenant, limits, tokens, lease)
        if not verdict.allowed:
            self._rejections.labels(tier.name, tenant, verdict.reason).inc()
        return verdict

    async def finish(self, tenant: str, limits: LimitSettings, lease: str, delta: int) -> None:
        """The request is over: free its slot, settle its tokens (`delta`: used - reserved)."""
        await self.store.finish(tenant, limits, lease, delta)
