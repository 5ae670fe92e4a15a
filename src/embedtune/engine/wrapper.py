"""The base of every wrapper: an Embedder that holds another and passes everything through.

A wrapper overrides ``embed`` (and whatever else it changes); name, dims, limit, token counts,
modalities and the fingerprints are the inner embedder's unless it says otherwise. Images pass
through to the inner embedder too (``embed_images``), so a wrapper that does nothing to images
needs no code for them, and a stack over a text-only model refuses them in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..embedder import TEXT_ONLY, Embedder, Kind, embed_images, image_fingerprint

if TYPE_CHECKING:
    from ..images import Image

__all__ = ["Wrapper"]


class Wrapper:
    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens
        self.modalities: tuple[str, ...] = getattr(inner, "modalities", TEXT_ONLY)

    def fingerprint(self, kind: Kind = "document") -> str:
        return self.inner.fingerprint(kind)

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self.inner.count_tokens(text, kind)

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        return self.inner.embed(texts, kind)

    def image_fingerprint(self, kind: Kind = "document") -> str:
        return image_fingerprint(self.inner, kind)

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        return embed_images(self.inner, images, kind)
