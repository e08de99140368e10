"""A cheap scan of a response's tail for the usage the backend reported."""

from __future__ import annotations

_CACHED = b'"cached_tokens"'


def reported_cached_tokens(tail: bytes) -> int | None:
    """`usage.prompt_tokens_details.cached_tokens` from the last bytes of a response, if present.

    Only explicit values count: engines omit the field when they don't report (vLLM without
    `--enable-prompt-tokens-details`) or when it is zero, so absence says nothing.
    """
    at = tail.rfind(_CACHED)
    if at < 0:
        return None
    i = at + len(_CACHED)
    n = len(tail)
    while i < n and tail[i] in b" \t:":
        i += 1
    start = i
    while i < n and 48 <= tail[i] <= 57:
        i += 1
    if i == start:
        return None
    return int(tail[start:i])
