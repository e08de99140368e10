"""The admission gate a request passes before routing: who sent it, and at which tier."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.admission.keys import KeyTable, Principal
from gateway.admission.tiers import Tier, TierPolicy
from gateway.proxy.forward import AttemptLimits
from gateway.settings import GatewaySettings


class Gate:
    """Keys and tiers of one configuration (rebuilt by a reload)."""

    def __init__(self, keys: KeyTable, tiers: TierPolicy) -> None:
        self.keys = keys
        self.tiers = tiers

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, environ: Mapping[str, str] | None = None
    ) -> Gate:
        """The gate of `settings` (keys from the environment read now)."""
        keys = KeyTable.from_settings(settings.auth, os.environ if environ is None else environ)
        defaults = AttemptLimits.from_settings(settings.upstream)
        return cls(keys, TierPolicy(settings.admission, defaults))

    def authenticate(self, authorization: bytes | None) -> Principal:
        """The request's principal (401 when its key is missing or unknown)."""
        return self.keys.authenticate(authorization)

    def tier(self, principal: Principal, data: dict[str, object]) -> Tier:
        """The request's tier (400 for a `service_tier` it may not have)."""
        return self.tiers.choose(principal, data)
