"""The admission queue through a running gateway: a full backend, a queued client that
leaves, and a wait limit that passes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.admission.recorder import Recorder
from tests.support.serving import ServerThread

MODEL = "rec-model"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def held() -> Iterator[tuple[Recorder, ServerThread]]:
    recorder = Recorder(MODEL)
    server = ServerThread([recorder]).start()
    yield recorder, server
    recorder.release.set()
    server.stop()


def backend(server: ServerThread) -> dict[str, object]:
    return {"id": "one", "url": server.urls[0], "models": [MODEL], "max_concurrency": 1}


def background_post(url: str, results: list[int]) -> threading.Thread:
    def go() -> None:
        results.append(httpx.post(url, json=BODY, timeout=30).status_code)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_a_client_that_leaves_while_queued_frees_its_place(held, gateway):
    recorder, server = held
    recorder.release.clear()
    gw = gateway([backend(server)])
    url = gw.url + "/v1/chat/completions"
    queue = gw.deps.gate.queue
    results: list[int] = []
    holder = background_post(url, results)  # takes the one slot and is held there
    assert recorder.arrived.wait(10)

    async def leave_while_queued() -> int:
        async with httpx.AsyncClient() as client:
            waiting = asyncio.create_task(client.post(url, json=BODY, timeout=30))
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(queue.wait_for_depth(1), gw.server.loop)
            )
            waiting.cancel()  # the client hangs up while queued
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(queue.wait_for_depth(0), gw.server.loop)
        )
        return queue.granted

    assert asyncio.run(leave_while_queued()) == 0
    recorder.release.set()
    holder.join(30)
    assert results == [200]
    assert len(recorder.bodies) == 1  # the one that left never reached the backend
    after = httpx.post(url, json=BODY, timeout=30)
    assert after.status_code == 200


def test_the_tiers_wait_limit_answers_503_with_retry_after(held, gateway):
    recorder, server = held
    recorder.release.clear()
    tiers = {"standard": {"max_queue_wait_s": 0.05}}
    gw = gateway([backend(server)], admission={"tiers": tiers})
    url = gw.url + "/v1/chat/completions"
    results: list[int] = []
    holder = background_post(url, results)
    assert recorder.arrived.wait(10)
    r = httpx.post(url, json=BODY, timeout=30)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "capacity_exceeded"
    recorder.release.set()
    holder.join(30)
    assert results == [200]
