"""The base of every wrapper: an Embedder that holds another and passes everything through.

A wrapper overrides ``embed`` (and whatever else it changes); name, dims, limit, token counts and
the fingerprint are the inner embedder's unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder, Kind

__all__ = ["Wrapper"]


class Wrapper:
    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens

    def fingerprint(self, kind: Kind = "document") -> str:
        return self.inner.fingerprint(kind)

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self.inner.count_tokens(text, kind)

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        return self.inner.embed(texts, kind)
