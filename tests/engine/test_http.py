import random

import pytest

from embedtune.engine.http import RateLimiter, RetryPolicy, call_with_retries, redact_url, status_error
from embedtune.errors import AuthenticationError, ProviderError, TransientError


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_retries_transient_errors_until_success():
    slept = []
    attempts = iter([TransientError("429", retry_after=1.5), TransientError("503"), "ok"])

    def flaky():
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = RetryPolicy(base_delay=0.1, sleep=slept.append)
    assert call_with_retries(flaky, policy, what="test", rng=random.Random(0)) == "ok"
    assert len(slept) == 2
    assert slept[0] == 1.5  # Retry-After is honoured when it exceeds the backoff
    assert 0 <= slept[1] <= 0.2  # full jitter within base * 2**attempt


def test_gives_up_after_max_attempts_with_one_line():
    calls = []

    def always():
        calls.append(1)
        raise TransientError("HTTP 500: boom")

    with pytest.raises(ProviderError, match=r"test failed 3 times in .* last error: HTTP 500: boom"):
        call_with_retries(always, RetryPolicy(max_attempts=3, sleep=lambda s: None), what="test")
    assert len(calls) == 3


def test_total_time_cap():
    def always():
        raise TransientError("slow", retry_after=10)

    with pytest.raises(ProviderError, match="failed 1 times"):
        call_with_retries(always, RetryPolicy(max_total=5, sleep=lambda s: None), what="t")


def test_fatal_errors_are_not_retried():
    calls = []

    def unauthorised():
        calls.append(1)
        raise AuthenticationError("no")

    with pytest.raises(AuthenticationError):
        call_with_retries(unauthorised, RetryPolicy(sleep=lambda s: None), what="t")
    assert calls == [1]


def test_rate_limiter_keeps_requests_and_tokens_inside_the_window():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=10, tokens_per_minute=1000, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(35):
        limiter.acquire(50)
        starts.append(clock.now)
    # No 60-second window ever holds more than 10 requests.
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 60) <= 10
    assert starts[9] == 0 and starts[10] >= 60 and starts[-1] >= 180

    clock2 = FakeClock()
    tokens = RateLimiter(tokens_per_minute=1000, clock=clock2, sleep=clock2.sleep)
    for _ in range(4):
        tokens.acquire(400)
    assert clock2.now >= 60  # 400 + 400 fit; the third waits for the first to leave the window


def test_settle_corrects_the_estimate():
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=1000, clock=clock, sleep=clock.sleep)
    ticket = limiter.acquire(900)
    limiter.settle(ticket, 100)  # the server counted fewer tokens than estimated
    limiter.acquire(800)
    assert clock.now == 0


def test_a_request_larger_than_the_budget_is_an_error():
    with pytest.raises(ProviderError, match="can never fit"):
        RateLimiter(tokens_per_minute=100).acquire(101)


def test_redact_and_status_errors():
    assert redact_url("https://user:secret@api.example.com:8443/v1") == "https://api.example.com:8443/v1"
    assert isinstance(status_error(429, "slow down", what="x", retry_after="2"), TransientError)
    assert status_error(429, "", what="x", retry_after="2").retry_after == 2.0
    assert isinstance(status_error(503, "", what="x"), TransientError)
    assert isinstance(status_error(401, "bad key", what="x"), AuthenticationError)
    assert not isinstance(status_error(404, "no such model", what="x"), TransientError)


def test_a_shorter_window_enforces_the_same_rate_in_slices():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, window=10, clock=clock, sleep=clock.sleep)
    for _ in range(25):
        limiter.acquire(1)
    assert 20 <= clock.now < 30  # 10 per 10-second slice: the 21st to 25th wait for the third slice
