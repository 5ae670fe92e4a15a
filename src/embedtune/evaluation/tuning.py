"""Choosing fusion weights and feedback parameters on training judgments.

This lives in ``evaluation`` rather than ``search.fusion`` because it needs the metrics, and
``search`` sits below ``evaluation`` in the layering (nothing low imports anything above it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import product

import numpy as np

from embedtune.errors import InputError
from embedtune.evaluation.metrics import evaluate, parse_metric
from embedtune.search.feedback import Feedback, FeedbackMethod
from embedtune.search.fusion import NormalizeMethod, convex
from embedtune.search.runs import Run

__all__ = ["FEEDBACK_GRIDS", "feedback_grid", "tune_convex_weight", "tune_feedback"]

# Small on purpose: every point is a full second search of the tuning queries.
FEEDBACK_GRIDS: dict[FeedbackMethod, dict[str, tuple]] = {
    FeedbackMethod.ROCCHIO: {"docs": (1, 3, 5, 10), "weight": (0.1, 0.25, 0.5, 1.0)},
    FeedbackMethod.RM3: {"docs": (3, 5, 10), "terms": (10, 20), "weight": (0.3, 0.5, 0.7, 0.9)},
}


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


def feedback_grid(method: FeedbackMethod | str) -> list[Feedback]:
    """The parameter points :func:`tune_feedback` tries for ``method`` (see ``FEEDBACK_GRIDS``)."""
    axes = FEEDBACK_GRIDS[FeedbackMethod(method)]
    return [Feedback(method=FeedbackMethod(method), **dict(zip(axes, point))) for point in product(*axes.values())]


def tune_feedback(
    qrels_tune: Mapping[str, Mapping[str, int]],
    queries: Mapping[str, str],
    search: Callable[[Feedback, Mapping[str, str]], Run],
    grid: Sequence[Feedback],
    *,
    metric: str = "ndcg@10",
) -> tuple[Feedback, dict[str, float]]:
    """The feedback parameters of ``grid`` whose run scores best on the tuning judgments.

    ``search(feedback, queries)`` is the strategy's run with those parameters; it is only ever
    given the queries that ``qrels_tune`` judges, so the reported split cannot move the choice.
    Returns ``(best, {feedback label: metric value})``; among equal values the first in grid order wins.
    """
    parse_metric(metric)
    judged = {qid: text for qid, text in queries.items() if qid in qrels_tune}
    if not judged:
        raise InputError("no tuning query is judged; feedback is tuned on judged dev or train queries")
    if not grid:
        raise ValueError("the feedback grid is empty")
    table: dict[str, float] = {}
    best, best_value = grid[0], -1.0
    for feedback in grid:
        value = evaluate(qrels_tune, search(feedback, judged), [metric])[metric]
        table[feedback.label] = value
        if value > best_value:
            best, best_value = feedback, value
    return best, table
