"""Choosing fusion weights and feedback parameters on training judgments.

:func:`tune_convex_weight` tunes the one weight of a two-run hybrid; :func:`tune_fusion_weights`
tunes one weight per run for any number of runs (a simplex grid up to four runs, coordinate
ascent beyond). Both score each candidate on the judgments they are given and nothing else.

This lives in ``evaluation`` rather than ``search.fusion`` because it needs the metrics, and
``search`` sits below ``evaluation`` in the layering (nothing low imports anything above it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from itertools import product

import numpy as np

from embedtune.errors import InputError
from embedtune.evaluation.metrics import evaluate, parse_metric
from embedtune.search.feedback import Feedback, FeedbackMethod
from embedtune.search.fusion import NormalizeMethod, convex, normalize
from embedtune.search.runs import Run

__all__ = [
    "FEEDBACK_GRIDS",
    "GRID_RUNS",
    "feedback_grid",
    "tune_convex_weight",
    "tune_feedback",
    "tune_fusion_weights",
]

# Small on purpose: every point is a full second search of the tuning queries.
FEEDBACK_GRIDS: dict[FeedbackMethod, dict[str, tuple]] = {
    FeedbackMethod.ROCCHIO: {"docs": (1, 3, 5, 10), "weight": (0.1, 0.25, 0.5, 1.0)},
    FeedbackMethod.RM3: {"docs": (3, 5, 10), "terms": (10, 20), "weight": (0.3, 0.5, 0.7, 0.9)},
}

# Up to this many runs every point of the simplex grid is scored (286 points for four runs at
# step 0.1); beyond it the grid grows too fast and coordinate ascent takes over.
GRID_RUNS = 4


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


Weights = tuple[float, ...]


def tune_fusion_weights(
    qrels_tune: Mapping[str, Mapping[str, int]],
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    *,
    metric: str = "ndcg@10",
    step: float = 0.1,
    method: NormalizeMethod = "minmax",
) -> tuple[Weights, dict[Weights, float]]:
    """The weights of ``convex(runs, weights)`` that score best on ``qrels_tune``, and every score tried.

    Up to :data:`GRID_RUNS` runs, every weight vector on the simplex at ``step`` (non-negative,
    summing to 1) is scored; among equal scores the first in grid order wins (the grid starts with
    all the weight on the last run). Fused scores are :func:`convex`'s, computed as a matrix
    product (see :func:`_score_matrices`). For more runs, coordinate ascent from equal weights: each
    run's weight in turn takes the grid value (others rescaled to keep the sum at 1) that scores
    best, until a pass changes nothing. Only the queries of ``qrels_tune`` are fused and scored,
    so pass dev or train judgments, never the split you report.
    """
    parse_metric(metric)
    if not qrels_tune:
        raise InputError("the tuning judgments hold no query; tuning needs judged dev or train queries")
    if len(runs) < 2:
        raise ValueError(f"fusion needs at least two runs, not {len(runs)}")
    steps = round(1.0 / step)
    if not 0.0 < step <= 0.5 or abs(steps * step - 1.0) > 1e-9:
        raise ValueError(f"step must divide 1 into whole parts (0.1, 0.05, 0.25), not {step}")
    matrices = _score_matrices([{q: run[q] for q in qrels_tune if q in run} for run in runs], method)
    table: dict[Weights, float] = {}

    def score(weights: Weights) -> float:
        if weights not in table:
            w = np.asarray(weights)
            fused = {q: dict(zip(docs, (matrix @ w).tolist())) for q, (docs, matrix) in matrices.items()}
            table[weights] = evaluate(qrels_tune, fused, [metric])[metric]
        return table[weights]

    if len(runs) <= GRID_RUNS:
        for weights in _simplex(len(runs), steps):
            score(weights)
        best = max(table, key=table.__getitem__)  # first of equals: dicts keep grid order
        return best, table
    best = tuple(round(1.0 / len(runs), 10) for _ in runs)
    while True:
        start = best
        for i in range(len(runs)):
            for share in (n / steps for n in range(steps + 1)):
                candidate = _with_share(best, i, share)
                if candidate is not None and score(candidate) > score(best):
                    best = candidate
        if best == start:
            return best, table


def _score_matrices(
    runs: Sequence[Mapping[str, Mapping[str, float]]], method: NormalizeMethod
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per query, its documents and their normalised score in each run (a run's floor where it lacks
    one), so that ``matrix @ weights`` is :func:`convex`'s fused score: normalised once, and each
    candidate costs a matrix product instead of a Python sum per document (about 5x faster). The
    sums may differ from convex()'s in the last bit, which moves no rank but exact ties' order."""
    normalized = [normalize(run, method) for run in runs]
    out = {}
    for qid in dict.fromkeys(q for run in normalized for q in run):
        per_run = [run.get(qid, {}) for run in normalized]
        docs = list(dict.fromkeys(doc for scores in per_run for doc in scores))
        matrix = np.empty((len(docs), len(per_run)))
        for j, scores in enumerate(per_run):
            floor = min(scores.values(), default=0.0)
            matrix[:, j] = [scores.get(doc, floor) for doc in docs]
        out[qid] = (docs, matrix)
    return out


def _simplex(n: int, steps: int) -> list[Weights]:
    """Every ``n`` non-negative weights in multiples of ``1 / steps`` that sum to 1."""
    points = []
    for parts in itertools.product(range(steps + 1), repeat=n - 1):
        if sum(parts) <= steps:
            points.append(tuple(round(p / steps, 10) for p in (*parts, steps - sum(parts))))
    return points


def _with_share(weights: Weights, i: int, share: float) -> Weights | None:
    """``weights`` with run ``i`` at ``share`` and the others rescaled to the rest (None when they are all 0)."""
    rest = sum(w for j, w in enumerate(weights) if j != i)
    if rest <= 0 and share < 1.0:
        return None
    scale = (1.0 - share) / rest if rest > 0 else 0.0
    return tuple(round(share if j == i else w * scale, 10) for j, w in enumerate(weights))
