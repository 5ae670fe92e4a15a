"""Fusion of runs: pure functions from runs to a run.

Runs are ``{query_id: {doc_id: score}}`` (see :mod:`embedtune.search.runs`). The fused run holds
every query of any input run and, for each, every document any input run retrieved for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from embedtune.search.runs import Run, ranked

__all__ = ["NormalizeMethod", "convex", "normalize", "rrf"]

NormalizeMethod = Literal["minmax", "zscore"]
RunLike = Mapping[str, Mapping[str, float]]


def rrf(runs: Sequence[RunLike], *, k: int = 60, weights: Sequence[float] | None = None) -> Run:
    """Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

    ``score(d) = sum_i w_i / (k + rank_i(d))`` where ``rank_i(d)`` is the 1-based rank of ``d`` in
    run ``i`` (trec_eval order) and a run that lacks ``d`` adds nothing. ``k = 60`` as in the
    paper; ``weights`` default to 1 for every run.
    """
    weights = _weights(runs, weights)
    if k < 0:
        raise ValueError(f"k must be non-negative, not {k}")
    fused: Run = {}
    for run, weight in zip(runs, weights):
        for qid, scores in run.items():
            target = fused.setdefault(qid, {})
            for rank, doc in enumerate(ranked(scores), start=1):
                target[doc] = target.get(doc, 0.0) + weight / (k + rank)
    return fused


def normalize(run: RunLike, method: NormalizeMethod = "minmax") -> Run:
    """Scores rescaled per query.

    - ``"minmax"``: ``(s - min) / (max - min)``, into [0, 1];
    - ``"zscore"``: ``(s - mean) / std`` (population standard deviation).

    A query whose scores are all equal gets 0 for every document under both methods.
    """
    if method not in ("minmax", "zscore"):
        raise ValueError(f"unknown normalisation {method!r}; use 'minmax' or 'zscore'")
    normalized: Run = {}
    for qid, scores in run.items():
        values = [float(score) for score in scores.values()]
        if not values:
            normalized[qid] = {}
            continue
        if method == "minmax":
            low = min(values)
            spread = max(values) - low
        else:
            low = math.fsum(values) / len(values)
            spread = math.sqrt(math.fsum((value - low) ** 2 for value in values) / len(values))
        normalized[qid] = {doc: (float(score) - low) / spread if spread > 0 else 0.0 for doc, score in scores.items()}
    return normalized


def convex(runs: Sequence[RunLike], weights: Sequence[float], *, method: NormalizeMethod = "minmax") -> Run:
    """Convex combination of normalised scores: ``score(d) = sum_i w_i * norm_i(d)``.

    For a dense run and a BM25 run, ``convex([dense, bm25], [alpha, 1 - alpha])`` is
    ``alpha * norm(dense) + (1 - alpha) * norm(bm25)`` (Bruch, Gai and Ingber, "An Analysis of
    Fusion Functions for Hybrid Retrieval", TOIS 2023). Scores are normalised per query with
    :func:`normalize`. A document that run ``i`` did not retrieve for a query takes run ``i``'s
    lowest normalised score for that query (0 under ``"minmax"``), not 0: it ranked below all
    that run returned. A query that run ``i`` lacks entirely gets 0 from it.

    Weights must be non-negative; they need not sum to 1 (ranks are the same either way).
    """
    weights = _weights(runs, weights)
    normalized = [normalize(run, method) for run in runs]
    query_ids = list(dict.fromkeys(qid for run in normalized for qid in run))
    fused: Run = {}
    for qid in query_ids:
        per_run = [run.get(qid, {}) for run in normalized]
        floors = [min(scores.values(), default=0.0) for scores in per_run]
        docs = dict.fromkeys(doc for scores in per_run for doc in scores)
        fused[qid] = {
            doc: math.fsum(weight * scores.get(doc, floor) for weight, scores, floor in zip(weights, per_run, floors))
            for doc in docs
        }
    return fused


def _weights(runs: Sequence[RunLike], weights: Sequence[float] | None) -> list[float]:
    if not runs:
        raise ValueError("give at least one run to fuse")
    if weights is None:
        return [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs; give one weight per run")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, not {list(weights)}")
    return [float(w) for w in weights]
