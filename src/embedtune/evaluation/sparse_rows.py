"""A learned sparse model as a row of ``compare``: built and scored through the Retriever.

The strategy (mode ``sparse``) is indexed into its own embedded store by
:func:`~embedtune.indexer.index_documents`, which keeps the sparse index beside the store's
lexical one, and every query is answered by :meth:`Retriever.sparse_run`: the code ``index`` and
``search`` run. Its cost is counted like a dense model's: tokens the model reads, texts it
encoded in this run (cache misses) and the seconds it took, and the index's bytes on disk.
``compare --fuse`` fuses the sparse run with BM25 and the dense runs (:mod:`.fused`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.catalogue import lookup_card
from embedtune.evaluation.compare import ModelCost, ProgressFn, StrategyResult
from embedtune.evaluation.fused import FuseBase
from embedtune.factory import EmbedderSpec
from embedtune.indexer import index_documents
from embedtune.retriever import SPARSE, Retriever
from embedtune.sparse.encoder import DEFAULT_BATCH, open_sparse_encoder
from embedtune.sparse.side import sparse_index_bytes
from embedtune.sparse.spec import SparseSpec
from embedtune.strategy import Mode, Strategy

if TYPE_CHECKING:
    from embedtune.documents import SourceDocument

__all__ = ["evaluate_sparse", "is_sparse"]


def is_sparse(spec: EmbedderSpec) -> bool:
    """Whether ``compare --models`` named a learned sparse model (``sparse:...``)."""
    return spec.model.startswith("sparse:")


def evaluate_sparse(
    spec: EmbedderSpec,
    space: Any,
    documents: Sequence[SourceDocument],
    queries: Mapping[str, str],
    score: Any,
    k: int,
    *,
    cache: str | Path | None,
    on_progress: ProgressFn | None = None,
) -> FuseBase:
    """Build ``spec``'s sparse strategy into a store of ``space``, answer ``queries``, score the run.

    ``space`` is compare's workspace (``store(name, strategy, None)``) and ``score`` its judged
    splits (``score(run) -> figures``). The result comes with its retriever and run, so that
    ``compare --fuse`` can fuse it without searching again.
    """
    strategy = Strategy(
        mode=Mode.SPARSE, sparse=SparseSpec(model=spec.model, max_batch=spec.max_batch or DEFAULT_BATCH), depth=k
    )
    encoder = open_sparse_encoder(strategy.sparse, cache=cache)  # type: ignore[arg-type]
    name = strategy.name
    store = space.store(_slug(name), strategy, None)
    if on_progress is not None:
        on_progress(f"{name} documents", 0, len(documents))
    index_documents(documents, strategy, store, None, sparse=encoder)
    if on_progress is not None:
        on_progress(f"{name} documents", len(documents), len(documents))
    retriever = Retriever(strategy, store, sparse=encoder)
    run = retriever.sparse_run(queries, k)
    figures = score(retriever.combine({SPARSE: run}, k))
    size = sparse_index_bytes(store, encoder)
    stats = getattr(encoder, "model_stats", encoder.stats)
    cached = encoder.stats.hits if encoder is not stats else 0
    card = lookup_card(name)
    limit = card.max_tokens if card is not None else 512  # a folder's BERT: 512 positions
    doc_tokens = [encoder.count_tokens(document.text, "document") for document in documents]
    query_tokens = [encoder.count_tokens(text, "query") for text in queries.values()]
    cost = ModelCost(
        model=name,
        dim=encoder.vocab_size,
        corpus_tokens=sum(min(n, limit) for n in doc_tokens),
        query_tokens=sum(min(n, limit) for n in query_tokens),
        tokens_embedded=0,
        texts_embedded=stats.texts,
        texts_cached=cached,
        embed_seconds=stats.seconds,
        truncated_documents=sum(n > limit for n in doc_tokens),
        truncated_queries=sum(n > limit for n in query_tokens),
        usd_per_million_tokens=None,
    )
    result = StrategyResult(
        name=name,
        kind="sparse",
        model=name,
        **figures,
        index_bytes=size,
        vector_bytes=size,
        cost=cost,
        strategy=strategy,
    )
    return FuseBase(result=result, retriever=retriever, runs={SPARSE: run})


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "sparse"
