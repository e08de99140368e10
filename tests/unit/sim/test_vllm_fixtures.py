"""The vLLM flavour against real vLLM 0.32 captures in tests/fixtures/vllm (shapes, names)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.sim.config import SimBackendConfig
from gateway.sim.engine import SimEngine
from gateway.sim.flavors import ResponseMeta, Usage
from gateway.sim.flavors.vllm import VllmFlavor
from gateway.sim.request import ContextLengthError, ErrorKind, SimRequestError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="no real vLLM captures")

CONFIG = SimBackendConfig(model="tiny-llama", block_size=32, max_model_len=2048)
FLAVOR = VllmFlavor(CONFIG)


def shape(value: Any) -> Any:
    """Keys all the way down (values ignored; lists by their first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def sse_events(raw: bytes) -> list[Any]:
    data = [b[len(b"data: ") :] for b in raw.split(b"\n\n") if b.startswith(b"data: ")]
    assert data[-1] == b"[DONE]"
    return [orjson.loads(d) for d in data[:-1]]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sim_stream(kind: str, n: int, usage: bool = True) -> list[Any]:
    meta = ResponseMeta(kind, "id", 1, "tiny-llama", usage_follows=usage)  # type: ignore[arg-type]
    tpl = FLAVOR.stream_template(meta, "length", b"data: ")
    raw = tpl.first or b""
    for i in range(n):
        raw += tpl.token_event(b'"x"', i == n - 1)
    if usage:
        chunk = FLAVOR.usage_chunk(meta, Usage(1316, n, 1312))
        raw += b"data: " + orjson.dumps(chunk) + b"\n\n"
    return sse_events(raw + b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("name", "kind", "usage"),
    [
        ("chat_stream_usage.sse", "chat", True),
        ("completion_stream_usage.sse", "completion", True),
        ("chat_stream_no_usage.sse", "chat", False),
    ],
)
def test_stream_chunks_have_the_real_keys(name: str, kind: str, usage: bool) -> None:
    real = sse_events(fixture(name))
    tokens = len(real) - usage - (kind == "chat")
    sim = sim_stream(kind, tokens, usage)
    assert [shape(c) for c in sim] == [shape(c) for c in real]


@pytest.mark.parametrize(
    ("name", "kind"), [("chat_nonstream.json", "chat"), ("completion_nonstream.json", "completion")]
)
def test_whole_responses_have_the_real_keys(name: str, kind: str) -> None:
    real = orjson.loads(fixture(name))["body"]
    meta = ResponseMeta(kind, "id", 1, "tiny-llama")  # type: ignore[arg-type]
    sim = FLAVOR.response(meta, "text", "length", Usage(1316, 8, 1312))
    assert shape(sim) == shape(real)
    assert list(sim) == list(real)


def test_usage_numbers_follow_the_capture() -> None:
    real = sse_events(fixture("chat_stream_usage.sse"))[-1]["usage"]
    meta = ResponseMeta("chat", "id", 1, "tiny-llama")
    sim = FLAVOR.usage_chunk(meta, Usage(real["prompt_tokens"], 8, 1312))["usage"]
    assert sim == real  # 1316 prompt tokens, 41 full blocks of 32 cached, none created


def families(text: str) -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, label names of its first sample)."""
    out: dict[str, tuple[str, set[str]]] = {}
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    for name, kind in kinds.items():
        match = re.search(rf"^{re.escape(name)}(?:{{([^}}]*)}})? ", text, re.MULTILINE)
        if match is not None:
            out[name] = (kind, set(re.findall(r'(\w+)="', match.group(1) or "")))
    return out


def test_metric_families_have_the_real_names_types_and_labels() -> None:
    real = families(fixture("metrics.txt").decode())
    sim = families(FLAVOR.metrics(SimEngine(CONFIG)).decode())
    assert "vllm:cache_config_info" in sim
    assert "process_start_time_seconds" in sim
    for name, spec in sim.items():
        assert name in real, name
        assert spec == real[name], name


def test_help_texts_are_the_real_ones() -> None:
    real = dict(re.findall(r"^# HELP (\S+) (.*)$", fixture("metrics.txt").decode(), re.MULTILINE))
    text = FLAVOR.metrics(SimEngine(CONFIG)).decode()
    for name, help_text in re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE):
        assert real.get(name) == help_text, name


def error_body(err: SimRequestError) -> Any:
    return orjson.loads(FLAVOR.request_error(err, 0).body)


def test_errors_match_the_captures() -> None:
    overflow = ContextLengthError(2049, 0, 2048)
    assert error_body(overflow) == orjson.loads(fixture("error_context_overflow.json"))["body"]
    too_large = ContextLengthError(10, 4096, 2048)
    expected = orjson.loads(fixture("error_max_tokens_too_large.json"))["body"]
    assert error_body(too_large) == expected
    negative = SimRequestError(
        ErrorKind.INVALID_VALUE, "max_tokens must be at least 1, got -1.", "max_tokens", -1
    )
    assert error_body(negative) == orjson.loads(fixture("error_max_tokens_negative.json"))["body"]
    missing = SimRequestError(
        ErrorKind.NOT_FOUND, "The model `no-such-model` does not exist.", "model"
    )
    assert error_body(missing) == orjson.loads(fixture("error_model_not_found.json"))["body"]


def test_models_and_tokenize_have_the_real_keys() -> None:
    real = orjson.loads(fixture("models.json"))["body"]
    assert shape(FLAVOR.models()) == shape(real)
    tokenized = orjson.loads(fixture("tokenize.json"))["prompt"]["body"]
    assert shape(FLAVOR.tokenize([1, 2, 3])) == shape(tokenized)
