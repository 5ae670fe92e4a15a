"""A wrapper that counts what reaches the embedder it holds: calls and texts, per kind."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder, Kind

__all__ = ["CountingEmbedder"]


class CountingEmbedder:
    """Passes everything through to ``inner`` and counts ``embed`` calls and texts."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens
        self.calls = 0
        self.texts: Counter[str] = Counter()
        self._lock = threading.Lock()  # calls may come from several threads (a concurrent batcher)

    def fingerprint(self, kind: Kind = "document") -> str:
        return self.inner.fingerprint(kind)

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self.inner.count_tokens(text, kind)

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.texts.update(texts)
        return self.inner.embed(texts, kind)
