"""Replica load exchange: each gateway process's own books per backend, shared through Redis.

A replica's books know only the requests it sent itself; the engines' load gauges, the only
other witness, are a load poll old (a second by default) and do not count a prefill the
engine has begun as waiting. Against prefills of a few hundred milliseconds that is blind:
two replicas both see an idle backend and both send it a cold prefix. So every replica, every
`interval_s`, writes what it has in flight on each backend and the prefill seconds its books
still count ahead there, and reads everyone else's, in one script call on one HASH (one key,
so one Cluster slot): field = replica id, value = Redis's own clock in ms, `|`, JSON. Ages
come from that one clock, so replicas on hosts with skewed clocks still agree; entries older
than the TTL are dropped there and then (a replica that stopped or stalls stops counting).

What B knows of A's books is on average about one interval old (A's write, then B's read),
so the interval must be short against a prefill: measured on the routing benchmark's
workload (a) (prefills of ~0.17 s), two replicas at 100 ms still placed cold prefixes behind
each other's (TTFT p99 1.13x one replica's); at 10-20 ms they match one replica. Calls
go on while idle too: an idle replica's next request needs a fresh view as much as a busy
one's. The cost is one small script per interval per replica (50/s at 20 ms; about 0.2 ms of
the gateway's CPU per call, most of it redis-py's, so ~1% of a core), whose Redis time grows
with the number of replicas (it reads every other replica's entry). A replica whose last call
found nobody else calls every `ALONE_INTERVAL_S` instead: a single gateway on a Redis index
pays a tenth of that, and a replica that joins is heard at the alone one's next call.

What was read is summed per backend into `BackendState.exchanged` (plain numbers routing
reads). Failure degrades to the engine gauges: a failed or timed-out call clears what was
read, feeds a breaker that skips calls during its cool-down, and never reaches a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import orjson
from redis.exceptions import NoScriptError

from gateway.fleet.registry import ExchangedLoad, Fleet
from gateway.prefix.breaker import CircuitBreaker
from gateway.prefix.redis_guard import ScriptClient
from gateway.prefix.redis_scripts import LuaScript

log = logging.getLogger("gateway.fleet.exchange")

ALONE_INTERVAL_S = 0.2
MIN_TTL_S = 0.5  # above ALONE_INTERVAL_S: an alone replica's entry lives until its next call

# KEYS[1] the HASH; ARGV: this replica's id, its JSON, the TTL in ms.
# Returns {now_ms, id_1, age_1, json_1, id_2, age_2, json_2, ...} for every other fresh replica.
EXCHANGE = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl * 4)
local all = redis.call('HGETALL', KEYS[1])
local out = {now}
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  if field ~= ARGV[1] then
    local sep = string.find(value, '|', 1, true)
    local at = sep and tonumber(string.sub(value, 1, sep - 1))
    if at == nil or now - at > ttl then
      redis.call('HDEL', KEYS[1], field)
    else
      out[#out + 1] = field
      out[#out + 1] = now - at
      out[#out + 1] = string.sub(value, sep + 1)
    end
  end
end
return out
"""
)


class LoadExchange:
    """Publishes this replica's per-backend load and reads the others' (see the module doc)."""

    def __init__(
        self,
        client: ScriptClient,
        fleet: Fleet,
        *,
        key: bytes,
        replica_id: str,
        interval_s: float,
        timeout_s: float,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_exchange: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.replica_id = replica_id
        self._client = client
        self._key = key
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        ttl = ttl_s if ttl_s is not None else max(MIN_TTL_S, 10 * interval_s)
        self._ttl_ms = max(1, round(1000 * ttl))
        self._clock = clock
        self._on_exchange = on_exchange
        self._breaker = CircuitBreaker(failure_threshold=3, cooldown_s=1.0, clock=clock)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.replicas_seen = 0

    def next_interval_s(self) -> float:
        """The configured interval, or the slower one while nobody else was heard from."""
        if self.replicas_seen > 0:
            return self._interval_s
        return max(self._interval_s, ALONE_INTERVAL_S)

    def watch(self, fleet: Fleet) -> None:
        """Publish and fill in the backends of `fleet` from now on (a reload's new fleet)."""
        self.fleet = fleet

    def start(self) -> None:
        """Exchange every `interval_s` in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop exchanging and close the client."""
        self._closed = True
        task, self._task = self._task, None
        # A cancellation that lands inside the Redis client's own handling can be swallowed
        # there (seen with redis-py 8.1): cancel until the task is really done.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        with contextlib.suppress(Exception):
            await self._client.aclose()

    def own_load(self) -> bytes:
        """This replica's books as JSON: backend id → [in flight, prefill seconds ahead]."""
        now = self._clock()
        books: dict[str, tuple[int, float]] = {}
        for backend in self.fleet.backends:
            state = backend.state
            if state.in_flight > 0:
                books[backend.id] = (state.in_flight, round(state.prefill.wait_s(now), 4))
        return orjson.dumps(books)

    async def exchange(self) -> bool:
        """One publish-and-read; True when it reached Redis. Never raises."""
        if not self._breaker.allow():
            return False
        payload = self.own_load()
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await self._call(payload)
            others = _parse(reply)
        except Exception as exc:  # timeouts, connection errors, error replies, a bad reply
            self._breaker.failure()
            self._clear()
            log.debug("load exchange failed: %r", exc)
            self._report(0, ok=False)
            return False
        self._breaker.success()
        self._apply(others)
        self._report(len(others), ok=True)
        return True

    async def _call(self, payload: bytes) -> object:
        args = (self._key, self.replica_id, payload, self._ttl_ms)
        try:
            return await self._client.evalsha(EXCHANGE.sha, 1, *args)
        except NoScriptError:  # first use, or Redis restarted: EVAL also caches it
            return await self._client.eval(EXCHANGE.source, 1, *args)

    def _apply(self, others: list[tuple[str, float, dict[str, list[float]]]]) -> None:
        now = self._clock()
        totals: dict[str, list[float]] = {}
        for _, age_s, books in others:
            for backend_id, (in_flight, prefill_s) in books.items():
                total = totals.setdefault(backend_id, [0.0, 0.0])
                total[0] += in_flight
                total[1] += max(0.0, prefill_s - age_s)
        self.replicas_seen = len(others)
        replicas = sorted({self.replica_id, *(replica for replica, _, _ in others)})
        orders = tie_orders(len(self.fleet.backends), replicas.index(self.replica_id), replicas)
        for backend, order in zip(self.fleet.backends, orders, strict=True):
            in_flight, prefill_s = totals.get(backend.id, (0.0, 0.0))
            backend.state.exchanged = ExchangedLoad(in_flight, prefill_s, now)
            backend.state.tie_order = order

    def _clear(self) -> None:
        self.replicas_seen = 0
        for backend in self.fleet.backends:
            backend.state.exchanged = None
            backend.state.tie_order = 0

    def _report(self, replicas: int, *, ok: bool) -> None:
        if self._on_exchange is not None:
            self._on_exchange(replicas, ok)

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.next_interval_s())
            await self.exchange()


def tie_orders(backends: int, rank: int, replicas: list[str]) -> list[int]:
    """Each backend's place in this replica's order for breaking near-ties, by fleet position.

    Replicas deciding on the same view (the same idle backends, the same exchanged books)
    pick the same best backend, and within the exchange's blind interval two of them put
    cold prefills on it together. So each replica prefers its own order: even ranks go up
    the fleet from their share's start, odd ranks down from their share's end, so two
    replicas' first choices differ among any two or more backends they both rank best.
    Alone, every backend is 0 (ties stay random).
    """
    count = len(replicas)
    if count < 2 or backends == 0:
        return [0] * backends
    if rank % 2 == 0:
        start = rank * backends // count
        return [(i - start) % backends for i in range(backends)]
    end = (rank + 1) * backends // count - 1
    return [(end - i) % backends for i in range(backends)]


def _parse(reply: object) -> list[tuple[str, float, dict[str, list[float]]]]:
    """The script's reply as (replica id, age in seconds, {backend: [in flight, prefill s]})
    per other replica."""
    if not isinstance(reply, list) or not reply or (len(reply) - 1) % 3:
        raise ValueError(f"unexpected load exchange reply: {reply!r:.200}")
    out: list[tuple[str, float, dict[str, list[float]]]] = []
    for i in range(1, len(reply), 3):
        replica = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
        books = orjson.loads(reply[i + 2])
        if not isinstance(books, dict):
            raise ValueError("a replica's books are not a mapping")
        entries = {str(k): [float(v[0]), float(v[1])] for k, v in books.items()}
        out.append((replica, int(reply[i + 1]) / 1000.0, entries))
    return out
