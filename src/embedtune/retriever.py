"""The Retriever: a Strategy and a Store answer queries.

This is the one path from a query to hits. ``compare`` scores a strategy with it, ``search`` and
the service answer with it, so the figure in a report is what a user gets.

A search runs in two steps, each public so that evaluation can share the first between
strategies that differ only in the second:

1. :meth:`Retriever.runs`: the runs the strategy's mode needs, each ``depth`` deep: ``dense``
   (query vectors against the store's chunk vectors, each document scored from its chunks by
   the strategy's chunk score, see :mod:`embedtune.search.chunks`) and ``bm25`` (the store's
   lexical index over whole documents), or ``sparse`` (the query's learned term weights against
   the store's sparse index, see :mod:`embedtune.sparse`).
2. :meth:`Retriever.combine`: the mode's answer from those runs: the dense or BM25 run as it is,
   or their fusion (reciprocal rank fusion with ``rrf_k``, or the convex combination of
   normalised scores with weight ``alpha`` on the dense run), cut to ``k``.

3. :meth:`Retriever.rerank`, when the strategy has a ``[rerank]`` table: a cross-encoder reorders
   the first ``top`` documents of the combined run (see :mod:`embedtune.search.rerank`).

``search(queries, k)`` is ``combine(runs(queries), k)``, reranked when asked; ``search_one(text, k)`` adds what an
application shows: each document's best chunk, its offsets and text, and its metadata.

Query vectors go through the store's reduction (truncation, or the PCA fitted when it was built,
read from its manifest) before they meet the stored vectors; the store handles their precision.

A strategy with ``[feedback]`` searches its run twice (:mod:`embedtune.search.feedback`): Rocchio
moves the reduced query vector toward the stored vectors of its first search's best chunks, RM3
expands the BM25 query with terms of its first search's documents.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedder import Embedder
from .errors import ConfigError, InputError
from .search.chunks import doc_run_from_chunk_run
from .search.compress import Reducer
from .search.dense import l2_normalize
from .search.feedback import FeedbackMethod, rm3_run, rocchio
from .search.fusion import convex, rrf
from .search.rerank import CrossEncoderScorer, PairScorer, rerank_run
from .search.runs import Run, cut, ranked
from .stores.base import Filter, Store, check_filter, doc_of_chunk, is_first_chunk
from .strategy import Fusion, Mode, Strategy

if TYPE_CHECKING:
    from .sparse.encoder import SparseEncoder
    from .sparse.index import SparseIndex
    from .sparse.side import TableSparseIndex

__all__ = ["Hit", "Retriever"]

DENSE = "dense"
BM25 = "bm25"
SPARSE = "sparse"


@dataclass(frozen=True, kw_only=True)
class Hit:
    """One document found for a query, with the chunk that made it score.

    ``chunk_id``, ``start``, ``end`` and ``text`` are the document's best-scoring chunk (its
    offsets into the document's text); for a document found by BM25 alone they describe the
    document's first chunk, or the whole document when it has none.
    """

    doc_id: str
    score: float
    chunk_id: str | None
    start: int
    end: int
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "score": self.score,
            "chunk_id": self.chunk_id,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "metadata": dict(self.metadata),
        }


class Retriever:
    """Answers queries with ``strategy`` over ``store``; ``embedder`` embeds the queries.

    The embedder must be the one the store's vectors came from (the caller checks its
    fingerprint against the store's manifest: :func:`embedtune.indexer.open_retriever` does).
    A BM25 strategy needs no embedder. ``reranker`` scores (query, document) pairs for a strategy
    with a ``[rerank]`` table; by default its cross-encoder folder is checked now and loaded on
    first use (pass one to share a loaded model between retrievers). A sparse strategy needs
    ``sparse``, the encoder of its ``[sparse]`` model, whose index the store keeps
    (:mod:`embedtune.sparse.side`).
    """

    def __init__(
        self,
        strategy: Strategy,
        store: Store,
        embedder: Embedder | None = None,
        *,
        reranker: PairScorer | None = None,
        sparse: SparseEncoder | None = None,
    ) -> None:
        if strategy.uses_vectors and embedder is None:
            raise ConfigError(f"strategy {strategy.name!r} embeds queries; give the retriever an embedder")
        if strategy.uses_sparse and sparse is None:
            raise ConfigError(f"strategy {strategy.name!r} encodes queries; give the retriever its sparse encoder")
        self.strategy = strategy
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        if strategy.rerank is not None and reranker is None:
            self.reranker = CrossEncoderScorer(strategy.rerank.model, batch=strategy.rerank.batch)
        self.sparse = sparse
        self._sparse_index: SparseIndex | TableSparseIndex | None = None  # opened once
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._reducer: tuple[Reducer | None] | None = None  # read from the manifest once

    # -- step 1: the runs ------------------------------------------------------------------

    def runs(self, queries: Mapping[str, str], *, where: Filter | None = None) -> dict[str, Run]:
        """The runs this strategy's mode fuses, each :attr:`Strategy.depth` documents deep."""
        return self._runs(queries, where)[0]

    def _runs(self, queries: Mapping[str, str], where: Filter | None) -> tuple[dict[str, Run], dict[str, list]]:
        """The runs, and each query's chunk hits behind the dense run (best first)."""
        depth = self.strategy.depth
        runs: dict[str, Run] = {}
        chunk_hits: dict[str, list] = {}
        lexical = None
        if self.strategy.uses_lexical and self.strategy.uses_vectors:
            # BM25 runs beside the query embedding and the vector search: tokenising is the only
            # part of it that holds the GIL, and a hybrid answers in the time of the slower side.
            lexical = self._pool().submit(self.lexical_run, queries, depth, where=where)
        elif self.strategy.uses_lexical:
            runs[BM25] = self.lexical_run(queries, depth, where=where)
        if self.strategy.uses_sparse:
            runs[SPARSE] = self.sparse_run(queries, depth, where=where)
        if self.strategy.uses_vectors:
            query_ids = list(queries)
            vectors = self._embed_queries([queries[qid] for qid in query_ids])
            runs[DENSE], chunk_hits = self._dense(query_ids, vectors, depth, where)
        if lexical is not None:
            runs[BM25] = lexical.result()
        return runs, chunk_hits

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="embedtune-bm25")
            return self._executor

    def close(self) -> None:
        """Stop the thread that runs BM25 beside the dense search (the store stays open: it is the caller's)."""
        with self._pool_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def dense_run(self, queries: Mapping[str, str], depth: int, *, where: Filter | None = None) -> Run:
        """Each query's ``depth`` best documents by their chunks' cosine similarity."""
        query_ids = list(queries)
        vectors = self._embed_queries([queries[qid] for qid in query_ids])
        return self._dense(query_ids, vectors, depth, where)[0]

    def dense_run_from_vectors(
        self, query_ids: Sequence[str], vectors: np.ndarray, depth: int, *, where: Filter | None = None
    ) -> Run:
        """As :meth:`dense_run`, for query vectors already embedded."""
        return self._dense(query_ids, vectors, depth, where)[0]

    def _embed_queries(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise ConfigError("a bm25 strategy has no dense run")
        return self.embedder.embed(texts, "query")

    def _dense(
        self, query_ids: Sequence[str], vectors: np.ndarray, depth: int, where: Filter | None
    ) -> tuple[Run, dict[str, list]]:
        """The dense run and the chunk hits behind it.

        A document is scored from its chunks among those retrieved (see
        :mod:`embedtune.search.chunks`); chunks are fetched deeper and deeper until each query
        has ``depth`` distinct documents or the store has no more to give.
        """
        if len(query_ids) != len(vectors):
            raise InputError(f"{len(query_ids)} query ids but {len(vectors)} query vectors")
        where = check_filter(where)
        vectors = self._reduce(l2_normalize(vectors))
        feedback = self.strategy.feedback
        if feedback is not None and feedback.method is FeedbackMethod.ROCCHIO and feedback.active:
            first = self._dense_search(query_ids, vectors, feedback.docs, where)[1]
            vectors = self._rocchio(query_ids, vectors, first)
        return self._dense_search(query_ids, vectors, depth, where)

    def _dense_search(
        self, query_ids: Sequence[str], vectors: np.ndarray, depth: int, where: Filter | None
    ) -> tuple[Run, dict[str, list]]:
        """:meth:`_dense` for query vectors already reduced as the store's are."""
        run: Run = {}
        chunk_hits: dict[str, list] = {}
        pending = list(range(len(query_ids)))
        reach = depth
        while pending:
            found = self.store.search(vectors[pending], reach, where)
            deeper = []
            for i, hits in zip(pending, found):
                docs = self._chunk_scores(hits)
                if len(docs) >= depth or len(hits) < reach:  # enough, or the store is exhausted
                    run[query_ids[i]], chunk_hits[query_ids[i]] = docs, hits
                else:
                    deeper.append(i)
            pending, reach = deeper, reach * 2
        return (cut(run, depth) if run else {}), chunk_hits

    def _rocchio(self, query_ids: Sequence[str], vectors: np.ndarray, first: Mapping[str, list]) -> np.ndarray:
        """Each query vector moved toward the stored vectors of its first search's best chunks.

        A document's best chunk is its first among the hits (best first); its vector is read back
        as the store holds it (reduced; int8 and binary codes decoded), so the query moves in the
        space it is searched in.
        """
        feedback = self.strategy.feedback
        assert feedback is not None
        best: dict[str, list[str]] = {}
        for qid in query_ids:
            chunks: dict[str, str] = {}
            for chunk, _ in first.get(qid, []):
                chunks.setdefault(doc_of_chunk(chunk), chunk)
            best[qid] = list(chunks.values())[: feedback.docs]
        wanted = sorted({doc_of_chunk(chunk) for chunks in best.values() for chunk in chunks})
        stored: dict[str, np.ndarray] = {}
        for record in self.store.read_records(wanted):
            if record.vectors is not None:
                stored.update(zip(record.chunk_ids, record.vectors))
        moved = np.array(vectors, dtype=np.float32, copy=True)
        for i, qid in enumerate(query_ids):
            rows = [stored[chunk] for chunk in best[qid] if chunk in stored]
            if rows:
                moved[i] = rocchio(moved[i], np.stack(rows), feedback.weight)
        return moved

    def _reduce(self, vectors: np.ndarray) -> np.ndarray:
        """Query vectors reduced as the store's were (unchanged when its vectors are the model's size)."""
        if self._reducer is None:
            manifest = self.store.read_manifest()
            if manifest is None:
                return vectors
            self._reducer = (manifest.reducer(),)  # fixed for a store's life: its vectors depend on it
        reducer = self._reducer[0]
        return vectors if reducer is None else reducer.apply(vectors)

    def _chunk_scores(self, hits: Sequence[tuple[str, float]]) -> dict[str, float]:
        if not self.strategy.chunked:  # one chunk per document: its score is the document's
            return {doc_of_chunk(chunk): score for chunk, score in hits}
        chunk_docs = {chunk: doc_of_chunk(chunk) for chunk, _ in hits}
        firsts = {chunk for chunk in chunk_docs if is_first_chunk(chunk)}
        score = self.strategy.chunk_score
        return doc_run_from_chunk_run({"q": dict(hits)}, chunk_docs, score=score, first_chunks=firsts)["q"]

    def lexical_run(self, queries: Mapping[str, str], depth: int, *, where: Filter | None = None) -> Run:
        """Each query's ``depth`` best documents by BM25 over the store's documents."""
        where = check_filter(where)
        only = self.store.documents_matching(where) if where is not None else None
        index = self.store.lexical_index()
        feedback = self.strategy.feedback
        if feedback is not None and feedback.method is FeedbackMethod.RM3:
            return rm3_run(index, queries, depth, feedback, self._texts, only=only)
        return index.search(queries, depth, only=only)

    def _texts(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The documents' texts as the lexical index was built from them."""
        return {record.doc_id: record.text for record in self.store.read_records(doc_ids)}

    def sparse_run(self, queries: Mapping[str, str], depth: int, *, where: Filter | None = None) -> Run:
        """Each query's ``depth`` best documents by its learned term weights against the store's sparse index."""
        if self.sparse is None:
            raise ConfigError(f"strategy {self.strategy.name!r} has no sparse model, so no sparse run")
        where = check_filter(where)
        with self._pool_lock:
            if self._sparse_index is None:
                from .sparse.side import open_sparse_index

                self._sparse_index = open_sparse_index(self.store, self.sparse)
        only = self.store.documents_matching(where) if where is not None else None
        query_ids = list(queries)
        rows = self.sparse.encode([queries[qid] for qid in query_ids], "query")
        return self._sparse_index.search(query_ids, rows, depth, only=only)

    # -- step 2: the answer ----------------------------------------------------------------

    def combine(self, runs: Mapping[str, Run], k: int) -> Run:
        """The strategy's answer from its runs (see :meth:`runs`), each query cut to ``k``."""
        strategy = self.strategy
        if strategy.mode is Mode.DENSE:
            return cut(runs[DENSE], k)
        if strategy.mode is Mode.BM25:
            return cut(runs[BM25], k)
        if strategy.mode is Mode.SPARSE:
            return cut(runs[SPARSE], k)
        dense, lexical = runs[DENSE], runs[BM25]
        query_ids = list(dict.fromkeys([*dense, *lexical]))
        pair = [{q: dense.get(q, {}) for q in query_ids}, {q: lexical.get(q, {}) for q in query_ids}]
        if strategy.fusion is Fusion.RRF:
            fused = rrf(pair, k=strategy.rrf_k)
        else:
            alpha = float(strategy.alpha)  # type: ignore[arg-type]
            fused = convex(pair, [alpha, 1.0 - alpha], method=strategy.normalization)  # type: ignore[arg-type]
        return cut(fused, k)

    # -- step 3: the rerank -----------------------------------------------------------------

    def combine_depth(self, k: int) -> int:
        """How deep :meth:`combine` must cut for a final ``k``: the rerank reads its ``top`` first."""
        return k if self.strategy.rerank is None else max(k, self.strategy.rerank.top)

    def rerank(self, queries: Mapping[str, str], run: Run, k: int) -> Run:
        """``run`` (from :meth:`combine`) with its first ``top`` documents reordered by the
        cross-encoder, reading each document's stored text; cut to ``k``. Unchanged but cut
        without a ``[rerank]`` table."""
        spec = self.strategy.rerank
        if spec is None or self.reranker is None:
            return cut(run, k)
        heads = {doc for scores in run.values() for doc in ranked(scores, spec.top)}
        texts = {record.doc_id: record.text for record in self.store.read_records(sorted(heads))}
        return cut(rerank_run(run, queries, texts, self.reranker, top=spec.top), k)

    def search(self, queries: Mapping[str, str], k: int = 10, *, where: Filter | None = None) -> Run:
        """A run ``{query_id: {doc_id: score}}``: each query's ``k`` best documents."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, not {k}")
        if not queries:
            return {}
        combined = self.combine(self.runs(queries, where=where), self.combine_depth(k))
        return self.rerank(queries, combined, k) if self.strategy.rerank is not None else combined

    def search_one(self, text: str, k: int = 10, *, where: Filter | None = None) -> list[Hit]:
        """The ``k`` best documents for one query, each with its best chunk, offsets and text."""
        if not text.strip():
            raise InputError("the query is empty; give some words to search for")
        runs, chunk_hits = self._runs({"q": text}, where)
        combined = self.combine(runs, self.combine_depth(k))
        if self.strategy.rerank is not None:
            combined = self.rerank({"q": text}, combined, k)
        found_docs = combined.get("q", {})
        best: dict[str, str] = {}
        first_only = self.strategy.chunk_score == "first"  # the chunk that scored it: the first
        for chunk, _ in chunk_hits.get("q", []):  # best first: a document's first is its best
            if not first_only or is_first_chunk(chunk):
                best.setdefault(doc_of_chunk(chunk), chunk)
        wanted = {
            doc: best.get(doc, f"{doc}#0") for doc in found_docs
        }  # found by BM25 or sparse alone: its first chunk
        found = self.store.chunks(sorted(set(wanted.values())))
        hits = []
        for doc_id, score in found_docs.items():
            chunk = found.get(wanted[doc_id])
            if chunk is None:  # a document with no chunks (an empty text)
                hits.append(Hit(doc_id=doc_id, score=score, chunk_id=None, start=0, end=0, text=""))
            else:
                hits.append(
                    Hit(
                        doc_id=doc_id,
                        score=score,
                        chunk_id=chunk.id,
                        start=chunk.start,
                        end=chunk.end,
                        text=chunk.text,
                        metadata=chunk.metadata,
                    )
                )
        return hits
