"""Service tiers: which one a request gets (its key's, or OpenAI's `service_tier` where allowed)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gateway.admission.keys import Principal
from gateway.errors import bad_request
from gateway.proxy.forward import AttemptLimits
from gateway.routing.filters import PoolFilter
from gateway.settings import AdmissionSettings, TierSettings

SERVICE_TIERS = ("auto", "default", "flex", "priority")


@dataclass(frozen=True, slots=True)
class Tier:
    """A configured tier with what it decides, built once per configuration."""

    name: str
    settings: TierSettings
    pools: PoolFilter
    limits: AttemptLimits
    header: bytes


class TierPolicy:
    """Picks each request's tier."""

    def __init__(self, settings: AdmissionSettings, defaults: AttemptLimits) -> None:
        self._settings = settings
        self.tiers = {
            name: Tier(
                name,
                tier,
                PoolFilter(tier.pools, name),
                _limits(defaults, tier),
                name.encode(),
            )
            for name, tier in settings.tiers.items()
        }
        self._by_service_tier = dict(settings.service_tiers)

    def choose(self, principal: Principal, data: dict[str, Any]) -> Tier:
        """The principal's tier, or the one `service_tier` names when the principal may use it.

        A `service_tier` the key may not use, or that no tier answers to, is a 400 naming it.
        """
        default = principal.tier or self._settings.default_tier
        asked = data.get("service_tier")
        if asked is None or asked == "auto":
            return self.tiers[default]
        if asked not in SERVICE_TIERS:
            raise bad_request(
                f"`service_tier` must be one of {', '.join(SERVICE_TIERS)}.",
                param="service_tier",
                code="invalid_service_tier",
            )
        name = self._by_service_tier.get(asked)
        if name is None:
            raise bad_request(
                f"`service_tier` {asked!r} is not offered by this gateway.",
                param="service_tier",
                code="invalid_service_tier",
            )
        if name != default and name not in principal.tiers:
            raise bad_request(
                f"`service_tier` {asked!r} is not allowed for this API key.",
                param="service_tier",
                code="service_tier_not_allowed",
            )
        return self.tiers[name]


def _limits(defaults: AttemptLimits, tier: TierSettings) -> AttemptLimits:
    if tier.first_byte_timeout_s is None:
        return defaults
    return dataclasses.replace(defaults, first_byte_timeout_s=tier.first_byte_timeout_s)
