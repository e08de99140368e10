"""Engine-like request validation of the simulator."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.sim.config import FlavorName, SimBackendConfig
from gateway.sim.request import (
    ContextLengthError,
    ErrorKind,
    SimRequest,
    SimRequestError,
    parse_request,
)
from gateway.sim.tokens import tokenize

MSGS = [{"role": "user", "content": "hello"}]


def chat(body: dict[str, Any], flavor: FlavorName = "vllm", **kw: Any) -> SimRequest:
    config = SimBackendConfig(flavor=flavor, **kw)
    return parse_request(orjson.dumps(body), "chat", config)


def rejected(body: bytes | dict[str, Any], flavor: FlavorName = "vllm", **kw: Any) -> ErrorKind:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(SimRequestError) as info:
        parse_request(raw, "chat", SimBackendConfig(flavor=flavor, **kw))
    return info.value.kind


def test_defaults() -> None:
    req = chat({"messages": MSGS})
    assert (req.model, req.stream, req.include_usage) == ("sim-llama-8b", False, False)
    assert (req.max_tokens, req.finish_reason) == (16, "stop")
    assert req.sim_fault is None


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    req = chat({"messages": MSGS, "max_tokens": 3, "max_completion_tokens": 7})
    assert (req.max_tokens, req.finish_reason) == (7, "length")
    assert chat({"messages": MSGS, "max_tokens": 3}).max_tokens == 3


def test_include_usage() -> None:
    opts = {"include_usage": True}
    assert chat({"messages": MSGS, "stream": True, "stream_options": opts}).include_usage
    # vLLM 0.32's StreamOptions default include_usage to false (tests/fixtures/vllm).
    assert not chat({"messages": MSGS, "stream": True, "stream_options": {}}).include_usage
    assert not chat(
        {"messages": MSGS, "stream": True, "stream_options": {}}, "sglang"
    ).include_usage


def test_stream_options_without_stream_is_rejected_by_vllm_only() -> None:
    body = {"messages": MSGS, "stream_options": {"include_usage": True}}
    assert rejected(body) is ErrorKind.INVALID_VALUE
    assert not chat(body, "sglang").stream


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"{not json", ErrorKind.INVALID_JSON),
        (b"[1]", ErrorKind.SCHEMA),
        ({"model": "sim-llama-8b"}, ErrorKind.SCHEMA),
        ({"messages": "hi"}, ErrorKind.SCHEMA),
        ({"messages": []}, ErrorKind.INVALID_VALUE),
        ({"messages": [{"content": "x"}]}, ErrorKind.SCHEMA),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, ErrorKind.SCHEMA),
        ({"messages": MSGS, "max_tokens": "3"}, ErrorKind.SCHEMA),
        ({"messages": MSGS, "max_tokens": 0}, ErrorKind.INVALID_VALUE),
        ({"messages": MSGS, "stream": "yes"}, ErrorKind.SCHEMA),
        ({"messages": MSGS, "sim_fault": "nope"}, ErrorKind.INVALID_VALUE),
        ({"messages": MSGS, "model": "other"}, ErrorKind.NOT_FOUND),
    ],
)
def test_invalid_requests(body: bytes | dict[str, Any], kind: ErrorKind) -> None:
    assert rejected(body) is kind


def test_tgi_ignores_the_model_name() -> None:
    assert chat({"messages": MSGS, "model": "anything"}, "tgi").model == "anything"


def test_context_length() -> None:
    long = [{"role": "user", "content": "x" * 400}]
    with pytest.raises(ContextLengthError) as info:
        chat({"messages": long, "max_tokens": 20}, max_model_len=100)
    assert info.value.limit == 100
    assert info.value.max_tokens == 20
    # without max_tokens the default is shortened to fit, finishing with "length"
    req = chat({"messages": [{"role": "user", "content": "x" * 330}]}, max_model_len=100)
    assert req.prompt.n_tokens + req.max_tokens == 100
    assert req.finish_reason == "length"


_TEXT = "abcdefghijklmnopqrstuvwxyz"
_IDS = tokenize(_TEXT)


@pytest.mark.parametrize("prompt", [_TEXT, [_TEXT[:13], _TEXT[13:]], _IDS, [_IDS[:1], _IDS[1:]]])
def test_completion_prompt_forms(prompt: Any) -> None:
    body = orjson.dumps({"prompt": prompt})
    req = parse_request(body, "completion", SimBackendConfig())
    assert len(_IDS) >= 2
    assert req.prompt.n_tokens == len(_IDS)
    assert req.prompt.token_ids == _IDS  # text, text parts and token ids agree


@pytest.mark.parametrize("prompt", [None, "", [], [1.5], [-1], [True]])
def test_invalid_completion_prompts(prompt: Any) -> None:
    with pytest.raises(SimRequestError):
        parse_request(orjson.dumps({"prompt": prompt}), "completion", SimBackendConfig())


def test_sim_fault_fields() -> None:
    req = chat({"messages": MSGS, "sim_fault": "slow_first_token", "sim_fault_delay_s": 0.25})
    assert (req.sim_fault, req.fault_delay_s) == ("slow_first_token", 0.25)
