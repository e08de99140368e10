"""The load exchange's one key, on one Redis and on a Redis Cluster: books summed, TTLs kept."""

from __future__ import annotations

import asyncio
import time

from gateway.fleet.exchange import ALONE_INTERVAL_S
from tests.support.load_exchange import exchange_on, fleet_of


def test_books_are_summed_over_replicas_and_a_silent_replica_ages_out(index_url, key_prefix):
    async def scenario() -> None:
        key = (key_prefix + "replica-load").encode()
        fleets = [fleet_of("x", "y") for _ in range(3)]
        ttl = {"ttl_s": 0.3}
        a, b, c = (
            exchange_on(index_url, fleet, key, name, **ttl)
            for fleet, name in zip(fleets, "abc", strict=True)
        )
        try:
            for fleet, n in ((fleets[0], 2), (fleets[1], 3)):
                x = fleet.backends[0].state
                x.in_flight = n
                x.prefill.push(1.0, time.monotonic())
            for exchange in (a, b, c):
                assert await exchange.exchange()
            seen = fleets[2].backends[0].state.exchanged
            assert seen is not None
            assert seen.in_flight == 5
            assert 1.0 < seen.prefill_s <= 2.0
            nothing = fleets[2].backends[1].state.exchanged
            assert nothing is not None
            assert nothing.in_flight == 0
            assert c.replicas_seen == 2
            assert c.next_interval_s() == 0.02
            await asyncio.sleep(0.4)  # a and b fall silent past the TTL
            assert await c.exchange()
            gone = fleets[2].backends[0].state.exchanged
            assert gone is not None
            assert gone.in_flight == 0
            assert c.replicas_seen == 0
            assert c.next_interval_s() == ALONE_INTERVAL_S  # nobody else: it calls less often
        finally:
            for exchange in (a, b, c):
                await exchange.close()

    asyncio.run(scenario())
