"""parse_request: every bad input is a 400 naming the offending field; good input passes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.api.request import RequestKind, parse_request, too_large
from gateway.errors import GatewayError

RID = b"req-1"
USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [USER]}
    body.update(fields)
    return body


def completion(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "prompt": "hello"}
    body.update(fields)
    return body


def rejected(kind: RequestKind, body: Any) -> GatewayError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(GatewayError) as info:
        parse_request(kind, raw, RID)
    error = info.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    return error


# --- accepted ----------------------------------------------------------------------------------


def test_valid_chat_request_keeps_the_exact_body() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true, "x":1}'
    request = parse_request("chat", raw, RID)
    assert request.kind == "chat"
    assert request.body is raw
    assert request.model == "m"
    assert request.stream is True
    assert request.request_id == RID
    assert request.data["x"] == 1


def test_stream_defaults_to_false() -> None:
    request = parse_request("chat", orjson.dumps(chat()), RID)
    assert request.stream is False
    assert parse_request("chat", orjson.dumps(chat(stream=None)), RID).stream is False


def test_stream_options_with_stream_true_is_accepted() -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    assert parse_request("chat", orjson.dumps(body), RID).stream is True


def test_null_stream_options_without_stream_is_accepted() -> None:
    assert parse_request("chat", orjson.dumps(chat(stream_options=None)), RID).stream is False


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None},
        {"role": "assistant"},
        {"role": "tool", "content": None, "tool_calls": []},
        {"role": "user", "content": ""},
        {"role": "user", "content": []},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://i"}}]},
    ],
)
def test_accepted_message_shapes(message: dict[str, Any]) -> None:
    body = chat(messages=[USER, message])
    assert parse_request("chat", orjson.dumps(body), RID).kind == "chat"


@pytest.mark.parametrize(
    "prompt",
    ["", "hello", ["a", "b"], [1, 2, 3], [0], [[1, 2], [3]]],
    ids=["empty-string", "string", "strings", "tokens", "one-token", "token-lists"],
)
def test_accepted_completion_prompts(prompt: Any) -> None:
    request = parse_request("completion", orjson.dumps(completion(prompt=prompt)), RID)
    assert request.kind == "completion"
    assert request.data["prompt"] == prompt


# --- rejected: envelope ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"model": "m",}', b"\xff\xfe"])
def test_not_json(raw: bytes) -> None:
    error = rejected("chat", raw)
    assert "not valid JSON" in error.message
    assert error.param is None


@pytest.mark.parametrize("body", [[], [chat()], "text", 3, None])
def test_not_an_object(body: Any) -> None:
    error = rejected("chat", body)
    assert "JSON object" in error.message
    assert error.param is None


def test_missing_model() -> None:
    body = chat()
    del body["model"]
    error = rejected("chat", body)
    assert error.param == "model"
    assert "provide a model" in error.message


@pytest.mark.parametrize("model", [3, "", ["m"], {"name": "m"}, True])
def test_model_not_a_non_empty_string(model: Any) -> None:
    assert rejected("chat", chat(model=model)).param == "model"


@pytest.mark.parametrize("stream", ["true", 1, 0, [], {}])
def test_stream_not_boolean(stream: Any) -> None:
    assert rejected("chat", chat(stream=stream)).param == "stream"


@pytest.mark.parametrize("stream", [False, None])
def test_stream_options_without_stream(stream: Any) -> None:
    body = chat(stream_options={"include_usage": True})
    if stream is not None:
        body["stream"] = stream
    error = rejected("chat", body)
    assert error.param == "stream_options"
    assert "stream" in error.message


@pytest.mark.parametrize("options", [True, "yes", [], 1])
def test_stream_options_not_an_object(options: Any) -> None:
    assert rejected("chat", chat(stream=True, stream_options=options)).param == "stream_options"


@pytest.mark.parametrize("value", ["true", 1, [], {}])
def test_include_usage_not_boolean(value: Any) -> None:
    error = rejected("chat", chat(stream=True, stream_options={"include_usage": value}))
    assert error.param == "stream_options.include_usage"


def test_completion_checks_stream_too() -> None:
    assert rejected("completion", completion(stream="yes")).param == "stream"


# --- rejected: messages ------------------------------------------------------------------------


def test_missing_messages() -> None:
    body = chat()
    del body["messages"]
    error = rejected("chat", body)
    assert error.param == "messages"
    assert "provide a `messages`" in error.message


@pytest.mark.parametrize("messages", [[], "hi", {"role": "user"}, 3])
def test_messages_not_a_non_empty_list(messages: Any) -> None:
    assert rejected("chat", chat(messages=messages)).param == "messages"


@pytest.mark.parametrize("message", ["hi", None, 3, ["user", "hi"]])
def test_message_not_an_object(message: Any) -> None:
    assert rejected("chat", chat(messages=[USER, message])).param == "messages.[1]"


@pytest.mark.parametrize(
    "message",
    [
        {"content": "hi"},
        {"role": None, "content": "hi"},
        {"role": "", "content": "hi"},
        {"role": 1},
    ],
)
def test_missing_or_bad_role(message: dict[str, Any]) -> None:
    error = rejected("chat", chat(messages=[USER, USER, message]))
    assert error.param == "messages.[2].role"


@pytest.mark.parametrize("role", ["user", "system", "tool"])
def test_null_content_is_only_for_assistants_and_tool_calls(role: str) -> None:
    error = rejected("chat", chat(messages=[{"role": role, "content": None}]))
    assert error.param == "messages.[0].content"


@pytest.mark.parametrize("content", [3, True, {"type": "text", "text": "a"}, 1.5])
def test_content_of_a_wrong_type(content: Any) -> None:
    error = rejected("chat", chat(messages=[{"role": "user", "content": content}]))
    assert error.param == "messages.[0].content"


@pytest.mark.parametrize("part", ["text", None, {"text": "a"}, {"type": 3, "text": "a"}], ids=str)
def test_content_part_without_a_type(part: Any) -> None:
    content = [{"type": "text", "text": "ok"}, part]
    error = rejected("chat", chat(messages=[USER, {"role": "user", "content": content}]))
    assert error.param == "messages.[1].content.[1]"


@pytest.mark.parametrize(
    "part", [{"type": "text"}, {"type": "text", "text": None}, {"type": "text", "text": 5}]
)
def test_text_part_without_a_text_string(part: dict[str, Any]) -> None:
    error = rejected("chat", chat(messages=[{"role": "user", "content": [part]}]))
    assert error.param == "messages.[0].content.[0].text"


def test_first_bad_message_is_reported() -> None:
    messages = [USER, {"role": "user"}, {"content": "x"}]
    assert rejected("chat", chat(messages=messages)).param == "messages.[1].content"


# --- rejected: completion prompt ---------------------------------------------------------------


def test_missing_prompt() -> None:
    body = completion()
    del body["prompt"]
    error = rejected("completion", body)
    assert error.param == "prompt"
    assert "provide a `prompt`" in error.message


@pytest.mark.parametrize(
    "prompt",
    [
        [],
        [[]],
        [True, 1],
        [1, False],
        [[1, True]],
        [[1], [2, True]],
        ["a", 1],
        [1, [2]],
        [1.5],
        [[1.5]],
        [None],
        3,
        {"text": "a"},
        True,
    ],
    ids=repr,
)
def test_bad_completion_prompts(prompt: Any) -> None:
    assert rejected("completion", completion(prompt=prompt)).param == "prompt"


def test_chat_does_not_need_a_prompt_and_completion_does_not_need_messages() -> None:
    assert parse_request("chat", orjson.dumps(chat()), RID).kind == "chat"
    assert parse_request("completion", orjson.dumps(completion()), RID).kind == "completion"
    assert rejected("completion", chat()).param == "prompt"
    assert rejected("chat", completion()).param == "messages"


def test_too_large_is_a_413_with_the_limit() -> None:
    error = too_large(1024)
    assert error.status == 413
    assert "1024" in error.message
    assert error.code == "request_too_large"


# --- usage_body: asking for usage on every stream ----------------------------------------------


def test_usage_body_prepends_stream_options_and_keeps_the_rest_byte_identical() -> None:
    raw = b'{"model":"m", "messages":[{"role":"user","content":"hi"}],"stream":true,"x": 1.50}'
    request = parse_request("chat", raw, RID)
    assert request.body is raw  # what the client sent is untouched
    assert request.usage_body == (
        b'{"stream_options":{"include_usage":true},'
        b'"model":"m", "messages":[{"role":"user","content":"hi"}],"stream":true,"x": 1.50}'
    )
    assert request.usage_body is not None
    assert orjson.loads(request.usage_body) == {
        **request.data,
        "stream_options": {"include_usage": True},
    }


def test_usage_body_prepends_after_leading_whitespace() -> None:
    raw = b'  \n{\n  "model": "m",\n  "prompt": "hello",\n  "stream": true\n}\n'
    request = parse_request("completion", raw, RID)
    assert request.usage_body == (
        b'{"stream_options":{"include_usage":true},\n  "model": "m",\n  "prompt": "hello",'
        b'\n  "stream": true\n}\n'
    )
    assert orjson.loads(request.usage_body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "options",
    [{}, {"include_usage": False}, {"continuous_usage_stats": False, "include_usage": False}],
    ids=repr,
)
def test_usage_body_merges_into_stream_options_without_include_usage(
    options: dict[str, Any],
) -> None:
    body = chat(stream=True, stream_options=options, temperature=0.5)
    request = parse_request("chat", orjson.dumps(body), RID)
    assert request.usage_body is not None
    sent = orjson.loads(request.usage_body)
    assert sent == {**body, "stream_options": {**options, "include_usage": True}}
    assert request.data["stream_options"] == options  # the client's view is unchanged


def test_usage_body_none_when_the_client_asked_for_usage() -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    assert parse_request("chat", orjson.dumps(body), RID).usage_body is None


@pytest.mark.parametrize(
    "options",
    [{"continuous_usage_stats": True}, {"continuous_usage_stats": True, "include_usage": False}],
    ids=repr,
)
def test_usage_body_none_when_the_client_asked_for_usage_on_every_chunk(
    options: dict[str, Any],
) -> None:
    # Usage on every chunk could not be taken back out of them: the request goes as it is.
    body = chat(stream=True, stream_options=options)
    assert parse_request("chat", orjson.dumps(body), RID).usage_body is None


def test_usage_body_with_null_stream_options() -> None:
    body = chat(stream=True, stream_options=None)
    request = parse_request("chat", orjson.dumps(body), RID)
    assert request.stream is True
    assert request.usage_body is not None
    sent = orjson.loads(request.usage_body)
    assert sent == {**body, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    "fields", [{}, {"stream": False}, {"stream": None}, {"stream_options": None}], ids=repr
)
def test_usage_body_none_without_streaming(fields: dict[str, Any]) -> None:
    request = parse_request("chat", orjson.dumps(chat(**fields)), RID)
    assert request.stream is False
    assert request.usage_body is None


# --- max_tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"max_tokens": 64}, 64),
        ({"max_completion_tokens": 32}, 32),
        ({"max_completion_tokens": 32, "max_tokens": 64}, 32),
        ({"max_completion_tokens": None, "max_tokens": 64}, 64),
        ({"max_completion_tokens": 0, "max_tokens": 64}, 64),
        ({"max_tokens": 0}, None),
        ({"max_tokens": -1}, None),
        ({"max_tokens": True}, None),
        ({"max_tokens": 12.0}, None),
        ({"max_tokens": "12"}, None),
    ],
    ids=repr,
)
def test_max_tokens(fields: dict[str, Any], expected: int | None) -> None:
    assert parse_request("chat", orjson.dumps(chat(**fields)), RID).max_tokens == expected
