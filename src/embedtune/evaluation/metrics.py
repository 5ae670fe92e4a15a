"""Retrieval metrics over plain dicts in TREC shape, computed as trec_eval computes them.

``qrels`` is ``{query_id: {doc_id: relevance}}`` (integers; graded allowed) and ``run`` is
``{query_id: {doc_id: score}}``. Each query's run is ranked by :func:`embedtune.search.runs.ranked`:
score descending, equal scores by document id descending, exactly as trec_eval breaks ties.

Notation for one query: ``d_1, d_2, ...`` the ranked documents, ``rel(d)`` the judged relevance
(0 when unjudged), ``R`` the number of judged documents with ``rel >= 1`` (trec_eval's default
relevance level), and ``[x]`` is 1 when ``x`` holds, else 0.

Every public metric function returns the per-query values for every query of ``qrels``. A query
of ``qrels`` that the run lacks scores 0, and a query with no relevant document (``R = 0``) scores
0. pytrec_eval differs on the first point only: it skips queries absent from the run, so its mean
is over the queries present in both; here the mean is over all of ``qrels``, which is what a
retriever that returns nothing for a query deserves. Queries of the run that ``qrels`` lacks are
ignored by both.

Names: ``ndcg@k``, ``recall@k``, ``mrr@k``, ``map@k``, ``precision@k`` (trec_eval's
``ndcg_cut_k``, ``recall_k``, ``recip_rank`` on a run cut at ``k``, ``map_cut_k``, ``P_k``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from embedtune.errors import ConfigError, InputError
from embedtune.search.runs import ranked

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "evaluate",
    "evaluate_per_query",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_metric",
    "precision_at_k",
    "recall_at_k",
]

QrelsLike = Mapping[str, Mapping[str, int]]
RunLike = Mapping[str, Mapping[str, float]]
_Scorer = Callable[[Mapping[str, int], Sequence[str], int], float]

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")


def _ndcg(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    gains = sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:k]
    ideal = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))
    if ideal == 0:
        return 0.0
    dcg = sum(max(judged.get(doc, 0), 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1))
    return dcg / ideal


def _recall(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    relevant = _relevant_count(judged)
    if relevant == 0:
        return 0.0
    return sum(1 for doc in ranking[:k] if judged.get(doc, 0) >= 1) / relevant


def _mrr(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) >= 1:
            return 1.0 / rank
    return 0.0


def _map(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    relevant = _relevant_count(judged)
    if relevant == 0:
        return 0.0
    found = 0
    total = 0.0
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) >= 1:
            found += 1
            total += found / rank
    return total / relevant


def _precision(judged: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    return sum(1 for doc in ranking[:k] if judged.get(doc, 0) >= 1) / k


def _relevant_count(judged: Mapping[str, int]) -> int:
    return sum(1 for rel in judged.values() if rel >= 1)


METRICS: Mapping[str, _Scorer] = MappingProxyType(
    {
        "ndcg": _ndcg,
        "recall": _recall,
        "mrr": _mrr,
        "map": _map,
        "precision": _precision,
    }
)
"""Known metric names (the part before ``@``) and their per-query scorers."""


def ndcg_at_k(qrels: QrelsLike, run: RunLike, k: int = 10) -> dict[str, float]:
    """Normalised discounted cumulative gain at ``k``, linear gain (trec_eval ``ndcg_cut_k``).

    ``DCG@k = sum_{i=1..k} max(rel(d_i), 0) / log2(i + 1)`` and ``nDCG@k = DCG@k / IDCG@k``, where
    ``IDCG@k`` is the DCG of the judged relevances sorted descending (the ideal ranking). Linear
    gain, not ``2^rel - 1``: that is what trec_eval, pytrec_eval and BEIR report. Järvelin and
    Kekäläinen, "Cumulated gain-based evaluation of IR techniques", TOIS 2002.
    """
    return _per_query(qrels, run, _ndcg, k)


def recall_at_k(qrels: QrelsLike, run: RunLike, k: int = 100) -> dict[str, float]:
    """Recall at ``k`` (trec_eval ``recall_k``): ``sum_{i=1..k} [rel(d_i) >= 1] / R``."""
    return _per_query(qrels, run, _recall, k)


def mrr_at_k(qrels: QrelsLike, run: RunLike, k: int = 10) -> dict[str, float]:
    """Reciprocal rank cut at ``k``: ``1 / i`` for the first ``i <= k`` with ``rel(d_i) >= 1``, else 0.

    trec_eval's ``recip_rank`` has no cut-off; it equals this on a run cut to ``k`` documents.
    Voorhees, "The TREC-8 Question Answering Track Report", TREC 1999. The mean is MRR@k.
    """
    return _per_query(qrels, run, _mrr, k)


def map_at_k(qrels: QrelsLike, run: RunLike, k: int = 100) -> dict[str, float]:
    """Average precision cut at ``k`` (trec_eval ``map_cut_k``); the mean over queries is MAP@k.

    ``AP@k = (1 / R) * sum_{i=1..k} [rel(d_i) >= 1] * P@i``: divided by every relevant document,
    not only those found in the top ``k``.
    """
    return _per_query(qrels, run, _map, k)


def precision_at_k(qrels: QrelsLike, run: RunLike, k: int = 10) -> dict[str, float]:
    """Precision at ``k`` (trec_eval ``P_k``): ``sum_{i=1..k} [rel(d_i) >= 1] / k``.

    Always divided by ``k``, even when the run holds fewer than ``k`` documents.
    """
    return _per_query(qrels, run, _precision, k)


def parse_metric(name: str) -> tuple[str, int]:
    """Split a metric name like ``"ndcg@10"`` into ``("ndcg", 10)``; unknown names raise ConfigError."""
    base, at, depth = name.strip().lower().partition("@")
    if base not in METRICS or not at or not depth.isdigit() or int(depth) < 1:
        known = ", ".join(f"{metric}@k" for metric in METRICS)
        raise ConfigError(f"unknown metric {name!r}; known metrics: {known} (k a positive integer, e.g. ndcg@10)")
    return base, int(depth)


def evaluate_per_query(
    qrels: QrelsLike, run: RunLike, metrics: Iterable[str] = DEFAULT_METRICS
) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: value}}`` for every metric and every query of ``qrels``."""
    parsed = {name: parse_metric(name) for name in metrics}
    depth = max((k for _, k in parsed.values()), default=0)
    values: dict[str, dict[str, float]] = {name: {} for name in parsed}
    for qid, judged in qrels.items():
        ranking = ranked(run.get(qid, {}), depth)
        for name, (base, k) in parsed.items():
            values[name][qid] = METRICS[base](judged, ranking, k)
    return values


def evaluate(qrels: QrelsLike, run: RunLike, metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, float]:
    """``{metric: mean over the queries of qrels}``; queries missing from the run count as 0."""
    if not qrels:
        raise InputError("qrels hold no query; evaluate needs at least one judged query")
    per_query = evaluate_per_query(qrels, run, metrics)
    return {name: math.fsum(values.values()) / len(qrels) for name, values in per_query.items()}


def _per_query(qrels: QrelsLike, run: RunLike, scorer: _Scorer, k: int) -> dict[str, float]:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    return {qid: scorer(judged, ranked(run.get(qid, {}), k), k) for qid, judged in qrels.items()}
