"""The chunkers that need no vectors: fixed tokens, recursive separators, sentences."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..embedder import Embedder
from ..errors import ConfigError
from .base import Chunk
from .sentences import split_sentences
from .tokens import Piece, TokenCounter, strip_span

__all__ = ["FixedChunker", "PassageChunker", "RecursiveChunker", "SentenceChunker"]


class BaseChunker:
    """What every chunker shares: the target model's token counter, the limit, fallback counts."""

    name: str
    fallback_what = (
        "piece",
        "pieces",
    )  # what a fallback cuts, for the notice: one, several

    def __init__(self, embedder: Embedder, max_tokens: int) -> None:
        self.embedder = embedder
        self.counter = TokenCounter(embedder)
        if not isinstance(max_tokens, int) or max_tokens <= self.counter.overhead:
            raise ConfigError(
                f"a chunk limit of {max_tokens!r} tokens leaves no room for text: {embedder.name} spends "
                f"{self.counter.overhead} tokens on its prefix and special tokens; choose a larger limit"
            )
        self.max_tokens = max_tokens
        self.fallbacks = 0

    def chunk(self, text: str) -> list[Chunk]:
        raise NotImplementedError

    def chunk_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        return [self.chunk(text) for text in texts]

    @property
    def notices(self) -> list[str]:
        if not self.fallbacks:
            return []
        what = self.fallback_what[self.fallbacks != 1]
        return [
            (
                f"{self.fallbacks} {what} longer than {self.max_tokens} tokens {'was' if self.fallbacks == 1 else 'were'} "
                "split by tokens"
            )
        ]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} for {self.embedder.name}>"

    # -- shared steps ------------------------------------------------------------------------

    def _fit_or_split(self, text: str, spans: list[tuple[int, int]]) -> list[Piece]:
        """Each span with its count; one over the limit is cut by tokens (a fallback)."""
        pieces: list[Piece] = []
        for s, e in spans:
            tokens = self.counter.count(text[s:e])
            if tokens <= self.max_tokens:
                pieces.append((s, e, tokens))
            else:
                self.fallbacks += 1
                pieces.extend(self.counter.split(text, s, e, self.max_tokens))
        return pieces

    @staticmethod
    def _chunks(text: str, pieces: list[Piece]) -> list[Chunk]:
        return [Chunk(text[s:e], s, e, tokens) for s, e, tokens in pieces]


class FixedChunker(BaseChunker):
    """Consecutive windows of ``size`` tokens (prefix and special tokens included), each starting
    ``overlap`` of the text's tokens before the previous one ends. Cuts fall on token boundaries.

    With ``title=True``, :meth:`chunk_titled` reads each document's title before every one of its
    passages (see there); :meth:`chunk` and :meth:`chunk_many`, which know no titles, cut as without.
    """

    def __init__(self, embedder: Embedder, *, size: int, overlap: int = 0, title: bool = False) -> None:
        super().__init__(embedder, size)
        room = size - self.counter.overhead
        if not isinstance(overlap, int) or not 0 <= overlap < room:
            raise ConfigError(
                f"overlap must be at least 0 and below the {room} tokens of text a {size}-token chunk holds, "
                f"not {overlap!r}"
            )
        self.overlap = overlap
        self.title = bool(title)
        self.name = f"fixed-{size}" + (f"-o{overlap}" if overlap else "") + ("-title" if title else "")

    def chunk(self, text: str) -> list[Chunk]:
        return self._chunks(
            text,
            self.counter.split(text, 0, len(text), self.max_tokens, overlap=self.overlap),
        )

    def chunk_titled(self, texts: Sequence[str], titles: Sequence[str]) -> list[list[Chunk]]:
        """Each document's passages, every one read after its document's title (``title=True``).

        A text that begins with its title (a BEIR document: title, space, text) is cut after the
        title, and its first passage's span reaches back to offset 0, so it reads the title as it
        stands; every other passage carries ``title + "\n"`` as its :attr:`Chunk.prefix`. The
        title's tokens count towards the limit (a title over half a window is cut to half), and
        offsets always point into the document's own text. Without ``title=True`` this is
        :meth:`chunk_many`.
        """
        if len(texts) != len(titles):
            raise ValueError(f"{len(texts)} texts but {len(titles)} titles")
        if not self.title:
            return self.chunk_many(texts)
        return [self._titled(text, title) for text, title in zip(texts, titles)]

    def _titled(self, text: str, title: str) -> list[Chunk]:
        title = title.strip()
        if not title:
            return self.chunk(text)
        room = self.max_tokens - self.counter.overhead
        if self.counter.count(title) - self.counter.overhead > room // 2:
            s, e, _ = self.counter.split(title, 0, len(title), self.counter.overhead + room // 2)[0]
            title = title[s:e]
        leads = text.startswith(title)  # the text reads its title first: its first passage holds it
        body = len(title) if leads else 0
        prefix = " ".join(title.split()) + "\n"
        limit = self.max_tokens - (self.counter.count(prefix) - self.counter.overhead)
        while True:
            chunks = []
            for n, (s, e, _) in enumerate(self.counter.split(text, body, len(text), limit, overlap=self.overlap)):
                if n == 0 and leads:
                    chunks.append(Chunk(text[0:e], 0, e, self.counter.count(text[0:e])))
                else:
                    chunks.append(Chunk(text[s:e], s, e, self.counter.count(prefix + text[s:e]), prefix))
            if not chunks and text.strip():  # nothing but the title: the title alone
                return self.chunk(text)
            # A tokenizer that merges across the join can make a passage dearer than its parts:
            # shrink the windows by the excess and cut again (never over the limit).
            worst = max((c.tokens for c in chunks), default=0)
            if worst <= self.max_tokens:
                return chunks
            limit -= worst - self.max_tokens


class PassageChunker(FixedChunker):
    """Passages sized to the model itself: windows of ``max_tokens`` (the model's limit unless
    given; its prefix and special tokens included), overlapping by an eighth of a window unless
    ``overlap`` says otherwise. Passage-level scoring with no numbers to choose."""

    def __init__(self, embedder: Embedder, *, max_tokens: int, overlap: int | None = None, title: bool = False) -> None:
        if overlap is None:
            overlap = max_tokens // 8 if isinstance(max_tokens, int) else 0
        super().__init__(embedder, size=max_tokens, overlap=overlap, title=title)
        self.name = "passages" + self.name.removeprefix("fixed")


_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")
_LINE_BREAKS = re.compile(r"\n")
_SPACES = re.compile(r"\s+")


def _split_on(pattern: re.Pattern) -> Callable[[str, int, int], list[tuple[int, int]]]:
    def split(text: str, start: int, end: int) -> list[tuple[int, int]]:
        spans, at = [], start
        for match in pattern.finditer(text, start, end):
            spans.append(strip_span(text, at, match.start()))
            at = match.end()
        spans.append(strip_span(text, at, end))
        return [(s, e) for s, e in spans if s < e]

    return split


class RecursiveChunker(BaseChunker):
    """Splits at the coarsest boundary that brings pieces under the limit: paragraphs, then lines,
    sentences, words, and tokens as a last resort; neighbouring pieces that fit are packed
    together, never across a boundary that had to be split finer."""

    SEPARATORS = (
        ("paragraph", _split_on(_BLANK_LINES)),
        ("line", _split_on(_LINE_BREAKS)),
        ("sentence", split_sentences),
        ("word", _split_on(_SPACES)),
    )
    fallback_what = ("word", "words")

    def __init__(self, embedder: Embedder, *, max_tokens: int) -> None:
        super().__init__(embedder, max_tokens)
        self.name = f"recursive-{max_tokens}"

    def chunk(self, text: str) -> list[Chunk]:
        start, end = strip_span(text, 0, len(text))
        if start >= end:
            return []
        tokens = self.counter.count(text[start:end])
        if tokens <= self.max_tokens:
            return self._chunks(text, [(start, end, tokens)])
        return self._chunks(text, self._split(text, start, end, 0))

    def _split(self, text: str, start: int, end: int, level: int) -> list[Piece]:
        if level == len(self.SEPARATORS):  # a single word over the limit
            self.fallbacks += 1
            return self.counter.split(text, start, end, self.max_tokens)
        parts = self.SEPARATORS[level][1](text, start, end)
        if len(parts) <= 1:
            return self._split(text, start, end, level + 1)
        out: list[Piece] = []
        run: list[Piece] = []
        for s, e in parts:
            tokens = self.counter.count(text[s:e])
            if tokens <= self.max_tokens:
                run.append((s, e, tokens))
                continue
            out.extend(self.counter.pack(text, run, self.max_tokens))
            run = []
            out.extend(self._split(text, s, e, level + 1))
        out.extend(self.counter.pack(text, run, self.max_tokens))
        return out


class SentenceChunker(BaseChunker):
    """Whole sentences packed greedily up to the limit; a sentence over the limit alone is cut by
    tokens (and counted in ``fallbacks``)."""

    fallback_what = ("sentence", "sentences")

    def __init__(self, embedder: Embedder, *, max_tokens: int) -> None:
        super().__init__(embedder, max_tokens)
        self.name = f"sentence-{max_tokens}"

    def chunk(self, text: str) -> list[Chunk]:
        pieces = self._fit_or_split(text, split_sentences(text))
        return self._chunks(text, self.counter.pack(text, pieces, self.max_tokens))
