"""Runs: what every retriever returns and every metric and fusion reads.

A run is a plain dict in TREC shape, ``{query_id: {doc_id: score}}``, higher scores first. The
order of a query's documents is the one trec_eval uses: score descending, and documents with equal
scores by document id descending (plain string comparison, as trec_eval's ``strcmp``). Metrics,
fusion and cut-offs all rank through :func:`ranked`, so they agree with trec_eval on ties.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

__all__ = ["Run", "cut", "ranked"]

Run = dict[str, dict[str, float]]


def ranked(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Document ids of one query's run in trec_eval order, the first ``k`` only when given."""
    if k is None:
        return [doc for doc, _ in sorted(scores.items(), key=_trec_key, reverse=True)]
    return [doc for doc, _ in heapq.nlargest(k, scores.items(), key=_trec_key)]


def cut(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """Keep each query's top ``k`` documents (trec_eval order)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    return {qid: {doc: float(scores[doc]) for doc in ranked(scores, k)} for qid, scores in run.items()}


def _trec_key(item: tuple[str, float]) -> tuple[float, str]:
    doc, score = item
    return float(score), doc
