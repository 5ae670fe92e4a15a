"""The batching wrapper: an Embedder that feeds another in bounded batches.

Batches are bounded by a count and by a token budget (the sum of the texts' token counts). Texts
are sorted by length first when the model pads each batch to its longest text (local models), so
similar lengths share a batch; rows come back in input order either way.

A text longer than the model's ``max_tokens`` is never cut silently. The ``over_limit`` policy says
what happens:

- ``error``: raise ``TextTooLongError`` naming the text's index, before anything is embedded;
- ``truncate``: let the model read only its first ``max_tokens``; counted in ``stats.truncated``;
- ``split``: embed consecutive pieces that each fit, average them and scale the mean back to the
  pieces' mean norm (unit length for normalised models); counted in ``stats.split``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..embedder import Embedder, Kind, check_kind, empty_vectors
from ..errors import TextTooLongError

__all__ = ["BatchingEmbedder", "OverLimit", "BatchStats", "plan_batches", "split_to_fit"]


class OverLimit(str, Enum):
    ERROR = "error"
    TRUNCATE = "truncate"
    SPLIT = "split"


@dataclass
class BatchStats:
    """Running totals of what the wrapper did; read them after a call for a report."""

    texts: int = 0
    tokens: int = 0
    batches: int = 0
    truncated: int = 0
    split: int = 0


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


class BatchingEmbedder:
    """Feeds ``inner`` in batches bounded by count and tokens; rows return in input order.

    ``on_progress(n)`` is called after each batch with the number of input texts it finished.
    """

    def __init__(
        self,
        inner: Embedder,
        *,
        max_batch: int = 32,
        max_batch_tokens: int = 16_384,
        sort_by_length: bool = True,
        over_limit: OverLimit | str = OverLimit.ERROR,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch and max_batch_tokens must be at least 1")
        self.inner = inner
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.sort_by_length = sort_by_length
        self.over_limit = OverLimit(over_limit)
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
        lengths = [self.inner.count_tokens(t, kind) for t in texts]
        # Each entry of `pieces` is (owner index, text); a text that is split owns several.
        pieces: list[tuple[int, str]] = []
        piece_lengths: list[int] = []
        for i, (text, n) in enumerate(zip(texts, lengths)):
            if n <= self.max_tokens:
                pieces.append((i, text))
                piece_lengths.append(n)
            elif self.over_limit is OverLimit.ERROR:
                raise TextTooLongError(
                    f"text {i} has {n} tokens, over {self.inner.name}'s limit of {self.max_tokens}; "
                    "shorten it, or choose --over-limit truncate or split",
                    index=i, tokens=n, limit=self.max_tokens,
                )
            elif self.over_limit is OverLimit.TRUNCATE:
                self.stats.truncated += 1
                pieces.append((i, text))
                piece_lengths.append(self.max_tokens)
            else:
                self.stats.split += 1
                fits = lambda s: self.inner.count_tokens(s, kind) <= self.max_tokens  # noqa: E731
                for piece in split_to_fit(text, fits):
                    pieces.append((i, piece))
                    piece_lengths.append(self.inner.count_tokens(piece, kind))

        piece_vectors = np.empty((len(pieces), self.dim), dtype=np.float32)
        remaining = [0] * len(texts)
        for owner, _ in pieces:
            remaining[owner] += 1
        for batch in plan_batches(
            piece_lengths, max_batch=self.max_batch, max_tokens=self.max_batch_tokens, sort=self.sort_by_length
        ):
            vectors = self.inner.embed([pieces[j][1] for j in batch], kind)
            if vectors.shape != (len(batch), self.dim):
                raise ValueError(
                    f"{self.inner.name} returned {vectors.shape} for a batch of {len(batch)}"
                )
            piece_vectors[batch] = vectors
            finished = 0
            for j in batch:
                owner = pieces[j][0]
                remaining[owner] -= 1
                finished += remaining[owner] == 0
            self.stats.batches += 1
            self.stats.tokens += sum(piece_lengths[j] for j in batch)
            if self.on_progress and finished:
                self.on_progress(finished)
        self.stats.texts += len(texts)

        if len(pieces) == len(texts):
            return piece_vectors
        return _pool_pieces(piece_vectors, [owner for owner, _ in pieces], len(texts))


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
