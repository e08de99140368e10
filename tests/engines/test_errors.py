"""Real vLLM request errors come out of the gateway as OpenAI-shaped 400s, never 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench.engines_fleet import SERVED_MODEL
from tests.engines.traffic import chat_body, words
from tests.support.harness import GatewayHandle

ERROR_KEYS = {"message", "type", "param", "code"}


def _assert_openai_400(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS
    assert isinstance(error["message"], str)
    assert isinstance(error["type"], str)
    assert error["message"]
    assert error["type"]
    return error


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_context_overflow_is_a_400(
    engine_gateway: GatewayHandle, http: httpx.Client, stream: bool, kind: str
) -> None:
    long_text = words(f"overflow:{kind}", 2000)  # about 4,800 tokens, the window is 2,048
    if kind == "chat":
        body = chat_body([{"role": "user", "content": long_text}], stream=stream)
        path = "/v1/chat/completions"
    else:
        body = {"model": SERVED_MODEL, "prompt": long_text, "max_tokens": 4, "stream": stream}
        path = "/v1/completions"
    error = _assert_openai_400(http.post(engine_gateway.url + path, json=body))
    assert "context" in error["message"].lower() or "length" in error["message"].lower()


@pytest.mark.parametrize("max_tokens", [-1, 0, 5000], ids=["negative", "zero", "over-window"])
def test_bad_max_tokens_is_a_400(
    engine_gateway: GatewayHandle, http: httpx.Client, max_tokens: int
) -> None:
    body = chat_body([{"role": "user", "content": "Hi"}], max_tokens=max_tokens)
    error = _assert_openai_400(http.post(engine_gateway.url + "/v1/chat/completions", json=body))
    assert error["param"] == "max_tokens"
    assert "max_tokens" in error["message"]


def test_vllm_itself_answers_these_with_400(vllm_fleet: Any, http: httpx.Client) -> None:
    """The engine's own shapes, so the tests above test the gateway and not a lucky engine."""
    url = vllm_fleet.servers[0].url
    too_long = {"model": SERVED_MODEL, "prompt": words("overflow:direct", 2000), "max_tokens": 4}
    response = http.post(url + "/v1/completions", json=too_long)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400  # vLLM's code is the integer status
    negative = chat_body([{"role": "user", "content": "Hi"}], max_tokens=-1)
    response = http.post(url + "/v1/chat/completions", json=negative)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
