"""Engine model: cache accounting, cancellation, config and faults, and the FIFO scheduler."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sim.config import SimBackendConfig, SimFaults
from gateway.sim.engine import EngineStats, SimEngine, TicketState


def chain(tag: str, n_tokens: int, block_size: int = 16) -> list[int]:
    """Synthetic block hashes of a prompt: equal tags share blocks."""
    return [hash((tag, i)) & 0xFFFF_FFFF_FFFF for i in range(n_tokens // block_size)]


async def wait_stats(engine: SimEngine, predicate: object) -> None:
    ok = await asyncio.to_thread(engine.wait_for, predicate, 5.0)  # type: ignore[arg-type]
    assert ok


@pytest.mark.parametrize("scheduler", ["batched", "fifo"])
async def test_zero_latency_prefill_reports_cached_full_blocks(scheduler: str) -> None:
    engine = SimEngine(SimBackendConfig(time_scale=0, scheduler=scheduler))  # type: ignore[arg-type]
    hashes = chain("y", 100)  # 100 tokens = 6 full blocks + 4
    first = engine.open()
    assert await engine.prefill(first, 100, hashes, 10) == 0
    assert engine.stats.requests_running == 1
    assert first.generated == 10  # zero latency: every token exists at once
    engine.close(first, "success", "length")
    second = engine.open()
    assert await engine.prefill(second, 100, hashes, 10) == 96
    engine.close(second, "success", "stop")
    s = engine.stats
    assert (s.requests_total, s.requests_running, s.success_total) == (2, 0, 2)
    assert (s.prefix_cache_queries_tokens, s.prefix_cache_hits_tokens) == (200, 96)
    assert s.active_blocks == 0
    assert engine.cache.pinned == 0


async def test_a_fully_cached_prompt_still_computes_one_token() -> None:
    engine = SimEngine(SimBackendConfig(time_scale=0))
    for _ in range(2):
        ticket = engine.open()
        cached = await engine.prefill(ticket, 64, chain("z", 64), 1)  # exactly 4 blocks
        engine.close(ticket, "success")
    assert cached == 48


async def test_fifo_prefills_run_one_at_a_time_in_order() -> None:
    engine = SimEngine(SimBackendConfig(time_scale=1e-6, scheduler="fifo"))
    order: list[int] = []

    async def run(i: int) -> None:
        ticket = engine.open()
        await engine.prefill(ticket, 100, chain(str(i), 100), 2)
        order.append(i)
        assert await engine.decode(ticket, 1) == 2
        engine.close(ticket, "success", "stop")

    await asyncio.gather(*(run(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert engine.stats.prefill_busy_seconds > 0
    assert engine.stats.steps_total == 0  # no batched steps in the legacy model


async def test_fifo_cancelling_a_queued_prefill_leaves_the_queue() -> None:
    engine = SimEngine(SimBackendConfig(time_scale=1.0, prefill_tokens_per_s=1.0, scheduler="fifo"))
    tickets = [engine.open(), engine.open()]
    tasks = [asyncio.create_task(engine.prefill(t, 100, chain("q", 100), 1)) for t in tickets]
    await wait_stats(engine, lambda s: s.requests_running == 1 and s.requests_waiting == 1)
    assert engine.stats.waiting_prompt_tokens == 100
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert tickets[1].state is TicketState.WAITING
    engine.close(tickets[1], "cancelled")
    assert (engine.stats.requests_waiting, engine.stats.waiting_prompt_tokens) == (0, 0)
    tasks[0].cancel()  # abort the running prefill too: nothing gets cached
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    engine.close(tickets[0], "cancelled")
    s: EngineStats = engine.stats
    assert (s.requests_running, s.cancelled_total, s.active_blocks) == (0, 2, 0)
    assert len(engine.cache) == 0
    assert engine.wait_for(lambda st: st.cancelled_total >= 2, 0)


async def test_close_is_idempotent_and_restart_bumps_epoch_and_start_time() -> None:
    engine = SimEngine(SimBackendConfig(time_scale=0))
    ticket = engine.open()
    engine.close(ticket, "error")
    engine.close(ticket, "success")
    assert (engine.stats.errors_total, engine.stats.success_total) == (1, 0)
    await engine.prefill(engine.open(), 100, chain("r", 100), 1)
    started = engine.started_at
    engine.reset_cache(restart=False)
    assert engine.started_at == started
    engine.reset_cache(restart=True)
    assert (len(engine.cache), engine.stats.epoch) == (0, 1)
    assert engine.started_at > started


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="flavor"):
        SimBackendConfig(flavor="openai")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size"):
        SimBackendConfig(block_size=0)
    with pytest.raises(ValueError, match="scheduler"):
        SimBackendConfig(scheduler="lifo")  # type: ignore[arg-type]
    for bad in (
        {"max_num_batched_tokens": 0}, {"max_num_seqs": 0}, {"decode_batch_slowdown": -1},
        {"bytes_per_token": 0.5}, {"tgi_version": "latest"},
    ):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011 - message names the field
            SimBackendConfig(**bad)  # type: ignore[arg-type]
    config = SimBackendConfig()
    assert config.zero_latency is False
    assert SimBackendConfig(time_scale=0).zero_latency
    assert (config.scheduler, config.bytes_per_token) == ("batched", 4.4)
    assert (config.max_num_batched_tokens, config.max_num_seqs) == (2048, 256)
    assert config.kv_capacity_tokens == 8192 * 16


def test_faults_update_validates_fields() -> None:
    faults = SimFaults()
    assert not faults.any_rate
    faults.update({"error_rate": 0.5, "loading": True, "retry_after_s": 2})
    assert faults.any_rate
    assert faults.loading
    assert faults.retry_after_s == 2
    for bad in ({"nope": 1}, {"error_rate": 2}, {"loading": 1}, {"retry_after_s": 1.5}):
        with pytest.raises(ValueError, match=r"fault field|must be|out of range"):
            faults.update(bad)
    assert faults.error_rate == 0.5


def test_faults_are_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="out of range"):
        SimFaults(error_rate=1.5)
