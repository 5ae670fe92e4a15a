"""The Embedder seam: the ground the rest of embedtune stands on.

An Embedder turns a batch of texts into a float32 array of shape ``(len(texts), dim)``, rows in
input order. Queries and documents are embedded apart because most retrieval models expect a
different prefix for each; an embedder without prefixes gives the same vector for both.

Providers (local models, HTTP APIs) implement it, and so do the wrappers in ``embedtune.engine``
(batching, cache), which hold another Embedder; that is what lets them compose.

Images are a second method beside ``embed``, not a wider ``embed``: a model that takes images
(``"image" in modalities``) also offers ``embed_images(images, kind)`` and
``image_fingerprint(kind)``, into the same space as its texts. The text path (token counts, the
length policy, chunkers) never meets an image, and each wrapper says what it does to images in
one method of its own: the cache keys them on their bytes, the batcher bounds batches by pixels.
:func:`embed_images` is how callers reach it; a text-only model fails there in one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .images import Image

__all__ = [
    "KINDS",
    "TEXT_ONLY",
    "Embedder",
    "ImageEmbedder",
    "Kind",
    "check_kind",
    "embed_batches",
    "embed_images",
    "empty_vectors",
    "image_fingerprint",
    "takes_images",
]

Kind = Literal["document", "query"]
KINDS: tuple[Kind, ...] = ("document", "query")


@runtime_checkable
class Embedder(Protocol):
    """What every model provider and every wrapper offers.

    - ``name``: the model's URI, e.g. ``local:all-MiniLM-L6-v2``.
    - ``dim``: length of each vector.
    - ``max_tokens``: the most tokens the model reads of one input, prefix and special tokens
      included; longer inputs are truncated by the model unless a wrapper prevents it.
    - ``count_tokens(text, kind)``: tokens the model reads for ``text`` as that kind (prefix and
      special tokens included), before any truncation.
    - ``fingerprint(kind)``: a string naming everything except the text that changes a vector of
      that kind: provider, model, weights revision, dims, normalisation and the prefix. Two calls
      with equal fingerprints and equal text give equal vectors; the cache keys on it.
    """

    name: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray: ...

    def count_tokens(self, text: str, kind: Kind = "document") -> int: ...

    def fingerprint(self, kind: Kind = "document") -> str: ...


TEXT_ONLY: tuple[str, ...] = ("text",)


@runtime_checkable
class ImageEmbedder(Embedder, Protocol):
    """An Embedder that also takes images, into the same space as its texts.

    - ``modalities``: ``("text", "image")``.
    - ``embed_images(images, kind)``: float32 ``(len(images), dim)``, rows in input order.
    - ``image_fingerprint(kind)``: everything but the bytes that changes an image's vector (the
      model, its weights and preprocessing, the downscaling limit); the cache keys image rows on
      it and the SHA-256 of the bytes.
    """

    modalities: tuple[str, ...]

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray: ...

    def image_fingerprint(self, kind: Kind = "document") -> str: ...


def takes_images(embedder: object) -> bool:
    """Whether an embedder (or a stack of wrappers over one) embeds images."""
    return "image" in getattr(embedder, "modalities", TEXT_ONLY)


def _image_embedder(embedder: Embedder) -> ImageEmbedder:
    if not takes_images(embedder) or not isinstance(embedder, ImageEmbedder):
        raise InputError(
            f"{embedder.name} takes text only, not images; choose a model that takes both, e.g. a "
            "CLIP-style sentence-transformers folder (local:/path/to/clip-model) or an OpenAI-compatible "
            "server that takes images (images = true in its embedders table)"
        )
    return embedder


def embed_batches(
    embedder: Embedder, batches: Iterable[Sequence[str]], kind: Kind = "document"
) -> Iterator[np.ndarray]:
    """``embedder.embed`` of each (non-empty) batch, in order. A provider that can prepare the next
    batch while it embeds this one (a local model on an engine) offers ``embed_batches`` itself;
    wrappers do not, so whatever they do in ``embed`` is never skipped."""
    own = getattr(embedder, "embed_batches", None)
    if callable(own):
        return own(batches, kind)
    return (embedder.embed(batch, kind) for batch in batches)


def embed_images(embedder: Embedder, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
    """``embedder.embed_images(images, kind)``, or one ``InputError`` line for a text-only model."""
    return _image_embedder(embedder).embed_images(images, kind)


def image_fingerprint(embedder: Embedder, kind: Kind = "document") -> str:
    """``embedder.image_fingerprint(kind)``, or one ``InputError`` line for a text-only model."""
    return _image_embedder(embedder).image_fingerprint(kind)


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'document' or 'query', not {kind!r}")
    return kind


def empty_vectors(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)
