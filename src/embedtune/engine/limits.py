"""The length policy: a text longer than the model's limit is never cut silently.

``LengthPolicy`` counts every text's tokens with the model's own tokenizer and applies one of:

- ``error``: raise ``TextTooLongError`` naming the first such text's index, before anything is
  embedded;
- ``truncate``: pass the text on; the model reads only its first ``max_tokens``. Counted in
  ``stats.truncated``;
- ``split``: embed consecutive pieces that each fit, average them and scale the mean back to the
  pieces' mean norm (unit length for normalised models). Counted in ``stats.split``.

It sits outside the cache, so the cache only ever sees texts the model embeds as they are: a
vector cached under one policy is never served under another.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..embedder import Embedder, Kind, check_kind, empty_vectors
from ..errors import InvalidInputError, TextTooLongError
from .wrapper import Wrapper

__all__ = ["LengthPolicy", "LengthStats", "OverLimit", "split_to_fit"]


class OverLimit(str, Enum):
    ERROR = "error"
    TRUNCATE = "truncate"
    SPLIT = "split"


@dataclass
class LengthStats:
    truncated: int = 0
    split: int = 0


_SPACE = re.compile(r"\S+\s*")


def split_to_fit(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Cut ``text`` into consecutive pieces that each satisfy ``fits``, at whitespace when possible.

    Each piece is the longest run of words that fits (found by binary search, so a text of n words
    costs O(n log n) token counts); a single word too long to fit is cut by characters.
    """
    words = _SPACE.findall(text) or [text]
    pieces: list[str] = []
    start = 0
    while start < len(words):
        lo, hi = start + 1, len(words)
        if not fits("".join(words[start:lo])):
            pieces.extend(_split_word(words[start], fits))
            start += 1
            continue
        while lo < hi:  # largest end in [lo, hi] whose piece fits
            mid = (lo + hi + 1) // 2
            if fits("".join(words[start:mid])):
                lo = mid
            else:
                hi = mid - 1
        pieces.append("".join(words[start:lo]))
        start = lo
    return [p for p in pieces if p.strip()] or [text[:1]]


def _split_word(word: str, fits: Callable[[str], bool]) -> list[str]:
    pieces = []
    while word:
        lo, hi = 1, len(word)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(word[:mid]):
                lo = mid
            else:
                hi = mid - 1
        pieces.append(word[:lo])
        word = word[lo:]
    return pieces


class LengthPolicy(Wrapper):
    """Applies an ``OverLimit`` policy to texts over ``inner.max_tokens``, then embeds."""

    def __init__(self, inner: Embedder, over_limit: OverLimit | str = OverLimit.ERROR) -> None:
        super().__init__(inner)
        self.over_limit = OverLimit(over_limit)
        self.stats = LengthStats()

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        if not texts:
            return empty_vectors(self.dim)
        lengths = [self.inner.count_tokens(t, kind) for t in texts]
        over = [i for i, n in enumerate(lengths) if n > self.max_tokens]
        if not over:
            return self.inner.embed(texts, kind)
        if self.over_limit is OverLimit.ERROR:
            i = over[0]
            more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
            raise TextTooLongError(
                f"text {i} has {lengths[i]} tokens, over {self.inner.name}'s limit of {self.max_tokens}{more}; "
                "shorten it, or choose --over-limit truncate or split",
                index=i,
                tokens=lengths[i],
                limit=self.max_tokens,
            )
        if self.over_limit is OverLimit.TRUNCATE:
            self.stats.truncated += len(over)
            return self.inner.embed(texts, kind)
        self.stats.split += len(over)
        fits = lambda s: self.inner.count_tokens(s, kind) <= self.max_tokens  # noqa: E731
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for piece in split_to_fit(text, fits) if lengths[i] > self.max_tokens else [text]:
                pieces.append(piece)
                owners.append(i)
        try:
            vectors = self.inner.embed(pieces, kind)
        except InvalidInputError as exc:
            raise exc.with_index(owners[exc.index]) from None
        return _pool_pieces(vectors, owners, len(texts))


def _pool_pieces(vectors: np.ndarray, owners: list[int], n: int) -> np.ndarray:
    """Mean of each text's piece vectors, rescaled to the pieces' mean norm."""
    owners_arr = np.asarray(owners)
    out = np.zeros((n, vectors.shape[1]), dtype=np.float64)
    np.add.at(out, owners_arr, vectors)
    counts = np.bincount(owners_arr, minlength=n)[:, None]
    norms = np.zeros(n)
    np.add.at(norms, owners_arr, np.linalg.norm(vectors, axis=1))
    mean = out / counts
    scale = (norms / counts[:, 0]) / np.maximum(np.linalg.norm(mean, axis=1), 1e-12)
    return (mean * scale[:, None]).astype(np.float32)
