"""How backend statuses and Retry-After headers come out to the client."""

from __future__ import annotations

import pytest

from gateway.fleet.adapters.base import retry_after_seconds
from gateway.fleet.adapters.engines import adapter_for


@pytest.mark.parametrize("status", [100, 101, 199, 201, 204, 301, 302, 304, 307, 600, 999])
def test_statuses_a_client_cannot_take_become_502(status: int) -> None:
    error = adapter_for("vllm").normalize_error(status, b"")
    assert error.status == 502
    assert str(status) in error.message
    assert error.retry_after_s is None


@pytest.mark.parametrize("status", [400, 401, 404, 429, 503, 599])
def test_errors_keep_their_status(status: int) -> None:
    assert adapter_for("openai").normalize_error(status, b"{}").status == status


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(b"7", 7), (b" 30 ", 30), (b"0", 0), (b"Wed, 21 Oct 2026 07:28:10 GMT", 10)],
)
def test_retry_after_forms(header: bytes, seconds: int) -> None:
    now = 1792567680.0  # 2026-10-21 07:28:00 UTC
    assert retry_after_seconds(header, now) == seconds


@pytest.mark.parametrize("header", [None, b"soon", b"-3", b"1.5", b"Wed, 99 Foo 2026"])
def test_unreadable_retry_after_is_none(header: bytes | None) -> None:
    assert retry_after_seconds(header) is None


def test_the_backends_retry_after_is_kept_and_zero_means_one() -> None:
    adapter = adapter_for("vllm")
    assert adapter.normalize_error(429, b"", b"12").retry_after_s == 12
    assert adapter.normalize_error(503, b"", b"0").retry_after_s == 1
    assert adapter.normalize_error(503, b"").retry_after_s == 1
    assert adapter.normalize_error(500, b"", b"12").retry_after_s is None
