"""The batching wrapper: an Embedder that feeds another in bounded batches.

Batches are bounded by a count and by a token budget (the sum of the texts' token counts). Texts
are sorted by length first when the model pads each batch to its longest text (local models), so
similar lengths share a batch; rows come back in input order either way.

Batching never changes a text; what happens to texts over the model's limit is the business of
``LengthPolicy`` (``engine/limits.py``), which sits outside the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..embedder import Embedder, Kind, check_kind, empty_vectors

__all__ = ["BatchingEmbedder", "BatchStats", "plan_batches"]


@dataclass
class BatchStats:
    """Running totals of what the wrapper did; read them after a call for a report."""

    texts: int = 0
    tokens: int = 0
    batches: int = 0


def plan_batches(lengths: Sequence[int], *, max_batch: int, max_tokens: int, sort: bool) -> list[list[int]]:
    """Group indices into batches of at most ``max_batch`` texts and ``max_tokens`` tokens.

    A single text over the token budget gets a batch of its own. With ``sort``, indices are taken
    longest first, so each batch holds texts of similar length.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    budget = 0
    for i in order:
        if current and (len(current) >= max_batch or budget + lengths[i] > max_tokens):
            batches.append(current)
            current, budget = [], 0
        current.append(i)
        budget += lengths[i]
    if current:
        batches.append(current)
    return batches


class BatchingEmbedder:
    """Feeds ``inner`` in batches bounded by count and tokens; rows return in input order.

    ``on_progress(n)`` is called after each batch with the number of texts it embedded.
    """

    def __init__(
        self,
        inner: Embedder,
        *,
        max_batch: int = 32,
        max_batch_tokens: int = 16_384,
        sort_by_length: bool = True,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch and max_batch_tokens must be at least 1")
        self.inner = inner
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.sort_by_length = sort_by_length
        self.on_progress = on_progress
        self.stats = BatchStats()
        self.name = inner.name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens

    def fingerprint(self, kind: Kind = "document") -> str:
        return self.inner.fingerprint(kind)

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self.inner.count_tokens(text, kind)

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        if not texts:
            return empty_vectors(self.dim)
        # The model reads at most max_tokens of a text, so that is what counts against the budget.
        lengths = [min(self.inner.count_tokens(t, kind), self.max_tokens) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in plan_batches(
            lengths, max_batch=self.max_batch, max_tokens=self.max_batch_tokens, sort=self.sort_by_length
        ):
            vectors = self.inner.embed([texts[i] for i in batch], kind)
            if vectors.shape != (len(batch), self.dim):
                raise ValueError(f"{self.inner.name} returned {vectors.shape} for a batch of {len(batch)}")
            out[batch] = vectors
            self.stats.batches += 1
            self.stats.tokens += sum(lengths[i] for i in batch)
            if self.on_progress:
                self.on_progress(len(batch))
        self.stats.texts += len(texts)
        return out
