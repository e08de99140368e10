"""Per-tenant limits: requests/min and tokens/min (GCRA) and concurrent requests.

GCRA keeps one number per limit, the theoretical arrival time (TAT): each admitted unit
pushes it `60 s / limit` later, and a request is refused when that would put it more than
a minute ahead of now. A tenant limited to N requests/min thus gets N in any minute, in a
burst or spread out. Tokens are reserved at admission (prompt estimate plus the output
asked for) and settled from `usage` afterwards by moving the TAT back or forward.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import GatewayError
from gateway.proxy.forward import ProxyOutcome
from gateway.settings import LimitSettings

PERIOD_S = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a limit check said: allowed, else what ran out and when to retry; the numbers
    for the `x-ratelimit-*` headers (None where the tenant has no such limit)."""

    allowed: bool
    reason: str = ""
    retry_after_s: float = 0.0
    requests: tuple[int, int, float] | None = None  # limit, remaining, seconds to full reset
    tokens: tuple[int, int, float] | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's rate-limit headers for the limits the tenant has."""
        out: list[tuple[bytes, bytes]] = []
        for kind, numbers in (("requests", self.requests), ("tokens", self.tokens)):
            if numbers is not None:
                limit, remaining, reset_s = numbers
                out.append((f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()))
                out.append((f"x-ratelimit-remaining-{kind}".encode(), str(remaining).encode()))
                out.append((f"x-ratelimit-reset-{kind}".encode(), duration(reset_s).encode()))
        return out

    def error(self) -> GatewayError:
        """The 429 of a refused request."""
        what = {
            "requests": "requests per minute",
            "tokens": "tokens per minute",
            "concurrency": "concurrent requests",
        }.get(self.reason, self.reason)
        return GatewayError(
            429,
            f"Rate limit reached for {what}; retry after {math.ceil(self.retry_after_s)} s.",
            code="rate_limit_exceeded",
            retry_after_s=max(1, math.ceil(self.retry_after_s)),
        )


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    rest = round(rest, 3)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


class LimitStore(Protocol):
    """Where the limits' state lives: this process, or Redis for every replica."""

    # True when a call crosses the network (worth overlapping with other waits).
    remote: bool

    async def acquire(self, tenant: str, limits: LimitSettings, tokens: int, lease: str) -> Verdict:
        """Admit one request of `tokens` (all limits at once, or none), holding `lease`."""
        ...

    async def finish(
        self, tenant: str, limits: LimitSettings, lease: str, delta_tokens: int
    ) -> None:
        """The request is over: free its slot, correct its tokens by `delta_tokens` (used -
        reserved; negative gives back). Called on the request path: it must not wait on the
        network (a remote store sends it later, or with the tenant's next acquire)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def used_tokens(outcome: ProxyOutcome, reserved: int) -> int:
    """Tokens a finished request used as its `usage` says; 0 for one no backend started
    answering (its reservation is given back); without usage, the reservation stands."""
    if outcome.first_byte_at is None:
        return 0
    usage = outcome.usage_counts()
    if usage is None or usage.prompt_tokens is None:
        return reserved
    return usage.prompt_tokens + (usage.completion_tokens or 0)


def scaled(limits: LimitSettings, share: float) -> LimitSettings:
    """`limits` times `share` (at least 1 of each set limit): one replica's part."""

    def part(value: int | None) -> int | None:
        return None if value is None else max(1, math.floor(value * share))

    return LimitSettings(
        requests_per_min=part(limits.requests_per_min),
        tokens_per_min=part(limits.tokens_per_min),
        max_concurrent=part(limits.max_concurrent),
    )


class MemoryLimits:
    """Limits held in this process (the memory index, or a share while Redis is away)."""

    remote = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[tuple[str, str], float] = {}
        self._leases: dict[str, set[str]] = {}

    def _gcra(self, key: tuple[str, str], limit: int | None, cost: float, now: float) -> _Cell:
        """Whether `cost` units fit under `limit`, the TAT to keep, the headers' numbers."""
        if limit is None:
            return _Cell(True, now, None, 0.0)
        tat = max(self._tat.get(key, now), now)
        new = tat + cost * PERIOD_S / limit
        if new - now <= PERIOD_S:
            remaining = math.floor((PERIOD_S - (new - now)) * limit / PERIOD_S)
            return _Cell(True, new, (limit, remaining, new - now), 0.0)
        remaining = math.floor((PERIOD_S - (tat - now)) * limit / PERIOD_S)
        return _Cell(False, tat, (limit, remaining, tat - now), new - now - PERIOD_S)

    async def acquire(self, tenant: str, limits: LimitSettings, tokens: int, lease: str) -> Verdict:
        """Check every limit, then commit all of them (or none)."""
        now = self._clock()
        requests = self._gcra((tenant, "r"), limits.requests_per_min, 1, now)
        token_cell = self._gcra((tenant, "t"), limits.tokens_per_min, tokens, now)
        held = self._leases.get(tenant, set())
        concurrent_ok = limits.max_concurrent is None or len(held) < limits.max_concurrent
        numbers = requests.numbers, token_cell.numbers
        if not requests.fits:
            return Verdict(False, "requests", requests.wait_s, *numbers)
        if not token_cell.fits:
            return Verdict(False, "tokens", token_cell.wait_s, *numbers)
        if not concurrent_ok:
            return Verdict(False, "concurrency", 1.0, *numbers)
        if limits.requests_per_min is not None:
            self._tat[(tenant, "r")] = requests.tat
        if limits.tokens_per_min is not None:
            self._tat[(tenant, "t")] = token_cell.tat
        if limits.max_concurrent is not None:
            self._leases.setdefault(tenant, set()).add(lease)
        return Verdict(True, "", 0.0, *numbers)

    async def settle(self, tenant: str, limits: LimitSettings, delta_tokens: int) -> None:
        """Move the tokens' TAT by the difference between used and reserved."""
        key = (tenant, "t")
        if limits.tokens_per_min is None or key not in self._tat:
            return
        self._tat[key] += delta_tokens * PERIOD_S / limits.tokens_per_min

    async def release(self, tenant: str, limits: LimitSettings, lease: str) -> None:
        """Free the concurrency slot."""
        held = self._leases.get(tenant)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._leases[tenant]

    async def finish(
        self, tenant: str, limits: LimitSettings, lease: str, delta_tokens: int
    ) -> None:
        """Free the slot, then settle the tokens."""
        await self.release(tenant, limits, lease)
        await self.settle(tenant, limits, delta_tokens)

    async def close(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True, slots=True)
class _Cell:
    fits: bool
    tat: float
    numbers: tuple[int, int, float] | None
    wait_s: float
