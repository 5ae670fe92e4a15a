"""Our metrics equal pytrec_eval's (trec_eval's) to 1e-6, on real BM25 runs and on random ties.

pytrec_eval skips queries that the run lacks while ``evaluate`` counts them as 0, so every
comparison here is over the queries pytrec_eval reports.
"""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedtune.evaluation import load_beir
from embedtune.evaluation.metrics import evaluate_per_query
from embedtune.search import BM25Index, cut

pytrec_eval = pytest.importorskip("pytrec_eval")

# our name -> (pytrec_eval measure, its result key, depth to cut the run to for pytrec_eval)
PAIRS = {
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10", None),
    "recall@100": ("recall.100", "recall_100", None),
    "mrr@10": ("recip_rank", "recip_rank", 10),
    "map@100": ("map_cut.100", "map_cut_100", None),
    "precision@10": ("P.10", "P_10", None),
}


def assert_matches_pytrec_eval(qrels, run, pairs=PAIRS) -> int:
    ours = evaluate_per_query(qrels, run, list(pairs))
    compared = 0
    for name, (measure, key, depth) in pairs.items():
        scored_run = cut(run, depth) if depth else run
        theirs = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(scored_run)
        assert theirs, f"pytrec_eval scored no query for {measure}"
        for qid, values in theirs.items():
            assert ours[name][qid] == pytest.approx(values[key], abs=1e-6), (name, qid)
        compared += len(theirs)
    return compared


@pytest.fixture(scope="module", params=["scifact", "cranfield"])
def bm25_test_run(request, shared_datasets: Path):
    pytest.importorskip("bm25s")
    collection = load_beir(shared_datasets / request.param, splits=["test"])
    ids = list(collection.corpus)
    index = BM25Index.build(ids, [collection.documents_text(doc_id) for doc_id in ids])
    queries, qrels = collection.split("test")
    return qrels, index.search(queries, k=100)


def test_metrics_equal_pytrec_eval_on_real_bm25_runs(bm25_test_run) -> None:
    qrels, run = bm25_test_run
    assert assert_matches_pytrec_eval(qrels, run) >= 5 * 0.9 * len(qrels)


DOCS = [f"d{i}" for i in range(1, 13)]  # d10 < d2 as strings: ties exercise trec_eval's order


@st.composite
def judged_runs(draw):
    query_ids = draw(st.lists(st.sampled_from(["q1", "q2", "q3"]), min_size=1, max_size=3, unique=True))
    qrels = {
        qid: draw(st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3), min_size=1, max_size=6))
        for qid in query_ids
    }
    run = {
        qid: draw(
            st.dictionaries(st.sampled_from(DOCS), st.sampled_from([0.5, 1.0, 1.5, 2.0]), min_size=1, max_size=12)
        )
        for qid in query_ids
    }
    return qrels, run


@settings(max_examples=150, deadline=None)
@given(judged_runs(), st.sampled_from([1, 3, 5, 10]))
def test_metrics_equal_pytrec_eval_on_random_graded_runs_with_ties(case, k: int) -> None:
    qrels, run = case
    pairs = {
        f"ndcg@{k}": (f"ndcg_cut.{k}", f"ndcg_cut_{k}", None),
        f"recall@{k}": (f"recall.{k}", f"recall_{k}", None),
        f"mrr@{k}": ("recip_rank", "recip_rank", k),
        f"map@{k}": (f"map_cut.{k}", f"map_cut_{k}", None),
        f"precision@{k}": (f"P.{k}", f"P_{k}", None),
    }
    assert_matches_pytrec_eval(qrels, run, pairs)
