"""Compare retrieval strategies on one test collection: BM25, dense per model, and hybrids.

:func:`evaluate_strategies` is the pipeline behind ``embedtune eval`` and ``embedtune compare``:

1. BM25 (when asked for, or needed by a hybrid) indexes every document as title + " " + text.
2. Each model embeds the corpus (``kind="document"``) and the queries (``kind="query"``) through
   the usual stack, ``factory.build_embedder(spec, cache=...)``, with texts over the model's limit
   truncated (and counted); a :class:`~embedtune.search.DenseIndex` holds the vectors.
3. Dense and BM25 retrieval of each query's top ``k`` run concurrently in threads (numpy and
   bm25s release the GIL for most of their work).
4. Hybrids fuse each model's run with BM25's: reciprocal rank fusion (``k = 60``) and a convex
   combination of min-max normalised scores whose weight ``alpha`` (on the dense run) is tuned on
   the training split (``train``, else ``dev``) and never on the split that is reported.
5. Every strategy is scored on the reported split by nDCG@10, Recall@100 and MRR@10, with what it
   costs: tokens, embedding speed, index size, and dollars to embed the corpus for paid models.

With ``chunkers``, each model embeds the chunks of every document (title + " " + text) instead of
whole documents, once per chunker: the dense index holds chunk vectors, and a document scores
its best chunk (``chunk_score="max"``) or the sum of its best ``N`` (``"sumN"``), see
:mod:`embedtune.search.chunks`. Each model x chunker is a strategy of its own
(``local:all-MiniLM-L6-v2 @ recursive-256``); hybrids fuse it with BM25 on whole documents.

Speed counts only texts the model actually embedded (cache misses), timed around the model's own
calls after one untimed warm-up call (loading weights is not counted); a run served wholly from
the cache measures no speed and says so. A run served wholly from the cache never loads a model.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from embedtune.catalogue import find_card
from embedtune.embedder import Embedder, Kind
from embedtune.engine import BatchingEmbedder, CachingEmbedder, LengthPolicy, OverLimit, close_stack, find_layer
from embedtune.engine.wrapper import Wrapper
from embedtune.errors import ConfigError
from embedtune.evaluation.collections import Collection, Qrels
from embedtune.evaluation.metrics import evaluate
from embedtune.evaluation.tuning import tune_convex_weight
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.search.bm25 import BM25Index
from embedtune.search.chunks import chunk_score_depth, search_by_chunks
from embedtune.search.dense import DenseIndex
from embedtune.search.fusion import convex, rrf
from embedtune.search.runs import Run, cut

__all__ = [
    "HYBRID_METHODS",
    "METRICS",
    "ComparisonResult",
    "ModelCost",
    "ProgressFn",
    "StrategyResult",
    "evaluate_strategies",
]

METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
HYBRID_METHODS: tuple[str, ...] = ("rrf", "convex")
TUNE_SPLITS: tuple[str, ...] = ("train", "dev")
WHOLE_DOCUMENTS = "none"  # the chunker spec that embeds whole documents
RRF_K = 60
_CHUNKS = "chunks.json"  # beside a chunked index: (document index, start, end) of each chunk
_SLICE = 256  # texts per call into the stack: the progress bar moves and the cache commits per slice

ProgressFn = Callable[[str, int, int], None]
"""``on_progress(task, done, total)``: ``done`` of ``total`` texts of ``task`` are embedded."""


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
    """One retrieval strategy's scores and costs on the reported split.

    ``kind`` is ``"bm25"``, ``"dense"``, ``"rrf"`` or ``"convex"``; ``model`` is the embedding
    model (``None`` for BM25); ``alpha`` is the tuned weight of the dense run in a convex hybrid.
    ``index_bytes`` is the size of the vectors (dense), of the saved BM25 index (bm25), or both
    (hybrids). ``chunker`` names the chunker whose chunks were embedded and ``chunks`` counts them
    (both ``None`` when whole documents were embedded).
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


@dataclass(frozen=True, kw_only=True)
class ComparisonResult:
    """Every strategy's result on ``split``, in the order run, and the winner by nDCG@10."""

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

    def strategy(self, name: str) -> StrategyResult:
        for result in self.strategies:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def best(self) -> StrategyResult:
        return self.strategy(self.winner)


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
    chunk_score: str = "max",
    chunk_over_limit: str = "error",
) -> ComparisonResult:
    """Score BM25, each model's dense retrieval and their hybrids on ``split`` of ``collection``.

    ``hybrid`` names fusion methods (a subset of ``"rrf"``, ``"convex"``); each fuses every model
    with BM25. ``tune_split`` is where the convex weight is tuned (default: ``train``, else
    ``dev``); it is never ``split``. When the collection has no such split, convex is left out,
    RRF (which needs no tuning) is reported instead, and ``notes`` says so. ``cache`` is the
    embedding cache file (``None``: no cache). ``providers`` maps a model URI to an already
    opened provider to use instead of opening it again (tests share one loaded model).

    With ``index_dir``, the BM25 index and each model's dense index are saved there, in a folder
    named for the collection and a hash of its documents, and loaded on the next run instead of
    rebuilt: the corpus is then not embedded again. A saved dense index whose dims differ from the
    model's is refused with one line; one built by another revision or setting of the same model
    (a different fingerprint, same dims) is rebuilt.

    ``chunkers`` are chunker specs (``fixed:size=200,overlap=50``, ``recursive``, ``semantic``;
    ``none`` stands for whole documents), each built for each model with
    ``over_model_limit=chunk_over_limit`` (``"allow"`` lets chunks over the model's limit through,
    to be truncated and counted). ``chunk_score`` is ``"max"`` or ``"sumN"``. Saved indexes are
    kept per model and chunker, with the chunks' offsets, so a rerun neither embeds nor chunks.
    """
    hybrid = _check_request(models, bm25, hybrid, k)
    chunkers = _check_chunking(chunkers, chunk_score, chunk_over_limit)
    queries, qrels = collection.split(split)
    notes: list[str] = []
    tune_split = _pick_tune_split(collection, split, tune_split, "convex" in hybrid)
    tune_queries: dict[str, str] = {}
    tune_qrels: Qrels = {}
    if "convex" in hybrid and tune_split is None:
        hybrid = [m for m in hybrid if m != "convex"] + ([] if "rrf" in hybrid else ["rrf"])
        notes.append(
            f"convex fusion was not tuned: collection {collection.name!r} has no train or dev split "
            "(its weight is never tuned on the reported split); reporting RRF only"
        )
    elif "convex" in hybrid:
        tune_queries, tune_qrels = collection.split(tune_split)  # type: ignore[arg-type]
    all_queries = {**queries, **tune_queries}
    query_ids = list(all_queries)
    doc_ids = list(collection.corpus)
    doc_texts = [collection.documents_text(doc_id) for doc_id in doc_ids]
    store = _IndexStore(index_dir, collection.name, doc_ids, doc_texts) if index_dir is not None else None

    results: list[StrategyResult] = []
    bm25_seconds = None
    bm25_bytes = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="embedtune-search") as pool:
        bm25_future = None
        if bm25 or hybrid:
            start = time.perf_counter()
            bm25_index = store.bm25() if store is not None else BM25Index.build(doc_ids, doc_texts)
            bm25_seconds = time.perf_counter() - start
            bm25_bytes = _bm25_bytes(bm25_index)
            # Runs beside the embedding and the dense search below: bm25s, numpy and torch release
            # the GIL for most of their work.
            bm25_future = pool.submit(bm25_index.search, all_queries, k)
        bm25_run: Run | None = None
        for spec in models:
            spec = replace(spec, over_limit=OverLimit.TRUNCATE)
            given = (providers or {}).get(spec.model)
            provider = given if given is not None else open_provider(spec)
            try:
                for chunker_spec in chunkers:
                    timer = _TimedEmbedder(provider)  # one per chunker: each strategy's own cost
                    embedder = build_embedder(spec, cache=cache, provider=timer)
                    try:
                        units = _units(spec.model, chunker_spec, chunk_over_limit, embedder, store, doc_ids, doc_texts)
                        # Counted once: for the cost, and for the truncation note when the index is loaded.
                        unit_lengths = [embedder.count_tokens(t, "document") for t in units.texts]
                        index = units.index
                        if index is None:
                            unit_vectors, unit_truncated = _embed_all(
                                embedder, units.texts, "document", units.label, on_progress
                            )
                            index = DenseIndex.build(units.ids, unit_vectors, model=spec.model)
                            if store is not None:
                                store.save_dense(index, embedder, units.chunker, units.spans)
                        else:
                            unit_truncated = sum(n > embedder.max_tokens for n in unit_lengths)
                        query_vectors, query_truncated = _embed_all(
                            embedder, [all_queries[q] for q in query_ids], "query", units.label, on_progress
                        )
                        cost = _cost(
                            spec.model,
                            embedder,
                            timer,
                            unit_lengths,
                            list(all_queries.values()),
                            unit_truncated,
                            query_truncated,
                        )
                    finally:
                        if (cache_layer := find_layer(embedder, CachingEmbedder)) is not None:
                            cache_layer.close()
                    if units.chunk_docs is None:
                        dense_future = pool.submit(index.search, query_ids, query_vectors, k)
                    else:
                        dense_future = pool.submit(
                            search_by_chunks, index, units.chunk_docs, query_ids, query_vectors, k, score=chunk_score
                        )
                    if bm25_future is not None and bm25_run is None:
                        bm25_run = bm25_future.result()
                    dense_run = dense_future.result()
                    dense_bytes = int(index.vectors.nbytes)
                    chunk_fields = {"chunker": units.chunker, "chunks": None if units.chunker is None else len(index)}
                    results.append(
                        StrategyResult(
                            name=units.label,
                            kind="dense",
                            model=spec.model,
                            metrics=_score(qrels, dense_run),
                            index_bytes=dense_bytes,
                            cost=cost,
                            **chunk_fields,
                        )
                    )
                    if unit_truncated:
                        what = "documents" if units.chunker is None else "chunks"
                        notes.append(
                            f"{units.label}: {unit_truncated} of {len(units.texts)} {what} are over its "
                            f"{embedder.max_tokens}-token limit and were truncated"
                        )
                    if query_truncated:
                        notes.append(f"{units.label}: {query_truncated} queries were truncated")
                    notes.extend(f"{units.label}: {notice}" for notice in units.notices)
                    for method in hybrid:
                        fused = _hybrid(
                            method,
                            units.label,
                            dense_run,
                            bm25_run,
                            qrels,
                            tune_qrels,
                            k,
                            index_bytes=dense_bytes + bm25_bytes,
                            cost=cost,
                        )
                        results.append(replace(fused, model=spec.model, **chunk_fields))
            finally:
                if given is None:  # an HTTP provider's connections; one handed in stays the caller's
                    close_stack(provider)

        if bm25:
            bm25_run = bm25_run if bm25_run is not None else bm25_future.result()  # type: ignore[union-attr]
            results.insert(
                0,
                StrategyResult(
                    name="bm25",
                    kind="bm25",
                    model=None,
                    metrics=_score(qrels, bm25_run),
                    index_bytes=bm25_bytes,
                ),
            )

    winner = max(results, key=lambda r: r.metrics["ndcg@10"]).name  # first of equals wins
    return ComparisonResult(
        collection=collection.name,
        split=split,
        tune_split=tune_split if "convex" in hybrid else None,
        documents=len(doc_ids),
        queries=len(queries),
        k=k,
        strategies=tuple(results),
        winner=winner,
        bm25_index_seconds=bm25_seconds,
        notes=tuple(notes),
        chunk_score=chunk_score if any(c != WHOLE_DOCUMENTS for c in chunkers) else None,
    )


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
    uris = [spec.model for spec in models]
    repeated = sorted({uri for uri in uris if uris.count(uri) > 1})
    if repeated:
        raise ConfigError(f"model {repeated[0]} is listed twice; list each model once")
    if k < 100:
        raise ConfigError(f"k must be at least 100 to report Recall@100, not {k}")
    return list(dict.fromkeys(hybrid))


def _check_chunking(chunkers: Sequence[str], chunk_score: str, over_limit: str) -> list[str]:
    """The chunker specs to run, whole documents (``none``) when none is given."""
    if isinstance(chunkers, str):
        raise ConfigError("chunkers must be a list of chunker specs (specs hold commas), not one string")
    chunk_score_depth(chunk_score)
    if over_limit not in ("error", "allow"):
        raise ConfigError(f"chunk_over_limit must be 'error' or 'allow', not {over_limit!r}")
    specs = [spec.strip() for spec in chunkers if spec.strip()] or [WHOLE_DOCUMENTS]
    repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
    if repeated:
        raise ConfigError(f"chunker {repeated[0]!r} is listed twice; list each chunker once")
    return specs


@dataclass(frozen=True, kw_only=True)
class _Units:
    """What one model embeds for the corpus: whole documents, or the chunks of one chunker.

    ``spans`` are ``(document index, start, end)`` per chunk; ``index`` is a saved index loaded
    for them (``None``: embed them).
    """

    label: str
    chunker: str | None
    ids: list[str]
    texts: list[str]
    chunk_docs: dict[str, str] | None
    spans: list[tuple[int, int, int]] | None
    index: DenseIndex | None
    notices: tuple[str, ...] = ()


def _units(
    model: str,
    chunker_spec: str,
    over_limit: str,
    embedder: Embedder,
    store: _IndexStore | None,
    doc_ids: list[str],
    doc_texts: list[str],
) -> _Units:
    if chunker_spec == WHOLE_DOCUMENTS:
        saved = store.dense(model, embedder) if store is not None else None
        return _Units(
            label=model,
            chunker=None,
            ids=doc_ids,
            texts=doc_texts,
            chunk_docs=None,
            spans=None,
            index=None if saved is None else saved[0],
        )
    from embedtune.chunking import make_chunker

    # A semantic chunker embeds sentences through this same stack: its cache, its timer.
    chunker = make_chunker(chunker_spec, embedder, over_model_limit=over_limit)
    saved = store.dense(model, embedder, chunker.name) if store is not None else None
    if saved is not None:
        index, spans = saved
    else:
        index = None
        # Empty documents have nothing to chunk; they are never retrieved.
        kept = [i for i, text in enumerate(doc_texts) if text.strip()]
        per_doc = chunker.chunk_many([doc_texts[i] for i in kept])
        spans = [(i, chunk.start, chunk.end) for i, chunks in zip(kept, per_doc) for chunk in chunks]
    ids = _chunk_ids(doc_ids, spans)
    return _Units(
        label=f"{model} @ {chunker.name}",
        chunker=chunker.name,
        ids=ids,
        texts=[doc_texts[i][start:end] for i, start, end in spans],
        chunk_docs={chunk_id: doc_ids[i] for chunk_id, (i, _, _) in zip(ids, spans)},
        spans=spans,
        index=index,
        notices=tuple(chunker.notices),
    )


def _chunk_ids(doc_ids: list[str], spans: list[tuple[int, int, int]]) -> list[str]:
    """``<doc id>#<n>``: the document's id and the chunk's place in it."""
    seen: dict[int, int] = {}
    ids = []
    for i, _, _ in spans:
        n = seen.get(i, 0)
        seen[i] = n + 1
        ids.append(f"{doc_ids[i]}#{n}")
    return ids


def _pick_tune_split(collection: Collection, split: str, tune_split: str | None, needed: bool) -> str | None:
    if tune_split is not None:
        if tune_split == split:
            raise ConfigError(
                f"the convex weight cannot be tuned on {split!r}, the split being reported; "
                "tune it on a train or dev split"
            )
        collection.split(tune_split)  # raises InputError naming the splits there are
        return tune_split
    if not needed:
        return None
    return next((name for name in TUNE_SPLITS if name in collection.qrels and name != split), None)


def _embed_all(
    embedder: Embedder, texts: list[str], kind: Kind, model: str, on_progress: ProgressFn | None
) -> tuple[np.ndarray, int]:
    """All ``texts`` embedded in slices; also how many the length policy truncated."""
    policy = find_layer(embedder, LengthPolicy)
    before = policy.stats.truncated if policy is not None else 0
    task = f"{model} {'documents' if kind == 'document' else 'queries'}"
    parts = []
    if on_progress:
        on_progress(task, 0, len(texts))
    for start in range(0, len(texts), _SLICE):
        parts.append(embedder.embed(texts[start : start + _SLICE], kind))
        if on_progress:
            on_progress(task, min(start + _SLICE, len(texts)), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    truncated = (policy.stats.truncated - before) if policy is not None else 0
    return vectors, truncated


def _cost(
    model: str,
    embedder: Embedder,
    timer: _TimedEmbedder,
    doc_lengths: list[int],
    query_texts: list[str],
    doc_truncated: int,
    query_truncated: int,
) -> ModelCost:
    batcher = find_layer(embedder, BatchingEmbedder)
    cache = find_layer(embedder, CachingEmbedder)
    limit = embedder.max_tokens

    def tokens(texts: list[str], kind: Kind) -> int:
        return sum(min(embedder.count_tokens(t, kind), limit) for t in texts)

    card = find_card(model)
    embedded = cache.stats.misses if cache is not None else batcher.stats.texts
    return ModelCost(
        model=model,
        dim=embedder.dim,
        corpus_tokens=sum(min(n, limit) for n in doc_lengths),
        query_tokens=tokens(query_texts, "query"),
        tokens_embedded=batcher.stats.tokens,
        texts_embedded=embedded,
        texts_cached=cache.stats.hits if cache is not None else 0,
        embed_seconds=timer.seconds,
        truncated_documents=doc_truncated,
        truncated_queries=query_truncated,
        usd_per_million_tokens=None if card is None else card.usd_per_million_tokens,
    )


def _hybrid(
    method: str,
    model: str,
    dense_run: Run,
    bm25_run: Run | None,
    qrels: Qrels,
    tune_qrels: Qrels,
    k: int,
    *,
    index_bytes: int,
    cost: ModelCost,
) -> StrategyResult:
    assert bm25_run is not None  # a hybrid always builds BM25
    name = f"{model} + bm25 ({method})"
    # Only the reported queries are fused; the convex weight is tuned on the training queries alone.
    test_dense = {qid: dense_run.get(qid, {}) for qid in qrels}
    test_bm25 = {qid: bm25_run.get(qid, {}) for qid in qrels}
    if method == "rrf":
        fused = cut(rrf([test_dense, test_bm25], k=RRF_K), k)
        return StrategyResult(
            name=name, kind="rrf", model=model, metrics=_score(qrels, fused), index_bytes=index_bytes, cost=cost
        )
    alpha, table = tune_convex_weight(tune_qrels, dense_run, bm25_run, metric="ndcg@10")
    fused = cut(convex([test_dense, test_bm25], [alpha, 1.0 - alpha], method="minmax"), k)
    return StrategyResult(
        name=name,
        kind="convex",
        model=model,
        metrics=_score(qrels, fused),
        index_bytes=index_bytes,
        cost=cost,
        alpha=alpha,
        tuning=table,
    )


def _score(qrels: Qrels, run: Run) -> dict[str, float]:
    return evaluate(qrels, run, METRICS)


def _bm25_bytes(index: BM25Index) -> int:
    """Bytes of the BM25 index as saved on disk (score matrix, vocabulary, ids, manifest)."""
    with tempfile.TemporaryDirectory(prefix="embedtune-bm25-") as folder:
        index.save(folder)
        return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


class _IndexStore:
    """Saved indexes of one corpus: ``ROOT/<collection>-<hash of its documents>/{bm25,<model>}``.

    The folder name changes whenever a document does, so an index never outlives its corpus.
    Each dense index keeps the fingerprint of the embedder that built it beside its vectors.
    A chunked index lives in ``<model>@<chunker name>`` with its chunks' offsets (``chunks.json``).
    """

    def __init__(self, root: str | Path, name: str, doc_ids: list[str], doc_texts: list[str]) -> None:
        digest = hashlib.sha256()
        for doc_id, text in zip(doc_ids, doc_texts):
            digest.update(doc_id.encode() + b"\x00" + text.encode() + b"\x00")
        self.folder = Path(root) / f"{_slug(name)}-{digest.hexdigest()[:12]}"
        self.doc_ids = doc_ids
        self.doc_texts = doc_texts

    def bm25(self) -> BM25Index:
        folder = self.folder / "bm25"
        if (folder / "manifest.json").exists():
            return BM25Index.load(folder)
        index = BM25Index.build(self.doc_ids, self.doc_texts)
        index.save(folder)
        return index

    def dense(
        self, model: str, embedder: Embedder, chunker: str | None = None
    ) -> tuple[DenseIndex, list[tuple[int, int, int]] | None] | None:
        """The saved index of ``model`` and, with ``chunker``, its chunks' spans; None when none or stale."""
        folder = self._dense_folder(model, chunker)
        if not (folder / "manifest.json").exists():
            return None
        index = DenseIndex.load(folder, model=model, dim=embedder.dim)  # other dims: one clear line
        saved = (
            (folder / "fingerprint.txt").read_text(encoding="utf-8") if (folder / "fingerprint.txt").exists() else ""
        )
        if saved != embedder.fingerprint("document"):
            return None
        if chunker is None:
            return (index, None) if list(index.ids) == self.doc_ids else None
        try:
            spans = [tuple(span) for span in json.loads((folder / _CHUNKS).read_text(encoding="utf-8"))]
        except (OSError, ValueError):
            return None  # no or broken chunk offsets: chunk and embed again
        if list(index.ids) != _chunk_ids(self.doc_ids, spans):  # type: ignore[arg-type]
            return None
        return index, spans

    def save_dense(
        self,
        index: DenseIndex,
        embedder: Embedder,
        chunker: str | None = None,
        spans: list[tuple[int, int, int]] | None = None,
    ) -> None:
        folder = self._dense_folder(index.model, chunker)
        if chunker is not None:  # a crash before the index is saved leaves ids that do not match: rebuilt
            folder.mkdir(parents=True, exist_ok=True)
            (folder / _CHUNKS).write_text(json.dumps(spans), encoding="utf-8")
        index.save(folder)
        (folder / "fingerprint.txt").write_text(embedder.fingerprint("document"), encoding="utf-8")

    def _dense_folder(self, model: str, chunker: str | None) -> Path:
        return self.folder / (_slug(model) if chunker is None else f"{_slug(model)}@{_slug(chunker)}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "index"


class _TimedEmbedder(Wrapper):
    """Times the model's own calls; the first call is preceded by an untimed one-text warm-up.

    It sits under the cache, so it sees (and times) only texts the model really embeds, and a run
    served from the cache never calls it, so never loads the model.
    """

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.seconds = 0.0
        self.texts = 0
        self._warm = False

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        if not self._warm and texts:
            self.inner.embed(list(texts[:1]), kind)  # loads weights, warms caches: not timed
            self._warm = True
        start = time.perf_counter()
        vectors = self.inner.embed(texts, kind)
        self.seconds += time.perf_counter() - start
        self.texts += len(texts)
        return vectors
