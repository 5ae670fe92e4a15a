"""API keys and each key's budgets.

Keys come from an environment variable (``EMBEDTUNE_API_KEYS``, comma-separated) and/or a file
(one key per line; blank lines and ``#`` comments ignored), read by the CLI at the edge. A client
sends one as ``Authorization: Bearer KEY``. The ring keeps only SHA-256 digests and compares the
digest of what was sent with every one of them with ``hmac.compare_digest``, without stopping at
the first match, so the time taken says nothing about the keys. A key is known inside the
service by its position (``key 2``), never by its text: no message, log line or metric holds a key.

Budgets are per key: requests and tokens per minute over a sliding window, kept by the same
:class:`~embedtune.engine.http.RateLimiter` the HTTP providers use on the client side, here asked
without waiting: a request that does not fit is refused with 429 and ``Retry-After`` saying when
it would.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..engine.http import RateLimiter
from ..errors import ConfigError
from .errors import ApiError

__all__ = ["KEYS_ENV", "Budgets", "KeyRing", "check_bind", "is_loopback", "read_keys"]

KEYS_ENV = "EMBEDTUNE_API_KEYS"
ANONYMOUS = "anonymous"


def read_keys(*, env_value: str | None = None, file: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The keys named by the environment variable's value and by a keys file, in that order."""
    keys = [part.strip() for part in (env_value or "").split(",") if part.strip()]
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the keys file {file}: {exc.strerror}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
        if not keys:
            raise ConfigError(f"the keys file {file} holds no key; write one key per line")
    return tuple(dict.fromkeys(keys))


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: Iterable[str]) -> None:
    """Refuse to serve beyond this machine without keys."""
    if not is_loopback(host) and not any(True for _ in keys):
        raise ConfigError(
            f"refusing to serve on {host} without API keys: set {KEYS_ENV} or give --keys-file, or bind to 127.0.0.1"
        )


class KeyRing:
    """The accepted keys, kept as digests. Empty: every request is accepted as ``anonymous``."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} keys)"

    def identify(self, authorization: str | None) -> str:
        """The name of the key an ``Authorization`` header carries; ``ApiError`` 401 if none matches."""
        if not self._digests:
            return ANONYMOUS
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "no API key: send it as the header Authorization: Bearer KEY",
                type="authentication_error",
                code="missing_api_key",
            )
        sent = _digest(token)
        found = -1
        for i, digest in enumerate(self._digests):  # every digest is compared: no early exit
            if hmac.compare_digest(sent, digest):
                found = i
        if found < 0:
            raise ApiError(401, "invalid API key", type="authentication_error", code="invalid_api_key")
        return f"key {found + 1}"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class _MustWait(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def _refuse(seconds: float) -> None:
    """The limiter's ``sleep``: instead of waiting, say how long the wait would be."""
    raise _MustWait(seconds)


class Budgets:
    """Requests and tokens per minute for each key; ``None`` leaves that budget unlimited."""

    def __init__(
        self, *, requests_per_minute: int | None = None, tokens_per_minute: int | None = None, window: float = 60.0
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.window = window
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()

    def charge(self, key: str, tokens: int) -> None:
        """Record one request of ``tokens`` for ``key``, or raise 429 (or 400: it can never fit)."""
        if self.rpm is None and self.tpm is None:
            return
        limiter = self._limiter(key)
        if self.tpm is not None and tokens > self.tpm * self.window / 60:
            raise ApiError(
                400,
                f"this request has {tokens} tokens, more than this key's budget of {self.tpm} tokens per minute "
                f"allows at once; send fewer or shorter inputs per request",
                param="input",
                code="request_over_budget",
            )
        try:
            limiter.acquire(tokens)
        except _MustWait as wait:
            raise ApiError(
                429,
                f"rate limit reached for {key} ({self._describe()}); retry after {wait.seconds:.1f} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                retry_after=wait.seconds,
            ) from None

    def _limiter(self, key: str) -> RateLimiter:
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = RateLimiter(
                    requests_per_minute=self.rpm, tokens_per_minute=self.tpm, window=self.window, sleep=_refuse
                )
                self._limiters[key] = limiter
            return limiter

    def _describe(self) -> str:
        parts = []
        if self.rpm is not None:
            parts.append(f"{self.rpm} requests")
        if self.tpm is not None:
            parts.append(f"{self.tpm} tokens")
        return " and ".join(parts) + " per minute"
