"""Fusion of runs: RRF and convex combination as formulas, and their invariants."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedtune.search import convex, cut, normalize, ranked, rrf

DENSE = {"q": {"a": 0.9, "b": 0.8, "c": 0.1}}
BM25 = {"q": {"b": 12.0, "d": 7.0}}


def test_ranked_follows_trec_eval_order() -> None:
    scores = {"doc10": 1.0, "doc9": 1.0, "doc2": 1.0, "top": 2.0}
    assert ranked(scores) == ["top", "doc9", "doc2", "doc10"]
    assert ranked(scores, 2) == ["top", "doc9"]
    assert cut({"q": scores}, 2) == {"q": {"top": 2.0, "doc9": 1.0}}


def test_rrf_formula() -> None:
    fused = rrf([DENSE, BM25])
    assert fused["q"] == pytest.approx(
        {
            "a": 1 / (60 + 1),
            "b": 1 / (60 + 2) + 1 / (60 + 1),
            "c": 1 / (60 + 3),
            "d": 1 / (60 + 2),
        }
    )
    weighted = rrf([DENSE, BM25], k=10, weights=[2.0, 0.5])
    assert weighted["q"]["b"] == pytest.approx(2.0 / (10 + 2) + 0.5 / (10 + 1))
    assert ranked(fused["q"]) == ["b", "a", "d", "c"]


def test_normalize_formulas() -> None:
    assert normalize(BM25)["q"] == {"b": 1.0, "d": 0.0}
    assert normalize(DENSE)["q"] == pytest.approx({"a": 1.0, "b": 0.7 / 0.8, "c": 0.0})
    mean = (0.9 + 0.8 + 0.1) / 3
    std = math.sqrt(((0.9 - mean) ** 2 + (0.8 - mean) ** 2 + (0.1 - mean) ** 2) / 3)
    assert normalize(DENSE, "zscore")["q"] == pytest.approx({d: (s - mean) / std for d, s in DENSE["q"].items()})
    assert normalize({"q": {"x": 3.0, "y": 3.0}, "empty": {}}, "minmax") == {"q": {"x": 0.0, "y": 0.0}, "empty": {}}
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(DENSE, "softmax")  # type: ignore[arg-type]


def test_convex_formula_and_missing_documents_take_the_run_minimum() -> None:
    alpha = 0.3
    fused = convex([DENSE, BM25], [alpha, 1 - alpha])
    dense = {"a": 1.0, "b": 0.7 / 0.8, "c": 0.0, "d": 0.0}  # d is missing: minimum, 0
    bm25 = {"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0}  # a and c are missing: minimum, 0
    assert fused["q"] == pytest.approx({d: alpha * dense[d] + (1 - alpha) * bm25[d] for d in dense})
    z = convex([DENSE, BM25], [0.5, 0.5], method="zscore")
    z_dense = normalize(DENSE, "zscore")["q"]
    # d: missing from the dense run (its lowest z-score); BM25 z-score (7 - 9.5) / 2.5 = -1
    assert z["q"]["d"] == pytest.approx(0.5 * min(z_dense.values()) + 0.5 * -1.0)


def test_a_query_absent_from_one_run_is_still_fused() -> None:
    fused = convex([{"only": {"a": 2.0, "b": 1.0}}, {}], [0.5, 0.5])
    assert fused == {"only": {"a": 0.5, "b": 0.0}}
    assert rrf([{"only": {"a": 2.0}}, {"other": {"b": 1.0}}]) == {"only": {"a": 1 / 61}, "other": {"b": 1 / 61}}


def test_bad_weights() -> None:
    with pytest.raises(ValueError, match="one weight per run"):
        convex([DENSE, BM25], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        rrf([DENSE, BM25], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="at least one run"):
        rrf([])


# quarter steps: ties are frequent and normalisation cannot merge two distinct scores by rounding
scores = st.integers(-400, 400).map(lambda quarters: quarters / 4)
runs = st.dictionaries(
    st.sampled_from(["q1", "q2"]),
    st.dictionaries(st.sampled_from([f"d{i}" for i in range(15)]), scores, min_size=1, max_size=10),
    min_size=1,
)


@settings(max_examples=150, deadline=None)
@given(runs, runs, st.sampled_from(["minmax", "zscore"]))
def test_convex_with_alpha_one_ranks_exactly_as_run_a(run_a, run_b, method) -> None:
    fused = convex([run_a, run_b], [1.0, 0.0], method=method)
    for qid, scores_a in run_a.items():
        order = ranked(fused[qid])
        lowest = min(normalize(run_a, method)[qid].values())
        # run_a's documents keep their order, and documents only run_b found tie with run_a's last
        assert [doc for doc in order if doc in scores_a] == ranked(scores_a)
        assert all(fused[qid][doc] == lowest for doc in fused[qid] if doc not in scores_a)


@settings(max_examples=100, deadline=None)
@given(runs, runs)
def test_rrf_is_symmetric_and_rewards_agreement(run_a, run_b) -> None:
    forward, backward = rrf([run_a, run_b]), rrf([run_b, run_a])
    assert forward.keys() == backward.keys()
    for qid in forward:
        assert forward[qid] == pytest.approx(backward[qid])
    same = rrf([run_a, run_a])
    for qid, scores_a in run_a.items():
        assert ranked(same[qid]) == ranked(scores_a)
