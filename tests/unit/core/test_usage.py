"""Usage the backend reported: parsed from a chunk or body, found (and stripped) in SSE blocks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.proxy.usage import Usage, parse_usage, take_usage_event


def chunk(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


USAGE_CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {
        "prompt_tokens": 300,
        "completion_tokens": 7,
        "total_tokens": 307,
        "prompt_tokens_details": {"cached_tokens": 256},
    },
}
CONTENT_CHUNK = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}


def test_usage_chunk_is_parsed() -> None:
    assert parse_usage(orjson.dumps(USAGE_CHUNK)) == Usage(300, 7, 256)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 2}, Usage(10, 2, None)),
        ({"prompt_tokens": 10, "prompt_tokens_details": None}, Usage(10, None, None)),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": None}},
         Usage(10, None, None)),
        ({"prompt_tokens": "10", "completion_tokens": True}, Usage(None, None, None)),
        ({"prompt_tokens": -1, "prompt_tokens_details": {"cached_tokens": 0}},
         Usage(None, None, 0)),
    ],
)  # fmt: skip
def test_missing_or_odd_fields_are_none(usage: dict[str, Any], expected: Usage) -> None:
    assert parse_usage(orjson.dumps({"usage": usage})) == expected


def test_absent_cached_tokens_mean_zero_only_for_a_reporting_backend() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 2}})
    assert parse_usage(body, absent_means_zero=True) == Usage(10, 2, 0)
    assert parse_usage(body, absent_means_zero=False) == Usage(10, 2, None)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'{"usage": null}', b"{}"])
def test_no_usage(payload: bytes) -> None:
    assert parse_usage(payload) is None


def test_block_without_usage_object_is_untouched() -> None:
    block = chunk(CONTENT_CHUNK) * 3
    assert take_usage_event(block, strip=True) == (block, None)


def test_usage_event_is_found_and_kept_when_the_client_asked() -> None:
    block = chunk(CONTENT_CHUNK) + chunk(USAGE_CHUNK) + b"data: [DONE]\n\n"
    kept, payload = take_usage_event(block, strip=False)
    assert kept == block
    assert payload is not None
    assert parse_usage(payload) == Usage(300, 7, 256)


def test_usage_event_is_stripped_when_the_gateway_asked() -> None:
    block = chunk(CONTENT_CHUNK) + chunk(USAGE_CHUNK) + b"data: [DONE]\n\n"
    kept, payload = take_usage_event(block, strip=True)
    assert kept == chunk(CONTENT_CHUNK) + b"data: [DONE]\n\n"
    assert payload is not None
    assert parse_usage(payload) == Usage(300, 7, 256)


def test_crlf_framing_is_kept() -> None:
    usage = b"data: " + orjson.dumps(USAGE_CHUNK) + b"\r\n\r\n"
    block = b"data: x\r\n\r\n" + usage + b"data: [DONE]\r\n\r\n"
    kept, payload = take_usage_event(block, strip=True)
    assert kept == b"data: x\r\n\r\ndata: [DONE]\r\n\r\n"
    assert payload is not None


def test_usage_riding_on_a_content_chunk_is_read_but_never_stripped() -> None:
    # vLLM's continuous_usage_stats (the client's own choice) puts usage on content chunks.
    riding = {**CONTENT_CHUNK, "usage": USAGE_CHUNK["usage"]}
    block = chunk(riding)
    kept, payload = take_usage_event(block, strip=True)
    assert kept == block
    assert payload is not None
    assert parse_usage(payload) == Usage(300, 7, 256)


def test_content_that_mentions_usage_is_not_a_usage_event() -> None:
    text = {"choices": [{"delta": {"content": 'say "usage": {"prompt_tokens": 1}'}}]}
    block = chunk(text)
    assert take_usage_event(block, strip=True) == (block, None)
