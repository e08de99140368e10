"""The gateway's model of a backend's FIFO prefill queue."""

from __future__ import annotations

import pytest

from gateway.fleet.prefill_queue import PrefillQueue


def test_empty_queue_has_no_wait() -> None:
    assert PrefillQueue().wait_s(5.0) == 0.0


def test_wait_counts_the_head_as_progressing_since_it_started() -> None:
    q = PrefillQueue()
    q.push(1.0, now=10.0)
    q.push(2.0, now=10.5)
    assert q.wait_s(10.0) == pytest.approx(3.0)
    assert q.wait_s(10.6) == pytest.approx(2.4)
    # The head cannot be more than done: the rest still waits in full.
    assert q.wait_s(20.0) == pytest.approx(2.0)
    assert q.queued_s == pytest.approx(3.0)


def test_first_byte_settles_its_ticket_and_every_earlier_one() -> None:
    q = PrefillQueue()
    a = q.push(1.0, now=0.0)
    b = q.push(2.0, now=0.0)
    c = q.push(4.0, now=0.0)
    q.done(b, now=2.5)
    assert len(q) == 1
    assert q.wait_s(2.5) == pytest.approx(4.0)  # c started when b answered
    assert q.wait_s(3.5) == pytest.approx(3.0)
    q.done(a, now=3.5)  # already settled: nothing changes
    assert q.wait_s(3.5) == pytest.approx(3.0)
    q.done(c, now=6.0)
    assert len(q) == 0
    assert q.wait_s(6.0) == 0.0


def test_cancelled_attempt_removes_only_its_own_work() -> None:
    q = PrefillQueue()
    a = q.push(1.0, now=0.0)
    b = q.push(2.0, now=0.0)
    c = q.push(4.0, now=0.0)
    q.cancel(b, now=0.5)
    assert q.queued_s == pytest.approx(5.0)
    assert q.wait_s(0.5) == pytest.approx(4.5)  # a keeps its progress
    q.cancel(a, now=1.0)  # the head failed: c starts now
    assert q.wait_s(1.0) == pytest.approx(4.0)
    q.cancel(c, now=1.0)
    assert q.wait_s(1.0) == 0.0


def test_head_since_is_when_the_heads_prefill_began() -> None:
    q = PrefillQueue()
    first = q.push(1.0, now=10.0)
    second = q.push(1.0, now=10.5)
    assert q.head_since(first) == 10.0  # dispatched on an idle backend
    assert q.head_since(second) is None  # another is still ahead of it
    q.done(first, now=11.0)
    assert q.head_since(second) == 11.0  # began when the one before it answered
    q.done(second, now=12.0)
    assert q.head_since(second) is None
