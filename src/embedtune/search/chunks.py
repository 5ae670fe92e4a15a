"""Chunked retrieval: search an index of chunk vectors, score documents by their chunks.

A chunk maps to the document(s) it came from (one, for chunks of a document; several when a
chunk of a stitched text overlaps several originals). A document's score is one of

- ``first``: the score of its first chunk alone (what truncating the document to the model's
  limit approximates, but cut on passage boundaries); the caller names the first chunks;
- ``max``: the score of its best chunk (a document is as relevant as its most relevant passage);
- ``sumN``: the sum of its ``N`` best chunks' scores (``sum3``): rewards several matching
  passages. Only the chunks retrieved for the query count, so it is the sum over the retrieved
  chunks, not over every chunk of the document.

:func:`search_by_chunks` retrieves chunks deeper and deeper until ``k`` distinct documents are
reached (or every chunk is retrieved), so a document run is never cut short by one document's
many chunks. Under ``max`` the result is exact: the first ``k`` distinct documents in the chunk
ranking are the ``k`` documents with the best chunks; so under ``first``, which ranks first
chunks alone (a document whose first chunk was not retrieved scores below every one that was).
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Container, Mapping, Sequence

import numpy as np

from embedtune.errors import ConfigError
from embedtune.search.dense import DenseIndex
from embedtune.search.runs import Run, cut

__all__ = ["CHUNK_SCORES", "ChunkDocs", "chunk_score_depth", "doc_run_from_chunk_run", "search_by_chunks"]

ChunkDocs = Mapping[str, str | Sequence[str]]
"""``{chunk_id: doc_id}``, or ``{chunk_id: (doc_id, ...)}`` for a chunk that spans several documents."""

CHUNK_SCORES = ("first", "max", "sumN")
"""The chunk scores, for help texts: ``sumN`` stands for ``sum2``, ``sum3``, ..."""

FIRST = "first"
_SUM = re.compile(r"sum([1-9][0-9]*)")


def chunk_score_depth(score: str) -> int:
    """How many of a document's chunks make its score: 1 for ``"first"`` and ``"max"``, ``N`` for
    ``"sumN"``. An unknown name is one line naming the choices."""
    if score in (FIRST, "max"):
        return 1
    match = _SUM.fullmatch(score) if isinstance(score, str) else None
    if match is None:
        raise ConfigError(
            f"unknown chunk score {score!r}; use first (the first passage), max (the best one), "
            "or sumN (the sum of the N best: sum3)"
        )
    return int(match.group(1))


def doc_run_from_chunk_run(
    chunk_run: Mapping[str, Mapping[str, float]],
    chunk_docs: ChunkDocs,
    *,
    score: str = "max",
    k: int | None = None,
    first_chunks: Container[str] | None = None,
) -> Run:
    """A document run from a chunk run: each document scored by its retrieved chunks.

    ``score`` is ``"first"``, ``"max"`` or ``"sumN"`` (see the module docstring); a chunk that maps
    to several documents gives its score to each. ``first_chunks`` holds the ids of the chunks
    that open their document (``"first"`` needs it: chunk ids say nothing of order here). ``k``
    keeps each query's best ``k`` documents.
    """
    depth = chunk_score_depth(score)
    if score == FIRST:  # the first chunks alone, scored as by max
        firsts = _first_chunks(first_chunks)
        chunk_run = {qid: {c: v for c, v in scores.items() if c in firsts} for qid, scores in chunk_run.items()}
    run: Run = {}
    for qid, scores in chunk_run.items():
        per_doc: dict[str, list[float]] = {}
        for chunk_id, value in scores.items():
            for doc_id in _docs_of(chunk_docs, chunk_id):
                per_doc.setdefault(doc_id, []).append(float(value))
        run[qid] = {
            doc: max(values) if depth == 1 else math.fsum(heapq.nlargest(depth, values))
            for doc, values in per_doc.items()
        }
    return cut(run, k) if k is not None else run


def search_by_chunks(
    index: DenseIndex,
    chunk_docs: ChunkDocs,
    query_ids: Sequence[str],
    query_vectors: np.ndarray,
    k: int,
    *,
    score: str = "max",
    first_chunks: Container[str] | None = None,
) -> Run:
    """Each query's top ``k`` documents, scored by their chunks in ``index`` (ids are chunk ids).

    Starts at ``k`` chunks per query and doubles the depth for the queries that still reach fewer
    than ``k`` distinct documents, until they do or every chunk is retrieved. ``first_chunks`` as
    in :func:`doc_run_from_chunk_run`.
    """
    chunk_score_depth(score)  # a bad name fails before any search
    ids = [c for c in index.ids if c in _first_chunks(first_chunks)] if score == FIRST else index.ids
    documents = len({doc for chunk_id in ids for doc in _docs_of(chunk_docs, chunk_id)})
    wanted = min(k, documents)
    run: Run = {}
    pending = list(range(len(query_ids)))
    depth = k
    while pending:
        chunk_run = index.search([query_ids[i] for i in pending], query_vectors[pending], depth)
        doc_run = doc_run_from_chunk_run(chunk_run, chunk_docs, score=score, first_chunks=first_chunks)
        deeper = []
        for i in pending:
            qid = query_ids[i]
            if len(doc_run[qid]) >= wanted or depth >= len(index):
                run[qid] = doc_run[qid]
            else:
                deeper.append(i)
        pending, depth = deeper, min(depth * 2, len(index))
    return cut({qid: run[qid] for qid in query_ids}, k) if query_ids else {}


def _first_chunks(first_chunks: Container[str] | None) -> Container[str]:
    if first_chunks is None:
        raise ConfigError("the first chunk score needs first_chunks, the ids of each document's first chunk")
    return first_chunks


def _docs_of(chunk_docs: ChunkDocs, chunk_id: str) -> Sequence[str]:
    docs = chunk_docs[chunk_id]
    return (docs,) if isinstance(docs, str) else docs
