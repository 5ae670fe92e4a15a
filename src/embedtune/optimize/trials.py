"""Scoring one strategy for the search: on growing samples (rungs), through the cache and the stores.

A trial is scored by the code ``compare``, ``search`` and ``serve`` run: the strategy's documents
are built into an embedded store by :func:`~embedtune.indexer.index_documents` (embedding through
the cache), and a :class:`~embedtune.retriever.Retriever` gives its runs and fuses them.

**Rungs.** :func:`plan_rungs` cuts the tuning queries into nested samples that grow by the
reduction factor (a ninth, a third, all of them), each with a corpus sample of the same fraction
plus every document those queries judge. A trial is scored rung by rung, and the search's pruner
(successive halving) stops it when it is not among the best at a rung, so the full corpus is
embedded only for strategies that can win. Scores at one rung are comparable with each other,
not with another rung's (a smaller corpus is easier); the pruner only compares within a rung.

**Sharing.** Stores are kept per model x chunker x vector setting x rung (in the search's folder), runs
per store, feedback and rung, so a new fusion weight, or a strategy seen before, costs a fusion and a
metric. A new vector setting costs a store written from cached vectors. :attr:`TrialScorer.texts_embedded`
counts texts the models really embedded or encoded (cache misses), so each trial can say what it cost.

**Ensembles** are scored through :class:`~embedtune.ensemble.EnsembleRetriever` over their
members' answers (each member's own Retriever ``combine``, from the shared runs); a ``[rerank]``
table is applied after the fusion by that retriever's (or the Retriever's) ``rerank``, as ``search``
applies it. Feedback, fusion weights and ensemble weights are fitted on the rung's queries.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from embedtune.catalogue import find_card
from embedtune.embedder import Embedder
from embedtune.engine import CachingEmbedder, close_stack, find_layer
from embedtune.ensemble import Ensemble, EnsembleRetriever
from embedtune.evaluation.collections import Qrels
from embedtune.evaluation.compare import METRICS, SELECT_METRIC
from embedtune.evaluation.metrics import evaluate, evaluate_per_query
from embedtune.evaluation.tuning import feedback_grid, tune_convex_weight, tune_feedback, tune_fusion_weights
from embedtune.evaluation.workspace import CountedOnce, TimedEmbedder, Workspace, bm25_bytes, served_query_ms, slug
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.indexer import index_documents
from embedtune.retriever import BM25, DENSE, SPARSE, Retriever
from embedtune.search.feedback import Feedback, FeedbackMethod
from embedtune.search.rerank import CrossEncoderScorer, PairScorer, RerankSpec
from embedtune.search.runs import Run
from embedtune.stores.base import Store
from embedtune.strategy import Fusion, Mode, Strategy

if TYPE_CHECKING:
    from embedtune.documents import SourceDocument
    from embedtune.sparse.encoder import SparseEncoder

Candidate = Strategy | Ensemble
"""What a trial scores: one strategy, or an ensemble of them."""

__all__ = ["Costs", "Rung", "TrialScorer", "plan_rungs"]

REDUCTION = 3  # each rung holds three times the previous one's queries and documents
MAX_RUNGS = 3
MIN_RUNG_QUERIES = 10  # a rung smaller than this says nothing
LATENCY_QUERIES = 10


@dataclass(frozen=True, kw_only=True)
class Rung:
    """One sample of the tuning queries and of the corpus. ``step`` is optuna's resource (1, 3, 9...)."""

    index: int
    step: int
    queries: Mapping[str, str]
    qrels: Qrels
    documents: Sequence[SourceDocument]

    @property
    def label(self) -> str:
        return f"r{self.index}"


@dataclass(frozen=True, kw_only=True)
class Costs:
    """A strategy's costs on the whole corpus. ``vectors_bytes`` is the vector index alone, and a
    sparse model's index (0 for BM25); ``index_bytes`` adds the BM25 index a hybrid or BM25
    strategy keeps beside it. An ensemble's are its members' summed."""

    index_bytes: int
    vectors_bytes: int
    query_ms: float
    usd: float


def plan_rungs(
    documents: Sequence[SourceDocument],
    queries: Mapping[str, str],
    qrels: Qrels,
    *,
    seed: int = 0,
    reduction: int = REDUCTION,
    max_rungs: int = MAX_RUNGS,
    min_queries: int = MIN_RUNG_QUERIES,
) -> list[Rung]:
    """Nested samples of the judged tuning queries and the corpus; the last is all of both.

    As many rungs (at most ``max_rungs``) as keep the smallest at ``min_queries`` queries or more.
    The samples come from one seeded shuffle, so each rung holds the previous one.
    """
    judged = [qid for qid in queries if qrels.get(qid)]
    count = 1
    while count < max_rungs and len(judged) / reduction**count >= min_queries:
        count += 1
    rng = random.Random(seed)
    query_order = sorted(judged)
    rng.shuffle(query_order)
    doc_order = list(range(len(documents)))
    rng.shuffle(doc_order)
    position = {doc.id: i for i, doc in enumerate(documents)}
    rungs = []
    for index in range(count):
        fraction = 1.0 / reduction ** (count - 1 - index)
        chosen = query_order[: max(1, math.ceil(fraction * len(query_order)))]
        if index == count - 1:
            docs: Sequence[SourceDocument] = list(documents)
        else:
            keep = set(doc_order[: math.ceil(fraction * len(documents))])
            keep |= {position[d] for qid in chosen for d in qrels[qid] if d in position}
            docs = [documents[i] for i in sorted(keep)]
        rungs.append(
            Rung(
                index=index,
                step=reduction**index,
                queries={qid: queries[qid] for qid in chosen},
                qrels={qid: dict(qrels[qid]) for qid in chosen},
                documents=docs,
            )
        )
    return rungs


class TrialScorer:
    """Scores strategies on the rungs, sharing stores, runs and loaded models between trials.

    ``space`` holds the stores; ``cache`` is the embedding cache file; ``providers`` maps a model
    URI to an already opened provider (tests share one loaded model). Close it when done.
    """

    def __init__(
        self,
        rungs: Sequence[Rung],
        space: Workspace,
        *,
        cache: str | os.PathLike[str] | None,
        providers: Mapping[str, Embedder] | None = None,
        latency_queries: int = LATENCY_QUERIES,
    ) -> None:
        self.rungs = list(rungs)
        self._space = space
        self._cache = cache
        self._given = dict(providers or {})
        self._latency_queries = latency_queries
        self._providers: dict[str, CountedOnce] = {}
        self._timers: dict[str, TimedEmbedder] = {}
        self._stacks: dict[str, Embedder] = {}
        self._sparse: dict[str, SparseEncoder] = {}
        self._rerankers: dict[str, PairScorer] = {}
        self._stores: dict[str, Store] = {}
        self._runs: dict[tuple[str, str], Run] = {}
        self._feedback: dict[tuple[str, str], Feedback] = {}
        self._latency: dict[str, float] = {}
        self._bytes: dict[str, int] = {}

    @property
    def final(self) -> Rung:
        return self.rungs[-1]

    @property
    def texts_embedded(self) -> int:
        """Texts the models embedded or encoded so far (cache misses): corpus chunks, queries, semantic windows."""
        encoded = sum(getattr(encoder, "model_stats", encoder.stats).texts for encoder in self._sparse.values())
        return sum(timer.texts for timer in self._timers.values()) + encoded

    # -- quality ----------------------------------------------------------------------------

    def quality(self, strategy: Candidate, rung: Rung) -> float:
        """nDCG@10 of ``strategy`` on ``rung``'s queries over ``rung``'s documents."""
        run = self._answer(strategy, rung, rung.queries)
        return evaluate(rung.qrels, run, [SELECT_METRIC])[SELECT_METRIC]

    def fit(self, strategy: Candidate, rung: Rung, step: float) -> Candidate:
        """``strategy`` with what is fitted on ``rung``'s queries: feedback parameters, then the convex
        weight (:meth:`fit_alpha`) or an ensemble's weights (:meth:`fit_weights`)."""
        if isinstance(strategy, Ensemble):
            return self.fit_weights(strategy, rung, step)
        return self.fit_alpha(self.fit_feedback(strategy, rung), rung, step)

    def fit_feedback(self, strategy: Strategy, rung: Rung) -> Strategy:
        """A strategy with feedback, its parameters the point of the method's grid that scores best
        on ``rung``'s queries for the run it changes (the dense run for Rocchio, BM25's for RM3), as
        ``compare --feedback`` tunes them. Kept per store, method and rung; others pass unchanged."""
        if strategy.feedback is None:
            return strategy
        method = strategy.feedback.method
        single = self._single(strategy, method)
        key = (f"{self._unit(single)}|{method.value}", rung.label)
        if key not in self._feedback:
            store = self._store(single, rung)
            embedder = self._stack(single.embedder) if single.embedder is not None else None
            if method is FeedbackMethod.ROCCHIO:
                assert embedder is not None
                ids = list(rung.queries)
                vectors = embedder.embed([rung.queries[q] for q in ids], "query")  # once, for every point
                rows = {qid: i for i, qid in enumerate(ids)}

                def search(feedback: Feedback, queries: Mapping[str, str]) -> Run:
                    retriever = Retriever(replace(single, feedback=feedback), store, embedder)
                    ids = list(queries)
                    return retriever.dense_run_from_vectors(ids, vectors[[rows[q] for q in ids]], single.depth)

            else:

                def search(feedback: Feedback, queries: Mapping[str, str]) -> Run:
                    return Retriever(replace(single, feedback=feedback), store).lexical_run(queries, single.depth)

            self._feedback[key] = tune_feedback(rung.qrels, rung.queries, search, feedback_grid(method))[0]
        return replace(strategy, feedback=self._feedback[key])

    def fit_alpha(self, strategy: Strategy, rung: Rung, step: float) -> Strategy:
        """A convex strategy with the weight that scores best on ``rung``'s queries (a grid of ``step``).

        Only fusions of the runs already made: no embedding, no search. Other strategies pass unchanged.
        """
        if strategy.fusion is not Fusion.CONVEX:
            return strategy
        rocchio = strategy.feedback if self._feeds(strategy, FeedbackMethod.ROCCHIO) else None
        rm3 = strategy.feedback if self._feeds(strategy, FeedbackMethod.RM3) else None
        dense = replace(strategy, mode=Mode.DENSE, fusion=None, alpha=None, feedback=rocchio, rerank=None)
        bm25 = Strategy(mode=Mode.BM25, depth=strategy.depth, feedback=rm3)
        grid = [min(1.0, round(i * step, 6)) for i in range(round(1 / step) + 1)]
        alpha, _ = tune_convex_weight(
            rung.qrels,
            self._answer(dense, rung, rung.queries),
            self._answer(bm25, rung, rung.queries, store_of=strategy),
            metric=SELECT_METRIC,
            grid=grid,
            method=strategy.normalization,  # type: ignore[arg-type]
        )
        return replace(strategy, alpha=alpha)

    def fit_weights(self, ensemble: Ensemble, rung: Rung, step: float) -> Ensemble:
        """An ensemble with the convex weights that score best on ``rung``'s queries (a simplex grid
        of ``step``, :func:`~embedtune.evaluation.tuning.tune_fusion_weights`), as ``compare --fuse``
        tunes them; from its members' answers, already made."""
        if ensemble.method is not Fusion.CONVEX:
            return ensemble
        answers = [self._answer(member, rung, rung.queries) for member in ensemble.members]
        weights, _ = tune_fusion_weights(
            rung.qrels,
            answers,
            metric=SELECT_METRIC,
            step=step if round(1 / step) * step == 1 else 0.1,
            method=ensemble.normalization,  # type: ignore[arg-type]
        )
        return replace(ensemble, weights=weights)

    def per_query(self, strategy: Candidate, rung: Rung) -> dict[str, float]:
        """nDCG@10 of each of ``rung``'s queries (the runs are those :meth:`quality` made)."""
        return evaluate_per_query(rung.qrels, self._answer(strategy, rung, rung.queries), [SELECT_METRIC])[
            SELECT_METRIC
        ]

    def report_per_query(self, strategy: Candidate, queries: Mapping[str, str], qrels: Qrels) -> dict[str, float]:
        """nDCG@10 of each query of the reported split over the whole corpus."""
        run = self._answer(strategy, self.final, queries, memo=False)
        return evaluate_per_query(qrels, run, [SELECT_METRIC])[SELECT_METRIC]

    def report(self, strategy: Candidate, queries: Mapping[str, str], qrels: Qrels) -> dict[str, float]:
        """nDCG@10, Recall@100 and MRR@10 on other queries (the reported split) over the whole corpus."""
        run = self._answer(strategy, self.final, queries, memo=False)
        return evaluate(qrels, run, METRICS)

    def _answer(
        self,
        strategy: Candidate,
        rung: Rung,
        queries: Mapping[str, str],
        *,
        memo: bool = True,
        store_of: Strategy | None = None,
    ) -> Run:
        """The strategy's run over ``rung``'s store (``store_of``'s store: the hybrid's, for its BM25 run).

        An ensemble's is its members' answers fused by its EnsembleRetriever; a ``[rerank]`` table
        reorders the fused head, as ``search`` does.
        """
        if isinstance(strategy, Ensemble):
            answers = [self._answer(member, rung, queries, memo=memo) for member in strategy.members]
            members = [self._retriever(member, rung) for member in strategy.members]
            ensemble = EnsembleRetriever(strategy, members, reranker=self._reranker(strategy.rerank))
            try:
                keyed = {ensemble.key(i): answer for i, answer in enumerate(answers)}
                fused = ensemble.combine(keyed, ensemble.combine_depth(strategy.depth))
                return self._reranked(strategy, rung, memo, lambda: ensemble.rerank(queries, fused, strategy.depth))
            finally:
                ensemble.close()
        retriever = self._retriever(strategy, rung, store_of)
        key = self._unit(store_of or strategy)
        runs: dict[str, Run] = {}
        try:
            if strategy.uses_vectors:
                rocchio = self._feeds(strategy, FeedbackMethod.ROCCHIO)
                dense_key = key if not rocchio else f"{key}|{strategy.feedback.label}"  # type: ignore[union-attr]
                runs[DENSE] = self._memo(
                    (dense_key, rung.label), memo, lambda: retriever.dense_run(queries, strategy.depth)
                )
            if strategy.uses_lexical:
                # BM25 over the same documents gives the same run from any store: shared per rung.
                rm3 = self._feeds(strategy, FeedbackMethod.RM3)
                lexical_key = "bm25" if not rm3 else f"bm25|{strategy.feedback.label}"  # type: ignore[union-attr]
                runs[BM25] = self._memo(
                    (lexical_key, rung.label), memo, lambda: retriever.lexical_run(queries, strategy.depth)
                )
            if strategy.uses_sparse:
                runs[SPARSE] = self._memo(
                    (key, rung.label), memo, lambda: retriever.sparse_run(queries, strategy.depth)
                )
            combined = retriever.combine(runs, retriever.combine_depth(strategy.depth))
            return self._reranked(strategy, rung, memo, lambda: retriever.rerank(queries, combined, strategy.depth))
        finally:
            retriever.close()

    def _reranked(self, strategy: Candidate, rung: Rung, memo: bool, compute) -> Run:
        """The reranked answer, kept per strategy and rung: the cross-encoder is the slow part."""
        if strategy.rerank is None or not memo:
            return compute()
        return self._memo((f"rerank|{strategy.fingerprint()}", rung.label), memo, compute)

    @staticmethod
    def _feeds(strategy: Strategy, method: FeedbackMethod) -> bool:
        return strategy.feedback is not None and strategy.feedback.method is method

    @staticmethod
    def _single(strategy: Strategy, method: FeedbackMethod) -> Strategy:
        """The run that ``method`` changes, as a strategy of its own: dense for Rocchio, BM25 for RM3."""
        if method is FeedbackMethod.RM3:
            return Strategy(mode=Mode.BM25, depth=strategy.depth)
        return replace(strategy, mode=Mode.DENSE, fusion=None, alpha=None, feedback=None, rerank=None)

    def _memo(self, key: tuple[str, str], memo: bool, compute) -> Run:
        if not memo:
            return compute()
        if key not in self._runs:
            self._runs[key] = compute()
        return self._runs[key]

    def _retriever(self, strategy: Strategy, rung: Rung, store_of: Strategy | None = None) -> Retriever:
        """``strategy``'s Retriever over its store at ``rung`` (cached embedding, cached sparse rows)."""
        store = self._store(store_of or strategy, rung)
        embedder = self._stack(strategy.embedder) if strategy.embedder else None
        sparse = self._encoder(strategy) if strategy.uses_sparse else None
        return Retriever(strategy, store, embedder, reranker=self._reranker(strategy.rerank), sparse=sparse)

    # -- costs ------------------------------------------------------------------------------

    def costs(self, strategy: Candidate, rung: Rung | None = None) -> Costs:
        """Index size, median query latency and dollars of ``strategy`` on the whole corpus.

        With a smaller ``rung``, an estimate from its store: size and dollars scaled by the
        corpus's documents over the rung's, latency as measured there. An ensemble's sizes and
        dollars are its members' summed (BM25's counted once); its latency is measured whole.
        """
        rung = rung or self.final
        if isinstance(strategy, Ensemble):
            parts = [self.costs(member, rung) for member in strategy.members]
            return Costs(
                index_bytes=sum(p.index_bytes for p in parts),
                vectors_bytes=sum(p.vectors_bytes for p in parts),
                query_ms=self._query_ms(strategy, rung),
                usd=sum(p.usd for p in parts),
            )
        store = self._store(strategy, rung)
        scale = len(self.final.documents) / max(1, len(rung.documents))
        key = f"{self._unit(strategy)}.{rung.label}"
        vectors_bytes = lexical_bytes = 0
        if strategy.uses_vectors:
            if key not in self._bytes:  # the vectors as stored (size, precision, what was fitted, any graph)
                self._bytes[key] = store.index_bytes()
            # What was fitted (a PCA projection, the int8 calibration) has one size whatever the corpus.
            manifest = store.read_manifest()
            fixed = 0 if manifest is None else manifest.compression_bytes
            vectors_bytes = round((self._bytes[key] - fixed) * scale) + fixed
        if strategy.uses_sparse:
            if key not in self._bytes:  # the sparse index as saved: the learned model's "vectors"
                from embedtune.sparse.side import sparse_index_bytes

                self._bytes[key] = sparse_index_bytes(store, self._encoder(strategy))
            vectors_bytes = round(self._bytes[key] * scale)
        if strategy.uses_lexical:
            lexical = f"bm25.{rung.label}"
            if lexical not in self._bytes:
                self._bytes[lexical] = bm25_bytes(store.lexical_index())
            lexical_bytes = round(self._bytes[lexical] * scale)
        return Costs(
            index_bytes=vectors_bytes + lexical_bytes,
            vectors_bytes=vectors_bytes,
            query_ms=self._query_ms(strategy, rung),
            usd=self._usd(strategy, store, rung) * scale,
        )

    def _query_ms(self, strategy: Candidate, rung: Rung) -> float:
        """Median milliseconds of ``search_one`` (k = 10) over a few tuning queries, embedding uncached.

        The served path: the query embedded (or encoded) by the model, not the cache, searched,
        fused and reranked (see :func:`~embedtune.evaluation.workspace.served_query_ms`). Kept per
        store, mode, feedback and rerank (a fusion weight changes no time).
        """
        if isinstance(strategy, Ensemble):
            parts = [self._latency_key(m) for m in strategy.members]
            key = f"ensemble[{','.join(parts)}]{self._rerank_label(strategy)}.{rung.label}"
        else:
            key = f"{self._latency_key(strategy)}{self._rerank_label(strategy)}.{rung.label}"
        if key in self._latency:
            return self._latency[key]
        texts = list(rung.queries.values())[: self._latency_queries + 1]
        retriever: Retriever | EnsembleRetriever
        if isinstance(strategy, Ensemble):
            members = [self._retriever(member, rung) for member in strategy.members]
            retriever = EnsembleRetriever(strategy, members, reranker=self._reranker(strategy.rerank))
        else:
            retriever = self._retriever(strategy, rung)
        # As ``serve`` runs it: over the opened models, no cache in front.
        self._latency[key] = served_query_ms(retriever, texts)
        return self._latency[key]

    def _latency_key(self, strategy: Strategy) -> str:
        feedback = "" if strategy.feedback is None else f"+{strategy.feedback.label}"
        return f"{self._unit(strategy)}|{strategy.mode.value}{feedback}"

    @staticmethod
    def _rerank_label(strategy: Candidate) -> str:
        return "" if strategy.rerank is None else f">{strategy.rerank.label}"

    def _usd(self, strategy: Strategy, store: Store, rung: Rung) -> float:
        """Dollars to embed the corpus (its chunks, as the model counts them) for a paid model; else 0."""
        card = None if strategy.embedder is None else find_card(strategy.embedder.model)
        if card is None or card.usd_per_million_tokens is None:
            return 0.0
        embedder = self._stack(strategy.embedder)
        limit = embedder.max_tokens
        spans = store.chunk_spans()
        tokens = sum(
            min(embedder.count_tokens(doc.text[start:end], "document"), limit)
            for doc in rung.documents
            for start, end in spans.get(doc.id, ())
        )
        return card.usd_per_million_tokens * tokens / 1e6

    # -- stores and stacks ------------------------------------------------------------------

    def _unit(self, strategy: Strategy) -> str:
        """What a store holds: the model's vectors (size included) of one chunker at one precision,
        a sparse model's index, or BM25's alone."""
        if strategy.sparse is not None:
            return f"sparse@{slug(strategy.sparse.model)}"
        if strategy.embedder is None:
            return "bm25"
        spec = strategy.embedder
        dims = "" if spec.dims is None else f"@d{spec.dims}"
        return f"{slug(spec.model)}{dims}@{slug(strategy.chunker)}@{slug(strategy.vectors_label)}"

    def _store(self, strategy: Strategy, rung: Rung) -> Store:
        name = f"{self._unit(strategy)}.{rung.label}"
        if name in self._stores:
            return self._stores[name]
        sparse = None
        if strategy.sparse is not None:
            built, embedder = Strategy(mode=Mode.SPARSE, sparse=strategy.sparse, depth=strategy.depth), None
            sparse = self._encoder(strategy)
        elif strategy.embedder is None:
            built, embedder = Strategy(mode=Mode.BM25, depth=strategy.depth), None
        else:
            built = Strategy(
                embedder=strategy.embedder,
                chunker=strategy.chunker,
                chunk_score=strategy.chunk_score,
                precision=strategy.precision,
                dims=strategy.dims,
                reduction=strategy.reduction,
                rescore=strategy.rescore,
                depth=strategy.depth,
            )
            embedder = self._stack(strategy.embedder)
        store = self._space.store(name, built, embedder)
        index_documents(rung.documents, built, store, embedder, sparse=sparse)
        self._stores[name] = store
        return store

    def _stack(self, spec: EmbedderSpec | None) -> Embedder:
        """The cached stack of ``spec``, over a timed provider; one per spec for the whole search."""
        assert spec is not None
        key = repr(spec)
        if key not in self._stacks:
            timer = TimedEmbedder(self._provider(spec))
            self._timers[key] = timer
            self._stacks[key] = build_embedder(spec, cache=self._cache, provider=timer)
        return self._stacks[key]

    def _encoder(self, strategy: Strategy) -> SparseEncoder:
        """The sparse model's encoder, its rows kept in the embedding cache; one per model for the search."""
        from embedtune.sparse.encoder import open_sparse_encoder

        assert strategy.sparse is not None
        key = strategy.sparse.model
        if key not in self._sparse:
            self._sparse[key] = open_sparse_encoder(strategy.sparse, cache=self._cache)
        return self._sparse[key]

    def _reranker(self, spec: RerankSpec | None) -> PairScorer | None:
        """The cross-encoder of a ``[rerank]`` table, loaded once for the search (None without one)."""
        if spec is None:
            return None
        key = f"{spec.model}|{spec.batch}"
        if key not in self._rerankers:
            self._rerankers[key] = CrossEncoderScorer(spec.model, batch=spec.batch)
        return self._rerankers[key]

    def _provider(self, spec: EmbedderSpec) -> Embedder:
        """The opened model (loaded lazily on its first embedding), shared by every stack of it.

        Its token counts are kept for the whole search, as ``compare`` keeps them: the chunker, the
        length policy, the batcher and the dollars of every trial count the same texts.
        """
        key = spec.model if spec.dims is None else f"{spec.model}@{spec.dims}"
        if key not in self._providers:
            given = self._given.get(spec.model) if spec.dims is None else None
            self._providers[key] = CountedOnce(given if given is not None else open_provider(spec))
        return self._providers[key]

    def close(self) -> None:
        for stack in self._stacks.values():
            if (cache := find_layer(stack, CachingEmbedder)) is not None:
                cache.close()
        given = {id(p) for p in self._given.values()}
        for provider in self._providers.values():
            if id(provider.inner) not in given:  # an HTTP provider's connections; one handed in stays the caller's
                close_stack(provider)
        self._stacks.clear()
        self._providers.clear()
        self._sparse.clear()
        self._rerankers.clear()
        self._space.close()
