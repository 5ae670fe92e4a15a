"""Reranked rows for ``compare``: each strategy again, its fused top reordered by a cross-encoder.

A reranked row is its base strategy with a ``[rerank]`` table, scored through that strategy's own
:class:`~embedtune.retriever.Retriever` (``combine`` then ``rerank``, as ``search`` runs them),
on the same queries as every other row: the reported split, and the tuning split that picks the
winner, so a reranked row wins only if it wins there. Beside its figures it records what the
rerank step cost: ms per query, all queries batched through the model in one call. Given latency
texts (``compare`` gives them when it times other rows), it also records what a user waits: the
median ms of one query at a time through that Retriever as ``serve`` runs it, rerank included
(:func:`~embedtune.evaluation.workspace.served_query_ms`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..ensemble import EnsembleRetriever
from ..retriever import Retriever
from ..search.rerank import CrossEncoderScorer, PairScorer, RerankSpec
from ..search.runs import Run
from ..strategy import Strategy
from .workspace import served_query_ms

if TYPE_CHECKING:
    from ..embedder import Embedder
    from ..stores.base import Store
    from .compare import StrategyResult

__all__ = ["RerankBase", "parse_rerank", "reranked_rows"]


@dataclass(frozen=True)
class RerankBase:
    """A scored row and what its Retriever needs to answer again: its store, embedder and runs.

    For an ensemble row, ``members`` are its members' retrievers and ``runs`` their answers (keyed
    as :meth:`EnsembleRetriever.runs <embedtune.ensemble.EnsembleRetriever.runs>` keys them).
    """

    result: StrategyResult
    store: Store
    embedder: Embedder | None
    runs: Mapping[str, Run]
    members: Sequence[Retriever] = field(default=())


def reranked_rows(
    bases: Sequence[RerankBase],
    specs: Sequence[RerankSpec],
    queries: Mapping[str, str],
    score: Callable[[Run], dict[str, Any]],
    k: int,
    *,
    reranker: PairScorer | None = None,
    latency_texts: Sequence[str] = (),
) -> tuple[list[StrategyResult], list[str]]:
    """One row per base and spec, and a note per row: its nDCG@10 gain over its base and its ms/query.

    ``score`` turns a run into a row's figures (compare's judgments); ``reranker`` replaces each
    spec's own model (tests and benchmarks share one loaded model); else one model per folder.
    With ``latency_texts``, each row's ``query_ms`` is measured on them, one query at a time.
    """
    rows, notes = [], []
    loaded: dict[tuple[str, int], PairScorer] = {}
    for spec in specs:
        scorer = reranker or loaded.setdefault(
            (spec.model, spec.batch), CrossEncoderScorer(spec.model, batch=spec.batch)
        )
        for base in bases:
            strategy = base.result.strategy
            retriever: Retriever | EnsembleRetriever
            if isinstance(strategy, Strategy):
                retriever = Retriever(replace(strategy, rerank=spec), base.store, base.embedder, reranker=scorer)
            elif strategy is not None and base.members:  # an ensemble: its fused answer is reranked
                retriever = EnsembleRetriever(replace(strategy, rerank=spec), base.members, reranker=scorer)
            else:
                continue
            fused = retriever.combine(base.runs, retriever.combine_depth(k))
            started = time.perf_counter()
            run = retriever.rerank(queries, fused, k)
            ms = 1000 * (time.perf_counter() - started) / max(len(queries), 1)
            # Measured again, never the base's: that one leaves the rerank out.
            query_ms = served_query_ms(retriever, latency_texts) if latency_texts else None
            row = replace(
                base.result,
                name=f"{base.result.name} > {spec.label}",
                strategy=retriever.strategy,
                rerank_ms=ms,
                query_ms=query_ms,
                **score(run),
            )
            gain = row.metrics["ndcg@10"] - base.result.metrics["ndcg@10"]
            served = "" if query_ms is None else f", {query_ms:.0f} ms/query served one at a time"
            notes.append(
                f"{row.name}: nDCG@10 {gain:+.4f} over {base.result.name}, rerank {ms:.0f} ms/query (batched){served}"
            )
            rows.append(row)
    return rows, notes


def parse_rerank(text: str) -> RerankSpec:
    """``DIR`` or ``DIR:N`` (rerank the first N, default 50) as a spec; the folder is checked now."""
    from ..errors import ConfigError
    from ..search.rerank import DEFAULT_TOP, check_cross_encoder

    folder, sep, top = text.rpartition(":")
    if not sep or not top.isdigit():
        folder, top = text, str(DEFAULT_TOP)
    if not folder:
        raise ConfigError(f"--rerank takes a cross-encoder folder, optionally :N, not {text!r}")
    check_cross_encoder(folder)
    return RerankSpec(model=folder, top=int(top))
