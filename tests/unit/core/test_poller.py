"""FleetPoller against a fake upstream: health flips, restarts, busy probes, KV capacity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.fleet.poller import FleetPoller
from gateway.fleet.registry import Backend, Fleet
from gateway.proxy.upstream import Headers, UpstreamBroken, UpstreamUnavailable
from gateway.settings import HealthSettings
from tests.unit.core.factories import make_backend

Answer = tuple[int, bytes] | BaseException


class FakeResponse:
    """A canned response whose body is all there."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body
        self.closed = False

    def header(self, name: bytes) -> bytes | None:
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    @property
    def body_complete(self) -> bool:
        return True

    async def read(self) -> bytes:
        return self._body

    async def aclose(self) -> None:
        self.closed = True


class FakeUpstream:
    """Answers each GET by the URL's path; an exception as answer is raised from `send`."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: list[str] = []

    def answer(self, path: str, status: int = 200, body: bytes | str = b"") -> None:
        self.answers[path] = (status, body.encode() if isinstance(body, str) else body)

    def fail(self, path: str, error: BaseException) -> None:
        self.answers[path] = error

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Headers, *, timeout_s: float
    ) -> FakeResponse:
        assert method == "GET"
        assert body is None
        path = urlsplit(url).path
        self.calls.append(path)
        answer = self.answers.get(path, (404, b""))
        if isinstance(answer, BaseException):
            raise answer
        return FakeResponse(*answer)

    async def aclose(self) -> None:
        return None

    def count(self, path: str) -> int:
        return self.calls.count(path)


class Recorder:
    """Every listener call the poller made."""

    def __init__(self) -> None:
        self.health: list[tuple[str, bool]] = []
        self.restarts: list[str] = []
        self.capacity: list[str] = []
        self.load_polls = 0

    def poller(self, fleet: Fleet, client: FakeUpstream, **settings: Any) -> FleetPoller:
        fields: dict[str, Any] = {"failures_to_down": 2, "successes_to_up": 1}
        fields.update(settings.pop("health", {}))
        return FleetPoller(
            fleet,
            client,
            HealthSettings(**fields),
            on_health_change=lambda b: self.health.append((b.id, b.state.healthy)),
            on_restart=lambda b: self.restarts.append(b.id),
            on_capacity_change=lambda b: self.capacity.append(b.id),
            after_load_poll=self._load_polled,
            **settings,
        )

    def _load_polled(self) -> None:
        self.load_polls += 1


def vllm_metrics(
    *,
    running: float = 1.0,
    prompt_tokens: float = 1000.0,
    started: float | None = 1_733_100_000.0,
    blocks: int | None = None,
) -> str:
    lines = [
        f'vllm:num_requests_running{{model_name="m"}} {running}',
        'vllm:num_requests_waiting{model_name="m"} 0.0',
        'vllm:kv_cache_usage_perc{model_name="m"} 0.5',
        f'vllm:prompt_tokens_total{{model_name="m"}} {prompt_tokens}',
    ]
    if started is not None:
        lines.append(f"process_start_time_seconds {started}")
    if blocks is not None:
        lines.append(
            'vllm:cache_config_info{block_size="16",cache_dtype="auto",'
            f'enable_prefix_caching="True",num_gpu_blocks="{blocks}"}} 1.0'
        )
    return "\n".join(lines) + "\n"


def one(backend: Backend) -> Fleet:
    return Fleet([backend])


# --- health and restarts -------------------------------------------------------------------------


async def test_vllm_backend_back_up_is_not_a_restart() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.fail("/health", UpstreamUnavailable("refused"))
    await poller.poll_health()
    assert backend.state.healthy  # one failure of two
    await poller.poll_health()
    assert not backend.state.healthy
    client.answer("/health")
    await poller.poll_health()
    assert backend.state.healthy
    assert recorder.health == [("v0", False), ("v0", True)]
    assert recorder.restarts == []  # its cache may well be warm: the metrics will tell


async def test_broken_probe_counts_as_a_failure() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.fail("/health", UpstreamBroken("reset"))
    await poller.poll_health()
    await poller.poll_health()
    assert not backend.state.healthy
    client.answer("/health", 503)
    await poller.poll_health()
    assert not backend.state.healthy


async def test_openai_backend_back_up_counts_as_a_restart() -> None:
    backend = make_backend("o0", engine="openai")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/v1/models", body=b'{"data": []}')
    await poller.poll_health()
    assert recorder.restarts == []  # up from the start: nothing to forget
    client.fail("/v1/models", UpstreamUnavailable("refused"))
    await poller.poll_health()
    await poller.poll_health()
    assert not backend.state.healthy
    assert recorder.restarts == []
    client.answer("/v1/models", body=b'{"data": []}')
    await poller.poll_health()
    assert backend.state.healthy
    assert recorder.restarts == ["o0"]  # nothing else can tell whether it lost its cache
    await poller.poll_health()
    assert recorder.restarts == ["o0"]


async def test_later_start_time_is_a_restart_once() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=vllm_metrics(started=1000.0, prompt_tokens=500.0))
    await poller.poll_load()
    await poller.poll_load()
    assert recorder.restarts == []
    # The counters kept growing (a fresh process that already did more work, say), but the
    # engine says it started later.
    client.answer("/metrics", body=vllm_metrics(started=2000.0, prompt_tokens=900.0))
    await poller.poll_load()
    assert recorder.restarts == ["v0"]
    await poller.poll_load()
    await poller.poll_load()
    assert recorder.restarts == ["v0"]
    assert recorder.load_polls == 5


async def test_counters_going_backwards_is_a_restart() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=1000.0, started=None))
    await poller.poll_load()
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=1500.0, started=None))
    await poller.poll_load()
    assert recorder.restarts == []
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=20.0, started=None))
    await poller.poll_load()
    assert recorder.restarts == ["v0"]
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=40.0, started=None))
    await poller.poll_load()
    assert recorder.restarts == ["v0"]


async def test_restart_with_counters_reset_and_a_later_start_time_is_one_restart() -> None:
    # What a real engine restart looks like: both signals at once, on the same scrape.
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=1000.0, started=1000.0))
    await poller.poll_load()
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=10.0, started=2000.0))
    await poller.poll_load()
    assert recorder.restarts == ["v0"]
    client.answer("/metrics", body=vllm_metrics(prompt_tokens=20.0, started=2000.0))
    await poller.poll_load()
    await poller.poll_load()
    assert recorder.restarts == ["v0"]  # the one restart, not reported again later


async def test_probe_timeout_on_a_busy_backend_is_inconclusive() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.fail("/health", TimeoutError())
    backend.state.in_flight = 3
    for _ in range(5):
        await poller.poll_health()
    assert backend.state.healthy
    assert backend.state.consecutive_failures == 0
    assert recorder.health == []


async def test_probe_timeout_on_an_idle_backend_is_a_failure() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client, health={"failures_to_down": 3})
    client.fail("/health", TimeoutError())
    backend.state.in_flight = 0
    await poller.poll_health()
    await poller.poll_health()
    assert backend.state.healthy
    assert backend.state.consecutive_failures == 2
    await poller.poll_health()
    assert not backend.state.healthy
    assert recorder.health == [("v0", False)]


async def test_busy_timeouts_neither_help_nor_hurt_an_idle_count() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.fail("/health", TimeoutError())
    await poller.poll_health()  # idle: one failure
    backend.state.in_flight = 1
    await poller.poll_health()  # busy: not counted
    assert backend.state.healthy
    assert backend.state.consecutive_failures == 1
    backend.state.in_flight = 0
    await poller.poll_health()
    assert not backend.state.healthy


# --- what the engine says of its cache -----------------------------------------------------------


async def test_vllm_kv_capacity_learned_from_metrics_once() -> None:
    backend = make_backend("v0", kv_cache_tokens=1_000_000)
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=vllm_metrics(blocks=2048))
    await poller.poll_load()
    assert recorder.capacity == ["v0"]
    assert backend.calibration.engine_kv_tokens == 32768
    assert backend.calibration.engine_block_tokens == 16
    assert backend.calibration.kv_cache_tokens == 32768
    assert backend.state.engine is not None
    assert backend.state.engine.running == 1.0
    await poller.poll_load()
    await poller.poll_load()
    assert recorder.capacity == ["v0"]
    assert recorder.load_polls == 3


async def test_kv_capacity_is_learned_again_after_a_restart() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=vllm_metrics(blocks=2048, started=1000.0))
    await poller.poll_load()
    # Restarted with a different memory budget.
    client.answer("/metrics", body=vllm_metrics(blocks=4096, started=2000.0))
    await poller.poll_load()
    assert recorder.restarts == ["v0"]
    await poller.poll_load()
    assert recorder.capacity == ["v0", "v0"]
    assert backend.calibration.engine_kv_tokens == 65536


async def test_kv_capacity_discovery_can_be_turned_off() -> None:
    backend = make_backend("v0", kv_cache_tokens=5000)
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client, discover_cache=False)
    client.answer("/metrics", body=vllm_metrics(blocks=2048))
    await poller.poll_load()
    assert recorder.capacity == []
    assert backend.calibration.engine_kv_tokens is None
    assert backend.calibration.kv_cache_tokens == 5000


async def test_sglang_kv_capacity_learned_from_server_info() -> None:
    backend = make_backend("s0", engine="sglang")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/health")
    info = {"page_size": 1, "internal_states": [{"max_total_num_tokens": 123_456}]}
    client.answer("/get_server_info", body=orjson.dumps(info))
    await poller.poll_health()
    assert recorder.capacity == ["s0"]
    assert backend.calibration.engine_kv_tokens == 123_456
    assert backend.calibration.engine_block_tokens == 1
    await poller.poll_health()
    assert client.count("/get_server_info") == 1  # known: not asked again
    assert recorder.capacity == ["s0"]


async def test_sglang_info_is_not_asked_while_unhealthy_and_bad_json_is_survived() -> None:
    backend = make_backend("s0", engine="sglang")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.fail("/health", UpstreamUnavailable("refused"))
    client.answer("/get_server_info", body=b'{"max_total_num_tokens": 5}')
    await poller.poll_health()
    assert client.count("/get_server_info") == 0
    client.answer("/health")
    client.answer("/get_server_info", body=b"<html>not json")
    await poller.poll_health()
    assert backend.calibration.engine_kv_tokens is None
    client.answer("/get_server_info", body=b'{"max_total_num_tokens": 5000}')
    await poller.poll_health()
    assert backend.calibration.engine_kv_tokens == 5000
    assert recorder.capacity == ["s0"]


async def test_tgi_kv_capacity_learned_from_info() -> None:
    backend = make_backend("t0", engine="tgi")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/health")
    client.answer("/info", body=b'{"model_id": "m", "max_batch_total_tokens": 143104}')
    await poller.poll_health()
    assert backend.calibration.engine_kv_tokens == 143_104
    assert recorder.capacity == ["t0"]


async def test_context_window_learned_from_models() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/health")
    client.answer("/v1/models", body=b'{"data": [{"id": "m", "max_model_len": 8192}]}')
    await poller.poll_health()
    assert backend.max_context == 8192
    await poller.poll_health()
    assert client.count("/v1/models") == 1


async def test_failed_scrape_forgets_the_engine_load() -> None:
    backend = make_backend("v0")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=vllm_metrics())
    await poller.poll_load()
    assert backend.state.engine is not None
    client.fail("/metrics", TimeoutError())
    await poller.poll_load()
    assert backend.state.engine is None
    client.answer("/metrics", 500, "oops")
    await poller.poll_load()
    assert backend.state.engine is None
    assert recorder.load_polls == 3


async def test_openai_backends_are_not_scraped() -> None:
    backend = make_backend("o0", engine="openai")
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    await poller.poll_load()
    assert client.calls == []
    assert recorder.load_polls == 1


async def test_kv_capacity_learned_from_a_real_vllm_scrape() -> None:
    capture = Path(__file__).parents[2] / "fixtures" / "vllm" / "metrics.txt"
    backend = make_backend("v0", models=["tiny-llama"])
    client = FakeUpstream()
    recorder = Recorder()
    poller = recorder.poller(one(backend), client)
    client.answer("/metrics", body=capture.read_bytes())
    await poller.poll_load()
    await poller.poll_load()
    assert recorder.capacity == ["v0"]
    assert backend.calibration.engine_kv_tokens == 32768 * 32
    assert backend.calibration.engine_block_tokens == 32
    assert recorder.restarts == []
