"""A cheap scan of a response's tail for the usage the backend reported."""

from __future__ import annotations

_CACHED = b'"cached_tokens"'
_USAGE = b'"prompt_tokens"'


def reported_cached_tokens(tail: bytes, absent_means_zero: bool = False) -> int | None:
    """`usage.prompt_tokens_details.cached_tokens` from the last bytes of a response, if present.

    vLLM omits the field when it is zero, and every engine omits it when reporting is off; so a
    usage block without it means zero only for a backend known to report (`absent_means_zero`).
    """
    at = tail.rfind(_CACHED)
    if at < 0:
        return 0 if absent_means_zero and _USAGE in tail else None
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
