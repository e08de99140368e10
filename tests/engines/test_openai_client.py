"""The OpenAI client through the gateway to real vLLM engines; streams as vLLM sends them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from bench.engines_fleet import SERVED_MODEL, VllmFleet
from tests.engines.traffic import chat_body, sse_events, words
from tests.support.harness import GatewayHandle

VOLATILE = ("id", "created")


@pytest.fixture
def client(engine_gateway: GatewayHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=engine_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120.0
    ) as c:
        yield c


def test_chat_non_stream(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=SERVED_MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=5
    )
    assert chat.object == "chat.completion"
    assert chat.model == SERVED_MODEL
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("length", "stop")
    assert chat.usage is not None
    assert 1 <= chat.usage.completion_tokens <= 5
    assert chat.usage.prompt_tokens > 0


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert 1 <= chunks[-1].usage.completion_tokens <= 6
    assert chunks[-1].usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_gets_no_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[{"role": "user", "content": "Tell me another story"}],
        max_tokens=6,
        stream=True,
    )
    chunks = list(stream)
    assert chunks
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_completions_non_stream_and_stream(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=SERVED_MODEL, prompt="Once upon", max_tokens=4)
    assert completion.object == "text_completion"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    with_usage = list(
        client.completions.create(
            model=SERVED_MODEL,
            prompt="Once upon a time",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == 4
    without = list(
        client.completions.create(
            model=SERVED_MODEL, prompt="Once upon a time", max_tokens=4, stream=True
        )
    )
    assert without
    assert all(c.usage is None and c.choices for c in without)


def _text(event: dict[str, Any]) -> str:
    choice = event["choices"][0]
    return str(choice.get("text", "") or (choice.get("delta") or {}).get("content", "") or "")


def _shape(events: list[Any]) -> dict[str, Any]:
    """What must match between two identical greedy requests, whatever the chunking.

    vLLM may merge tokens into one chunk when its output gets ahead of the client, so chunks
    are compared by their key sets, the text by concatenation, the last content chunk whole.
    The key sets of the chunks before the last are compared apart (see the test): merging
    can only drop shapes of middle chunks, never add one.
    """
    chunks = [e for e in events if isinstance(e, dict) and e.get("choices")]
    last = {k: v for k, v in chunks[-1].items() if k not in VOLATILE}
    last["choices"] = [
        {k: v for k, v in c.items() if k not in ("text", "delta")} for c in last["choices"]
    ]
    keys = sorted({tuple(sorted(c)) for c in chunks[:-1]})
    usage = [sorted(e) for e in events if isinstance(e, dict) and not e.get("choices")]
    return {
        "text": "".join(_text(c) for c in chunks),
        "chunk_keys": keys,
        "last_chunk": last,
        "usage_chunk_keys": usage,
        "done_last": events[-1] == "[DONE]",
    }


USAGE_OPTIONS: dict[str, dict[str, bool] | None] = {
    "no-options": None,
    "empty-options": {},  # vLLM 0.32's StreamOptions defaults include_usage to false
    "include-usage": {"include_usage": True},
}


@pytest.mark.parametrize("usage", list(USAGE_OPTIONS))
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_stream_is_what_vllm_sends(
    engine_gateway: GatewayHandle, vllm_fleet: VllmFleet, http: httpx.Client, usage: str, path: str
) -> None:
    """Greedy decoding makes vLLM's answer repeatable: through the gateway it is the same."""
    key = f"same:{path}:{usage}"
    if path.endswith("chat/completions"):
        body = chat_body([{"role": "user", "content": words(key, 20)}], max_tokens=6, stream=True)
    else:
        body = {"model": SERVED_MODEL, "prompt": words(key, 20), "max_tokens": 6, "stream": True}
        body["temperature"] = 0
    options = USAGE_OPTIONS[usage]
    if options is not None:
        body["stream_options"] = options
    via = http.post(engine_gateway.url + path, json=body)
    backend = via.headers["x-gateway-backend"]
    url = next(s.url for s in vllm_fleet.servers if s.name == backend)
    direct = http.post(url + path, json=body)
    assert via.status_code == direct.status_code == 200
    assert via.headers["content-type"].startswith("text/event-stream")
    via_shape, direct_shape = _shape(sse_events(via.text)), _shape(sse_events(direct.text))
    via_keys, direct_keys = set(via_shape.pop("chunk_keys")), set(direct_shape.pop("chunk_keys"))
    assert via_keys <= direct_keys or direct_keys <= via_keys
    assert via_shape == direct_shape
