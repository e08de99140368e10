"""UsageReader: usage read from any split of a stream; stripped, the stream the client would get."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.usage import UsageReader, parse_usage

USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8}}


def chunk(choices: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {"id": "c1", "object": "chat.completion.chunk", "choices": choices, **extra}


def token(text: str, index: int = 0) -> dict[str, object]:
    return {"index": index, "delta": {"content": text}, "finish_reason": None}


def finish(index: int = 0) -> dict[str, object]:
    return {"index": index, "delta": {}, "finish_reason": "stop"}


def sse(data: dict[str, object], newline: bytes = b"\n") -> bytes:
    return b"data: " + orjson.dumps(data) + newline * 2


def asked(choices: int, newline: bytes = b"\n") -> list[bytes]:
    """What vLLM sends when asked for usage: the fingerprint moves to the usage chunk."""
    events = [sse(chunk([token("a", i)]), newline) for i in range(choices)]
    events += [sse(chunk([token("b", i)]), newline) for i in range(choices)]
    events += [sse(chunk([finish(i)]), newline) for i in range(choices)]
    events.append(sse(chunk([], system_fingerprint="fp", usage=USAGE), newline))
    return [*events, b"data: [DONE]" + newline * 2]


def not_asked(choices: int, newline: bytes = b"\n") -> list[bytes]:
    """What vLLM sends when not asked: the last finishing chunk carries the fingerprint."""
    events = [sse(chunk([token("a", i)]), newline) for i in range(choices)]
    events += [sse(chunk([token("b", i)]), newline) for i in range(choices)]
    events += [sse(chunk([finish(i)]), newline) for i in range(choices - 1)]
    events.append(sse(chunk([finish(choices - 1)], system_fingerprint="fp"), newline))
    return [*events, b"data: [DONE]" + newline * 2]


def split(events: list[bytes], cuts: list[int]) -> list[bytes]:
    """The events joined into blocks, a new block starting at each cut (event index)."""
    blocks, start = [], 0
    for cut in sorted({c % (len(events) + 1) for c in cuts} | {len(events)}):
        if cut > start:
            blocks.append(b"".join(events[start:cut]))
            start = cut
    return blocks


def relay(reader: UsageReader, blocks: list[bytes]) -> bytes:
    return b"".join(reader.feed(block) for block in blocks) + reader.flush()


cuts = st.lists(st.integers(min_value=0, max_value=40), max_size=8)


@given(cuts=cuts, choices=st.integers(min_value=1, max_value=3), crlf=st.booleans())
def test_stripped_stream_is_what_the_engine_sends_unasked(
    cuts: list[int], choices: int, crlf: bool
) -> None:
    newline = b"\r\n" if crlf else b"\n"
    reader = UsageReader(strip=True)
    out = relay(reader, split(asked(choices, newline), cuts))
    assert out == b"".join(not_asked(choices, newline))
    assert reader.usage is not None
    assert parse_usage(reader.usage) == parse_usage(orjson.dumps({"usage": USAGE}))


@given(cuts=cuts)
def test_a_client_that_asked_gets_every_byte(cuts: list[int]) -> None:
    reader = UsageReader(strip=False)
    events = asked(2)
    assert relay(reader, split(events, cuts)) == b"".join(events)
    assert reader.usage is not None
    assert b'"cached_tokens":8' in reader.usage


def test_usage_on_every_chunk_reads_the_last_one() -> None:
    reader = UsageReader(strip=False)
    first = sse(chunk([token("a")], usage={"prompt_tokens": 12, "completion_tokens": 1}))
    last = sse(chunk([finish()], usage={"prompt_tokens": 12, "completion_tokens": 2}))
    reader.feed(first + last)
    assert reader.usage is not None
    assert parse_usage(reader.usage) == parse_usage(last[6:])


def test_a_usage_key_inside_content_is_not_usage() -> None:
    reader = UsageReader(strip=True)
    text = sse(chunk([token('the "usage": {} field')]))
    assert reader.feed(text) == text
    assert reader.usage is None


def test_finish_held_back_goes_out_at_the_end_without_usage() -> None:
    reader = UsageReader(strip=True)
    events = not_asked(1)[:-1]  # an engine that ignores include_usage, and breaks off
    out = reader.feed(b"".join(events))
    assert out == b"".join(events[:-1])
    assert reader.flush() == events[-1]


def spaced_sse(data: dict[str, object]) -> bytes:
    """An event as Python's json.dumps writes it (a space after each colon and comma)."""
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def test_an_event_finishing_one_of_several_choices_gets_the_moved_fields() -> None:
    # One event, two choices: the first finishes, the last goes on (its finish_reason is null).
    both = [finish(0), token("c", 1)]
    reader = UsageReader(strip=True)
    out = reader.feed(sse(chunk([token("a", 0)])) + sse(chunk(both)))
    assert out == sse(chunk([token("a", 0)]))
    out += reader.feed(sse(chunk([], system_fingerprint="fp", usage=USAGE)))
    assert out == sse(chunk([token("a", 0)])) + sse(chunk(both, system_fingerprint="fp"))


def test_a_finish_followed_by_another_choice_is_not_held() -> None:
    reader = UsageReader(strip=True)
    block = sse(chunk([finish(0)])) + sse(chunk([token("c", 1)]))
    assert reader.feed(block) == block
    assert reader.flush() == b""


def test_spaced_json_finish_is_held_until_usage_shows() -> None:
    reader = UsageReader(strip=True)
    final = spaced_sse(chunk([finish()]))
    assert reader.feed(spaced_sse(chunk([token("a")])) + final) == spaced_sse(chunk([token("a")]))
    out = reader.feed(spaced_sse(chunk([], system_fingerprint="fp", usage=USAGE)))
    close = final.rindex(b"}")
    assert out == final[:close] + b',"system_fingerprint":"fp"' + final[close:]
