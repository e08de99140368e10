"""Fuzzing request bodies over real HTTP: the OpenAPI schema (schemathesis) and raw JSON values."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway_process import GatewayProcess
from tests.support.harness import MODEL, start_sim_fleet

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROUTES = ("/v1/chat/completions", "/v1/completions")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    fleet = start_sim_fleet(2)
    server = {"max_body_bytes": 65536}
    process = GatewayProcess(
        tmp_path_factory.mktemp("fuzz"), fleet.backend_settings(), server=server
    )
    process.start()
    yield process
    process.stop()
    fleet.server.stop()


@pytest.fixture(scope="module")
def client(gw):
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        yield c


def check(response: httpx.Response) -> None:
    """No 5xx; every error in OpenAI's shape."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str)


@pytest.mark.parametrize("path", ROUTES)
def test_schemathesis_cases_never_5xx(gw, client, path):
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operation = schema[path]["POST"]

    @FUZZ
    @given(operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        check(client.post(path, content=json.dumps(case.body)))

    run()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "", "nope"]) | json_values,
        "messages": json_values
        | st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant", ""]) | json_values},
                optional={"content": json_values, "name": json_values, "tool_calls": json_values},
            ),
            max_size=3,
        ),
        "prompt": json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "tools": json_values,
        "max_tokens": st.integers(min_value=-5, max_value=8) | json_values,
    },
)


@pytest.mark.parametrize("path", ROUTES)
def test_json_bodies_never_5xx(client, path):
    @FUZZ
    @given(fields | json_values)
    def run(body: object) -> None:
        check(client.post(path, content=json.dumps(body)))

    run()


@FUZZ
@given(st.binary(max_size=200))
def test_raw_bytes_never_5xx(client, body):
    check(client.post("/v1/chat/completions", content=body))


def test_serves_after_fuzzing(client):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    assert client.get("/healthz").status_code == 200
