"""Exact prompt counts by a model's tokenizer near lane bounds and windows, through a gateway.

The tokenizer is a real Hugging Face one built here: a word-level vocabulary split on
whitespace, so every word is one token. Prompts of one-letter words ("x x x ...") are two
bytes per token, while the gateway's estimate assumes four (calibration learning off): the
estimate says half of what the tokenizer counts.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from gateway.admission.tokens import ModelTokenizer, PromptCounter, load_tokenizer, prompt_text
from gateway.settings import ConfigError, settings_from_mapping
from tests.support.harness import MODEL

BOUND = 1000
MAX_TOKENS = 8
NO_LEARNING = {"learn": False}
URL = "/v1/chat/completions"


def write_tokenizer(path: Path) -> Path:
    """A word-level tokenizer: each whitespace-separated word is one token."""
    vocab = {"[UNK]": 0, "x": 1, "user": 2, "hello": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path))
    return path


@pytest.fixture
def tokenizer_file(tmp_path: Path) -> Path:
    return write_tokenizer(tmp_path / "tokenizer.json")


def chat(words: int, word: str = "x") -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{word} " * words}],
        "max_tokens": MAX_TOKENS,
    }


def exact_context(words: int) -> int:
    # "user" and the words, 4 template tokens for the message and 4 for the reply's header.
    return 1 + words + 4 * 2 + MAX_TOKENS


# 1500 words: about 3012 rendered bytes, an estimate of 753 + 8 tokens, within 30% under the
# bound; counted, 1517 tokens, over it.
NEAR = 1500


def lanes_fleet(fleet: Any) -> list[dict[str, Any]]:
    entries = fleet.backend_settings()
    entries[0]["pool"] = "short"
    entries[1]["pool"] = "long"
    return entries


LANES = [
    {"name": "short", "up_to_tokens": BOUND, "pools": ["short"], "spill": ["long"]},
    {"name": "long", "pools": ["long"]},
]


def tokenizers(file: Path) -> dict[str, Any]:
    return {MODEL: {"file": str(file)}}


def test_a_prompt_the_estimate_calls_short_goes_to_the_long_lane_by_its_count(
    sim_fleet, gateway, tokenizer_file
):
    fleet = sim_fleet(2)
    entries = lanes_fleet(fleet)
    plain = gateway(entries, admission={"lanes": LANES}, calibration=NO_LEARNING)
    counting = gateway(
        entries,
        admission={"lanes": LANES},
        calibration=NO_LEARNING,
        tokenizers=tokenizers(tokenizer_file),
    )
    assert exact_context(NEAR) > BOUND
    by_estimate = httpx.post(plain.url + URL, json=chat(NEAR), timeout=10)
    assert by_estimate.headers["x-gateway-backend"] == "sim-0"
    by_count = httpx.post(counting.url + URL, json=chat(NEAR), timeout=10)
    assert by_count.status_code == 200, by_count.text
    assert by_count.headers["x-gateway-backend"] == "sim-1"
    counter = counting.deps.placer.counter
    assert counter is not None
    assert counter.counted == 1


def test_a_prompt_the_estimate_fits_is_a_400_when_its_count_exceeds_every_window(
    sim_fleet, gateway, tokenizer_file
):
    fleet = sim_fleet(2)
    entries = fleet.backend_settings(max_context=BOUND)
    gw = gateway(entries, calibration=NO_LEARNING, tokenizers=tokenizers(tokenizer_file))
    r = httpx.post(gw.url + URL, json=chat(NEAR), timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"about {exact_context(NEAR)} tokens (prompt tokens plus max_tokens)" in error["message"]
    assert sum(b.stats.requests_total for b in fleet.backends) == 0
    # Six bytes per token: an estimate of about 1211 tokens, over the window; counted, 817.
    fits = httpx.post(gw.url + URL, json=chat(800, "hello"), timeout=10)
    assert fits.status_code == 200, fits.text
    assert fleet.backends[0].stats.requests_total + fleet.backends[1].stats.requests_total == 1


def test_prompts_far_from_every_bound_are_not_tokenized(sim_fleet, gateway, tokenizer_file):
    fleet = sim_fleet(2)
    entries = lanes_fleet(fleet)
    for entry in entries:
        entry["max_context"] = 32768
    gw = gateway(
        entries,
        admission={"lanes": LANES},
        calibration=NO_LEARNING,
        tokenizers=tokenizers(tokenizer_file),
    )
    counter = gw.deps.placer.counter
    assert counter is not None
    # Estimates of about 30 and 5000 tokens: no count can move either across 1000 or 32768.
    short = httpx.post(gw.url + URL, json=chat(50), timeout=10)
    long = httpx.post(gw.url + URL, json=chat(10_000), timeout=10)
    assert (short.headers["x-gateway-backend"], long.headers["x-gateway-backend"]) == (
        "sim-0",
        "sim-1",
    )
    assert counter.counted == 0
    httpx.post(gw.url + URL, json=chat(NEAR), timeout=10)
    assert counter.counted == 1


def test_a_counted_prompt_reserves_its_count_against_the_tenants_tokens(
    sim_fleet, gateway, tokenizer_file
):
    fleet = sim_fleet(1)
    limit = 1_000_000
    tiers = {"standard": {"limits": {"tokens_per_min": limit}}}
    gw = gateway(
        fleet.backend_settings(max_context=BOUND),
        admission={"tiers": tiers},
        calibration=NO_LEARNING,
        tokenizers=tokenizers(tokenizer_file),
    )
    words = 800  # an estimate of about 1211 tokens, near the window; counted, 817
    r = httpx.post(gw.url + URL, json=chat(words, "hello"), timeout=10)
    assert r.status_code == 200, r.text
    remaining = int(r.headers["x-ratelimit-remaining-tokens"])
    assert abs((limit - remaining) - exact_context(words)) <= 2


def counter_over(file: Path, inline_chars: int = 1024) -> PromptCounter:
    return PromptCounter(
        {MODEL: ModelTokenizer(load_tokenizer(file))}, [BOUND], 256, inline_chars=inline_chars
    )


def test_counts_on_the_loop_and_in_a_thread_agree(tokenizer_file):
    body = {"messages": [{"role": "user", "content": "hello " * 600}]}
    inline = counter_over(tokenizer_file, inline_chars=1 << 20)
    threaded = counter_over(tokenizer_file, inline_chars=0)
    counts = [asyncio.run(c.count(MODEL, "chat", body)) for c in (inline, threaded)]
    assert counts == [1 + 600 + 8] * 2
    assert asyncio.run(inline.count("another-model", "chat", body)) is None


def test_token_id_prompts_are_counted_by_their_length(tokenizer_file):
    counter = counter_over(tokenizer_file)
    assert asyncio.run(counter.count(MODEL, "completion", {"prompt": [5, 6, 7]})) == 3
    assert asyncio.run(counter.count(MODEL, "completion", {"prompt": "x x x x"})) == 4


def test_the_text_counted_holds_tools_parts_and_tool_calls():
    text = prompt_text(
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "assistant", "tool_calls": [{"id": "c1"}], "content": None},
            ],
        },
        "chat",
    )
    assert text.messages == 2
    assert "be brief" in text.pieces
    assert "assistant" in text.pieces
    assert any('"name":"f"' in piece for piece in text.pieces)
    assert any('"id":"c1"' in piece for piece in text.pieces)


def test_a_tokenizer_failure_keeps_the_estimate_and_says_so(tokenizer_file, caplog):
    counter = counter_over(tokenizer_file)
    body = {"messages": [{"role": "user", "content": "x \ud800 x"}]}  # a lone surrogate
    with caplog.at_level(logging.WARNING, logger="gateway.admission"):
        assert asyncio.run(counter.count(MODEL, "chat", body)) is None
    assert counter.failed == 1
    assert counter.counted == 0
    assert "token count failed for model sim-llama-8b" in caplog.text


BACKENDS = [{"id": "a", "url": "http://127.0.0.1:9", "models": [MODEL]}]


def config_error(file: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"backends": BACKENDS, "tokenizers": {MODEL: {"file": file}}})
    return str(caught.value)


def test_a_missing_or_invalid_tokenizer_file_is_an_error_naming_its_key(tmp_path):
    missing = config_error(str(tmp_path / "absent.json"))
    assert f"tokenizers.{MODEL}.file" in missing
    assert "No such file" in missing
    not_json = tmp_path / "not.json"
    not_json.write_text("vocab: 1\n")
    assert "is not a Hugging Face tokenizer file" in config_error(str(not_json))
    other_json = tmp_path / "other.json"
    other_json.write_text('{"model": {"type": "nothing"}}')
    error = config_error(str(other_json))
    assert f"tokenizers.{MODEL}.file" in error
    assert "not a Hugging Face tokenizer" in error


def test_without_the_tokenizers_package_the_error_names_the_key_and_the_extra(tokenizer_file):
    script = (
        "import sys; sys.modules['tokenizers'] = None\n"
        "from gateway.settings import settings_from_mapping, ConfigError\n"
        "try:\n"
        f"    settings_from_mapping({{'backends': {BACKENDS!r},"
        f" 'tokenizers': {{{MODEL!r}: {{'file': {str(tokenizer_file)!r}}}}}}})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"tokenizers.{MODEL}.file" in out
    assert "prefix-gateway[tokenizers]" in out
