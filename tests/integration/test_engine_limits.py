"""Windows and concurrency the engines state (TGI `/info`, llama.cpp `/props`) become the
backend's limits when the config sets none, and lanes and admission act on them."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.admission.recorder import Recorder
from tests.support.serving import ServerThread

PROPS = {
    "default_generation_settings": {"n_ctx": 3072, "temperature": 0.8},
    "total_slots": 3,
    "model_alias": "rec-model",
    "build_info": "b6000-test",
}


class LlamaServer(Recorder):
    """A Recorder that describes itself at `/props` as llama-server does."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != "/props":
            await super().__call__(scope, receive, send)
            return
        await receive()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(PROPS)})


def chat(words: int, model: str, max_tokens: int = 8) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "word " * words}],
        "max_tokens": max_tokens,
    }


def test_tgi_info_gives_the_window_and_concurrency(sim_fleet, gateway):
    fleet = sim_fleet(1, "tgi", max_model_len=4096)
    gw = gateway(fleet.backend_settings())
    gw.call(gw.deps.poller.poll_health())
    backend = gw.deps.fleet.backends[0]
    assert backend.max_context == 4096
    assert backend.max_concurrency == 128  # the sim's --max-concurrent-requests
    model = fleet.backends[0].config.model
    r = httpx.post(gw.url + "/v1/chat/completions", json=chat(8000, model), timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert "4096" in r.json()["error"]["message"]
    assert fleet.backends[0].stats.requests_total == 0


def test_llamacpp_props_give_the_window_and_slots(gateway):
    server = ServerThread([LlamaServer()]).start()
    try:
        entry = {
            "id": "llama",
            "url": server.urls[0],
            "engine": "llamacpp",
            "models": ["rec-model"],
        }
        gw = gateway([entry])
        gw.call(gw.deps.poller.poll_health())
        backend = gw.deps.fleet.backends[0]
        assert backend.max_context == 3072
        assert backend.max_concurrency == 3
        url = gw.url + "/v1/chat/completions"
        assert httpx.post(url, json=chat(10, "rec-model"), timeout=10).status_code == 200
        r = httpx.post(url, json=chat(4000, "rec-model"), timeout=10)
        assert r.status_code == 400
        assert "3072" in r.json()["error"]["message"]
    finally:
        server.stop()


def test_configured_limits_win_over_what_the_engine_states(gateway):
    server = ServerThread([LlamaServer()]).start()
    try:
        entry = {
            "id": "llama",
            "url": server.urls[0],
            "engine": "llamacpp",
            "models": ["rec-model"],
            "max_context": 8192,
            "max_concurrency": 12,
        }
        gw = gateway([entry])
        gw.call(gw.deps.poller.poll_health())
        backend = gw.deps.fleet.backends[0]
        assert (backend.max_context, backend.max_concurrency) == (8192, 12)
    finally:
        server.stop()
