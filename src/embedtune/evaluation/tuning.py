"""Choosing fusion weights on training judgments.

This lives in ``evaluation`` rather than ``search.fusion`` because it needs the metrics, and
``search`` sits below ``evaluation`` in the layering (nothing low imports anything above it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from embedtune.errors import InputError
from embedtune.evaluation.metrics import evaluate, parse_metric
from embedtune.search.fusion import NormalizeMethod, convex

__all__ = ["tune_convex_weight"]


def tune_convex_weight(
    qrels_train: Mapping[str, Mapping[str, int]],
    run_a: Mapping[str, Mapping[str, float]],
    run_b: Mapping[str, Mapping[str, float]],
    *,
    metric: str = "ndcg@10",
    grid: Sequence[float] | None = None,
    method: NormalizeMethod = "minmax",
) -> tuple[float, dict[float, float]]:
    """The weight ``alpha`` of ``convex([run_a, run_b], [alpha, 1 - alpha])`` that scores best.

    Every ``alpha`` of ``grid`` (default ``0, 0.05, ..., 1``) is scored by the mean ``metric``
    over the queries of ``qrels_train``, and only those: queries of the runs that ``qrels_train``
    does not judge are left out before fusing, so pass training judgments here and keep the test
    judgments for the final report. Returns ``(best_alpha, {alpha: metric value})``; among equal
    values the first in grid order wins.
    """
    parse_metric(metric)
    if not qrels_train:
        raise InputError("qrels_train hold no query; tuning needs judged training queries")
    alphas = [round(float(a), 10) for a in (np.linspace(0.0, 1.0, 21) if grid is None else grid)]
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"grid must hold weights between 0 and 1, not {alphas}")
    judged_a = {qid: run_a[qid] for qid in qrels_train if qid in run_a}
    judged_b = {qid: run_b[qid] for qid in qrels_train if qid in run_b}
    table = {}
    for alpha in alphas:
        fused = convex([judged_a, judged_b], [alpha, 1.0 - alpha], method=method)
        table[alpha] = evaluate(qrels_train, fused, [metric])[metric]
    best = max(table, key=lambda alpha: (table[alpha], -alphas.index(alpha)))
    return best, table
