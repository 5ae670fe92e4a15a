"""Compare retrieval strategies on one test collection: BM25, dense per model and chunker, and hybrids.

:func:`evaluate_strategies` is the pipeline behind ``embedtune eval`` and ``embedtune compare``.
Every strategy is built and scored by the code that ``index`` and ``search`` run, so a figure in
the report is what a user who builds the winner gets:

1. **Build.** Each model x chunker is a :class:`~embedtune.strategy.Strategy` indexed into an
   embedded store by :func:`~embedtune.indexer.index_documents` (documents as title + " " + text,
   chunked, embedded through the cache with texts over the model's limit truncated and counted).
   BM25 is a store of its own (no vectors), its lexical index over the same documents.
2. **Search.** A :class:`~embedtune.retriever.Retriever` per store gives each query's dense and
   BM25 runs, ``k`` documents deep; BM25 runs in a thread beside the embedding (numpy, bm25s and
   torch release the GIL for most of their work).
3. **Fuse.** Each hybrid strategy's answer is :meth:`Retriever.combine` of those runs: RRF
   (``k = 60``), or a convex combination whose weight ``alpha`` on the dense run is tuned on the
   tuning split.
4. **Select on dev, report on test.** The tuning split is ``dev`` when the collection has one,
   else ``train``; it tunes the convex weight and picks the winner (best nDCG@10 there). Every
   strategy is reported on ``split`` by nDCG@10, Recall@100 and MRR@10 with what it costs:
   tokens, embedding speed, index size, and dollars to embed the corpus for paid models. A
   collection with neither split has its winner picked on the reported split, and the notes say so.
5. **Call noise noise.** Each strategy's nDCG@10 on ``split`` gets a 95 % bootstrap interval over
   its queries and a paired randomisation test against the winner there
   (:mod:`~embedtune.evaluation.significance`). The **recommendation** is the cheapest strategy
   not significantly worse than the winner on the tuning split (``p >= 0.05`` there): the split
   that picked the winner, so the reported split still chooses nothing. Cheapest means, in turn:
   embeds nothing (BM25), fewer seconds to embed the corpus at the measured speed (compared only
   when every model's speed was measured; a model served from the cache has none), fewer bytes of
   vectors, fewer dollars; a model's hybrids with BM25 cost what the model does, so among them the
   best is recommended. The recommended strategy is the one ``compare`` writes as
   ``strategy.toml``; the winner is the best figure, the recommendation what is worth building.

With ``index_dir``, the stores are kept there (a folder per collection and a hash of its
documents, a store per model and chunker) and a rerun finds them built: nothing is chunked or
embedded again. Without it they live in a temporary folder.

Speed counts only texts the model actually embedded (cache misses), timed around the model's own
calls after one untimed warm-up call (loading weights is not counted); a run served wholly from
the cache measures no speed and says so. A run served wholly from the cache never loads a model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtune.catalogue import find_card
from embedtune.embedder import Embedder, Kind
from embedtune.engine import (
    BatchingEmbedder,
    CachingEmbedder,
    LengthPolicy,
    OverLimit,
    close_stack,
    find_layer,
    whole_calls,
)
from embedtune.engine.ray import RayEmbedder, RayOptions, ray_session
from embedtune.errors import ConfigError, InputError
from embedtune.evaluation.collections import Collection, Qrels
from embedtune.evaluation.metrics import evaluate_per_query
from embedtune.evaluation.reranking import RerankBase, reranked_rows
from embedtune.evaluation.significance import Recommendation, bootstrap_ci, paired_test, recommend
from embedtune.evaluation.tuning import feedback_grid, tune_convex_weight, tune_feedback
from embedtune.evaluation.workspace import CountedOnce, TimedEmbedder, Workspace, bm25_bytes, slug, workspace
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.indexer import index_documents
from embedtune.retriever import Retriever
from embedtune.search.bm25 import BM25Index
from embedtune.search.chunks import chunk_score_depth
from embedtune.search.feedback import Feedback, FeedbackMethod
from embedtune.search.rerank import PairScorer, RerankSpec
from embedtune.search.runs import Run
from embedtune.stores.base import Store
from embedtune.strategy import WHOLE_DOCUMENTS, Fusion, Mode, Precision, Strategy, vector_options

if TYPE_CHECKING:
    from embedtune.documents import SourceDocument
    from embedtune.ensemble import Ensemble

__all__ = [
    "HYBRID_METHODS",
    "METRICS",
    "ComparisonResult",
    "ModelCost",
    "ProgressFn",
    "StrategyResult",
    "evaluate_strategies",
    "with_significance",
]

METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
SELECT_METRIC = "ndcg@10"
HYBRID_METHODS: tuple[str, ...] = ("rrf", "convex")
TUNE_SPLITS: tuple[str, ...] = ("dev", "train")  # dev first: train queries may be unlike the test ones
RRF_K = 60
LATENCY_QUERIES = 10  # queries timed one at a time for a row's query latency (after one untimed)
_SLICE = 256  # query texts per call into the stack: the progress bar moves and the cache commits per slice

ProgressFn = Callable[[str, int, int], None]
"""``on_progress(task, done, total)``: ``done`` of ``total`` items of ``task`` are done."""


@dataclass(frozen=True, kw_only=True)
class ModelCost:
    """What embedding the collection with one model took.

    ``tokens`` counts every corpus and query text as the model reads it (its own tokenizer,
    prefixes and special tokens included, cut at ``max_tokens``): the work of embedding from
    scratch, whatever the cache held. ``tokens_embedded``, ``texts_embedded`` and
    ``embed_seconds`` cover only what the model embedded in this run (cache misses);
    ``texts_per_s`` is ``None`` when nothing was embedded (everything came from the cache).
    With a chunker, the corpus is its chunks (``truncated_documents`` counts chunks), and the
    sentence windows a semantic chunker embeds count as embedded texts and seconds too.
    """

    model: str
    dim: int
    corpus_tokens: int
    query_tokens: int
    tokens_embedded: int
    texts_embedded: int
    texts_cached: int
    embed_seconds: float
    truncated_documents: int
    truncated_queries: int
    usd_per_million_tokens: float | None

    @property
    def tokens(self) -> int:
        return self.corpus_tokens + self.query_tokens

    @property
    def texts_per_s(self) -> float | None:
        if self.texts_embedded == 0 or self.embed_seconds <= 0:
            return None
        return self.texts_embedded / self.embed_seconds

    @property
    def usd_to_embed_corpus(self) -> float | None:
        """``usd_per_million_tokens * corpus_tokens / 1e6`` for paid models; ``None`` for local ones."""
        if self.usd_per_million_tokens is None:
            return None
        return self.usd_per_million_tokens * self.corpus_tokens / 1e6


@dataclass(frozen=True, kw_only=True)
class StrategyResult:
    """One retrieval strategy's scores and costs.

    ``metrics`` are on the reported split; ``selection`` holds nDCG@10 on the tuning split that
    picked the winner (``None`` when there is none). ``kind`` is ``"bm25"``, ``"dense"``,
    ``"rrf"`` or ``"convex"``; ``model`` is the embedding model (``None`` for BM25); ``alpha`` is
    the tuned weight of the dense run in a convex hybrid. ``index_bytes`` is the size of the
    vectors (dense), of the saved BM25 index (bm25), or both (hybrids); ``vector_bytes`` is the
    vectors' part alone (0 for BM25). ``chunker`` names the
    chunker whose chunks were embedded and ``chunks`` counts them (both ``None`` for whole
    documents). ``strategy`` is the strategy itself (an ensemble for ``--fuse`` rows, whose ``kind`` is
    ``"ensemble"``), ready for ``index``.

    ``per_query`` holds nDCG@10 for each query of the reported split, ``selection_per_query`` for
    each query of the tuning split. ``interval`` is the 95 % bootstrap interval of nDCG@10 on the
    reported split; ``p_value`` and ``selection_p_value`` are the paired randomisation test's
    p-values against the winner on the reported and on the tuning split (1.0 for the winner).
    ``engine`` is what ran a local model (``auto`` resolved, e.g. ``openvino-bf16``); ``None`` for
    other providers and BM25. ``rerank_ms`` is a reranked row's rerank step, ms per query (batched).
    ``query_ms`` is a fused (``--fuse``) row's median latency, ms per query, one query at a time
    through its EnsembleRetriever with the models embedding (no cache), as a served one answers;
    when fused rows are timed, each reranked row's too, through its own retriever, rerank included.
    """

    name: str
    kind: str
    model: str | None
    metrics: Mapping[str, float]
    index_bytes: int
    cost: ModelCost | None = None
    alpha: float | None = None
    tuning: Mapping[float, float] | None = None
    chunker: str | None = None
    chunks: int | None = None
    strategy: Strategy | Ensemble | None = None
    selection: Mapping[str, float] | None = None
    per_query: Mapping[str, float] | None = None
    selection_per_query: Mapping[str, float] | None = None
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    selection_p_value: float | None = None
    vector_bytes: int = 0
    engine: str | None = None
    rerank_ms: float | None = None
    query_ms: float | None = None

    @property
    def embedding(self) -> str | None:
        """What was embedded: the model, and ``@ chunker`` when documents were chunked."""
        if self.model is None:
            return None
        return self.model if self.chunker is None else f"{self.model} @ {self.chunker}"

    @property
    def tokens(self) -> int | None:
        return None if self.cost is None else self.cost.tokens

    @property
    def texts_per_s(self) -> float | None:
        return None if self.cost is None else self.cost.texts_per_s

    @property
    def cached(self) -> bool:
        """True when the strategy embeds and everything came from the cache."""
        return self.cost is not None and self.cost.texts_embedded == 0

    @property
    def usd(self) -> float | None:
        return None if self.cost is None else self.cost.usd_to_embed_corpus

    @property
    def selection_score(self) -> float:
        """What picks the winner: nDCG@10 on the tuning split, else on the reported split."""
        return (self.selection or self.metrics)[SELECT_METRIC]


@dataclass(frozen=True, kw_only=True)
class ComparisonResult:
    """Every strategy's result on ``split``, in the order run, the winner and the recommendation.

    ``tune_split`` tuned the convex weights and chose the winner (by nDCG@10 there); when it is
    ``None`` the winner was chosen on ``split`` itself, and ``notes`` says so. ``recommendation``
    names the cheapest strategy within noise of the winner on that same split (``None`` when the
    strategies carry no per-query figures).
    """

    collection: str
    split: str
    tune_split: str | None
    documents: int
    queries: int
    k: int
    strategies: tuple[StrategyResult, ...]
    winner: str
    bm25_index_seconds: float | None = None
    notes: tuple[str, ...] = field(default=())
    chunk_score: str | None = None  # how chunked strategies scored documents; None when none chunked
    recommendation: Recommendation | None = None

    def strategy(self, name: str) -> StrategyResult:
        for result in self.strategies:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def best(self) -> StrategyResult:
        return self.strategy(self.winner)

    @property
    def selected_on(self) -> str:
        """The split whose queries picked the winner."""
        return self.tune_split or self.split

    @property
    def recommended(self) -> StrategyResult:
        """The strategy worth building: the cheapest within noise of the winner (the winner without figures)."""
        return self.best if self.recommendation is None else self.strategy(self.recommendation.recommended)

    def embed_seconds(self, strategy: StrategyResult) -> float | None:
        """Seconds to embed the corpus (its chunks, or its documents) at the strategy's measured speed.

        0 for BM25, which embeds nothing; ``None`` when the speed was not measured (from the cache).
        """
        if strategy.cost is None:
            return 0.0
        speed = strategy.texts_per_s
        return None if speed is None else (strategy.chunks or self.documents) / speed

    def cost_key(self, name: str) -> tuple[int, float, int, float]:
        """What "cheaper" means for the recommendation: smaller is cheaper, compared in order.

        Embeds anything (BM25 does not), the seconds to embed the corpus (only when every
        model's speed was measured in this run, else 0 for all), the bytes of the vectors, the
        dollars to embed. What a model costs, that is: BM25 beside it adds a small lexical index
        and no embedding, so a model's hybrids cost what the model alone does, and among equally
        cheap strategies the better one is recommended.
        """
        strategy = self.strategy(name)
        seconds = [self.embed_seconds(s) for s in self.strategies]
        timed = None not in seconds
        return (
            0 if strategy.cost is None else 1,
            (self.embed_seconds(strategy) or 0.0) if timed else 0.0,
            strategy.vector_bytes,
            strategy.usd or 0.0,
        )


def evaluate_strategies(
    collection: Collection,
    models: Sequence[EmbedderSpec],
    *,
    bm25: bool = True,
    hybrid: Sequence[str] = (),
    split: str = "test",
    tune_split: str | None = None,
    cache: str | Path | None = None,
    k: int = 100,
    on_progress: ProgressFn | None = None,
    providers: Mapping[str, Embedder] | None = None,
    index_dir: str | Path | None = None,
    chunkers: Sequence[str] = (),
    chunk_score: str | Sequence[str] = "max",
    chunk_over_limit: str = "error",
    ray: RayOptions | None = None,
    vectors: Sequence[str] = ("float32",),
    feedback: Sequence[str] = (),
    fuse: bool = False,
    rerank: Sequence[RerankSpec] = (),
    reranker: PairScorer | None = None,
) -> ComparisonResult:
    """Score BM25, each model's dense retrieval and their hybrids on ``split`` of ``collection``.

    ``hybrid`` names fusion methods (a subset of ``"rrf"``, ``"convex"``); each fuses every model
    with BM25. A ``sparse:`` model among ``models`` is a learned sparse strategy, a row of its own
    (:mod:`~embedtune.evaluation.sparse_rows`), never fused. ``tune_split`` tunes the convex weight and picks the winner (default: ``dev``,
    else ``train``); it is never ``split``. When the collection has no such split, convex is
    left out, RRF (which needs no tuning) is reported instead, the winner is picked on ``split``,
    and ``notes`` says both. ``cache`` is the embedding cache file (``None``: no cache).
    ``providers`` maps a model URI to an already opened provider to use instead of opening it
    again (tests share one loaded model).

    With ``index_dir``, each strategy's store is kept there and found on the next run (see the
    module docstring); a kept store built by another revision or setting of a model is rebuilt.

    ``chunkers`` are chunker specs (``fixed:size=200,overlap=50``, ``recursive``, ``semantic``;
    ``none`` stands for whole documents), each built for each model with
    ``over_model_limit=chunk_over_limit`` (``"allow"`` lets chunks over the model's limit through,
    to be truncated and counted). ``chunk_score`` is ``"first"``, ``"max"`` or ``"sumN"``, or
    several (a list, or names joined by commas): each chunked strategy is then scored once per
    chunk score from the same store and query vectors, a row each (``... by sum2``). When any
    chunker is given, the notes say how many documents are longer than each model's limit.

    With ``ray``, each model embeds on that Ray cluster (see ``build_embedder``); its cost is the
    cluster's wall time.

    ``vectors`` are vector settings in :func:`~embedtune.strategy.vector_options`' short form
    (``float32``, ``float16``, ``int8``, ``binary``, ``dims=128``, ``pca=64``, joined by ``+``),
    each built for each model and chunker: every one from the same cached vectors (with a cache,
    only the first embeds), each reporting its own index size.

    ``feedback`` names pseudo-relevance feedback methods (``rocchio``, ``rm3``): each adds a row
    beside every strategy it applies to (Rocchio: dense runs, alone and in hybrids; RM3: the BM25
    run, alone and in hybrids), its parameters tuned on the tuning split (a convex hybrid's weight
    tuned again with the feedback run); without a tuning split, the defaults, said in ``notes``.
    ``fuse`` adds two rows fusing BM25, every model's whole-document float32 run and every sparse
    model's run: N-way RRF,
    and N-way convex with weights tuned on the tuning split (equal when there is none, and the
    notes say so); see :mod:`~embedtune.evaluation.fused`.
    Each of ``rerank`` adds every strategy again with that ``[rerank]`` table (see
    :mod:`~embedtune.evaluation.reranking`); ``reranker`` scores pairs instead of each spec's model.
    """
    hybrid = _check_request(models, bm25, hybrid, k)
    from embedtune.evaluation.sparse_rows import evaluate_sparse, is_sparse

    sparse = [spec for spec in models if is_sparse(spec)]  # learned sparse models: a row each, never fused
    models = [spec for spec in models if not is_sparse(spec)]
    if hybrid and not models:
        raise ConfigError("a hybrid fuses a dense model with BM25; give at least one dense model")
    feedback_methods = _check_feedback(feedback, models, bm25 or bool(hybrid))
    chunkers, scores = _check_chunking(chunkers, chunk_score, chunk_over_limit)
    variants = _check_vectors(vectors)
    if fuse and not models and not sparse:
        raise ConfigError("--fuse fuses BM25 with models' runs; give at least one model")
    fuse_bases: list[Any] = []  # FuseBase: each model's whole-document float32 run, each sparse run
    queries, qrels = collection.split(split)
    notes: list[str] = []
    tune_split = _pick_tune_split(collection, split, tune_split)
    tune_queries: dict[str, str] = {}
    tune_qrels: Qrels = {}
    if tune_split is None:
        if "convex" in hybrid:
            hybrid = [m for m in hybrid if m != "convex"] + ([] if "rrf" in hybrid else ["rrf"])
            notes.append(
                f"convex fusion was not tuned: collection {collection.name!r} has no train or dev split "
                "(its weight is never tuned on the reported split); reporting RRF only"
            )
    else:
        tune_queries, tune_qrels = collection.split(tune_split)
    judged = _Judged(split=split, qrels=qrels, tune_qrels=tune_qrels)
    all_queries = {**queries, **tune_queries}
    latency_texts = list(all_queries.values())[: LATENCY_QUERIES + 1]  # every timed row answers these
    tuner = _FeedbackTuner(tune_queries=tune_queries, judged=judged, queries=all_queries, k=k)
    if feedback_methods and tune_split is None:
        notes.append(
            f"feedback ran with its default parameters: {collection.name!r} has no dev or train split to tune them on"
        )
    from embedtune.documents import corpus_documents  # documents.py reads collections through this package

    documents = corpus_documents(collection.corpus)

    results: list[StrategyResult] = []
    bases: list[RerankBase] = []  # what a reranked row needs to answer again
    bm25_seconds = None
    with (
        ray_session(ray),  # one connection for every model: `auto` starts its cluster once
        workspace(index_dir, collection.name, documents) as space,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedtune-bm25") as pool,
        ExitStack() as opened,  # providers this call opened: closed after the fused rows' timing
    ):
        lexical: _Lexical | None = None
        if bm25 or hybrid or fuse:
            start = time.perf_counter()
            lexical = _Lexical.open(space, documents, k)
            bm25_seconds = time.perf_counter() - start
            # Searched beside the embedding below.
            lexical.submit(pool, all_queries, k)
        for spec in models:
            given = (providers or {}).get(spec.label)
            # The over-limit note, the chunker, the length policy, the batcher and the cost all
            # count the same texts: the model's tokenizer runs once a text.
            provider = CountedOnce(given if given is not None else open_provider(spec))
            if given is None:  # an HTTP provider's connections; one handed in stays the caller's
                opened.callback(close_stack, provider)
            if any(c != WHOLE_DOCUMENTS for c in chunkers):
                notes.append(_over_limit_note(provider, documents))
            for chunker_spec, options in ((c, v) for c in chunkers for v in variants):
                strategy = Strategy(
                    embedder=replace(spec, over_limit=OverLimit.TRUNCATE),
                    chunker=chunker_spec,
                    chunk_score=scores[0],
                    depth=k,  # each run is k deep here, as in the file the winner becomes
                    **options,
                )
                for dense in _evaluate_dense(
                    strategy,
                    provider,
                    space,
                    documents,
                    all_queries,
                    judged,
                    k,
                    cache=cache,
                    chunk_over_limit=chunk_over_limit,
                    on_progress=on_progress,
                    notes=notes,
                    ray=ray,
                    scores=scores if chunker_spec != WHOLE_DOCUMENTS else scores[:1],
                ):
                    results.append(dense.result)
                    if fuse and not strategy.chunked and strategy.vectors_label == Precision.FLOAT32.value:
                        fuse_bases.append(_fuse_base(dense, k))
                    bases.append(RerankBase(dense.result, dense.store, dense.embedder, {"dense": dense.run}))
                    for method in hybrid:
                        assert lexical is not None  # a hybrid always builds BM25
                        results.append(_hybrid(method, dense, lexical, judged, k))
                        runs = {"dense": dense.run, "bm25": lexical.run}
                        bases.append(RerankBase(results[-1], dense.store, dense.embedder, runs))
                    results += _feedback_rows(feedback_methods, tuner, dense, lexical, hybrid, judged)
        for spec in sparse:
            sparse_base = evaluate_sparse(
                spec, space, documents, all_queries, judged.score, k, cache=cache, on_progress=on_progress
            )
            results.append(sparse_base.result)
            fuse_bases.append(sparse_base)
        if fuse:
            assert lexical is not None
            fused = _fused(lexical, fuse_bases, judged, k, len(documents), notes, latency_texts)
            results.extend(fused)
            bases.extend(_fused_rerank_bases(fused, lexical, fuse_bases, k))
        if bm25:
            assert lexical is not None
            if FeedbackMethod.RM3 in feedback_methods:
                results.insert(0, lexical.result(judged, tuner.rm3(lexical)))
            results.insert(0, lexical.result(judged))
            bases.insert(0, RerankBase(results[0], lexical.retriever.store, None, {"bm25": lexical.run}))
        if rerank:
            timed = any(row.query_ms is not None for row in results)  # latency is reported: theirs too
            rows, rerank_notes = reranked_rows(
                bases,
                rerank,
                all_queries,
                judged.score,
                k,
                reranker=reranker,
                latency_texts=latency_texts if timed else (),
            )
            results.extend(rows)
            notes.extend(rerank_notes)

    winner = max(results, key=lambda r: r.selection_score).name  # first of equals wins
    if tune_split is None:
        notes.append(
            f"the winner was picked on {split!r}, the split it is reported on: {collection.name!r} has no dev "
            "or train split to pick it on, so its figure is optimistic"
        )
    result = ComparisonResult(
        collection=collection.name,
        split=split,
        tune_split=tune_split,
        documents=len(documents),
        queries=len(queries),
        k=k,
        strategies=tuple(results),
        winner=winner,
        bm25_index_seconds=bm25_seconds,
        notes=tuple(notes),
        chunk_score=", ".join(scores) if any(c != WHOLE_DOCUMENTS for c in chunkers) else None,
    )
    return with_significance(result)


def with_significance(result: ComparisonResult) -> ComparisonResult:
    """``result`` with each strategy's interval and p-values, and the recommendation.

    Intervals and the reported split's p-values are for reading only; the recommendation is
    decided on the split that picked the winner (the tuning split, or ``split`` when there is
    none), so the reported split chooses nothing. A result whose strategies carry no per-query
    figures comes back as it is.
    """
    reported: dict[str, list[float]] = {}
    selecting: dict[str, Mapping[str, float]] = {}
    queries = list(result.best.per_query or ())
    for strategy in result.strategies:
        if strategy.per_query is None:
            return result
        reported[strategy.name] = [strategy.per_query[q] for q in queries]
        selecting[strategy.name] = strategy.selection_per_query or strategy.per_query
    best = result.winner
    recommendation = recommend(selecting, result.cost_key, best=best)
    rows = tuple(
        replace(
            s,
            interval=bootstrap_ci(reported[s.name]),
            p_value=1.0 if s.name == best else paired_test(reported[s.name], reported[best]),
            selection_p_value=recommendation.p_values[s.name],
        )
        for s in result.strategies
    )
    return replace(result, strategies=rows, recommendation=recommendation)


@dataclass(frozen=True)
class _Judged:
    """The reported split's judgments and the tuning split's (empty when there is none)."""

    split: str
    qrels: Qrels
    tune_qrels: Qrels

    def score(self, run: Run) -> dict[str, Any]:
        """A StrategyResult's figures: metrics and nDCG@10 per query on the reported split, and on the tuning split."""
        if not self.qrels:
            raise InputError(f"the {self.split!r} split holds no judged query; score a split with judgments")
        per_query = evaluate_per_query(self.qrels, run, METRICS)
        # The mean as evaluate() takes it, so the figures match it to the last bit.
        metrics = {name: math.fsum(values.values()) / len(self.qrels) for name, values in per_query.items()}
        scores: dict[str, Any] = {"metrics": metrics, "per_query": per_query[SELECT_METRIC]}
        if self.tune_qrels:
            tuning = evaluate_per_query(self.tune_qrels, run, [SELECT_METRIC])[SELECT_METRIC]
            scores["selection"] = {SELECT_METRIC: math.fsum(tuning.values()) / len(self.tune_qrels)}
            scores["selection_per_query"] = tuning
        return scores


class _Lexical:
    """BM25 as a strategy: a store without vectors, its run searched in a thread."""

    def __init__(self, retriever: Retriever, index: BM25Index) -> None:
        self.retriever = retriever
        self.index_bytes = bm25_bytes(index)
        self._future: Future[Run] | None = None

    @classmethod
    def open(cls, space: Workspace, documents: Sequence[SourceDocument], depth: int) -> _Lexical:
        strategy = Strategy(mode=Mode.BM25, depth=depth)
        store = space.store("bm25", strategy, None)
        index_documents(documents, strategy, store, None)
        return cls(Retriever(strategy, store), store.lexical_index())

    def submit(self, pool: ThreadPoolExecutor, queries: Mapping[str, str], k: int) -> None:
        self._future = pool.submit(self.retriever.lexical_run, queries, k)

    @property
    def run(self) -> Run:
        assert self._future is not None
        return self._future.result()

    def result(self, judged: _Judged, rm3: tuple[Feedback, Run] | None = None) -> StrategyResult:
        """BM25's row, or with ``rm3`` (its parameters and run) BM25 + RM3's."""
        strategy, run = self.retriever.strategy, self.run
        if rm3 is not None:
            strategy, run = replace(strategy, feedback=rm3[0]), rm3[1]
        scores = judged.score(Retriever(strategy, self.retriever.store).combine({"bm25": run}, strategy.depth))
        return StrategyResult(
            name=strategy.name,
            kind="bm25",
            model=None,
            **scores,
            index_bytes=self.index_bytes,
            strategy=strategy,
        )


@dataclass(frozen=True, kw_only=True)
class _Dense:
    """A dense strategy's scored result, its run, and its store (for the hybrids built on it)."""

    result: StrategyResult
    run: Run
    store: Store
    embedder: Embedder
    query_ids: Sequence[str] = ()
    vectors: np.ndarray | None = None  # the query vectors behind run, rows in query_ids order


def _evaluate_dense(
    strategy: Strategy,
    provider: Embedder,
    space: Workspace,
    documents: Sequence[SourceDocument],
    queries: Mapping[str, str],
    judged: _Judged,
    k: int,
    *,
    cache: str | Path | None,
    chunk_over_limit: str,
    on_progress: ProgressFn | None,
    notes: list[str],
    ray: RayOptions | None = None,
    scores: Sequence[str] = ("max",),
) -> list[_Dense]:
    """Build one model x chunker into its store, search every query, score and cost it: one
    result per chunk score (named ``... by SCORE`` when there are several), all from one store."""
    assert strategy.embedder is not None
    model, named = strategy.embedder.model, strategy.embedder.label  # named: with its engine when one is asked
    timer = TimedEmbedder(provider)  # one per strategy: each strategy's own cost
    embedder = build_embedder(strategy.embedder, cache=cache, provider=timer, ray=ray)
    try:
        chunker_name = _chunker_name(strategy, embedder, chunk_over_limit)
        label = named if chunker_name is None else f"{model} @ {chunker_name}"
        folder = slug(named) + ("" if chunker_name is None else f"@{slug(chunker_name)}")
        if strategy.vectors_label != Precision.FLOAT32.value:
            label += f" [{strategy.vectors_label}]"
            folder += f"#{slug(strategy.vectors_label)}"
        store = space.store(folder, strategy, embedder)

        def progress(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(f"{label} documents", done, total)

        report = index_documents(
            documents, strategy, store, embedder, on_progress=progress, over_model_limit=chunk_over_limit
        )
        texts = _unit_texts(documents, store)
        # For the cost and the truncation note (also when the store was already built).
        lengths = [embedder.count_tokens(t, "document") for t in texts]
        query_ids = list(queries)
        vectors, query_truncated = _embed_all(embedder, [queries[q] for q in query_ids], "query", label, on_progress)
        retrievers = [Retriever(replace(strategy, chunk_score=score), store, embedder) for score in scores]
        runs = [retriever.dense_run_from_vectors(query_ids, vectors, k) for retriever in retrievers]
        cost = _cost(model, embedder, timer, lengths, list(queries.values()), query_truncated)
    finally:
        for layer in (find_layer(embedder, CachingEmbedder), find_layer(embedder, RayEmbedder)):
            if layer is not None:
                layer.close()
    if cost.truncated_documents:
        what = "documents" if chunker_name is None else "chunks"
        notes.append(
            f"{label}: {cost.truncated_documents} of {len(texts)} {what} are over its "
            f"{embedder.max_tokens}-token limit and were truncated"
        )
    if query_truncated:
        notes.append(f"{label}: {query_truncated} queries were truncated")
    notes.extend(f"{label}: {notice}" for notice in report.notices)
    out = []
    for retriever, run in zip(retrievers, runs):
        result = StrategyResult(
            name=label if len(scores) == 1 else f"{label} by {retriever.strategy.chunk_score}",
            kind="dense",
            model=model,
            **judged.score(retriever.combine({"dense": run}, k)),
            index_bytes=store.index_bytes(),
            vector_bytes=store.index_bytes(),
            cost=cost,
            chunker=chunker_name,
            chunks=None if chunker_name is None else len(texts),
            strategy=retriever.strategy,
            engine=_engine_of(provider),
        )
        out.append(_Dense(result=result, run=run, store=store, embedder=embedder, query_ids=query_ids, vectors=vectors))
    return out


def _over_limit_note(provider: Embedder, documents: Sequence[SourceDocument]) -> str:
    """How many documents are longer than the model's limit, by its own tokenizer (what passages are for)."""
    texts = [doc.text for doc in documents if doc.image is None and doc.text.strip()]
    over = sum(provider.count_tokens(text, "document") > provider.max_tokens for text in texts)
    return (
        f"{provider.name}: {over} of {len(texts)} documents are longer than its {provider.max_tokens}-token "
        "limit (whole documents are truncated there; chunkers read them whole)"
    )


def _engine_of(provider: Embedder) -> str | None:
    """What ran a local sentence-transformers model (auto resolved); None for other providers."""
    from embedtune.providers.local import SentenceTransformerEmbedder

    local = find_layer(provider, SentenceTransformerEmbedder)
    return None if local is None else local.engine


def _chunker_name(strategy: Strategy, embedder: Embedder, over_limit: str) -> str | None:
    """The chunker's own name (``fixed-40-o10``), which says its limit; None for whole documents."""
    if not strategy.chunked:
        return None
    from embedtune.chunking import make_chunker

    return make_chunker(strategy.chunker, embedder, over_model_limit=over_limit).name


def _unit_texts(documents: Sequence[SourceDocument], store: Store) -> list[str]:
    """The texts the model embedded for the corpus, in document order: each document's chunks
    (images, which have no tokens, left out)."""
    spans = store.chunk_spans()
    return [doc.text[start:end] for doc in documents if doc.image is None for start, end in spans.get(doc.id, ())]


def _hybrid(
    method: str,
    dense: _Dense,
    lexical: _Lexical,
    judged: _Judged,
    k: int,
    feedback: tuple[Feedback, Run] | None = None,
) -> StrategyResult:
    """A dense strategy fused with BM25, scored through its own Retriever's ``combine``.

    With ``feedback`` (its parameters and the run it changes: dense for Rocchio, BM25 for RM3),
    that run takes the plain one's place.
    """
    base = dense.result
    assert isinstance(base.strategy, Strategy)
    dense_run, lexical_run, chosen = dense.run, lexical.run, None
    if feedback is not None:
        chosen = feedback[0]
        if chosen.method is FeedbackMethod.ROCCHIO:
            dense_run = feedback[1]
        else:
            lexical_run = feedback[1]
    alpha, table = None, None
    if method == "convex":
        # Tuned on the tuning split's queries alone; the reported split never moves it.
        alpha, table = tune_convex_weight(judged.tune_qrels, dense_run, lexical_run, metric=SELECT_METRIC)
    strategy = replace(base.strategy, mode=Mode.HYBRID, fusion=Fusion(method), alpha=alpha, feedback=chosen)
    retriever = Retriever(strategy, dense.store, dense.embedder)
    scores = judged.score(retriever.combine({"dense": dense_run, "bm25": lexical_run}, k))
    return replace(
        base,
        name=f"{base.name} + bm25 ({method})" + ("" if chosen is None else f" + {chosen.method.value}"),
        kind=method,
        **scores,
        index_bytes=base.index_bytes + lexical.index_bytes,
        alpha=alpha,
        tuning=table,
        strategy=strategy,
    )


class _FeedbackTuner:
    """Feedback parameters tuned on the tuning split's queries, and the runs they give on every query."""

    def __init__(self, *, tune_queries: Mapping[str, str], judged: _Judged, queries: Mapping[str, str], k: int):
        self.tune_queries = tune_queries
        self.judged = judged
        self.queries = queries
        self.k = k
        self._rm3: tuple[Feedback, Run] | None = None  # BM25's run is shared by every strategy

    def _choose(self, method: FeedbackMethod, search: Callable[[Feedback, Mapping[str, str]], Run]) -> Feedback:
        if not self.judged.tune_qrels:
            return Feedback(method=method)
        return tune_feedback(self.judged.tune_qrels, self.tune_queries, search, feedback_grid(method))[0]

    def rm3(self, lexical: _Lexical) -> tuple[Feedback, Run]:
        """RM3's parameters and its BM25 run of every query."""
        if self._rm3 is None:
            base = lexical.retriever

            def search(feedback: Feedback, queries: Mapping[str, str]) -> Run:
                return Retriever(replace(base.strategy, feedback=feedback), base.store).lexical_run(queries, self.k)

            chosen = self._choose(FeedbackMethod.RM3, search)
            self._rm3 = (chosen, search(chosen, self.queries))
        return self._rm3

    def rocchio(self, dense: _Dense) -> tuple[Feedback, Run]:
        """Rocchio's parameters and the dense run of every query, from the query vectors already embedded."""
        assert dense.vectors is not None and isinstance(dense.result.strategy, Strategy)
        rows = {qid: i for i, qid in enumerate(dense.query_ids)}
        strategy, vectors = dense.result.strategy, dense.vectors

        def search(feedback: Feedback, queries: Mapping[str, str]) -> Run:
            retriever = Retriever(replace(strategy, feedback=feedback), dense.store, dense.embedder)
            ids = list(queries)
            return retriever.dense_run_from_vectors(ids, vectors[[rows[q] for q in ids]], self.k)

        chosen = self._choose(FeedbackMethod.ROCCHIO, search)
        return chosen, search(chosen, self.queries)


def _feedback_rows(
    methods: Sequence[FeedbackMethod],
    tuner: _FeedbackTuner,
    dense: _Dense,
    lexical: _Lexical | None,
    hybrid: Sequence[str],
    judged: _Judged,
) -> list[StrategyResult]:
    """A dense strategy's rows with feedback: Rocchio alone and in each hybrid, RM3 in each hybrid."""
    rows: list[StrategyResult] = []
    k = tuner.k
    if FeedbackMethod.ROCCHIO in methods:
        chosen, run = tuner.rocchio(dense)
        base = dense.result
        assert isinstance(base.strategy, Strategy)
        strategy = replace(base.strategy, feedback=chosen)
        scores = judged.score(Retriever(strategy, dense.store, dense.embedder).combine({"dense": run}, k))
        rows.append(replace(base, name=f"{base.name} + rocchio", **scores, strategy=strategy))
        rows += [_hybrid(method, dense, lexical, judged, k, (chosen, run)) for method in hybrid if lexical]
    if FeedbackMethod.RM3 in methods and hybrid and lexical is not None:
        rm3 = tuner.rm3(lexical)
        rows += [_hybrid(method, dense, lexical, judged, k, rm3) for method in hybrid]
    return rows


def _check_feedback(feedback: Sequence[str], models: Sequence, lexical: bool) -> list[FeedbackMethod]:
    """The feedback methods asked for, each with a run it applies to (one line otherwise)."""
    if isinstance(feedback, str):
        feedback = [part.strip() for part in feedback.split(",") if part.strip()]
    methods: list[FeedbackMethod] = []
    for name in feedback:
        try:
            method = FeedbackMethod(name)
        except ValueError:
            raise ConfigError(f"unknown feedback method {name!r}; use rocchio or rm3") from None
        if method is FeedbackMethod.ROCCHIO and not models:
            raise ConfigError("rocchio feedback moves a dense query vector; give at least one model")
        if method is FeedbackMethod.RM3 and not lexical:
            raise ConfigError("rm3 feedback expands the BM25 query; add --bm25 or a hybrid")
        if method not in methods:
            methods.append(method)
    return methods


def _fuse_base(dense: _Dense, k: int) -> Any:
    from embedtune.evaluation.fused import FuseBase

    assert isinstance(dense.result.strategy, Strategy)
    retriever = Retriever(dense.result.strategy, dense.store, dense.embedder)
    return FuseBase(result=dense.result, retriever=retriever, runs={"dense": dense.run})


def _fused(
    lexical: _Lexical,
    dense: Sequence[Any],
    judged: _Judged,
    k: int,
    documents: int,
    notes: list[str],
    texts: Sequence[str],
) -> list[StrategyResult]:
    """``--fuse``'s rows: BM25, every whole-document float32 dense run and every sparse run, fused by
    RRF and by tuned convex; each row's query latency measured on ``texts``."""
    from embedtune.evaluation.fused import FuseBase, fused_results

    if not dense:
        notes.append("--fuse found no whole-document float32 run to fuse with BM25 (add the vector setting float32)")
        return []
    bm25 = FuseBase(result=lexical.result(judged), retriever=lexical.retriever, runs={"bm25": lexical.run})
    if not judged.tune_qrels:
        notes.append("the fused convex row has equal weights, untuned: the collection has no dev or train split")
    return fused_results(
        [bm25, *dense],
        judged.score,
        k,
        tune_qrels=judged.tune_qrels,
        documents=documents,
        latency_texts=texts,
    )


def _fused_rerank_bases(
    rows: Sequence[StrategyResult], lexical: _Lexical, dense: Sequence[Any], k: int
) -> list[RerankBase]:
    """What reranking the fused rows needs: the members' retrievers and answers, as :func:`_fused` fused them."""
    from embedtune.ensemble import EnsembleRetriever

    if not rows:
        return []
    members = [lexical.retriever, *(base.retriever for base in dense)]
    answers = [lexical.retriever.combine({"bm25": lexical.run}, k), *(base.answer(k) for base in dense)]
    runs = {EnsembleRetriever.key(i): answer for i, answer in enumerate(answers)}
    return [RerankBase(row, lexical.retriever.store, None, runs, members=members) for row in rows]


def _check_request(models: Sequence, bm25: bool, hybrid: Sequence[str], k: int) -> list[str]:
    if isinstance(hybrid, str):
        hybrid = [part.strip() for part in hybrid.split(",") if part.strip()]
    unknown = [m for m in hybrid if m not in HYBRID_METHODS]
    if unknown:
        raise ConfigError(f"unknown hybrid method {unknown[0]!r}; use {' or '.join(HYBRID_METHODS)}")
    if not models and not bm25:
        raise ConfigError("nothing to compare: give at least one model, or BM25")
    if hybrid and not models:
        raise ConfigError("a hybrid fuses a model with BM25; give at least one model")
    for spec in models:
        find_card(spec.model)  # an unknown model fails before any work is done
    uris = [spec.label for spec in models]
    repeated = sorted({uri for uri in uris if uris.count(uri) > 1})
    if repeated:
        raise ConfigError(f"model {repeated[0]} is listed twice; list each model (and engine) once")
    if k < 100:
        raise ConfigError(f"k must be at least 100 to report Recall@100, not {k}")
    return list(dict.fromkeys(hybrid))


def _check_chunking(
    chunkers: Sequence[str], chunk_score: str | Sequence[str], over_limit: str
) -> tuple[list[str], list[str]]:
    """The chunker specs to run (whole documents, ``none``, when none is given) and the chunk scores."""
    if isinstance(chunkers, str):
        raise ConfigError("chunkers must be a list of chunker specs (specs hold commas), not one string")
    named = chunk_score.split(",") if isinstance(chunk_score, str) else chunk_score
    scores = list(dict.fromkeys(score.strip() for score in named if score.strip()))
    if not scores:
        raise ConfigError("give at least one chunk score: first, max or sumN")
    for score in scores:
        chunk_score_depth(score)
    if over_limit not in ("error", "allow"):
        raise ConfigError(f"chunk_over_limit must be 'error' or 'allow', not {over_limit!r}")
    specs = [spec.strip() for spec in chunkers if spec.strip()] or [WHOLE_DOCUMENTS]
    repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
    if repeated:
        raise ConfigError(f"chunker {repeated[0]!r} is listed twice; list each chunker once")
    return specs, scores


def _check_vectors(vectors: Sequence[str]) -> list[dict[str, Any]]:
    """Each vector setting as Strategy keywords (one line for an unknown one), duplicates dropped."""
    if not vectors:
        raise ConfigError("give at least one vector setting, e.g. --vectors float32")
    variants: list[dict[str, Any]] = []
    for text in vectors:
        options = vector_options(text)
        Strategy(embedder=EmbedderSpec(model="fake:check"), **options)  # a bad value fails before any work
        if options not in variants:
            variants.append(options)
    return variants


def _pick_tune_split(collection: Collection, split: str, tune_split: str | None) -> str | None:
    if tune_split is not None:
        if tune_split == split:
            raise ConfigError(
                f"the convex weight cannot be tuned on {split!r}, the split being reported; "
                "tune it on a train or dev split"
            )
        collection.split(tune_split)  # raises InputError naming the splits there are
        return tune_split
    return next((name for name in TUNE_SPLITS if name in collection.qrels and name != split), None)


def _embed_all(
    embedder: Embedder, texts: list[str], kind: Kind, label: str, on_progress: ProgressFn | None
) -> tuple[np.ndarray, int]:
    """All ``texts`` embedded in slices; also how many the length policy truncated."""
    policy = find_layer(embedder, LengthPolicy)
    before = policy.stats.truncated if policy is not None else 0
    task = f"{label} {'documents' if kind == 'document' else 'queries'}"
    parts = []
    if on_progress:
        on_progress(task, 0, len(texts))
    size = max(len(texts), 1) if whole_calls(embedder) else _SLICE
    for start in range(0, len(texts), size):
        parts.append(embedder.embed(texts[start : start + size], kind))
        if on_progress:
            on_progress(task, min(start + size, len(texts)), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    truncated = (policy.stats.truncated - before) if policy is not None else 0
    return vectors, truncated


def _cost(
    model: str,
    embedder: Embedder,
    timer: TimedEmbedder,
    doc_lengths: list[int],
    query_texts: list[str],
    query_truncated: int,
) -> ModelCost:
    batcher = find_layer(embedder, BatchingEmbedder)
    cache = find_layer(embedder, CachingEmbedder)
    limit = embedder.max_tokens
    query_tokens = sum(min(embedder.count_tokens(t, "query"), limit) for t in query_texts)
    card = find_card(model)
    embedded = cache.stats.misses if cache is not None else batcher.stats.texts
    return ModelCost(
        model=model,
        dim=embedder.dim,
        corpus_tokens=sum(min(n, limit) for n in doc_lengths),
        query_tokens=query_tokens,
        tokens_embedded=batcher.stats.tokens,
        texts_embedded=embedded,
        texts_cached=cache.stats.hits if cache is not None else 0,
        # On a cluster the model runs on actors, never under the timer: the jobs' wall time counts.
        embed_seconds=timer.seconds if timer.texts else batcher.stats.seconds,
        truncated_documents=sum(n > limit for n in doc_lengths),
        truncated_queries=query_truncated,
        usd_per_million_tokens=None if card is None else card.usd_per_million_tokens,
    )
