"""Placement: per-attempt load accounting, index bookkeeping and cache-hit correction."""

from __future__ import annotations

import random
from collections.abc import Sequence

import orjson
import pytest

from gateway.api.request import InferenceRequest, parse_request
from gateway.fleet.registry import Backend
from gateway.metrics import GatewayMetrics
from gateway.placement import Placement, Placer
from gateway.prefix.hashing import PrefixKey
from gateway.prefix.staleness import TRUST_LOSS, StalenessModel
from gateway.proxy.forward import ProxyOutcome
from gateway.routing.scheduler import ProfileRouter
from gateway.routing.types import Decision, RouteRequest
from gateway.settings import HashingSettings, ProfileSettings
from gateway.tasks import BackgroundTasks
from tests.unit.core.factories import MODEL, make_backend

HASHES = list(range(101, 111))  # a ten-block chain
BLOCK_BYTES = 256  # HashingSettings defaults: 256 bytes per block; backends start at 4 per token


class FakeIndex:
    """Records every call; keeps how many leading blocks it believes each backend holds."""

    def __init__(self, matches: dict[str, int] | None = None) -> None:
        self.matches = matches or {}
        self.calls: list[tuple[object, ...]] = []
        self.held: dict[str, int] = {}
        self.staleness = StalenessModel(clock=lambda: 0.0)
        self.healthy = True

    async def lookup(self, model: str, hashes: Sequence[int]) -> dict[str, int]:
        self.calls.append(("lookup", model, list(hashes)))
        return dict(self.matches)

    async def record(self, model: str, backend_id: str, hashes: Sequence[int]) -> None:
        self.calls.append(("record", model, backend_id, list(hashes)))
        self.held[backend_id] = max(self.held.get(backend_id, 0), len(hashes))

    async def truncate(
        self, model: str, backend_id: str, hashes: Sequence[int], keep_blocks: int
    ) -> None:
        self.calls.append(("truncate", model, backend_id, list(hashes), keep_blocks))
        self.held[backend_id] = min(self.held.get(backend_id, 0), keep_blocks)

    async def forget(self, backend_id: str) -> None:
        self.calls.append(("forget", backend_id))
        self.held.pop(backend_id, None)

    def named(self, kind: str) -> list[tuple[object, ...]]:
        return [call for call in self.calls if call[0] == kind]


class Harness:
    """A Placer with a fake index, a real metrics registry and real background tasks."""

    def __init__(self, matches: dict[str, int] | None = None) -> None:
        self.index = FakeIndex(matches)
        self.metrics = GatewayMetrics()
        self.tasks = BackgroundTasks()
        self.router = ProfileRouter.from_settings(
            "p", ProfileSettings(scorers={"affinity": 1.0}), random.Random(0)
        )
        self.placer = Placer(HashingSettings(), self.index, self.router, self.metrics, self.tasks)  # type: ignore[arg-type]

    def placement(
        self,
        matches: dict[str, int] | None = None,
        hashes: list[int] | None = None,
        prompt_tokens: float = 640.0,
    ) -> Placement:
        chain = HASHES if hashes is None else hashes
        request = InferenceRequest("chat", b"{}", {}, MODEL, False, b"rid")
        route_request = RouteRequest(
            model=MODEL,
            prompt_bytes=prompt_tokens * 4,
            total_blocks=len(chain),
            block_bytes=BLOCK_BYTES,
            matches=matches or {},
        )
        key = PrefixKey(chain, int(prompt_tokens * 4))
        return Placement(self.placer, request, key, route_request, Decision([], "p"))

    def sample(self, name: str, backend: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"backend": backend})
        return 0.0 if value is None else value


def counters(backend: Backend) -> tuple[int, float]:
    """In-flight requests and queued prefill in tokens (at the backend's configured speed)."""
    queued = backend.state.prefill.queued_s * backend.settings.prefill_tokens_per_s
    return backend.state.in_flight, round(queued, 6)


# --- attempt accounting ------------------------------------------------------------------------


async def test_attempt_started_counts_load_and_records_the_chain() -> None:
    h = Harness()
    a = make_backend("a")
    placement = h.placement(matches={"a": 4})  # 640 tokens, 4 x 64 cached: 384 to prefill
    placement.attempt_started(a)
    assert counters(a) == (1, 384.0)
    await h.tasks.drain()
    assert h.index.named("record") == [("record", MODEL, "a", HASHES)]


async def test_attempt_without_hashes_records_nothing() -> None:
    h = Harness()
    a = make_backend("a")
    placement = h.placement(hashes=[], prompt_tokens=20.0)
    placement.attempt_started(a)
    assert counters(a) == (1, 20.0)
    await h.tasks.drain()
    assert h.index.calls == []


async def test_first_byte_releases_pending_prefill_exactly_once() -> None:
    h = Harness()
    a = make_backend("a")
    mine, other = h.placement(), h.placement(prompt_tokens=1000.0)
    mine.attempt_started(a)
    other.attempt_started(a)  # queued behind mine
    assert counters(a) == (2, 1640.0)
    mine.first_byte(a)
    mine.first_byte(a)
    assert counters(a) == (2, 1000.0)  # the other request's prefill is still queued


async def test_a_later_first_byte_settles_earlier_prefills_too() -> None:
    h = Harness()
    a = make_backend("a")
    first, second = h.placement(prompt_tokens=1000.0), h.placement()
    first.attempt_started(a)
    second.attempt_started(a)
    second.first_byte(a)  # engines prefill in order: the first one is done as well
    assert counters(a) == (2, 0.0)
    first.first_byte(a)
    assert counters(a) == (2, 0.0)


async def test_attempt_ended_after_first_byte_does_not_release_twice() -> None:
    h = Harness()
    a = make_backend("a")
    mine, other = h.placement(), h.placement(prompt_tokens=1000.0)
    mine.attempt_started(a)
    other.attempt_started(a)
    mine.first_byte(a)
    mine.attempt_ended(a)
    assert counters(a) == (1, 1000.0)


async def test_attempt_ended_without_first_byte_releases_prefill() -> None:
    h = Harness()
    a = make_backend("a")
    mine, other = h.placement(), h.placement(prompt_tokens=1000.0)
    other.attempt_started(a)
    mine.attempt_started(a)
    mine.attempt_ended(a)
    assert counters(a) == (1, 1000.0)


async def test_failed_attempt_then_another_backend_leaves_both_at_zero() -> None:
    h = Harness()
    a, b = make_backend("a"), make_backend("b")
    placement = h.placement(matches={"a": 2})
    placement.attempt_started(a)
    placement.attempt_ended(a)  # failed before the first byte
    placement.attempt_started(b)
    assert counters(a) == (0, 0.0)
    assert counters(b) == (1, 640.0)
    placement.first_byte(b)
    assert counters(b) == (1, 0.0)
    placement.attempt_ended(b)
    assert counters(a) == (0, 0.0)
    assert counters(b) == (0, 0.0)


async def test_failover_keeps_other_requests_counts_intact() -> None:
    h = Harness()
    a, b = make_backend("a"), make_backend("b")
    bystander = h.placement(prompt_tokens=300.0)
    bystander.attempt_started(a)
    placement = h.placement()
    placement.attempt_started(a)
    placement.attempt_ended(a)
    placement.attempt_started(b)
    placement.first_byte(b)
    placement.attempt_ended(b)
    assert counters(a) == (1, 300.0)
    assert counters(b) == (0, 0.0)


async def test_many_interleaved_requests_return_to_zero() -> None:
    h = Harness()
    backends = [make_backend("a"), make_backend("b")]
    placements = [h.placement(prompt_tokens=100.0 + i) for i in range(20)]
    for i, p in enumerate(placements):
        p.attempt_started(backends[i % 2])
    for i, p in enumerate(placements):
        if i % 3:
            p.first_byte(backends[i % 2])
    for i, p in enumerate(reversed(placements)):
        p.attempt_ended(backends[(19 - i) % 2])
    for backend in backends:
        assert backend.state.in_flight == 0
        assert backend.state.prefill.queued_s == pytest.approx(0.0, abs=1e-9)
        assert len(backend.state.prefill) == 0


async def test_failed_attempt_does_not_leave_the_chain_on_the_failed_backend() -> None:
    h = Harness()
    a, b = make_backend("a"), make_backend("b")
    placement = h.placement(matches={"a": 2})
    placement.attempt_started(a)
    placement.attempt_ended(a)  # e.g. 503 or connection refused: a never prefilled the prompt
    placement.attempt_started(b)
    placement.first_byte(b)
    placement.attempt_ended(b)
    await h.tasks.drain()
    assert h.index.held.get("b") == len(HASHES)
    assert h.index.held.get("a", 0) <= 2  # no more than it was believed to hold before


# --- correction from reported cached tokens ----------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "short"),
    [
        (640, False),  # as predicted
        (700, False),  # more than predicted
        (545, False),
        (544, False),  # 15% short: within the tolerance
        (543, True),  # more than 15% short
        (320, True),
        (0, True),
    ],
)
async def test_correct_lowers_trust_only_beyond_the_relative_tolerance(
    reported: int, short: bool
) -> None:
    h = Harness()
    a = make_backend("a")
    placement = h.placement(matches={"a": 10})
    h.placer.correct(placement, a, reported, prompt_tokens=700)
    await h.tasks.drain()
    # The chain was just prefilled again, so it is never truncated; the backend's residency is.
    assert h.index.named("truncate") == []
    if short:
        assert h.index.staleness.trust("a") == pytest.approx(TRUST_LOSS)
        assert h.sample("gateway_index_corrections_total", "a") == 1.0
    else:
        assert h.index.staleness.trust("a") == 1.0
        assert h.sample("gateway_index_corrections_total", "a") == 0.0
    assert h.sample("gateway_cached_tokens_predicted_total", "a") == 640.0
    assert h.sample("gateway_cached_tokens_reported_total", "a") == reported


async def test_correct_never_blames_a_prediction_of_nothing() -> None:
    h = Harness()
    a = make_backend("a")
    h.placer.correct(h.placement(matches={}), a, 0, prompt_tokens=700)
    await h.tasks.drain()
    assert h.index.staleness.trust("a") == 1.0


async def test_correct_predicts_in_the_backends_learned_tokens() -> None:
    # The engine's tokenizer makes 5 bytes of the rendered prompt one token: ten blocks of
    # 256 bytes are 512 of its tokens. Judged at the configured 4 bytes per token (640), an
    # exact hit would read as a 20% shortfall and the backend's trust would decay.
    h = Harness()
    a = make_backend("a")
    for _ in range(10):
        a.calibration.observe_prompt(MODEL, 5000, 1000)
    placement = h.placement(matches={"a": 10})
    h.placer.correct(placement, a, 512, prompt_tokens=1000)
    await h.tasks.drain()
    assert h.index.staleness.trust("a") == 1.0
    assert h.sample("gateway_cached_tokens_predicted_total", "a") == pytest.approx(512.0)


async def test_correct_counts_whole_engine_blocks_and_never_the_last_token() -> None:
    h = Harness()
    a = make_backend("a")
    a.calibration.learn_engine_cache(None, 16)
    h.placer.correct(h.placement(matches={"a": 10}), a, 0, prompt_tokens=630)
    await h.tasks.drain()
    # 640 predicted, cut to the prompt less its last token (629), then to whole blocks (624).
    assert h.sample("gateway_cached_tokens_predicted_total", "a") == 624.0


async def test_correct_uses_the_prediction_for_the_backend_that_answered() -> None:
    h = Harness()
    b = make_backend("b")
    placement = h.placement(matches={"a": 10, "b": 3})
    h.placer.correct(placement, b, 0, prompt_tokens=700)
    await h.tasks.drain()
    assert h.index.staleness.trust("b") < 1.0
    assert h.index.staleness.trust("a") == 1.0
    # Three blocks (192 tokens) and half the next one: what b is expected to have shared.
    assert h.sample("gateway_cached_tokens_predicted_total", "b") == 224.0


async def test_prediction_expects_half_the_block_past_the_match_and_the_check_only_the_match() -> (
    None
):
    # The index sees whole 256-byte blocks: a prompt that shared 3 of 10 also shared some
    # unknown part of the 4th, which the engine caches. The expected value counts half of it;
    # the trust check asks only for what the three matched blocks prove.
    h = Harness()
    a = make_backend("a")
    h.placer.correct(h.placement(matches={"a": 3}), a, 192, prompt_tokens=700)
    await h.tasks.drain()
    assert h.sample("gateway_cached_tokens_predicted_total", "a") == 224.0
    assert h.index.staleness.trust("a") == 1.0  # 192 reported: all the matched blocks held


# --- finished ----------------------------------------------------------------------------------

USAGE = (
    b'{"choices":[],"usage":{"prompt_tokens":700,"prompt_tokens_details":{"cached_tokens":128}}}'
)


async def test_finished_feeds_the_reported_cache_hit_to_correct() -> None:
    h = Harness()
    a = make_backend("a")
    placement = h.placement(matches={"a": 10})
    outcome = ProxyOutcome(status=200, backend=a, usage=USAGE, tail=b"data: [DONE]\n\n")
    placement.finished(outcome)
    await h.tasks.drain()
    assert h.index.staleness.trust("a") < 1.0
    assert h.sample("gateway_cached_tokens_reported_total", "a") == 128.0


async def test_finished_teaches_the_backends_bytes_per_token() -> None:
    h = Harness()
    a = make_backend("a")
    for _ in range(8):  # calibration.min_samples
        h.placement(prompt_tokens=875.0).finished(ProxyOutcome(status=200, backend=a, usage=USAGE))
    # 875 tokens at 4 bytes = 3500 rendered bytes, which the engine counted as 700 tokens.
    assert a.calibration.bytes_per_token(MODEL) == pytest.approx(5.0)


@pytest.mark.parametrize(
    "outcome_fields",
    [
        {"status": 502, "usage": USAGE},
        {"status": 200, "usage": b'{"usage":{"prompt_tokens":640}}'},
        {"status": 200, "usage": USAGE, "no_backend": True},
    ],
    ids=["error-status", "no-report", "no-backend"],
)
async def test_finished_without_a_usable_report_does_nothing(
    outcome_fields: dict[str, object],
) -> None:
    h = Harness()
    a = make_backend("a")
    no_backend = outcome_fields.pop("no_backend", False)
    outcome = ProxyOutcome(backend=None if no_backend else a, **outcome_fields)  # type: ignore[arg-type]
    h.placement(matches={"a": 10}).finished(outcome)
    await h.tasks.drain()
    assert h.index.calls == []
    assert h.sample("gateway_cached_tokens_reported_total", "a") == 0.0


async def test_finished_without_hashes_does_nothing() -> None:
    h = Harness()
    a = make_backend("a")
    outcome = ProxyOutcome(status=200, backend=a, usage=USAGE)
    h.placement(hashes=[], prompt_tokens=10.0).finished(outcome)
    await h.tasks.drain()
    assert h.index.calls == []


# --- place -------------------------------------------------------------------------------------


def chat_request(text: str, **extra: object) -> InferenceRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    return parse_request("chat", orjson.dumps(body), b"rid")


async def test_place_looks_up_the_chain_and_routes_by_its_matches() -> None:
    h = Harness(matches={"b": 3})
    a, b = make_backend("a"), make_backend("b")
    placement = await h.placer.place(chat_request("x" * 3000), [a, b])
    assert [x.id for x in placement.decision.ranked] == ["b", "a"]
    hashes = placement.key.hashes
    assert len(hashes) >= 11
    assert h.index.named("lookup") == [("lookup", MODEL, hashes)]
    assert placement.route.total_blocks == len(hashes)
    assert placement.route.matches == {"b": 3}
    assert placement.route.block_bytes == BLOCK_BYTES
    assert placement.route.prompt_bytes == placement.key.rendered_bytes
    assert placement.route.prompt_tokens(a) == placement.key.rendered_bytes / 4
    count = h.metrics.registry.get_sample_value(
        "gateway_routing_decision_seconds_count", {"policy": "profile:p"}
    )
    assert count == 1.0


async def test_place_skips_the_lookup_for_a_prompt_shorter_than_a_block() -> None:
    h = Harness(matches={"b": 3})
    placement = await h.placer.place(chat_request("hi"), [make_backend("a")])
    assert placement.key.hashes == []
    assert placement.route.matches == {}
    assert h.index.calls == []


async def test_place_isolates_cache_salts() -> None:
    h = Harness()
    backends = [make_backend("a")]
    plain = await h.placer.place(chat_request("y" * 1000), backends)
    salted = await h.placer.place(chat_request("y" * 1000, cache_salt="tenant-1"), backends)
    again = await h.placer.place(chat_request("y" * 1000), backends)
    assert plain.key.hashes == again.key.hashes
    assert set(plain.key.hashes).isdisjoint(salted.key.hashes)


async def test_prefix_groups_count_requests_sharing_the_cached_depth() -> None:
    h = Harness()
    a, b = make_backend("a"), make_backend("b")
    shared = h.placement(hashes=[7, 8, 9])
    also_shared = h.placement(hashes=[7, 8, 10])
    private = h.placement(hashes=[11, 12])
    shared.attempt_started(a)
    also_shared.attempt_started(b)
    private.attempt_started(b)
    groups = h.placer.groups
    assert groups.in_flight(shared.key, depth=2) == 2  # both share blocks 0 and 1
    assert groups.in_flight(shared.key, depth=3) == 1  # block 2 is its own
    assert groups.in_flight(shared.key, depth=0) == 2  # nothing cached: the opening block
    assert groups.in_flight(private.key, depth=2) == 1
    also_shared.attempt_ended(b)  # a failover keeps the count right: ended, then started again
    also_shared.attempt_started(a)
    assert groups.in_flight(shared.key, depth=2) == 2
    for placement, backend in ((shared, a), (also_shared, a), (private, b)):
        placement.attempt_ended(backend)
    assert groups.in_flight(shared.key, depth=2) == 0
    assert groups.in_flight(private.key, depth=2) == 0
    await h.tasks.drain()


@pytest.mark.parametrize("shared_blocks", [9, 33, 36, 37, 70, 130])
async def test_a_private_history_past_a_shared_prefix_of_any_length_is_not_popular(
    shared_blocks: int,
) -> None:
    # The shared system prompt may end anywhere (its length in blocks follows the tokenizer's
    # bytes per token): a user's next turn, private past it by a quarter of its length (at
    # least one block), must still count alone.
    h = Harness()
    a = make_backend("a")
    shared = list(range(1000, 1000 + shared_blocks))
    users = [h.placement(hashes=[*shared, *range(10 * u, 10 * u + 20)]) for u in range(1, 6)]
    for placement in users:
        placement.attempt_started(a)
    step = max(1, shared_blocks // 4)
    turn = users[0].key
    assert h.placer.groups.in_flight(turn, depth=shared_blocks) == 5
    assert h.placer.groups.in_flight(turn, depth=shared_blocks + step) == 1
    for placement in users:
        placement.attempt_ended(a)
    await h.tasks.drain()
