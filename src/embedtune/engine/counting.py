"""A wrapper that counts what reaches the embedder it holds: calls, texts and images."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder, Kind, embed_images
from ..images import Image
from .wrapper import Wrapper

__all__ = ["CountingEmbedder"]


class CountingEmbedder(Wrapper):
    """Passes everything through to ``inner`` and counts ``embed`` / ``embed_images`` calls, texts
    and images (by SHA-256 of their bytes)."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.calls = 0
        self.texts: Counter[str] = Counter()
        self.images: Counter[str] = Counter()
        self._lock = threading.Lock()  # calls may come from several threads (a concurrent batcher)

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.texts.update(texts)
        return self.inner.embed(texts, kind)

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.images.update(image.sha256 for image in images)
        return embed_images(self.inner, images, kind)
