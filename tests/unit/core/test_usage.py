"""reported_cached_tokens: the backend's reported prefix-cache hit, from a response tail."""

from __future__ import annotations

import orjson
import pytest

from gateway.proxy.usage import reported_cached_tokens


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b'"prompt_tokens_details":{"cached_tokens":128}}', 128),
        (b'"prompt_tokens_details": {"cached_tokens": 64}}', 64),
        (b'"cached_tokens" : 7}', 7),
        (b'"cached_tokens":\t9', 9),
        (b'"cached_tokens":0}', 0),
        (b'"cached_tokens":12', 12),
    ],
)
def test_explicit_values(tail: bytes, expected: int) -> None:
    assert reported_cached_tokens(tail) == expected


@pytest.mark.parametrize(
    "tail",
    [
        b"",
        b'{"usage":{"prompt_tokens":10,"completion_tokens":2}}',
        b'"prompt_tokens_details":null',
        b'"prompt_tokens_details":{"cached_tokens":null}}',
        b'"cached_tokens":',
        b'"cached_tokens":"12"',
        b'{"content":"\\"cached_tokens\\": 12"}',
    ],
)
def test_absent_or_null(tail: bytes) -> None:
    assert reported_cached_tokens(tail) is None


def test_last_occurrence_wins() -> None:
    tail = b'"cached_tokens": 3} ... "cached_tokens":17}'
    assert reported_cached_tokens(tail) == 17
    assert reported_cached_tokens(b'"cached_tokens":17} "cached_tokens":null') is None


def test_real_usage_chunk() -> None:
    usage = {
        "id": "c",
        "choices": [],
        "usage": {
            "prompt_tokens": 300,
            "completion_tokens": 7,
            "total_tokens": 307,
            "prompt_tokens_details": {"cached_tokens": 256},
        },
    }
    tail = b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"
    assert reported_cached_tokens(tail) == 256
