"""The simulator disagrees with the gateway's assumptions the way engines do, over real HTTP.

Tokens are not 4 bytes, decodes are batched and slow down with the batch. Waits are on the
engine's own counters, never on sleeps.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.sim.cli import add_sim_arguments, backends_from_args
from gateway.sim.fleet import SimFleetThread
from gateway.sim.tokens import Prompt, count_tokens, render_chat
from tests.integration.sim.support import FleetHandle

WAIT_S = 10.0
_unique = itertools.count()


def test_prompt_tokens_follow_the_simulated_tokenizer(sim_fleet: FleetHandle) -> None:
    text = f"{next(_unique)} " + "The quick brown fox jumps over the lazy dog. " * 200
    messages = [{"role": "user", "content": text}]
    with sim_fleet.client("vllm") as client:
        usage = client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 1}
        ).json()["usage"]
    rendered = render_chat(messages)
    assert usage["prompt_tokens"] == count_tokens(rendered)
    assert usage["prompt_tokens"] != -(-len(rendered.encode()) // 4)
    assert len(rendered.encode()) / usage["prompt_tokens"] == pytest.approx(4.4, rel=0.08)


def test_cached_tokens_are_full_blocks_of_the_shared_token_prefix(sim_fleet: FleetHandle) -> None:
    head = f"{next(_unique)} shared system prompt, " * 60
    first = [{"role": "system", "content": head}, {"role": "user", "content": "one"}]
    second = [{"role": "system", "content": head}, {"role": "user", "content": "two, longer"}]
    with sim_fleet.client("sglang") as client:
        for messages in (first, second):
            usage = client.post(
                "/v1/chat/completions", json={"messages": messages, "max_tokens": 1}
            ).json()["usage"]
    a, b = Prompt.from_text(render_chat(first)), Prompt.from_text(render_chat(second))
    common = next(
        i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y
    )
    assert usage["prompt_tokens_details"]["cached_tokens"] == common // 16 * 16
    assert usage["prompt_tokens"] == b.n_tokens


def test_token_id_prompts_still_work(sim_fleet: FleetHandle) -> None:
    ids = [7, 70000, 2**32 - 1, 12] * 10
    with sim_fleet.client("vllm") as client:
        resp = client.post("/v1/completions", json={"prompt": ids, "max_tokens": 2})
    assert resp.status_code == 200
    assert resp.json()["usage"]["prompt_tokens"] == 40


def test_decodes_are_batched_and_slow_down_with_the_batch(sim_fleet: FleetHandle) -> None:
    backend = sim_fleet.backends["batch"]
    n = 6
    steps_before = backend.stats.steps_total

    def stream(i: int) -> str:
        body = {
            "prompt": f"{next(_unique)} batch {i}",
            "max_tokens": 8,
            "stream": True,
        }
        with httpx.Client(base_url=sim_fleet.urls["batch"], timeout=WAIT_S) as client:
            return client.post("/v1/completions", json=body).text

    with sim_fleet.client("batch") as client, ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(stream, i) for i in range(n)]
        assert backend.wait_for(lambda s: s.requests_running == n, WAIT_S)
        metrics = client.get("/metrics").text
        bodies = [f.result(WAIT_S) for f in futures]
    assert f'vllm:num_requests_running{{engine="0",model_name="sim-llama-8b"}} {n}.0' in metrics
    assert all(b.rstrip().endswith("data: [DONE]") for b in bodies)
    steps = list(backend.engine.recent_steps)[-(backend.stats.steps_total - steps_before) :]
    full = [s for s in steps if s.decodes == n]
    assert full, steps
    assert all(s.duration_s == pytest.approx(0.05 * (1 + 0.1 * (n - 1))) for s in full)
    assert backend.wait_for(lambda s: s.requests_running == 0, WAIT_S)


def test_per_backend_prefill_speeds_from_the_cli() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    args = parser.parse_args(
        ["--backends", "2", "--prefill-tokens-per-s", "1000,4000", "--time-scale", "0.01"]
    )
    backends = backends_from_args(args)
    prompt = {"prompt": "speed " * 400, "max_tokens": 1}
    with SimFleetThread(backends) as fleet:
        for url in fleet.urls:
            with httpx.Client(base_url=url, timeout=WAIT_S) as client:
                assert client.post("/v1/completions", json=prompt).status_code == 200
    slow, fast = (sum(s.duration_s for s in b.engine.recent_steps) for b in backends)
    tokens = backends[0].stats.prompt_tokens_total
    assert tokens == backends[1].stats.prompt_tokens_total
    assert slow == pytest.approx(tokens / 1000)
    assert fast == pytest.approx(tokens / 4000)


def test_vllm_tokenize_agrees_with_usage(sim_fleet: FleetHandle) -> None:
    messages = [{"role": "user", "content": f"{next(_unique)} how many tokens is this? " * 30}]
    with sim_fleet.client("vllm") as client:
        counted = client.post("/tokenize", json={"messages": messages}).json()
        usage = client.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 1}
        ).json()["usage"]
        plain = client.post("/tokenize", json={"prompt": "hello world"}).json()
        bad = client.post("/tokenize", json={"nothing": 1})
    assert counted["count"] == usage["prompt_tokens"] == len(counted["tokens"])
    assert counted["max_model_len"] == 32768
    assert plain["tokens"] == Prompt.from_text("hello world").token_ids
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "prompt"
