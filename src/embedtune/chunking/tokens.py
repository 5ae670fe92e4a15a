"""Counting and cutting text in the target model's tokens.

Chunkers are given the Embedder itself, so a chunk's size is what the model reads:
``count_tokens(text, "document")``, prefix and special tokens included. Cuts fall on the model's
own token boundaries when some layer of the stack can say where its tokens are (a
``token_offsets(text)`` method: local models with a fast tokenizer); otherwise words are packed by
counting, with bisection, and a word longer than the limit is cut by characters. Either way every
piece is counted once more as it is, so no piece is ever over the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..embedder import Embedder

__all__ = ["Piece", "TokenCounter", "find_token_offsets", "strip_span"]

# (start, end, tokens): a span of the text and its token count under the target model.
Piece = tuple[int, int, int]
Offsets = Callable[[str], "list[tuple[int, int]] | None"]

_WORD = re.compile(r"\S+")


def find_token_offsets(embedder: Embedder) -> Offsets | None:
    """The ``token_offsets`` of the first layer of a stack (following ``.inner``) that has one."""
    layer: object = embedder
    while layer is not None:
        offsets = getattr(layer, "token_offsets", None)
        if callable(offsets):
            return offsets
        layer = getattr(layer, "inner", None)
    return None


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` narrowed past whitespace at both ends."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class TokenCounter:
    """The target model's view of text length, and cutting text to fit it.

    ``overhead`` is what an empty text costs (prefix and special tokens), so a text of ``n`` tokens
    of its own counts about ``overhead + n``.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.overhead = embedder.count_tokens("", "document")
        self._offsets = find_token_offsets(embedder)

    def count(self, text: str) -> int:
        return self.embedder.count_tokens(text, "document")

    def split(self, text: str, start: int, end: int, limit: int, *, overlap: int = 0) -> list[Piece]:
        """Cut ``text[start:end]`` into pieces of at most ``limit`` tokens, in order.

        Without overlap the pieces cover every non-whitespace character of the span once. With
        ``overlap`` each piece starts ``overlap`` tokens (of the text's own tokens) before the end
        of the one before it, and never before that piece's start.
        """
        start, end = strip_span(text, start, end)
        if start >= end:
            return []
        units, exact = self._units(text, start, end)
        pieces: list[Piece] = []
        i = done = 0  # done: units up to here are in some piece
        while i < len(units):
            j, tokens = self._fit(text, units, i, start, end, limit, exact)
            if j <= done:  # the overlap left no room for new text (a long word next): no overlap here
                i = done
                j, tokens = self._fit(text, units, i, start, end, limit, exact)
            s, e = self._span(text, units, i, j, start, end)
            pieces.append((s, e, tokens))
            if j == len(units):
                break
            done = j
            i = self._next_start(text, units, i, j, e, overlap, exact) if overlap else j
        return pieces

    def pack(self, text: str, pieces: list[Piece], limit: int) -> list[Piece]:
        """Join consecutive pieces (each within ``limit``) greedily into the fewest that fit.

        The sum of the pieces' own tokens guesses a join's size; the join is then counted as it is
        and given back piece by piece until it fits.
        """
        out: list[Piece] = []
        i = 0
        while i < len(pieces):
            j, guess = i + 1, pieces[i][2]
            while j < len(pieces) and guess + pieces[j][2] - self.overhead <= limit:
                guess += pieces[j][2] - self.overhead
                j += 1
            while True:
                s, e = pieces[i][0], pieces[j - 1][1]
                tokens = pieces[i][2] if j == i + 1 else self.count(text[s:e])
                if tokens <= limit:
                    break
                j -= 1
            out.append((s, e, tokens))
            i = j
        return out

    # -- machinery ---------------------------------------------------------------------------

    def _units(self, text: str, start: int, end: int) -> tuple[list[tuple[int, int]], bool]:
        """The atoms a cut may fall between: the model's tokens when known, else words."""
        offsets = self._offsets(text[start:end]) if self._offsets is not None else None
        if offsets is not None:
            units: list[tuple[int, int]] = []
            for s, e in offsets:
                if e <= s:
                    continue
                s, e = start + s, start + e
                if units and s < units[-1][1]:  # several tokens of one character (byte-level BPE)
                    units[-1] = (units[-1][0], max(units[-1][1], e))
                    continue
                units.append((s, e))
            if units:
                return units, True
        return [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)], False

    @staticmethod
    def _span(text: str, units: list[tuple[int, int]], i: int, j: int, start: int, end: int) -> tuple[int, int]:
        """Units ``i..j-1`` as a span that runs on to the next unit, so nothing between is lost."""
        s = start if i == 0 else units[i][0]
        e = end if j == len(units) else units[j][0]
        return strip_span(text, s, e)

    def _fit(
        self, text: str, units: list[tuple[int, int]], i: int, start: int, end: int, limit: int, exact: bool
    ) -> tuple[int, int]:
        """The largest ``j`` such that units ``i..j-1`` fit in ``limit``, with their count."""
        while True:
            budget = max(1, limit - self.overhead)
            if exact:
                j = min(len(units), i + budget)
                while True:
                    tokens = self._count_span(text, units, i, j, start, end)
                    if tokens <= limit or j == i + 1:
                        break
                    j = max(i + 1, j - max(1, tokens - limit))
            else:
                j, tokens = self._fit_words(text, units, i, start, end, limit, budget)
            if tokens <= limit or units[i][1] - units[i][0] == 1:
                # (one character over the limit is past cutting; limits are checked to exceed
                # the overhead, so only a character of several tokens can get here)
                return j, tokens
            # One unit alone is over the limit: cut it by characters and try again.
            units[i : i + 1] = self._cut_characters(text, *units[i], limit)

    def _fit_words(
        self, text: str, units: list[tuple[int, int]], i: int, start: int, end: int, limit: int, budget: int
    ) -> tuple[int, int]:
        def count(j: int) -> int:
            return self._count_span(text, units, i, j, start, end)

        best, best_tokens = i + 1, count(i + 1)
        if best_tokens > limit:
            return best, best_tokens
        # A word is at least one token, so budget words is an upper bound, unless some words
        # count nothing (punctuation to some tokenizers): then widen while it still fits.
        hi = min(len(units), i + budget)
        while hi > best:
            tokens = count(hi)
            if tokens > limit:
                break
            best, best_tokens = hi, tokens
            hi = min(len(units), i + 2 * (hi - i))
        while hi - best > 1:  # best fits, hi does not
            mid = (best + hi) // 2
            tokens = count(mid)
            if tokens <= limit:
                best, best_tokens = mid, tokens
            else:
                hi = mid
        return best, best_tokens

    def _count_span(self, text: str, units: list[tuple[int, int]], i: int, j: int, start: int, end: int) -> int:
        s, e = self._span(text, units, i, j, start, end)
        return self.count(text[s:e])

    def _cut_characters(self, text: str, s: int, e: int, limit: int) -> list[tuple[int, int]]:
        """Cut one over-long word into the longest runs of characters that fit, by bisection."""
        out: list[tuple[int, int]] = []
        while s < e:
            lo, hi = s + 1, e
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count(text[s:mid]) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            out.append((s, lo))
            s = lo
        return out

    def _next_start(
        self, text: str, units: list[tuple[int, int]], i: int, j: int, e: int, overlap: int, exact: bool
    ) -> int:
        """Where the next piece starts: ``overlap`` tokens before ``j``, but after ``i``."""
        if exact:
            return max(i + 1, j - overlap)
        # Words: the earliest start whose tail up to ``e`` holds at most ``overlap`` tokens.
        lo, hi = i + 1, j
        while lo < hi:
            mid = (lo + hi) // 2
            if self.count(text[units[mid][0] : e]) - self.overhead <= overlap:
                hi = mid
            else:
                lo = mid + 1
        return lo
