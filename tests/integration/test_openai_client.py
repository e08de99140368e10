"""The official OpenAI Python client against the gateway."""

from __future__ import annotations

import openai
import pytest

from tests.support.harness import MODEL


@pytest.fixture
def client(sim_fleet, gateway):
    fleet = sim_fleet(2)
    gw = gateway(fleet.backend_settings())
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_streamed_chat_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a haiku about caches."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text) == 12
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens > 0


def test_non_streamed_chat_and_completion(client):
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 5
    completion = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4)
    assert completion.choices[0].text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_models_lists_the_simulated_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_errors_raise_the_right_client_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[])
    assert caught.value.param == "messages"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"sim_fault": "429"},
        )
