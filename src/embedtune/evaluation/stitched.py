"""Stitched collections: a chunking benchmark that needs no new labels.

:func:`stitch` concatenates a collection's documents into long texts (a seeded shuffle, then
``per_text`` originals per long text, separated by a blank line) and keeps where each original
sits. A query's evidence is then the character ranges of the documents judged relevant to it, and
a chunker is judged by how well the top ``k`` chunks of each query cover that evidence:

- recall = evidence characters covered by the retrieved chunks / evidence characters;
- precision = evidence characters covered / characters in the retrieved chunks;
- IoU = evidence characters covered / characters in the union of retrieved chunks and evidence.

Characters are counted on the union of ranges, so overlapping chunks are not counted twice. These
are the token-level measures of Chroma's chunking evaluation (Smith and Troynikov, "Evaluating
Chunking Strategies for Retrieval", 2024), computed on characters. Beside them, document nDCG@10:
each chunk's score goes to every original document it overlaps, a document scores its best chunk,
and the ranking is judged with the collection's own qrels.

Bias, stated plainly: the seams between stitched documents are perfect topic boundaries, which
real long documents do not have. Chunkers that look for topic shifts (semantic) are favoured;
judge them on the natural collection too.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from embedtune.embedder import Embedder
from embedtune.errors import InputError
from embedtune.evaluation.collections import Collection, Qrels
from embedtune.evaluation.metrics import evaluate
from embedtune.search.chunks import search_by_chunks
from embedtune.search.dense import DenseIndex

__all__ = [
    "SEPARATOR",
    "SpanScores",
    "StitchedCollection",
    "StitchedResult",
    "TextRange",
    "evaluate_stitched",
    "span_scores",
    "stitch",
]

SEPARATOR = "\n\n"


class TextRange(NamedTuple):
    """Characters ``start:end`` of the text ``text_id``."""

    text_id: str
    start: int
    end: int


@dataclass(frozen=True, kw_only=True)
class StitchedCollection:
    """Long texts made of a collection's documents, and where each original document sits.

    ``texts`` maps a long text's id to its text; ``placements`` maps each original document id to
    its range, so ``texts[r.text_id][r.start:r.end]`` is that document's full text. ``queries`` and
    ``qrels`` are the original split's (judging original document ids). ``skipped`` lists the
    documents left out because their text is empty.
    """

    name: str
    texts: Mapping[str, str]
    placements: Mapping[str, TextRange]
    queries: Mapping[str, str]
    qrels: Qrels
    skipped: tuple[str, ...] = ()

    def evidence(self, query_id: str) -> list[TextRange]:
        """The ranges of the documents judged relevant (relevance >= 1) to ``query_id``."""
        return [
            self.placements[doc]
            for doc, rel in self.qrels.get(query_id, {}).items()
            if rel >= 1 and doc in self.placements
        ]

    def documents_in(self, text_range: TextRange) -> tuple[str, ...]:
        """The original documents whose ranges overlap ``text_range`` (by at least one character)."""
        return tuple(doc for doc in self._by_text[text_range.text_id] if _overlap(self.placements[doc], text_range) > 0)

    @cached_property
    def _by_text(self) -> dict[str, list[str]]:
        by_text: dict[str, list[str]] = {}
        for doc, placed in self.placements.items():
            by_text.setdefault(placed.text_id, []).append(doc)
        return by_text


def stitch(
    collection: Collection, *, split: str = "test", per_text: int = 5, seed: int = 0, separator: str = SEPARATOR
) -> StitchedCollection:
    """Concatenate ``collection``'s documents, ``per_text`` to a long text, in a seeded shuffle.

    The order depends only on the document ids and ``seed``. Each document contributes its full
    text (title and text, as it is indexed); documents with an empty text are skipped. Queries and
    qrels are those of ``split``.
    """
    if per_text < 1:
        raise InputError(f"per_text must be at least 1, not {per_text}")
    queries, qrels = collection.split(split)
    doc_ids = sorted(collection.corpus)
    random.Random(seed).shuffle(doc_ids)
    skipped = tuple(doc for doc in doc_ids if not collection.documents_text(doc))
    kept = [doc for doc in doc_ids if collection.documents_text(doc)]
    texts: dict[str, str] = {}
    placements: dict[str, TextRange] = {}
    width = len(str(max(len(kept) - 1, 0) // per_text))
    for group_start in range(0, len(kept), per_text):
        text_id = f"{collection.name}-stitched-{group_start // per_text:0{width}d}"
        parts: list[str] = []
        offset = 0
        for doc in kept[group_start : group_start + per_text]:
            if parts:
                parts.append(separator)
                offset += len(separator)
            full = collection.documents_text(doc)
            placements[doc] = TextRange(text_id, offset, offset + len(full))
            parts.append(full)
            offset += len(full)
        texts[text_id] = "".join(parts)
    return StitchedCollection(
        name=f"{collection.name} (stitched, {per_text} per text)",
        texts=texts,
        placements=placements,
        queries=queries,
        qrels=qrels,
        skipped=skipped,
    )


class SpanScores(NamedTuple):
    recall: float
    precision: float
    iou: float


def span_scores(retrieved: Sequence[TextRange], evidence: Sequence[TextRange]) -> SpanScores:
    """Recall, precision and IoU of ``retrieved`` ranges against ``evidence`` ranges, in characters.

    With ``R`` the union of the retrieved ranges, ``E`` the union of the evidence and ``|.|`` a
    count of characters: recall ``|R ∩ E| / |E|``, precision ``|R ∩ E| / |R|``, IoU
    ``|R ∩ E| / |R ∪ E|``; each is 0 when its denominator is.
    """
    got, wanted = _union(retrieved), _union(evidence)
    covered = sum(_overlap(a, b) for a in got for b in wanted if a.text_id == b.text_id)
    got_chars, wanted_chars = _length(got), _length(wanted)
    union = got_chars + wanted_chars - covered
    return SpanScores(
        recall=covered / wanted_chars if wanted_chars else 0.0,
        precision=covered / got_chars if got_chars else 0.0,
        iou=covered / union if union else 0.0,
    )


@dataclass(frozen=True, kw_only=True)
class StitchedResult:
    """One chunker on a stitched collection: its chunks, span scores at ``k`` and document nDCG@10.

    ``queries`` counts the queries with evidence, over which the span scores are averaged.
    ``chunk_seconds`` and ``embed_seconds`` are wall-clock times through the embedder given
    (a cache makes a rerun's near zero).
    """

    chunker: str
    chunks: int
    mean_tokens: float
    k: int
    recall: float
    precision: float
    iou: float
    ndcg_at_10: float
    queries: int
    chunk_seconds: float
    embed_seconds: float


def evaluate_stitched(stitched: StitchedCollection, chunker, embedder: Embedder, *, k: int = 5) -> StitchedResult:
    """Chunk every long text with ``chunker``, embed the chunks and queries, and score the top ``k``.

    ``chunker`` is an :class:`embedtune.chunking.Chunker`; it should be built for ``embedder``.
    """
    text_ids = list(stitched.texts)
    start = time.perf_counter()
    per_text = chunker.chunk_many([stitched.texts[t] for t in text_ids])
    chunk_seconds = time.perf_counter() - start
    ranges: list[TextRange] = []
    chunk_texts: list[str] = []
    tokens: list[int] = []
    for text_id, chunks in zip(text_ids, per_text):
        for chunk in chunks:
            ranges.append(TextRange(text_id, chunk.start, chunk.end))
            chunk_texts.append(chunk.text)
            tokens.append(chunk.tokens)
    if not ranges:
        raise InputError(f"{chunker.name} made no chunks of {stitched.name}; nothing to search")
    chunk_ids = [str(i) for i in range(len(ranges))]
    query_ids = [q for q in stitched.queries if stitched.evidence(q)]
    start = time.perf_counter()
    vectors = embedder.embed(chunk_texts, "document")
    query_vectors = embedder.embed([stitched.queries[q] for q in query_ids], "query")
    embed_seconds = time.perf_counter() - start
    index = DenseIndex.build(chunk_ids, vectors, model=embedder.name)

    top = index.search(query_ids, query_vectors, k)
    scores = [span_scores([ranges[int(c)] for c in top[q]], stitched.evidence(q)) for q in query_ids]
    chunk_docs = {cid: stitched.documents_in(r) for cid, r in zip(chunk_ids, ranges)}
    doc_run = search_by_chunks(index, chunk_docs, query_ids, query_vectors, 10, score="max")
    ndcg = evaluate({q: stitched.qrels[q] for q in query_ids}, doc_run, ["ndcg@10"])["ndcg@10"]
    return StitchedResult(
        chunker=chunker.name,
        chunks=len(ranges),
        mean_tokens=math.fsum(tokens) / len(tokens),
        k=k,
        recall=_mean(s.recall for s in scores),
        precision=_mean(s.precision for s in scores),
        iou=_mean(s.iou for s in scores),
        ndcg_at_10=ndcg,
        queries=len(query_ids),
        chunk_seconds=chunk_seconds,
        embed_seconds=embed_seconds,
    )


def _union(ranges: Sequence[TextRange]) -> list[TextRange]:
    """The ranges merged where they overlap or touch, sorted; empty ranges dropped."""
    merged: list[TextRange] = []
    for r in sorted(r for r in ranges if r.end > r.start):
        last = merged[-1] if merged else None
        if last is not None and last.text_id == r.text_id and r.start <= last.end:
            merged[-1] = TextRange(last.text_id, last.start, max(last.end, r.end))
        else:
            merged.append(r)
    return merged


def _overlap(a: TextRange, b: TextRange) -> int:
    if a.text_id != b.text_id:
        return 0
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def _length(ranges: Sequence[TextRange]) -> int:
    return sum(r.end - r.start for r in ranges)


def _mean(values) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else 0.0
