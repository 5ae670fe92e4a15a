"""Timing helpers behind ``embedtune bench``: the tutorial's batched-versus-sequential check.

Both runs go through the same ``BatchingEmbedder`` over the same provider, differing only in how
many texts one model call takes, so the ratio measures batching and nothing else. The model is
warmed up first, so loading it is not counted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .embedder import Embedder
from .engine import BatchingEmbedder, CountingEmbedder, LengthPolicy

__all__ = ["BatchingTiming", "sample_texts", "time_batching"]


def sample_texts() -> list[str]:
    """The texts of the sample collection embedtune ships (title and body joined)."""
    corpus = resources.files("embedtune") / "data" / "sample" / "corpus.jsonl"
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f"{row['title']} {row['text']}".strip() for row in rows]


@dataclass(frozen=True)
class BatchingTiming:
    tokens: int
    sequential_s: float
    sequential_calls: int
    batched_s: float
    batched_calls: int
    max_abs_diff: float

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.batched_s


def time_batching(provider: Embedder, texts: list[str], *, max_batch: int = 32, concurrency: int = 1) -> BatchingTiming:
    """One call per text, one at a time; then batches of ``max_batch``, ``concurrency`` at once."""
    provider.embed(texts[:1])  # warm-up: first calls pay for lazy initialisation
    counted = CountingEmbedder(provider)
    runs = []
    for batch, parallel in ((1, 1), (max_batch, concurrency)):
        calls_before = counted.calls
        batcher = BatchingEmbedder(counted, max_batch=batch, max_batch_tokens=1 << 30, concurrency=parallel)
        start = time.perf_counter()
        vectors = LengthPolicy(batcher, "truncate").embed(texts)
        runs.append((time.perf_counter() - start, counted.calls - calls_before, vectors, batcher.stats.tokens))
    (seq_s, seq_calls, seq_vectors, tokens), (bat_s, bat_calls, bat_vectors, _) = runs
    return BatchingTiming(
        tokens=tokens,
        sequential_s=seq_s,
        sequential_calls=seq_calls,
        batched_s=bat_s,
        batched_calls=bat_calls,
        max_abs_diff=float(np.abs(seq_vectors - bat_vectors).max()),
    )
