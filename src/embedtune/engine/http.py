"""What every HTTP provider shares: retries, a client-side rate limiter, and error translation.

Retries follow the usual discipline (as stamina does it): only named, retryable failures
(``TransientError``: 429, 5xx, timeouts, dropped connections, malformed answers) are retried, with
exponential backoff and full jitter, honouring the server's ``Retry-After``, capped both in
attempts and in total time. Everything else (401, a 400 for a bad input) fails at once.

The limiter keeps requests and tokens inside per-minute budgets over a sliding 60-second window,
the way servers count them, so a client that stays inside it is never throttled.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import AuthenticationError, ProviderError, TransientError, require

__all__ = [
    "RateLimiter",
    "RetryPolicy",
    "call_with_retries",
    "check_status",
    "error_detail",
    "post",
    "redact_url",
    "status_error",
]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to ``base_delay * 2**n``."""

    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 20.0
    max_total: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.max_total <= 0:
            raise ValueError("max_attempts must be at least 1 and the delays not negative")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        backoff = rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        if retry_after is not None:
            return min(max(retry_after, backoff), self.max_delay)
        return backoff


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    on_retry: Callable[[TransientError], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` until it returns, raises a non-transient error, or the caps are reached."""
    rng = rng or random.Random()
    start = time.monotonic()
    for attempt in range(policy.max_attempts):
        try:
            return fn()
        except TransientError as exc:
            if on_retry:
                on_retry(exc)
            wait = policy.delay(attempt, exc.retry_after, rng)
            spent = time.monotonic() - start
            if attempt + 1 == policy.max_attempts or spent + wait > policy.max_total:
                raise ProviderError(
                    f"{what} failed {attempt + 1} times in {spent:.1f} s; last error: {exc}. "
                    "The server may be overloaded: try again later or lower --concurrency"
                ) from exc
            policy.sleep(wait)
    raise AssertionError("unreachable")


class RateLimiter:
    """Requests and tokens per minute, over a sliding window, shared by all threads of a client.

    ``acquire(tokens)`` blocks until one more request of that many tokens fits both budgets, and
    records it; ``settle(ticket, tokens)`` corrects the record once the server has answered: the
    tokens it counted, and the time, since the server's window started when the request arrived,
    after we sent it, so a record kept from the send would leave the window too early.
    """

    def __init__(
        self,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.window = window
        # What one window admits: a shorter window enforces the same rate in slices.
        self._max_requests = None if requests_per_minute is None else max(1, int(requests_per_minute * window / 60))
        self._max_tokens = None if tokens_per_minute is None else tokens_per_minute * window / 60
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._log: deque[list[float]] = deque()  # [time, tokens], oldest first
        self._tokens = 0.0

    def acquire(self, tokens: int) -> list[float]:
        if self._max_tokens is not None and tokens > self._max_tokens:
            raise ProviderError(
                f"one request of {tokens} tokens can never fit {self.tpm} tokens per minute; "
                "lower the batch token budget"
            )
        while True:
            with self._lock:
                now = self._clock()
                self._expire(now)
                wait = self._wait(now, tokens)
                if wait <= 0:
                    ticket = [now, float(tokens)]
                    self._log.append(ticket)
                    self._tokens += tokens
                    return ticket
            self._sleep(wait)

    def settle(self, ticket: list[float], tokens: int) -> None:
        with self._lock:
            if any(entry is ticket for entry in self._log):
                self._tokens += tokens - ticket[1]
            ticket[0] = max(ticket[0], self._clock())
            ticket[1] = float(tokens)

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            self._tokens -= self._log.popleft()[1]

    def _wait(self, now: float, tokens: int) -> float:
        """Seconds until the oldest entries leave the window and the request fits."""
        wait = 0.0
        if self._max_requests is not None and len(self._log) >= self._max_requests:
            wait = max(wait, self._log[len(self._log) - self._max_requests][0] + self.window - now)
        if self._max_tokens is not None and self._tokens + tokens > self._max_tokens:
            excess = self._tokens + tokens - self._max_tokens
            for when, used in self._log:
                excess -= used
                if excess <= 0:
                    wait = max(wait, when + self.window - now)
                    break
        return wait + (1e-3 if wait > 0 else 0.0)


def redact_url(url: str) -> str:
    """A URL fit for messages: any user:password in it is dropped."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def post(client: Any, path: str, *, json: Any, headers: dict[str, str], what: str) -> Any:
    """``client.post`` (an ``httpx.Client``); a timeout or a failed connection is a
    ``TransientError`` (retried), named by ``what``."""
    httpx = require("httpx", "openai")
    try:
        return client.post(path, json=json, headers=headers)
    except httpx.TimeoutException:
        raise TransientError(f"{what}: the request timed out") from None
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: connection failed ({type(exc).__name__})") from None


def check_status(response: Any, *, what: str) -> None:
    """Nothing for a 200 answer; else the :func:`status_error` it is."""
    if response.status_code != 200:
        raise status_error(
            response.status_code, error_detail(response), what=what, retry_after=response.headers.get("retry-after")
        )


def status_error(status: int, detail: str, *, what: str, retry_after: str | None = None) -> ProviderError:
    """The exception for a non-2xx answer. ``detail`` is the server's message, never our request."""
    detail = " ".join(detail.split())[:300] or "no message"
    if status in (401, 403):
        return AuthenticationError(
            f"{what}: the server refused the credentials ({status}: {detail}); check the API key variable"
        )
    if status == 429 or status >= 500 or status == 408:
        return TransientError(f"{what}: HTTP {status}: {detail}", retry_after=_seconds(retry_after))
    return ProviderError(f"{what}: HTTP {status}: {detail}")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for APIs; backoff covers it


def error_detail(response) -> str:
    """What a server said went wrong: the ``error`` message of a JSON body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error if error is not None else body)
