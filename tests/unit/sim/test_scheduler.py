"""Batched scheduler: step durations, chunked prefill order, caps, cancellation, pinning.

Assertions are on the engine's own step records (simulated seconds), never on wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.sim.config import SimBackendConfig
from gateway.sim.engine import SimEngine, Ticket, TicketState
from gateway.sim.state import StepRecord

FAST = 1e-4  # time scale: a 20 ms decode step sleeps 2 µs


def make(**overrides: object) -> SimEngine:
    config = SimBackendConfig(
        time_scale=FAST, prefill_tokens_per_s=10_000.0, decode_s_per_token=0.02
    )
    return SimEngine(config.__class__(**{**config.summary(), **overrides}))


def chain(tag: str, n_tokens: int, block_size: int = 16) -> list[int]:
    return [hash((tag, i)) & 0xFFFF_FFFF_FFFF for i in range(n_tokens // block_size)]


async def generate(engine: SimEngine, tag: str, n_tokens: int, max_tokens: int) -> Ticket:
    ticket = engine.open()
    await engine.prefill(ticket, n_tokens, chain(tag, n_tokens), max_tokens)
    await engine.finish(ticket, ticket.generated)
    engine.close(ticket, "success", "length")
    return ticket


def steps(engine: SimEngine) -> list[StepRecord]:
    return list(engine.recent_steps)


async def test_a_lone_prefill_takes_its_tokens_over_the_prefill_speed() -> None:
    engine = make()
    ticket = await generate(engine, "lone", 5000, 1)
    records = steps(engine)
    assert [r.prefill_tokens for r in records] == [2048, 2048, 904]
    assert sum(r.duration_s for r in records) == pytest.approx(5000 / 10_000.0)
    assert all(r.decodes == 0 for r in records)  # the first token comes with the last chunk
    assert (ticket.generated, engine.stats.requests_running) == (1, 0)
    assert engine.stats.step_seconds_total == pytest.approx(0.5)


async def test_decode_steps_slow_down_with_the_running_batch() -> None:
    engine = make(decode_batch_slowdown=0.05)
    await generate(engine, "solo", 16, 6)
    solo = [r for r in steps(engine) if r.decodes]
    assert _durations(solo) == pytest.approx([0.02] * len(solo))
    engine.recent_steps.clear()
    await asyncio.gather(*(generate(engine, f"b{i}", 16, 6) for i in range(8)))
    batch = [r for r in steps(engine) if r.decodes == 8]
    assert batch, steps(engine)
    assert all(r.duration_s == pytest.approx(0.02 * (1 + 0.05 * 7)) for r in batch)
    mean_itl = sum(r.duration_s for r in batch) / len(batch)
    assert mean_itl > max(r.duration_s for r in solo)


async def test_zero_slowdown_keeps_decode_free_of_batch_effects() -> None:
    engine = make(decode_batch_slowdown=0.0)
    await asyncio.gather(*(generate(engine, f"z{i}", 16, 5) for i in range(6)))
    decode_only = [r for r in steps(engine) if r.decodes and not r.prefill_tokens]
    assert decode_only
    assert _durations(decode_only) == pytest.approx([0.02] * len(decode_only))


async def test_a_big_prefill_slows_the_decodes_of_its_step() -> None:
    engine = make(decode_batch_slowdown=0.0)
    decoding = engine.open()
    await engine.prefill(decoding, 16, chain("d", 16), 50)
    big = asyncio.create_task(generate(engine, "big", 1500, 1))
    await engine.finish(decoding, decoding.generated)
    engine.close(decoding, "success")
    await big
    mixed = [r for r in steps(engine) if r.decodes and r.prefill_tokens]
    assert len(mixed) == 1
    assert mixed[0].prefill_tokens == 1500
    assert mixed[0].duration_s == pytest.approx(1500 / 10_000.0 + 0.02)


async def test_chunked_prefill_is_fifo_within_the_token_budget() -> None:
    engine = make()
    tickets = [engine.open() for _ in range(3)]
    sizes = (5000, 100, 100)

    async def run(ticket: Ticket, n: int) -> int:
        await engine.prefill(ticket, n, chain(str(ticket.rid), n), 2)
        first = engine.stats.steps_total
        await engine.finish(ticket, ticket.generated)
        engine.close(ticket, "success")
        return first

    first_token_steps = await asyncio.gather(
        *(run(t, n) for t, n in zip(tickets, sizes, strict=True))
    )
    a, b, c = (t.rid for t in tickets)
    chunks = [r.chunks for r in steps(engine)]
    assert chunks[0] == ((a, 2048),)
    assert chunks[1] == ((a, 2048),)
    assert chunks[2] == ((a, 904), (b, 100), (c, 100))  # the rest of the budget goes FIFO
    assert chunks[3] == ()  # a decode-only step
    assert steps(engine)[3].decodes == 3
    assert first_token_steps == [3, 3, 3]  # first tokens at the end of the completing step


async def test_running_cap_holds_requests_in_the_queue() -> None:
    engine = make(max_num_seqs=2)
    await asyncio.gather(*(generate(engine, f"cap{i}", 32, 4) for i in range(5)))
    assert max(r.batch for r in steps(engine)) == 2
    assert engine.stats.prefills_total == 5


async def test_kv_capacity_holds_requests_in_the_queue() -> None:
    engine = make(cache_capacity_blocks=20)  # one request's 160-token prompt + 4 = 11 blocks
    await asyncio.gather(*(generate(engine, f"kv{i}", 160, 4) for i in range(3)))
    assert max(r.batch for r in steps(engine)) == 1
    assert engine.stats.active_blocks == 0


async def test_a_shared_prefix_counts_once_in_the_kv_in_use() -> None:
    engine = make(cache_capacity_blocks=40)
    first = engine.open()
    await engine.prefill(first, 320, chain("doc", 320), 16)  # 20 blocks, shared once cached
    assert engine.stats.active_blocks == 20 + 1  # the prompt's blocks plus one for the output
    others = [engine.open() for _ in range(5)]
    await asyncio.gather(*(engine.prefill(t, 320, chain("doc", 320), 16) for t in others))
    assert engine.stats.requests_running == 6  # six private copies would need 126 blocks
    assert engine.stats.active_blocks == 20 + 6
    assert engine.kv_usage == pytest.approx(26 / 40)
    for ticket in (first, *others):
        engine.close(ticket, "cancelled")
    assert (engine.stats.active_blocks, engine.cache.pinned) == (0, 0)


async def test_cancellation_frees_waiting_and_prefilling_requests_at_once() -> None:
    engine = make(prefill_tokens_per_s=1.0, time_scale=1.0)  # a step of 2048 tokens: 34 min
    first, second = engine.open(), engine.open()
    hashes = chain("c", 3000)
    tasks = [
        asyncio.create_task(engine.prefill(first, 3000, hashes, 1)),
        asyncio.create_task(engine.prefill(second, 3000, hashes, 1)),
    ]
    ok = await asyncio.to_thread(engine.wait_for, lambda st: st.requests_running == 1, 5.0)
    assert ok
    s = engine.stats
    assert (s.requests_running, s.requests_waiting) == (1, 1)  # budget taken by the first
    assert s.waiting_prompt_tokens == 3000
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert first.state is TicketState.RUNNING
    assert second.state is TicketState.WAITING
    engine.close(first, "cancelled")
    engine.close(second, "cancelled")
    assert (s.requests_running, s.requests_waiting, s.waiting_prompt_tokens) == (0, 0, 0)
    assert (s.active_blocks, s.cancelled_total, len(engine.cache)) == (0, 2, 0)
    assert not engine.scheduler.waiting
    assert not engine.scheduler.running


async def test_blocks_are_cached_when_the_prefill_completes_and_pinned_while_running() -> None:
    engine = make(cache_capacity_blocks=12)
    holder = engine.open()
    await engine.prefill(holder, 160, chain("hold", 160), 100)  # 10 blocks, pinned
    assert engine.cache.pinned == 10
    assert engine.cache.match(chain("hold", 160)) == 10
    other = await generate(engine, "other", 160, 1)  # its blocks overflow the LRU
    assert other.cached == 0
    assert engine.cache.match(chain("hold", 160)) == 10  # the running holder kept its blocks
    engine.close(holder, "cancelled")
    assert engine.cache.pinned == 0
    again = await generate(engine, "hold", 160, 1)
    assert again.cached == 144  # all full blocks but the one holding the last token


async def test_a_second_request_sharing_a_prefix_hits_after_the_first_prefill() -> None:
    engine = make()
    await generate(engine, "shared", 800, 1)
    ticket = await generate(engine, "shared", 800, 1)
    assert ticket.cached == 784
    last = steps(engine)[-1]
    assert last.prefill_tokens == 16
    assert engine.stats.prefix_cache_hits_tokens == 784


async def test_a_prompt_still_in_chunked_prefill_shares_the_blocks_it_has_computed() -> None:
    # Real time (0.2 s per 2048-token step), so the follower comes while the leader's third
    # chunk runs: it is admitted with the leader's last chunk and reuses the 6144 tokens done.
    engine = make(time_scale=1.0)
    leader = asyncio.create_task(generate(engine, "long", 8000, 1))
    done = await asyncio.to_thread(engine.wait_for, lambda s: s.steps_total >= 2, 10.0)
    assert done
    follower = await generate(engine, "long", 8000, 1)
    await leader
    assert 4096 <= follower.cached < 7984  # some of it, not yet all of it
    assert follower.cached % 16 == 0


async def test_decode_free_engines_release_tokens_with_the_first() -> None:
    engine = make(decode_s_per_token=0.0)
    ticket = await generate(engine, "free", 64, 30)
    assert ticket.generated == 30
    assert all(r.decodes == 0 for r in steps(engine))


def _durations(records: Sequence[StepRecord]) -> list[float]:
    return [r.duration_s for r in records]
