"""Limits shared by every replica through Redis: one atomic script per check, Redis's clock.

A tenant's three keys share a hash tag (the tenant), so on a Redis Cluster one node holds
them and the script stays atomic. When Redis fails (or its breaker is open) each replica
holds a share of the limits in memory, `1 / replicas` of each, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from gateway.admission.limits import MemoryLimits, Verdict, scaled
from gateway.prefix.breaker import CircuitBreaker
from gateway.prefix.redis_guard import ScriptClient
from gateway.prefix.redis_scripts import LuaScript
from gateway.settings import LimitSettings

log = logging.getLogger("gateway.admission")

# KEYS: requests TAT, tokens TAT, concurrency ZSET. ARGV: requests/min, tokens/min, max
# concurrent (0: none), tokens, lease id, lease ms; then what this replica's finished requests
# owe (carried here instead of a call of their own): tokens to settle, leases to free.
# TATs are in ms of Redis's clock.
# Returns {ok, reason, retry_ms, r_remaining, r_reset_ms, t_remaining, t_reset_ms}.
ACQUIRE = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local r_limit, t_limit, c_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 8, #ARGV do redis.call('ZREM', KEYS[3], ARGV[i]) end
local owed = tonumber(ARGV[7])
if owed ~= 0 and t_limit > 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]))
  if tat ~= nil then
    redis.call('SET', KEYS[2], tat + owed * period / t_limit, 'PX', period + 1000)
  end
end
local function gcra(key, limit, cost)
  if limit <= 0 then return 1, now, 0, 0, 0 end
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new = tat + cost * period / limit
  if new - now <= period then
    return 1, new, math.floor((period - (new - now)) * limit / period), new - now, 0
  end
  return 0, tat, math.floor((period - (tat - now)) * limit / period), tat - now, new - now - period
end
local r_ok, r_tat, r_rem, r_reset, r_wait = gcra(KEYS[1], r_limit, 1)
local t_ok, t_tat, t_rem, t_reset, t_wait = gcra(KEYS[2], t_limit, tonumber(ARGV[4]))
local out = {0, '', 0, r_rem, math.floor(r_reset), t_rem, math.floor(t_reset)}
if r_ok == 0 then out[2] = 'requests'; out[3] = math.ceil(r_wait); return out end
if t_ok == 0 then out[2] = 'tokens'; out[3] = math.ceil(t_wait); return out end
if c_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= c_limit then
    out[2] = 'concurrency'; out[3] = 1000; return out
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
end
if r_limit > 0 then redis.call('SET', KEYS[1], r_tat, 'PX', period + 1000) end
if t_limit > 0 then redis.call('SET', KEYS[2], t_tat, 'PX', period + 1000) end
out[1] = 1
return out
"""
)

# KEYS: concurrency ZSET, tokens TAT. ARGV: tokens/min (0: none), tokens to add (negative:
# give back), then leases to free. What finished requests owe when no acquire carried it.
FINISH = LuaScript(
    """
for i = 3, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
local limit, owed = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit <= 0 or owed == 0 then return 0 end
local tat = tonumber(redis.call('GET', KEYS[2]))
if tat == nil then return 0 end
redis.call('SET', KEYS[2], tat + owed * 60000 / limit, 'PX', 61000)
return 1
"""
)

# A request holds its concurrency slot at most this long (a replica that died lets go).
LEASE_MS = 15 * 60 * 1000

# The longest a finished request's debt (its slot, its tokens) waits for the tenant's next
# acquire to carry it before it is sent on its own: how late other replicas may see a slot
# free. This replica's own next acquire always carries it; with no other replica reading the
# limits there is no one to hurry for, only a replica's death to guard against.
FLUSH_S = 0.005
LONE_FLUSH_S = 1.0


@dataclass(slots=True)
class _Owed:
    """What one tenant's finished requests owe Redis: slots to free, tokens to settle."""

    leases: list[str] = field(default_factory=list)
    tokens: int = 0
    tokens_per_min: int = 0


class RedisLimits:
    """Limits in Redis for every replica; per-replica shares in memory while Redis fails."""

    remote = True

    def __init__(
        self,
        client: ScriptClient,
        key_prefix: str,
        *,
        timeout_s: float,
        replicas: Callable[[], int],
        on_degraded: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = key_prefix + "limits:"
        self._timeout_s = timeout_s
        self._replicas = replicas
        # How many replicas share the limits, as last seen while Redis answered (the load
        # exchange forgets the others once Redis fails).
        self._known_replicas = 1
        self._fallback = MemoryLimits(clock)
        self._on_degraded = on_degraded
        self.degraded = False
        self._breaker = CircuitBreaker(
            failure_threshold=1, cooldown_s=1.0, clock=clock, on_change=self._changed
        )
        self._owed: dict[str, _Owed] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def _changed(self, degraded: bool) -> None:
        self.degraded = degraded
        if degraded:
            log.warning(
                "limits degraded: Redis failing, each replica holds 1/%d of every limit",
                self._known_replicas,
            )
        else:
            log.warning("limits recovered: Redis reachable again, limits shared exactly")
        if self._on_degraded is not None:
            self._on_degraded(degraded)

    def _keys(self, tenant: str) -> tuple[bytes, bytes, bytes]:
        tag = f"{self._prefix}{{{tenant}}}:"
        return (tag + "r").encode(), (tag + "t").encode(), (tag + "c").encode()

    async def _run(self, script: LuaScript, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """The script's reply, or None when Redis failed (the breaker hears of either)."""
        if not self._breaker.allow():
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    reply = await self._client.evalsha(script.sha, len(keys), *keys, *args)
                except NoScriptError:  # first use, or Redis restarted: EVAL also caches it
                    reply = await self._client.eval(script.source, len(keys), *keys, *args)
        except Exception as exc:  # timeouts, connection errors, error replies
            log.debug("limits call failed: %r", exc)
            self._breaker.failure()
            return None
        self._breaker.success()
        self._known_replicas = max(1, self._replicas())
        return reply

    def _share(self, limits: LimitSettings) -> LimitSettings:
        return scaled(limits, 1.0 / self._known_replicas)

    async def acquire(self, tenant: str, limits: LimitSettings, tokens: int, lease: str) -> Verdict:
        """One script call checks and commits all three limits, and pays what the tenant's
        finished requests owe."""
        owed = self._owed.pop(tenant, None)
        args: list[Any] = [
            limits.requests_per_min or 0,
            limits.tokens_per_min or 0,
            limits.max_concurrent or 0,
            tokens,
            lease,
            LEASE_MS,
        ]
        if owed is not None:
            args.append(owed.tokens)
            args.extend(owed.leases)
        else:
            args.append(0)
        reply = await self._run(ACQUIRE, self._keys(tenant), args)
        if reply is None:
            if owed is not None:
                await self._unpaid(tenant, owed)
            return await self._fallback.acquire(tenant, self._share(limits), tokens, lease)
        ok, reason, retry_ms, r_rem, r_reset, t_rem, t_reset = reply
        requests = None
        if limits.requests_per_min is not None:
            requests = (limits.requests_per_min, int(r_rem), int(r_reset) / 1000)
        token_numbers = None
        if limits.tokens_per_min is not None:
            token_numbers = (limits.tokens_per_min, int(t_rem), int(t_reset) / 1000)
        text = reason.decode() if isinstance(reason, bytes) else str(reason)
        return Verdict(bool(ok), text, int(retry_ms) / 1000, requests, token_numbers)

    async def finish(
        self, tenant: str, limits: LimitSettings, lease: str, delta_tokens: int
    ) -> None:
        """Free the slot and settle the tokens: owed until the tenant's next acquire carries
        it, or at most `FLUSH_S` (`LONE_FLUSH_S` with no other replica), so a request's end
        costs no round trip of its own."""
        await self._fallback.release(tenant, limits, lease)
        frees = limits.max_concurrent is not None
        settles = limits.tokens_per_min is not None and delta_tokens != 0
        if not frees and not settles:
            return
        owed = self._owed.get(tenant)
        if owed is None:
            owed = self._owed[tenant] = _Owed()
        if frees:
            owed.leases.append(lease)
        if settles:
            owed.tokens += delta_tokens
            owed.tokens_per_min = limits.tokens_per_min or 0
        self._flush_later(FLUSH_S if self._known_replicas > 1 else LONE_FLUSH_S)

    def _flush_due(self) -> None:
        self._flush_timer = None
        if not self._owed:  # acquires carried it all
            return
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        else:  # a flush is still running: look again after it
            self._flush_later(FLUSH_S)

    def _flush_later(self, delay_s: float) -> None:
        if self._flush_timer is None and self._owed:
            self._flush_timer = asyncio.get_running_loop().call_later(delay_s, self._flush_due)

    async def flush(self) -> None:
        """Send what finished requests owe now (a timer does this `FLUSH_S` after a finish)."""
        if self._flushing is not None:
            await asyncio.wait([self._flushing])
        await self._flush()

    async def _flush(self) -> None:
        """Send what finished requests owe that no acquire carried, one call per tenant."""
        owed_now, self._owed = self._owed, {}
        for tenant, owed in owed_now.items():
            keys = self._keys(tenant)
            args = (owed.tokens_per_min, owed.tokens, *owed.leases)
            if await self._run(FINISH, (keys[2], keys[1]), args) is None:
                await self._unpaid(tenant, owed)

    async def _unpaid(self, tenant: str, owed: _Owed) -> None:
        """Redis did not take what was owed: the tokens settle in this replica's share; the
        slots stay owed (freeing one twice is harmless) and are sent again in a second."""
        if owed.tokens and owed.tokens_per_min:
            share = self._share(LimitSettings(tokens_per_min=owed.tokens_per_min))
            await self._fallback.settle(tenant, share, owed.tokens)
        if owed.leases:
            self._owed.setdefault(tenant, _Owed()).leases.extend(owed.leases)
            self._flush_later(1.0)  # the breaker's cooldown

    async def close(self) -> None:
        """Pay what is owed (one last try), then close the client."""
        await self.flush()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        await self._client.aclose()
