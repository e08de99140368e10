"""The admission queue: tiers first, weighted fair between tenants, FIFO per tenant, aging,
wait limits and a cancelled waiter leaving at once."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission.queue import AdmissionQueue, with_room_first
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from tests.unit.core.factories import make_backend


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scene:
    """One full backend of one slot, a queue over it, clients that record when they run."""

    def __init__(self, weights: dict[str, float] | None = None, aging_s: float = 5.0) -> None:
        self.clock = Clock()
        self.metrics = GatewayMetrics()
        self.queue = AdmissionQueue(
            self.metrics, aging_s=aging_s, max_waiting=100, weights=weights, clock=self.clock
        )
        self.backend = make_backend("b", max_concurrency=1)
        self.backend.state.in_flight = 1
        self.ran: asyncio.Queue[str] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []

    async def client(self, name: str, tenant: str, rank: int = 1, limit_s: float = 60.0) -> None:
        await self.queue.wait("t", rank, tenant, [self.backend], limit_s, 503)
        self.queue.started()
        self.backend.state.in_flight += 1
        await self.ran.put(name)

    async def enqueue(self, name: str, tenant: str, rank: int = 1) -> None:
        depth = self.queue.depth
        self.tasks.append(asyncio.create_task(self.client(name, tenant, rank)))
        await self.queue.wait_for_depth(depth + 1)

    async def run_next(self) -> str:
        self.backend.state.in_flight -= 1
        self.queue.wake()
        return await self.ran.get()

    async def drain(self, n: int) -> list[str]:
        return [await self.run_next() for _ in range(n)]


def test_higher_tiers_go_first_and_fifo_within_a_tenant() -> None:
    async def scenario() -> list[str]:
        scene = Scene()
        await scene.enqueue("batch-1", "a", rank=2)
        await scene.enqueue("std-1", "a", rank=1)
        await scene.enqueue("inter-1", "a", rank=0)
        await scene.enqueue("inter-2", "a", rank=0)
        return await scene.drain(4)

    assert asyncio.run(scenario()) == ["inter-1", "inter-2", "std-1", "batch-1"]


def test_tenants_of_a_tier_share_by_weight() -> None:
    async def scenario(weights: dict[str, float] | None) -> list[str]:
        scene = Scene(weights)
        for i in range(6):
            await scene.enqueue(f"a{i}", "a")
        for i in range(3):
            await scene.enqueue(f"b{i}", "b")
        return await scene.drain(9)

    assert asyncio.run(scenario(None)) == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "a4", "a5"]
    # b weighs twice as much: two of b's for each of a's while both wait.
    weighted = asyncio.run(scenario({"b": 2.0}))
    assert weighted[:5] == ["a0", "b0", "b1", "a1", "b2"]


def test_aging_lifts_a_lower_tier_past_fresh_higher_ones() -> None:
    async def scenario() -> list[str]:
        scene = Scene(aging_s=5.0)
        await scene.enqueue("batch", "a", rank=2)
        scene.clock.now = 10.0  # two ranks of aging: batch now ranks with interactive
        await scene.enqueue("inter", "b", rank=0)
        return await scene.drain(2)

    assert asyncio.run(scenario()) == ["batch", "inter"]


def test_wait_limit_answers_the_tiers_status() -> None:
    async def scenario() -> GatewayError:
        scene = Scene()
        with pytest.raises(GatewayError) as caught:
            await scene.queue.wait("batch", 2, "a", [scene.backend], 0.01, 429)
        assert scene.queue.depth == 0
        return caught.value

    error = asyncio.run(scenario())
    assert error.status == 429
    assert error.retry_after_s == 1


def test_a_cancelled_waiter_frees_its_place_at_once() -> None:
    async def scenario() -> list[str]:
        scene = Scene()
        await scene.enqueue("first", "a")
        await scene.enqueue("second", "a")
        scene.tasks[0].cancel()  # its client went away
        await scene.queue.wait_for_depth(1)
        return await scene.drain(1)

    assert asyncio.run(scenario()) == ["second"]


def test_arrivals_jump_only_waiters_of_lower_tiers_or_other_backends() -> None:
    async def scenario() -> None:
        scene = Scene()
        free = make_backend("free", max_concurrency=4)
        assert scene.queue.has_room([scene.backend, free])
        assert with_room_first([scene.backend, free]) == [free, scene.backend]
        await scene.enqueue("waiting", "a")  # rank 1, for the full backend
        assert not scene.queue.has_room([scene.backend, free], rank=1)  # no jumping it
        assert scene.queue.has_room([scene.backend, free], rank=0)  # a higher tier may
        assert scene.queue.has_room([free], rank=2)  # nobody waits for `free`
        await scene.drain(1)

    asyncio.run(scenario())
