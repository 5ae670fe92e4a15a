"""The Chunker seam: text in, chunks with character offsets and token counts out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Chunk", "Chunker", "chunk_documents"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a text: ``text == original[start:end]``; ``tokens`` under the target model's tokenizer.

    ``prefix`` is what the model reads before the piece (its document's title, for a chunker with
    ``title=true``; else empty): the model embeds ``prefix + text``, and ``tokens`` counts both.
    """

    text: str
    start: int
    end: int
    tokens: int
    prefix: str = ""

    @property
    def embedded(self) -> str:
        """The text the model embeds for this chunk."""
        return self.prefix + self.text


@runtime_checkable
class Chunker(Protocol):
    """Splits one text into chunks of at most ``max_tokens`` tokens of the target model.

    ``name`` is a short, stable label of the chunker and its settings (``fixed-200-o50``), used in
    reports and in the keys of saved indexes.

    ``notices`` are lines for a report or the CLI about what chunking had to do (empty when there is
    nothing to say): embedtune's chunkers count in ``fallbacks`` the pieces that no natural boundary
    could bring under the limit, which were cut by tokens instead, and say so there.
    """

    name: str
    max_tokens: int

    @property
    def notices(self) -> list[str]:
        """One line per thing worth telling about the chunks made so far; empty when none."""
        ...

    def chunk(self, text: str) -> list[Chunk]: ...

    def chunk_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """The chunks of each text, in input order (the semantic chunker embeds all texts' windows
        in one call)."""
        ...


def chunk_documents(chunker: Chunker, texts: Sequence[str], titles: Sequence[str]) -> list[list[Chunk]]:
    """The chunks of each document, given its title too: a chunker that reads titles (one with a
    ``chunk_titled`` method, as ``title=true`` makes) puts each title before its passages; any
    other chunks the texts alone."""
    titled = getattr(chunker, "chunk_titled", None)
    return titled(texts, titles) if callable(titled) else chunker.chunk_many(texts)
