"""Streamed and whole answers of each simulated engine flavor over real HTTP."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.integration.sim.support import FleetHandle, events, payloads

FLAVORS = ["vllm", "sglang", "tgi"]
_unique = itertools.count()


def chat_body(text: str | None = None, **extra: Any) -> dict[str, Any]:
    content = text if text is not None else f"question {next(_unique)}"
    return {"model": "sim-llama-8b", "messages": [{"role": "user", "content": content}], **extra}


def stream_chat(fleet: FleetHandle, name: str, body: dict[str, Any]) -> tuple[str, str]:
    with (
        fleet.client(name) as client,
        client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp,
    ):
        assert resp.status_code == 200
        return resp.headers["content-type"], resp.read().decode()


@pytest.mark.parametrize("name", FLAVORS)
def test_chat_stream_with_usage(sim_fleet: FleetHandle, name: str) -> None:
    body = chat_body(max_tokens=4, stream_options={"include_usage": True})
    ctype, raw = stream_chat(sim_fleet, name, body)
    assert ctype.startswith("text/event-stream")
    chunks = events(raw)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    content = chunks[:-1]
    if name == "tgi":
        assert len(content) == 4
        for c in content:
            assert c["id"] == ""
            assert c["usage"] is None
            assert c["choices"][0]["delta"]["role"] == "assistant"
    else:
        assert len(content) == 5
        assert content[0]["choices"][0]["delta"]["role"] == "assistant"
        assert content[0]["choices"][0]["delta"]["content"] == ""
        assert all(c["choices"][0]["delta"].get("role") is None for c in content[1:])
        assert len({c["id"] for c in chunks}) == 1
        prefix_ok = content[0]["id"].startswith("chatcmpl-") == (name == "vllm")
        assert prefix_ok
    assert [c["choices"][0]["finish_reason"] for c in content[-4:]] == [None] * 3 + ["length"]
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert len(text.split(" ")) == 4


@pytest.mark.parametrize("name", FLAVORS)
def test_chat_stream_without_usage(sim_fleet: FleetHandle, name: str) -> None:
    _, raw = stream_chat(sim_fleet, name, chat_body(max_tokens=2))
    chunks = events(raw)
    assert all(c["choices"] for c in chunks)
    assert not any(c.get("usage") for c in chunks)


def test_vllm_defaults_finish_with_stop(sim_fleet: FleetHandle) -> None:
    _, raw = stream_chat(sim_fleet, "vllm", chat_body())
    last = events(raw)[-1]["choices"][0]
    assert (last["finish_reason"], last["stop_reason"]) == ("stop", None)


@pytest.mark.parametrize("name", FLAVORS)
def test_completion_stream(sim_fleet: FleetHandle, name: str) -> None:
    body = {"prompt": f"once upon a time {next(_unique)}", "max_tokens": 3, "stream": True}
    with sim_fleet.client(name) as client:
        raw = client.post("/v1/completions", json=body).text
    chunks = events(raw)
    assert len(chunks) == 3
    assert all(c["object"] == "text_completion" for c in chunks)
    if name == "vllm":
        assert all("usage" not in c for c in chunks)  # vLLM 0.32: no "usage": null
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("name", FLAVORS)
def test_whole_chat_and_completion(sim_fleet: FleetHandle, name: str) -> None:
    with sim_fleet.client(name) as client:
        chat = client.post(
            "/v1/chat/completions", json=chat_body(max_tokens=2, max_completion_tokens=5)
        )
        cmpl = client.post("/v1/completions", json={"prompt": f"p{next(_unique)}"})
    assert chat.status_code == cmpl.status_code == 200
    body = chat.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5
    body = cmpl.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert len(body["choices"][0]["text"].split(" ")) == 16


def test_output_is_deterministic(sim_fleet: FleetHandle) -> None:
    body = chat_body("same prompt for everybody", max_tokens=6)
    texts = set()
    for name in FLAVORS:
        with sim_fleet.client(name) as client:
            texts.add(
                client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"][
                    "content"
                ]
            )
    assert len(texts) == 1


def cached_of(usage: dict[str, Any]) -> Any:
    return usage.get("prompt_tokens_details", "absent")


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("vllm", {"cached_tokens": 0, "created_cache_tokens": 464, "multimodal_tokens": None}),
        ("sglang", {"cached_tokens": 0}),
        ("tgi", "absent"),
    ],
)
def test_cached_tokens_on_repeated_long_prompt(
    sim_fleet: FleetHandle, name: str, first: Any
) -> None:
    body = chat_body(f"{next(_unique)} " + "long shared context " * 100, max_tokens=1)
    with sim_fleet.client(name) as client:
        one = client.post("/v1/chat/completions", json=body).json()["usage"]
        two = client.post("/v1/chat/completions", json=body).json()["usage"]
    assert cached_of(one) == first
    if name == "tgi":
        assert cached_of(two) == "absent"
        return
    cached = two["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < two["prompt_tokens"]
    assert cached % 16 == 0


def test_cached_tokens_in_stream_usage(sim_fleet: FleetHandle) -> None:
    body = chat_body(f"{next(_unique)} " + "stream context " * 100, max_tokens=1)
    body["stream_options"] = {"include_usage": True}
    first = events(stream_chat(sim_fleet, "vllm", body)[1])[-1]["usage"]
    second = events(stream_chat(sim_fleet, "vllm", body)[1])[-1]["usage"]
    assert first["prompt_tokens_details"]["cached_tokens"] == 0  # reported even when zero
    assert second["prompt_tokens_details"]["cached_tokens"] > 0


def test_tgi_keepalive_comments_and_no_space(sim_fleet: FleetHandle) -> None:
    sim_fleet.backends["tgi"].set_faults(tgi_keepalive=True, tgi_no_space=True)
    _, raw = stream_chat(sim_fleet, "tgi", chat_body(max_tokens=3))
    assert ":\n\n" in raw
    assert "data:{" in raw
    assert "data: " not in raw
    assert len(payloads(raw)) == 4
    assert len(events(raw)) == 3
