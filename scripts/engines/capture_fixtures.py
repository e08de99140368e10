"""Capture real vLLM responses (metrics, streams, errors, models, tokenize) as test fixtures."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

KEEP_METRIC_PREFIXES = ("vllm:", "process_start_time_seconds")
WORDS = [
    "river",
    "stone",
    "market",
    "window",
    "garden",
    "letter",
    "morning",
    "silver",
    "quiet",
    "harbor",
    "engine",
    "meadow",
    "lantern",
    "paper",
    "castle",
    "orchard",
    "thunder",
    "velvet",
    "candle",
    "mirror",
]


def prose(seed: int, n_words: int) -> str:
    """Deterministic English-like words (a linear congruential walk over a word list)."""
    state = seed * 2654435761 % 2**32
    out: list[str] = []
    for _ in range(n_words):
        state = (state * 1103515245 + 12345) % 2**31
        out.append(WORDS[state % len(WORDS)])
    return " ".join(out)


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    """One HTTP request; returns status and raw body (error statuses included)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def trim_metrics(text: str) -> str:
    """Only the `vllm:` families and `process_start_time_seconds`, comments included."""
    kept: list[str] = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("# ") else line
        if name.startswith(KEEP_METRIC_PREFIXES):
            kept.append(line)
    return "\n".join(kept) + "\n"


def status_body(status: int, raw: bytes) -> str:
    """A status and a JSON body as one pretty JSON document."""
    return json.dumps({"status": status, "body": json.loads(raw)}, indent=2) + "\n"


def capture(base: str, model: str, out: Path, max_model_len: int) -> None:
    """Send the requests and write one file per sample into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    system = prose(1, 400)
    chat = {"model": model, "max_tokens": 8, "temperature": 0}
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hello?"}]
    call(base, "POST", "/v1/chat/completions", {**chat, "messages": messages})
    status, raw = call(base, "POST", "/v1/chat/completions", {**chat, "messages": messages})
    (out / "chat_nonstream.json").write_text(status_body(status, raw))
    stream = {**chat, "messages": messages, "stream": True}
    with_usage = {**stream, "stream_options": {"include_usage": True}}
    (out / "chat_stream_usage.sse").write_bytes(
        call(base, "POST", "/v1/chat/completions", with_usage)[1]
    )
    (out / "chat_stream_no_usage.sse").write_bytes(
        call(base, "POST", "/v1/chat/completions", stream)[1]
    )
    empty_options = {**stream, "stream_options": {}}  # include_usage defaults to false
    (out / "chat_stream_empty_options.sse").write_bytes(
        call(base, "POST", "/v1/chat/completions", empty_options)[1]
    )
    over = {**chat, "messages": messages, "max_tokens": max_model_len - 100}
    status, raw = call(base, "POST", "/v1/chat/completions", over)
    answer = json.loads(raw)
    summary = {
        "request": "prompt + max_tokens over max_model_len, each alone within it",
        "status": status,
        "finish_reason": answer["choices"][0]["finish_reason"],
        "usage": answer["usage"],
    }
    (out / "prompt_plus_max_tokens_over_window.json").write_text(
        json.dumps(summary, indent=2) + "\n"
    )
    completion = {"model": model, "prompt": system, "max_tokens": 8, "temperature": 0}
    status, raw = call(base, "POST", "/v1/completions", completion)
    (out / "completion_nonstream.json").write_text(status_body(status, raw))
    comp_stream = {**completion, "stream": True, "stream_options": {"include_usage": True}}
    (out / "completion_stream_usage.sse").write_bytes(
        call(base, "POST", "/v1/completions", comp_stream)[1]
    )
    errors = {
        "error_context_overflow.json": {**completion, "prompt": prose(2, max_model_len * 2)},
        "error_max_tokens_negative.json": {**chat, "messages": messages, "max_tokens": -1},
        "error_max_tokens_too_large.json": {
            **chat,
            "messages": messages,
            "max_tokens": max_model_len * 2,
        },
        "error_model_not_found.json": {**chat, "messages": messages, "model": "no-such-model"},
    }
    for name, body in errors.items():
        path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        status, raw = call(base, "POST", path, body)
        (out / name).write_text(status_body(status, raw))
    (out / "models.json").write_text(status_body(*call(base, "GET", "/v1/models")))
    tokenize = {
        "prompt": call(base, "POST", "/tokenize", {"model": model, "prompt": "Hello river"}),
        "messages": call(base, "POST", "/tokenize", {"model": model, "messages": messages[1:]}),
    }
    doc = {k: {"status": s, "body": json.loads(b)} for k, (s, b) in tokenize.items()}
    (out / "tokenize.json").write_text(json.dumps(doc, indent=2) + "\n")
    metrics = call(base, "GET", "/metrics")[1].decode()
    (out / "metrics.txt").write_text(trim_metrics(metrics))


def main(argv: list[str] | None = None) -> int:
    """Capture against a running vLLM server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="a running vLLM, e.g. 127.0.0.1:8000")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/vllm"))
    args = parser.parse_args(argv)
    base = args.base_url if "://" in args.base_url else f"http://{args.base_url}"
    capture(base.rstrip("/"), args.model, args.out, args.max_model_len)
    print(f"fixtures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
