"""The service's settings: one frozen value, read from the command line (or a test) at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["ServiceConfig"]

MiB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """How the service admits, batches and limits requests.

    - ``keys``: the API keys clients send as ``Authorization: Bearer KEY``; empty means no
      authentication (the CLI allows that on loopback only). Never shown by ``repr``.
    - ``requests_per_minute`` / ``tokens_per_minute``: each key's budget over a sliding
      ``rate_window_s`` (the rate is per minute whatever the window; a shorter one enforces it
      in slices). ``None``: unlimited.
    - ``max_body_bytes``, ``max_inputs``, ``max_input_tokens`` (any over-limit policy; under
      ``error`` the model's own limit is lower), ``max_request_tokens``: per-request limits, as
      OpenAI sets them by default (2,048 inputs, 8,191 tokens each, 300,000 in all).
    - ``max_queries`` and ``max_k``: the most queries and hits per ``/v1/search`` request.
    - ``micro_batching``: gather texts from concurrent requests into shared model batches of at
      most ``batch_texts`` texts and ``batch_tokens`` tokens, waiting at most ``max_wait_ms``
      for a batch to fill. Off, each request is one model call of its own.
      ``None`` for the bounds: the embedder's own batch bounds.
    """

    keys: tuple[str, ...] = field(default=(), repr=False)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    rate_window_s: float = 60.0
    max_body_bytes: int = 4 * MiB
    max_inputs: int = 2048
    max_input_tokens: int = 8191
    max_request_tokens: int = 300_000
    max_queries: int = 64
    max_k: int = 1000
    micro_batching: bool = True
    batch_texts: int | None = None
    batch_tokens: int | None = None
    max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        for name in (
            "requests_per_minute",
            "tokens_per_minute",
            "max_body_bytes",
            "max_inputs",
            "max_input_tokens",
            "max_request_tokens",
            "max_queries",
            "max_k",
            "batch_texts",
            "batch_tokens",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        if not self.max_wait_ms >= 0:
            raise ConfigError(f"max_wait_ms must be 0 or more, not {self.max_wait_ms!r}")
        if not self.rate_window_s > 0:
            raise ConfigError(f"rate_window_s must be positive, not {self.rate_window_s!r}")
        for key in self.keys:
            if not isinstance(key, str) or not key or any(c.isspace() or c == "," for c in key):
                raise ConfigError("an API key must be non-empty text without spaces or commas")
