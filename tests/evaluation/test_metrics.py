"""Metrics spelled out as formulas on tiny hand-made judgments and runs."""

from math import log2

import pytest

from embedtune.errors import ConfigError, InputError
from embedtune.evaluation.metrics import (
    evaluate,
    evaluate_per_query,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    precision_at_k,
    recall_at_k,
)

# graded judgments: a=3, b=2, d=1 relevant (R = 3), c judged non-relevant, x unjudged
QRELS = {"q": {"a": 3, "b": 2, "c": 0, "d": 1}}
# ranking: a, x, b, c, d
RUN = {"q": {"a": 0.9, "x": 0.8, "b": 0.7, "c": 0.6, "d": 0.5}}


def test_ndcg_uses_linear_gain_and_the_ideal_from_the_judgments() -> None:
    dcg = 3 / log2(2) + 0 / log2(3) + 2 / log2(4)
    ideal = 3 / log2(2) + 2 / log2(3) + 1 / log2(4)
    assert ndcg_at_k(QRELS, RUN, 3)["q"] == pytest.approx(dcg / ideal)

    dcg_5 = dcg + 0 / log2(5) + 1 / log2(6)
    assert ndcg_at_k(QRELS, RUN, 5)["q"] == pytest.approx(dcg_5 / ideal)


def test_ndcg_clips_negative_judgments_to_zero_gain() -> None:
    qrels = {"q": {"spam": -1, "good": 2}}
    run = {"q": {"spam": 2.0, "good": 1.0}}
    assert ndcg_at_k(qrels, run, 10)["q"] == pytest.approx((2 / log2(3)) / (2 / log2(2)))


def test_recall_precision_mrr_map() -> None:
    assert recall_at_k(QRELS, RUN, 3)["q"] == pytest.approx(2 / 3)
    assert recall_at_k(QRELS, RUN, 5)["q"] == pytest.approx(3 / 3)
    assert precision_at_k(QRELS, RUN, 3)["q"] == pytest.approx(2 / 3)
    assert precision_at_k(QRELS, RUN, 10)["q"] == pytest.approx(3 / 10)  # divided by k, not by 5
    assert mrr_at_k(QRELS, RUN, 10)["q"] == 1.0
    assert map_at_k(QRELS, RUN, 3)["q"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert map_at_k(QRELS, RUN, 5)["q"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)


def test_mrr_is_cut_at_k() -> None:
    qrels = {"q": {"b": 1}}
    run = {"q": {"a": 3.0, "x": 2.0, "b": 1.0}}
    assert mrr_at_k(qrels, run, 3)["q"] == pytest.approx(1 / 3)
    assert mrr_at_k(qrels, run, 2)["q"] == 0.0


def test_ties_are_broken_by_document_id_descending_as_trec_eval_does() -> None:
    run = {"q": {"doc10": 1.0, "doc9": 1.0, "doc2": 1.0}}  # string order: doc9 > doc2 > doc10
    assert mrr_at_k({"q": {"doc9": 1}}, run, 10)["q"] == 1.0
    assert mrr_at_k({"q": {"doc2": 1}}, run, 10)["q"] == pytest.approx(1 / 2)
    assert mrr_at_k({"q": {"doc10": 1}}, run, 10)["q"] == pytest.approx(1 / 3)


def test_missing_queries_and_queries_without_relevant_documents_score_zero() -> None:
    qrels = {"found": {"a": 1}, "not_in_run": {"b": 1}, "nothing_relevant": {"c": 0}}
    run = {"found": {"a": 1.0}, "nothing_relevant": {"c": 1.0}, "unjudged": {"z": 1.0}}
    per_query = evaluate_per_query(qrels, run, ["ndcg@10", "recall@10", "mrr@10", "map@10", "precision@1"])
    for values in per_query.values():
        assert set(values) == set(qrels)  # the unjudged query is ignored
        assert values["not_in_run"] == 0.0
        assert values["nothing_relevant"] == 0.0
        assert values["found"] == 1.0
    means = evaluate(qrels, run, ["ndcg@10", "precision@1"])
    assert means == {"ndcg@10": pytest.approx(1 / 3), "precision@1": pytest.approx(1 / 3)}


def test_evaluate_defaults_and_means() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 2.0, "b": 1.0}, "q2": {"a": 2.0, "b": 1.0}}
    result = evaluate(qrels, run)
    assert set(result) == {"ndcg@10", "recall@100", "mrr@10"}
    assert result["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["ndcg@10"] == pytest.approx((1 + 1 / log2(3)) / 2)


def test_metric_names() -> None:
    assert parse_metric("nDCG@10") == ("ndcg", 10)
    assert parse_metric("map@100") == ("map", 100)
    for bad in ["ndcg", "ndcg@", "ndcg@0", "ndcg@x", "bpref@10", "P@10"]:
        with pytest.raises(ConfigError, match="known metrics: ndcg@k, recall@k, mrr@k, map@k, precision@k"):
            parse_metric(bad)
    with pytest.raises(ValueError, match="unknown metric"):  # ConfigError is a ValueError
        evaluate({"q": {"a": 1}}, {}, ["hits@10"])


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="no query"):
        evaluate({}, {"q": {"a": 1.0}})
    with pytest.raises(ValueError, match="k must be at least 1"):
        ndcg_at_k(QRELS, RUN, 0)
