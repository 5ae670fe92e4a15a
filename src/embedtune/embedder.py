"""The Embedder seam: the ground the rest of embedtune stands on.

An Embedder turns a batch of texts into a float32 array of shape ``(len(texts), dim)``, rows in
input order. Queries and documents are embedded apart because most retrieval models expect a
different prefix for each; an embedder without prefixes gives the same vector for both.

Providers (local models, HTTP APIs) implement it, and so do the wrappers in ``embedtune.engine``
(batching, cache), which hold another Embedder; that is what lets them compose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

__all__ = ["KINDS", "Embedder", "Kind", "check_kind", "empty_vectors"]

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


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'document' or 'query', not {kind!r}")
    return kind


def empty_vectors(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)
