"""N-way fusion rows for ``compare --fuse``: every base run fused, by RRF and by tuned convex weights.

The bases are BM25 and each model's whole-document float32 dense strategy, as ``compare`` built
and searched them. Each row is an :class:`~embedtune.ensemble.Ensemble` of those strategies,
scored through :meth:`EnsembleRetriever.combine <embedtune.ensemble.EnsembleRetriever.combine>`
over the members' own answers (each member's ``Retriever.combine`` of its run): the code
``search`` runs on the ensemble's store. Convex weights are tuned on the tuning split by
:func:`~embedtune.evaluation.tuning.tune_fusion_weights`; with no tuning split they stay equal
and the caller notes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from embedtune.ensemble import Ensemble, EnsembleRetriever
from embedtune.evaluation.compare import SELECT_METRIC, ModelCost, StrategyResult
from embedtune.evaluation.tuning import tune_fusion_weights
from embedtune.evaluation.workspace import served_query_ms
from embedtune.retriever import Retriever
from embedtune.search.runs import Run
from embedtune.strategy import Fusion, Strategy

__all__ = ["FuseBase", "fused_results", "fusion_row"]


@dataclass(frozen=True, kw_only=True)
class FuseBase:
    """One run to fuse: its scored result, its retriever, and the runs that retriever combines."""

    result: StrategyResult
    retriever: Retriever
    runs: Mapping[str, Run]

    @property
    def strategy(self) -> Strategy:
        assert isinstance(self.result.strategy, Strategy)
        return self.result.strategy

    def answer(self, k: int) -> Run:
        """What this strategy answers alone, ``k`` deep: the member's run in an ensemble."""
        return self.retriever.combine(self.runs, k)


def fusion_row(
    bases: Sequence[FuseBase],
    method: Fusion,
    score: Callable[[Run], dict[str, Any]],
    k: int,
    *,
    tune_qrels: Mapping[str, Mapping[str, int]] | None,
    documents: int,
    latency_texts: Sequence[str] = (),
) -> StrategyResult:
    """The ensemble of ``bases`` fused by ``method``, scored by ``score`` (the reported and tuning figures).

    Convex weights are tuned on ``tune_qrels`` (equal weights when it is empty or ``None``). With
    ``latency_texts``, the row's ``query_ms`` is measured on them (see :func:`ensemble_query_ms`).
    """
    answers = [base.answer(k) for base in bases]
    weights = None
    if method is Fusion.CONVEX:
        if tune_qrels:
            weights, _ = tune_fusion_weights(tune_qrels, answers, metric=SELECT_METRIC)
        else:
            weights = tuple(1.0 / len(bases) for _ in bases)
    ensemble = Ensemble(members=tuple(b.strategy for b in bases), method=method, weights=weights, depth=k)
    retriever = EnsembleRetriever(ensemble, [b.retriever for b in bases])
    fused = retriever.combine({retriever.key(i): answer for i, answer in enumerate(answers)}, k)
    return StrategyResult(
        query_ms=ensemble_query_ms(ensemble, bases, latency_texts) if latency_texts else None,
        name=ensemble.name,
        kind="ensemble",
        model=None,
        **score(fused),
        index_bytes=sum(b.result.index_bytes for b in bases),
        vector_bytes=sum(b.result.vector_bytes for b in bases),
        cost=summed_cost([b.result.cost for b in bases], documents),
        strategy=ensemble,
    )


def fused_results(
    bases: Sequence[FuseBase],
    score: Callable[[Run], dict[str, Any]],
    k: int,
    *,
    tune_qrels: Mapping[str, Mapping[str, int]] | None,
    documents: int,
    latency_texts: Sequence[str] = (),
) -> list[StrategyResult]:
    """The N-way RRF row and the N-way convex row over every base."""
    return [
        fusion_row(bases, method, score, k, tune_qrels=tune_qrels, documents=documents, latency_texts=latency_texts)
        for method in (Fusion.RRF, Fusion.CONVEX)
    ]


def ensemble_query_ms(ensemble: Ensemble, bases: Sequence[FuseBase], texts: Sequence[str]) -> float:
    """Median ms per query of ``ensemble`` answering ``texts`` one at a time (the first untimed), as
    ``search`` answers: every member embeds or encodes the query with its model (no cache), searches
    its store, and the answers are fused."""
    return served_query_ms(EnsembleRetriever(ensemble, [base.retriever for base in bases]), texts)


def summed_cost(costs: Sequence[ModelCost | None], documents: int) -> ModelCost | None:
    """What embedding with every member costs, as one ModelCost (``None`` when no member embeds).

    The speed is set so that ``documents / texts_per_s`` is the sum of the members' seconds to
    embed the corpus, which is what the recommendation compares; unmeasured when any member was
    served from the cache.
    """
    known = [c for c in costs if c is not None]
    if not known:
        return None
    speeds = [c.texts_per_s for c in known]
    measured = None not in speeds
    seconds = sum(documents / s for s in speeds if s) if measured else 0.0
    usd = [c.usd_to_embed_corpus for c in known]
    corpus_tokens = sum(c.corpus_tokens for c in known)
    rate = None if None in usd or not corpus_tokens else sum(u or 0.0 for u in usd) * 1e6 / corpus_tokens
    return ModelCost(
        model="+".join(c.model for c in known),
        dim=sum(c.dim for c in known),
        corpus_tokens=corpus_tokens,
        query_tokens=sum(c.query_tokens for c in known),
        tokens_embedded=sum(c.tokens_embedded for c in known),
        texts_embedded=documents if measured else 0,
        texts_cached=sum(c.texts_cached for c in known),
        embed_seconds=seconds,
        truncated_documents=sum(c.truncated_documents for c in known),
        truncated_queries=sum(c.truncated_queries for c in known),
        usd_per_million_tokens=rate,
    )
