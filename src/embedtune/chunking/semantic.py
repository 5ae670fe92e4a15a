"""The semantic chunker: sentences grouped by the similarity of their neighbourhoods, with a hard cap.

Each sentence is embedded together with ``window`` neighbours on each side (one batched call for
all the windows of all texts, through whatever stack the embedder is: engine, cache); the cosine
distance between consecutive windows marks a breakpoint where it is unusually high by one of these
rules, ``threshold`` being each rule's parameter:

- ``percentile``: above the ``threshold``-th percentile of the text's distances (default 95);
- ``stdev``: above the mean plus ``threshold`` standard deviations (default 3);
- ``iqr``: above the third quartile plus ``threshold`` interquartile ranges (default 1.5);
- ``gradient``: where the distance rises from the one before by more than the ``threshold``-th
  percentile of such rises (default 95), which finds drops in texts whose sentences are all alike;
- ``absolute``: above a fixed cosine distance ``threshold`` (default 0.5).

Unlike the usual semantic chunkers, groups then obey the limit: a group over ``max_tokens`` is cut
at its weakest internal link (largest distance) until every part fits, and a sentence over the
limit alone is cut by tokens. Groups under ``min_tokens`` are merged into their more similar
neighbour (the other one if that would go over the limit).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder
from ..errors import ConfigError
from .base import Chunk
from .chunkers import BaseChunker
from .sentences import split_sentences
from .tokens import Piece

__all__ = ["RULES", "SemanticChunker"]

# Each rule and its default threshold.
RULES = {
    "percentile": 95.0,
    "stdev": 3.0,
    "iqr": 1.5,
    "gradient": 95.0,
    "absolute": 0.5,
}
DEFAULT_MIN_TOKENS = 32
DEFAULT_WINDOW = 1
_WINDOW_SLACK = 8  # tokens a window's summed count may be off by before it is counted as a whole


class SemanticChunker(BaseChunker):
    fallback_what = ("sentence", "sentences")

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_tokens: int,
        rule: str = "percentile",
        threshold: float | None = None,
        min_tokens: int = DEFAULT_MIN_TOKENS,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        super().__init__(embedder, max_tokens)
        if rule not in RULES:
            raise ConfigError(f"unknown breakpoint rule {rule!r}; choose one of {', '.join(RULES)}")
        threshold = RULES[rule] if threshold is None else float(threshold)
        bounds = {"percentile": (0, 100), "gradient": (0, 100), "absolute": (0, 2)}.get(rule, (0, float("inf")))
        if not bounds[0] <= threshold <= bounds[1]:
            raise ConfigError(
                f"threshold for rule {rule} must be between {bounds[0]} and {bounds[1]}, not {threshold:g}"
            )
        if not isinstance(min_tokens, int) or not 0 <= min_tokens < max_tokens:
            raise ConfigError(f"min_tokens must be at least 0 and below max_tokens ({max_tokens}), not {min_tokens!r}")
        if not isinstance(window, int) or window < 0:
            raise ConfigError(f"window must be a whole number of neighbours, at least 0, not {window!r}")
        self.rule, self.threshold, self.min_tokens, self.window = (
            rule,
            threshold,
            min_tokens,
            window,
        )
        self.name = f"semantic-{rule}{threshold:g}-{max_tokens}"
        if min_tokens != DEFAULT_MIN_TOKENS:
            self.name += f"-min{min_tokens}"
        if window != DEFAULT_WINDOW:
            self.name += f"-w{window}"

    def chunk(self, text: str) -> list[Chunk]:
        return self.chunk_many([text])[0]

    def chunk_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """Chunks of every text, from one ``embed`` call holding each distinct window once."""
        sentences = [self._fit_or_split(text, split_sentences(text)) for text in texts]
        windows: dict[str, int] = {}
        rows: list[list[int]] = []
        for text, pieces in zip(texts, sentences):
            if len(pieces) < 2:  # nothing to compare: no window is embedded
                rows.append([])
                continue
            rows.append([windows.setdefault(self._window(text, pieces, i), len(windows)) for i in range(len(pieces))])
        vectors = self.embedder.embed(list(windows), "document") if windows else None
        if vectors is not None:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out = []
        for text, pieces, row in zip(texts, sentences, rows):
            if len(pieces) < 2:
                out.append(self._chunks(text, pieces))
                continue
            v = vectors[row]  # type: ignore[index]
            distances = 1.0 - np.einsum("ij,ij->i", v[:-1], v[1:]).astype(np.float64)
            out.append(self._chunks(text, self._group(text, pieces, distances)))
        return out

    # -- steps -------------------------------------------------------------------------------

    def _window(self, text: str, pieces: list[Piece], i: int) -> str:
        """Sentence ``i`` with its neighbours, cut back so the model reads all of it."""
        a, b = max(0, i - self.window), min(len(pieces), i + self.window + 1)
        limit = self.embedder.max_tokens
        overhead = self.counter.overhead
        window = text[pieces[a][0] : pieces[b - 1][1]]
        guess = overhead + sum(p[2] - overhead for p in pieces[a:b])
        if guess <= limit - _WINDOW_SLACK or self.counter.count(window) <= limit:
            return window
        s, e, tokens = pieces[i]
        if tokens <= limit:
            return text[s:e]
        s, e, _ = self.counter.split(text, s, e, limit)[0]  # a limit above the model's (allowed)
        return text[s:e]

    def _breakpoints(self, distances: np.ndarray) -> np.ndarray:
        """True at ``k`` where a chunk ends after sentence ``k``."""
        t = self.threshold
        if self.rule == "percentile":
            return distances > np.percentile(distances, t)
        if self.rule == "stdev":
            return distances > distances.mean() + t * distances.std()
        if self.rule == "iqr":
            q1, q3 = np.percentile(distances, [25, 75])
            return distances > q3 + t * (q3 - q1)
        if self.rule == "gradient":
            rise = np.diff(distances, prepend=distances[0])  # how far each distance jumps from the one before
            return rise > np.percentile(rise, t)
        return distances > t

    def _group(self, text: str, pieces: list[Piece], distances: np.ndarray) -> list[Piece]:
        cuts = [k + 1 for k in np.flatnonzero(self._breakpoints(distances))]
        bounds = [0, *cuts, len(pieces)]
        groups: list[tuple[int, int, int]] = []
        for a, b in itertools.pairwise(bounds):
            groups.extend(self._cap(text, pieces, distances, a, b))
        groups = self._merge_small(text, pieces, distances, groups)
        return [(pieces[a][0], pieces[b - 1][1], tokens) for a, b, tokens in groups]

    def _tokens(self, text: str, pieces: list[Piece], a: int, b: int) -> int:
        """Tokens of sentences ``a..b-1`` as one chunk: counted exactly unless clearly over."""
        if b == a + 1:
            return pieces[a][2]
        overhead = self.counter.overhead
        guess = overhead + sum(p[2] - overhead for p in pieces[a:b])
        if guess > self.max_tokens + _WINDOW_SLACK:
            return guess
        return self.counter.count(text[pieces[a][0] : pieces[b - 1][1]])

    def _cap(self, text, pieces, distances, a, b) -> list[tuple[int, int, int]]:
        """Sentences ``a..b-1`` as groups within the limit, cut at their weakest links."""
        out, todo = [], [(a, b)]
        while todo:
            a, b = todo.pop()
            tokens = self._tokens(text, pieces, a, b)
            if tokens <= self.max_tokens:
                out.append((a, b, tokens))
                continue
            k = a + int(np.argmax(distances[a : b - 1]))  # cut after sentence k
            todo += [(k + 1, b), (a, k + 1)]
        return out

    def _merge_small(self, text, pieces, distances, groups) -> list[tuple[int, int, int]]:
        """Merge each group under ``min_tokens`` into its more similar neighbour that has room."""
        g = 0
        while g < len(groups):
            a, b, tokens = groups[g]
            if tokens >= self.min_tokens:
                g += 1
                continue
            neighbours = []
            if g > 0:
                neighbours.append((distances[a - 1], g - 1))
            if g + 1 < len(groups):
                neighbours.append((distances[b - 1], g + 1))
            for _, other in sorted(neighbours):
                lo, hi = min(g, other), max(g, other)
                merged = self._tokens(text, pieces, groups[lo][0], groups[hi][1])
                if merged <= self.max_tokens:
                    groups[lo : hi + 1] = [(groups[lo][0], groups[hi][1], merged)]
                    g = lo
                    break
            else:
                g += 1
        return groups
