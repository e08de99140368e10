"""Exact prompt token counts from a model's Hugging Face tokenizer, taken only near a bound.

"Exact" means the tokenizer's count of the prompt's text as the gateway renders it for hashing
(each message's role, text and other fields, the tools' JSON; a completion's prompt), plus
`per_message_tokens` for each message and once for the reply's header: a chat template's
special tokens, which the gateway does not render. It is within a few tokens of what the
engine counts, where the calibrated estimate (rendered bytes / learned bytes per token) can be
off by half for text unlike the traffic it learned from (code, numbers, other scripts).

Counting costs about 0.6-0.9 ms per 1000 tokens with the fast (Rust) tokenizer, so it is done
only when the estimate of prompt plus output is within `COUNT_MARGIN` of a lane bound or of a
candidate's window, where it can change the decision; long texts are counted in a thread (the
tokenizer releases the GIL), so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.fleet.registry import Backend
from gateway.prefix.render import PromptKind, canonical_json
from gateway.routing.filters import context_tokens
from gateway.routing.types import RouteRequest
from gateway.settings import ConfigError, TokenizerSettings

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger("gateway.admission")

TOKENIZERS_EXTRA = "pip install 'prefix-gateway[tokenizers]'"
# Counted when the estimate is within this fraction of a bound, either side.
COUNT_MARGIN = 0.3
# Texts up to this many characters (about 250 tokens, 0.2 ms) are counted on the event loop;
# longer ones in a thread, whose hand-off costs more than counting a short text.
INLINE_CHARS = 1024


def tokenizers_missing() -> str | None:
    """Why exact counting cannot run here (the `tokenizers` package missing), else None."""
    try:
        import tokenizers  # noqa: F401
    except ImportError as exc:
        return f"exact token counts need the `tokenizers` package ({exc}): {TOKENIZERS_EXTRA}"
    return None


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a Hugging Face `tokenizer.json`; ValueError saying why it cannot be used."""
    missing = tokenizers_missing()
    if missing is not None:
        raise ValueError(missing)
    from tokenizers import Tokenizer

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ValueError(f"cannot read tokenizer file {path}: {reason}") from None
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:
        raise ValueError(f"{path} is not a Hugging Face tokenizer file: {exc}") from None
    # A file may set truncation or padding for training; a count needs neither.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@dataclass(frozen=True, slots=True)
class ModelTokenizer:
    """A model's tokenizer and the tokens its chat template adds per message."""

    tokenizer: Tokenizer
    per_message_tokens: int = 4

    def count(self, pieces: Sequence[str]) -> int:
        """Tokens of the pieces, each tokenized on its own (as a template separates them)."""
        if not pieces:
            return 0
        encodings = self.tokenizer.encode_batch_fast(list(pieces), add_special_tokens=False)
        return sum(len(encoding) for encoding in encodings)


@dataclass(frozen=True, slots=True)
class PromptText:
    """A prompt's text pieces, its message count, and tokens known without a tokenizer."""

    pieces: list[str]
    messages: int = 0
    known_tokens: int = 0

    @property
    def chars(self) -> int:
        """Characters to tokenize."""
        return sum(len(piece) for piece in self.pieces)


def _json_text(value: Any) -> str:
    return canonical_json(value).decode("utf-8", "replace")


def _content_pieces(content: Any, pieces: list[str]) -> None:
    if content is None:
        return
    if isinstance(content, str):
        pieces.append(content)
        return
    if not isinstance(content, list):
        pieces.append(_json_text(content))
        return
    for part in content:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        else:
            pieces.append(_json_text(part))


def _message_pieces(message: Any, pieces: list[str]) -> None:
    if not isinstance(message, Mapping):
        pieces.append(_json_text(message))
        return
    for key, value in message.items():
        if value is None:
            continue
        if key == "content":
            _content_pieces(value, pieces)
        elif isinstance(value, str):
            pieces.append(value)  # role, name, tool_call_id
        else:
            pieces.append(_json_text(value))  # tool_calls and the like


def _prompt_pieces(prompt: Any) -> PromptText:
    if isinstance(prompt, str):
        return PromptText([prompt])
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return PromptText(list(prompt))
    if isinstance(prompt, list) and prompt and all(type(p) is int for p in prompt):
        return PromptText([], known_tokens=len(prompt))
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(p, list) and all(type(t) is int for t in p) for p in prompt)
    ):
        return PromptText([], known_tokens=sum(len(p) for p in prompt))
    return PromptText([] if prompt is None else [_json_text(prompt)])


def prompt_text(body: Mapping[str, Any], kind: PromptKind) -> PromptText:
    """The text pieces an engine tokenizes for this request (token-id prompts are counted)."""
    if kind == "completion":
        return _prompt_pieces(body.get("prompt"))
    pieces: list[str] = []
    for field in ("tools", "functions"):
        value = body.get(field)
        if value:
            pieces.append(_json_text(value))
    messages = body.get("messages")
    if not isinstance(messages, list):
        if messages is not None:
            pieces.append(_json_text(messages))
        return PromptText(pieces)
    for message in messages:
        _message_pieces(message, pieces)
    return PromptText(pieces, messages=len(messages))


def near(value: float, bound: float, margin: float) -> bool:
    """Whether `value` is within `margin` (a fraction of `bound`) of `bound`, either side."""
    return abs(value - bound) <= margin * bound


class PromptCounter:
    """Counts a request's prompt tokens exactly, for models with a tokenizer, when it matters.

    `counted` and `failed` count the requests tokenized and the tokenizer failures.
    """

    def __init__(
        self,
        tokenizers: Mapping[str, ModelTokenizer],
        lane_bounds: Sequence[int],
        default_output_tokens: float,
        margin: float = COUNT_MARGIN,
        inline_chars: int = INLINE_CHARS,
    ) -> None:
        self._tokenizers = dict(tokenizers)
        self._lane_bounds = tuple(lane_bounds)
        self._default_output = default_output_tokens
        self._margin = margin
        self._inline_chars = inline_chars
        self.counted = 0
        self.failed = 0

    def wanted(self, route: RouteRequest, candidates: Sequence[Backend]) -> bool:
        """Whether an exact count could change where (or whether) `route` goes: its model has
        a tokenizer and its estimated context is near a lane bound or a candidate's window."""
        if route.model not in self._tokenizers:
            return False
        margin = self._margin
        for backend in candidates:
            tokens = context_tokens(route, backend, self._default_output)
            window = backend.max_context
            if window is not None and near(tokens, window, margin):
                return True
            if any(near(tokens, bound, margin) for bound in self._lane_bounds):
                return True
        return False

    async def count(self, model: str, kind: PromptKind, body: Mapping[str, Any]) -> int | None:
        """The prompt's tokens by `model`'s tokenizer; None without one, or when it fails
        (the caller keeps the estimate)."""
        tokenizer = self._tokenizers.get(model)
        if tokenizer is None:
            return None
        try:
            text = prompt_text(body, kind)
            if text.chars <= self._inline_chars:
                tokens = tokenizer.count(text.pieces)
            else:
                tokens = await asyncio.to_thread(tokenizer.count, text.pieces)
        except Exception as exc:  # a tokenizer failure must not fail the request
            self.failed += 1
            log.warning("token count failed for model %s, using the estimate: %r", model, exc)
            return None
        self.counted += 1
        template = tokenizer.per_message_tokens * (text.messages + 1) if text.messages else 0
        return max(1, text.known_tokens + tokens + template)


def build_counter(
    tokenizers: Mapping[str, TokenizerSettings],
    lane_bounds: Sequence[int],
    default_output_tokens: float,
) -> PromptCounter | None:
    """A counter over the configured tokenizer files, or None when none is configured.

    The files were read once when the settings were validated; a file changed since then that
    no longer loads is a ConfigError naming its key.
    """
    if not tokenizers:
        return None
    loaded = {}
    for model, item in tokenizers.items():
        try:
            loaded[model] = ModelTokenizer(load_tokenizer(item.file), item.per_message_tokens)
        except ValueError as exc:
            raise ConfigError(f"tokenizers.{model}.file: {exc}") from None
    return PromptCounter(loaded, lane_bounds, default_output_tokens)
