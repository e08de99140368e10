"""Cluster URLs and the pair of breakers, without a server: what is accepted, what opens when."""

from __future__ import annotations

import pytest

from gateway.prefix.breaker import BreakerState, IndexBreakers
from gateway.prefix.redis_cluster import ClusterTarget, is_cluster_url, parse_cluster_url
from tests.unit.prefix.fakes import FakeClock


def test_cluster_urls_name_seed_nodes() -> None:
    assert is_cluster_url("redis+cluster://h:1")
    assert is_cluster_url("REDISS+CLUSTER://h:1")
    assert not is_cluster_url("redis://h:1/0")
    assert parse_cluster_url("redis+cluster://a:7000, b:7001/0") == ClusterTarget(
        (("a", 7000), ("b", 7001))
    )
    assert parse_cluster_url("rediss+cluster://u:p%40ss@[::1]:7000") == ClusterTarget(
        (("::1", 7000),), "u", "p@ss", True
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://h:1", "starts with"),
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://h:0", "host:port"),
        ("redis+cluster://", "at least one"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://h:1?ssl=true", "no query"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_cluster_url(url)


def test_failing_writes_degrade_even_while_lookups_succeed() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    pair = IndexBreakers(failure_threshold=2, cooldown_s=1.0, clock=clock, on_change=changes.append)
    for _ in range(2):  # a full Redis: every write refused, every lookup answered
        assert pair.allow_write()
        pair.writes.failure()
        if pair.allow_lookup():
            pair.reads.success()
    assert not pair.closed
    assert pair.state is BreakerState.OPEN
    assert changes == [True]
    assert not pair.allow_lookup()  # routing by load: an index that cannot record is not used
    clock.advance(1.0)
    assert pair.allow_write()  # the trial
    pair.writes.success()
    assert pair.closed
    assert pair.allow_lookup()
    assert changes == [True, False]


def test_both_breakers_open_recover_as_one_transition() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    pair = IndexBreakers(failure_threshold=1, cooldown_s=1.0, clock=clock, on_change=changes.append)
    pair.reads.failure()
    pair.writes.failure()
    assert changes == [True]
    clock.advance(1.0)
    assert pair.allow_write()
    pair.writes.success()
    assert not pair.closed  # lookups still owe their trial
    assert pair.allow_lookup()
    pair.reads.success()
    assert pair.closed
    assert changes == [True, False]
