"""Choosing the convex fusion weight on training judgments only."""

import pytest

from embedtune.errors import ConfigError, InputError
from embedtune.evaluation import evaluate, tune_convex_weight
from embedtune.search import convex

QRELS_TRAIN = {"t1": {"a": 1}, "t2": {"b": 1}}
# run_a finds the relevant document first for both training queries, run_b last
RUN_A = {"t1": {"a": 3.0, "b": 2.0, "c": 1.0}, "t2": {"b": 3.0, "a": 2.0, "c": 1.0}}
RUN_B = {"t1": {"c": 3.0, "b": 2.0, "a": 1.0}, "t2": {"c": 3.0, "a": 2.0, "b": 1.0}}


def test_picks_the_weight_that_scores_best_and_returns_the_whole_table() -> None:
    best, table = tune_convex_weight(QRELS_TRAIN, RUN_A, RUN_B, metric="mrr@10")
    assert list(table) == [round(i / 20, 10) for i in range(21)]
    assert table[1.0] == 1.0
    assert table[0.0] == pytest.approx(1 / 3)
    assert table[best] == max(table.values())
    assert best == min(alpha for alpha, value in table.items() if value == 1.0)  # first in grid order
    fused = convex([RUN_A, RUN_B], [best, 1 - best])
    assert evaluate(QRELS_TRAIN, fused, ["mrr@10"])["mrr@10"] == table[best]


def test_never_looks_beyond_the_judgments_it_is_given() -> None:
    # the runs also hold a test query where run_b is perfect and run_a is not; the result must not
    # move whatever those test entries say
    with_test_a = {**RUN_A, "test": {"x": 1.0, "y": 9.0}}
    with_test_b = {**RUN_B, "test": {"x": 9.0, "y": 1.0}}
    flipped_a = {**RUN_A, "test": {"x": 9.0, "y": 1.0}}
    baseline = tune_convex_weight(QRELS_TRAIN, RUN_A, RUN_B, grid=[0.0, 0.5, 1.0])
    assert tune_convex_weight(QRELS_TRAIN, with_test_a, with_test_b, grid=[0.0, 0.5, 1.0]) == baseline
    assert tune_convex_weight(QRELS_TRAIN, flipped_a, with_test_b, grid=[0.0, 0.5, 1.0]) == baseline


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        tune_convex_weight(QRELS_TRAIN, RUN_A, RUN_B, metric="bleu@4")
    with pytest.raises(InputError):
        tune_convex_weight({}, RUN_A, RUN_B)
    with pytest.raises(ValueError, match="between 0 and 1"):
        tune_convex_weight(QRELS_TRAIN, RUN_A, RUN_B, grid=[0.5, 1.5])
