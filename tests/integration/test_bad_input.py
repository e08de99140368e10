"""Every bad-input case gets its status, OpenAI error shape and `param` over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.support.harness import MODEL

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw_url():
    from tests.support.harness import start_gateway, start_sim_fleet

    fleet = start_sim_fleet(1)
    gw = start_gateway(fleet.backend_settings(), server={"max_body_bytes": 4096})
    yield gw.url
    gw.stop()
    fleet.server.stop()


CASES = [
    ("chat", b"not json", 400, None),
    ("chat", b"[1, 2]", 400, None),
    ("chat", b'"text"', 400, None),
    ("chat", b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    ("chat", b'{"model": 7, "messages": []}', 400, "model"),
    ("chat", b'{"model": "%s"}' % MODEL.encode(), 400, "messages"),
    ("chat", b'{"model": "%s", "messages": "hi"}' % MODEL.encode(), 400, "messages"),
    ("chat", b'{"model": "%s", "messages": []}' % MODEL.encode(), 400, "messages"),
    ("chat", b'{"model": "%s", "messages": [{"content": "x"}]}' % MODEL.encode(), 400,
     "messages.[0].role"),
    ("chat", b'{"model": "%s", "messages": [{"role": "user", "content": 5}]}' % MODEL.encode(),
     400, "messages.[0].content"),
    ("chat", b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}'
     % MODEL.encode(), 400, "stream"),
    ("chat", b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], '
     b'"stream_options": {"include_usage": true}}' % MODEL.encode(), 400, "stream_options"),
    ("completion", b'{"model": "%s"}' % MODEL.encode(), 400, "prompt"),
    ("completion", b'{"model": "%s", "prompt": {"a": 1}}' % MODEL.encode(), 400, "prompt"),
    ("completion", b'{"model": "%s", "prompt": []}' % MODEL.encode(), 400, "prompt"),
    ("completion", b'{"prompt": "x"}', 400, "model"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "body", "status", "param"), CASES)
def test_bad_input(gw_url, kind, body, status, param):
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    r = httpx.post(gw_url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert r.headers["x-should-retry"] == "false"
    assert r.headers["x-request-id"]


def test_unknown_model_is_404_model_not_found(gw_url):
    r = httpx.post(
        gw_url + "/v1/chat/completions", json={"model": "no-such-model", "messages": MSG}
    )
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413(gw_url, chunked):
    big = b'{"model": "%s", "prompt": "%s"}' % (MODEL.encode(), b"x" * 8000)
    content = iter([big[:3000], big[3000:]]) if chunked else big
    r = httpx.post(gw_url + "/v1/completions", content=content)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_route_and_wrong_method_are_openai_shaped(gw_url):
    r = httpx.get(gw_url + "/v1/nothing")
    assert r.status_code == 404
    assert "Unknown route" in r.json()["error"]["message"]
    r = httpx.get(gw_url + "/v1/chat/completions")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"]["message"]
    r = httpx.put(gw_url + "/healthz")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_valid_requests_still_pass(gw_url):
    r = httpx.post(gw_url + "/v1/completions", json={"model": MODEL, "prompt": [1, 2, 3]})
    assert r.status_code == 200
    assert r.json()["object"] == "text_completion"
