"""A deterministic embedder for plumbing tests: no model, no randomness, same vectors everywhere.

Each word is hashed to a dimension and a sign, so texts that share words get similar vectors and
a text's vector never depends on the batch it came in. Prefixes are hashed in like words, so query
and document vectors differ exactly when the prefixes do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..embedder import Kind, check_kind, empty_vectors

__all__ = ["HashEmbedder"]

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    def __init__(
        self,
        *,
        name: str = "fake:hash-256",
        dim: int = 256,
        max_tokens: int = 512,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        if dim <= 0 or max_tokens <= 2:
            raise ValueError("dim must be positive and max_tokens above 2")
        self.name = name
        self.dim = dim
        self.max_tokens = max_tokens
        self._prefixes = {"query": query_prefix, "document": document_prefix}

    def fingerprint(self, kind: Kind = "document") -> str:
        return f"fake|{self.name}|dim={self.dim}|prefix={self._prefixes[check_kind(kind)]!r}"

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        # Two special tokens, like BERT's [CLS] and [SEP].
        return len(_WORD.findall(self._prefixes[check_kind(kind)] + text)) + 2

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        prefix = self._prefixes[check_kind(kind)]
        if not texts:
            return empty_vectors(self.dim)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall((prefix + text).lower())[: self.max_tokens - 2]
            for word in words:
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                index = int.from_bytes(digest[:4], "little") % self.dim
                out[row, index] += 1.0 if digest[4] & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out
