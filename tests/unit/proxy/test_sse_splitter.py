"""EventSplitter: the events a whole-buffer split finds, from any chunking, holding little."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.sse import EventSplitter, ends_with_done, split_complete

EVENTS = [
    b'data: {"a": 1}\n\n',
    b'data: {"b": 2}\r\n\r\n',
    b": keep-alive\n\n",
    b"data:[DONE]\n\n",
    b"data: x\rdata: y\r\r",
]


def feed_all(splitter: EventSplitter, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    events = []
    for chunk in chunks:
        block, raw = splitter.feed(chunk)
        assert not raw  # never past the bound here
        if block:
            events.append(block)
    return events, splitter.rest()


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *points, len(data)]
    return [data[i:j] for i, j in itertools.pairwise(edges) if j > i]


@given(
    st.lists(st.sampled_from(EVENTS), min_size=1, max_size=12),
    st.lists(st.integers(min_value=0), max_size=20),
    st.binary(max_size=8).filter(lambda b: b"\n" not in b and b"\r" not in b),
)
def test_any_chunking_gives_the_events_of_the_whole_stream(events, points, tail):
    data = b"".join(events) + tail
    blocks, rest = feed_all(EventSplitter(1 << 20), cut(data, points))
    whole, remainder = split_complete(data)
    assert b"".join(blocks) == whole
    assert rest == remainder
    for block in blocks:  # each block ends at an event boundary
        assert split_complete(block) == (block, b"")


def test_a_boundary_straddling_two_chunks_is_found():
    splitter = EventSplitter(1024)
    assert splitter.feed(b"data: a\r\n\r") == (b"", b"")
    assert splitter.feed(b"\ndata: b") == (b"data: a\r\n\r\n", b"")
    assert splitter.rest() == b"data: b"


def test_an_event_past_the_bound_is_handed_back_unparsed():
    splitter = EventSplitter(1024)
    assert splitter.feed(b"data: " + b"x" * 1000) == (b"", b"")
    block, raw = splitter.feed(b"y" * 100)
    assert (block, raw) == (b"", b"data: " + b"x" * 1000 + b"y" * 100)
    assert splitter.rest() == b""
    # What follows goes on being split at boundaries.
    assert splitter.feed(b"z\n\ndata: c\n\n") == (b"z\n\ndata: c\n\n", b"")


def test_complete_events_come_before_an_oversized_remainder():
    splitter = EventSplitter(1024)
    block, raw = splitter.feed(b"data: a\n\n" + b"data: " + b"x" * 2000)
    assert block == b"data: a\n\n"
    assert raw == b"data: " + b"x" * 2000


def test_held_bytes_stay_under_the_bound_for_a_boundless_stream():
    splitter = EventSplitter(4096)
    relayed = 0
    for _ in range(1000):
        block, raw = splitter.feed(b"w" * 100)
        assert not block
        relayed += len(raw)
        assert sum(len(p) for p in splitter._parts) <= 4096
    assert relayed + len(splitter.rest()) == 100_000


def test_done_is_recognised_with_or_without_its_blank_line():
    assert ends_with_done(b"data: x\n\ndata: [DONE]\n\n")
    assert ends_with_done(b"data:[DONE]\r\n\r\n")
    assert ends_with_done(b"data: [DONE]")
    assert not ends_with_done(b"data: x\n\n")
