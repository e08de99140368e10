"""The load exchange's one key, on one Redis and on a Redis Cluster: books summed, TTLs kept."""

from __future__ import annotations

import asyncio
import random
import time

from gateway.fleet.exchange import ALONE_INTERVAL_S
from gateway.routing.scheduler import NEAR_TIE, rank_by_total
from tests.support.load_exchange import exchange_on, fleet_of


def test_books_are_summed_over_replicas_and_a_silent_replica_ages_out(index_url, key_prefix):
    async def scenario() -> None:
        key = (key_prefix + "replica-load").encode()
        fleets = [fleet_of("x", "y") for _ in range(3)]
        ttl = {"ttl_s": 1.5}  # long against three calls on a loaded machine (0.3 s was not)
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
            await asyncio.sleep(1.6)  # a and b fall silent past the TTL
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


def test_replicas_that_heard_each_other_break_ties_apart(index_url, key_prefix):
    """Two replicas ranking an idle fleet alike would put cold prefills on one backend within
    the exchange's blind interval; once they hear each other one prefers the fleet's first
    backends and the other its last, so equal or near-equal totals send them apart."""

    async def scenario() -> None:
        key = (key_prefix + "replica-load").encode()
        fleets = [fleet_of("w", "x", "y", "z") for _ in range(2)]
        a, b = (
            exchange_on(index_url, fleet, key, name)
            for fleet, name in zip(fleets, ("replica-a", "replica-b"), strict=True)
        )
        try:
            assert all(s.state.tie_order == 0 for f in fleets for s in f.backends)  # alone
            for exchange in (a, b, a):
                assert await exchange.exchange()
            orders = [[backend.state.tie_order for backend in f.backends] for f in fleets]
            assert orders == [[0, 1, 2, 3], [3, 2, 1, 0]]
            equal = [1.0] * 4
            firsts = {
                rank_by_total(f.backends, equal, random.Random(seed))[0].id
                for f in fleets
                for seed in range(5)
            }
            assert firsts == {"w", "z"}
            near = [1.0, 0.99, 0.5, 0.995]  # within NEAR_TIE of the best but for y
            assert {
                rank_by_total(f.backends, near, random.Random(1), NEAR_TIE)[0].id for f in fleets
            } == {
                "w",
                "z",
            }
        finally:
            for exchange in (a, b):
                await exchange.close()

    asyncio.run(scenario())
