"""The cluster-wide rate limit's buckets, on their own."""

from __future__ import annotations

import pytest

from coop.board.ratelimit import RateBucket


def test_requests_per_minute_allow_a_burst_then_one_a_second() -> None:
    bucket = RateBucket(rpm=60, tpm=0, now=0.0)
    assert all(bucket.acquire(100, 0.0) == 0.0 for _ in range(60))  # a minute's worth at once
    wait = bucket.acquire(100, 0.0)
    assert 0.9 <= wait <= 1.1  # then one a second
    assert bucket.acquire(100, wait) == 0.0 and bucket.acquire(100, wait) > 0


def test_tokens_per_minute_count_what_each_call_may_spend() -> None:
    bucket = RateBucket(rpm=0, tpm=6000, now=0.0)
    assert bucket.acquire(5000, 0.0) == 0.0
    assert bucket.acquire(2000, 0.0) == pytest.approx(10.0)  # 1000 over, at 100 tokens/s
    assert bucket.acquire(2000, 10.0) == 0.0


def test_a_call_larger_than_the_limit_goes_once_the_bucket_is_empty() -> None:
    bucket = RateBucket(rpm=0, tpm=1000, now=0.0)
    assert bucket.acquire(5000, 0.0) == 0.0  # else it never could


def test_no_limits_never_wait() -> None:
    assert RateBucket(rpm=0, tpm=0, now=0.0).acquire(10**9, 0.0) == 0.0
