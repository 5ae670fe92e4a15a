"""Document runs from chunk runs: first, max and sumN scoring, and the search that fills the top k."""

import numpy as np
import pytest

from embedtune.errors import ConfigError
from embedtune.search import DenseIndex
from embedtune.search.chunks import (
    chunk_score_depth,
    doc_run_from_chunk_run,
    search_by_chunks,
)

CHUNK_RUN = {"q": {"a#0": 0.9, "a#1": 0.8, "b#0": 0.85, "c#0": 0.1, "c#1": 0.05}}
DOCS = {"a#0": "a", "a#1": "a", "b#0": "b", "c#0": "c", "c#1": "c"}


def test_max_takes_each_documents_best_chunk():
    assert doc_run_from_chunk_run(CHUNK_RUN, DOCS) == {"q": {"a": 0.9, "b": 0.85, "c": 0.1}}


def test_sum_n_adds_the_n_best_chunks_and_can_change_the_order():
    run = doc_run_from_chunk_run({"q": {**CHUNK_RUN["q"], "b#0": 0.95}}, DOCS, score="sum2")
    assert run["q"] == pytest.approx({"a": 0.9 + 0.8, "b": 0.95, "c": 0.1 + 0.05})
    # a one-chunk document scores the same under sum1 and max
    assert doc_run_from_chunk_run(CHUNK_RUN, DOCS, score="sum1") == doc_run_from_chunk_run(CHUNK_RUN, DOCS)
    assert doc_run_from_chunk_run(CHUNK_RUN, DOCS, score="sum3")["q"]["a"] == pytest.approx(1.7)


def test_first_scores_each_document_by_its_first_chunk_alone():
    firsts = {"a#0", "b#0", "c#0"}
    # b's first chunk beats a's: under max a leads (0.9), under first b does (0.85 > 0.6)
    run = {"q": {"a#0": 0.6, "a#1": 0.9, "b#0": 0.85, "c#1": 0.7}}
    assert doc_run_from_chunk_run(run, DOCS, score="first", first_chunks=firsts) == {"q": {"a": 0.6, "b": 0.85}}
    assert doc_run_from_chunk_run(run, DOCS)["q"] == {"a": 0.9, "b": 0.85, "c": 0.7}
    # c's first chunk was not retrieved: it scores below every retrieved first chunk, so it is absent
    assert "c" not in doc_run_from_chunk_run(run, DOCS, score="first", first_chunks=firsts, k=3)["q"]
    with pytest.raises(ConfigError, match="first_chunks"):
        doc_run_from_chunk_run(run, DOCS, score="first")
    assert chunk_score_depth("first") == 1


def test_a_chunk_over_several_documents_scores_each_and_k_cuts():
    run = doc_run_from_chunk_run({"q": {"x": 0.7, "y": 0.4}}, {"x": ("a", "b"), "y": ("b", "c")}, k=2)
    assert run == {"q": {"a": 0.7, "b": 0.7}}


@pytest.mark.parametrize("bad", ["mean", "sum0", "sum", "max2", "sum-1"])
def test_unknown_scores_are_refused(bad):
    with pytest.raises(ConfigError, match="unknown chunk score"):
        chunk_score_depth(bad)
    with pytest.raises(ConfigError):
        doc_run_from_chunk_run(CHUNK_RUN, DOCS, score=bad)


def _brute_force(vectors, docs, query, k, n):
    scores = vectors @ query
    per_doc: dict[str, list[float]] = {}
    for chunk, doc in enumerate(docs):
        per_doc.setdefault(doc, []).append(float(scores[chunk]))
    return {d: sum(sorted(v, reverse=True)[:n]) for d, v in per_doc.items()}


@pytest.mark.parametrize(("score", "n"), [("max", 1), ("sum2", 2)])
def test_search_goes_deeper_until_k_documents_are_found(score, n):
    rng = np.random.default_rng(7)
    # Non-negative vectors: every score is positive, so a partial sum is below a full one.
    query = np.abs(rng.normal(size=16)).astype(np.float32)
    query /= np.linalg.norm(query)
    # Document "crowd" has 30 chunks nearly equal to the query: the first 30 chunks retrieved are
    # all its own, so a search of depth k = 5 alone would return one document.
    crowd = query + rng.normal(scale=0.01, size=(30, 16)).astype(np.float32)
    others = np.abs(rng.normal(size=(40, 16))).astype(np.float32)
    vectors = np.concatenate([crowd, others])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = ["crowd"] * 30 + [f"d{i // 2}" for i in range(40)]  # 20 documents of 2 chunks
    ids = [f"c{i}" for i in range(len(docs))]
    index = DenseIndex.build(ids, vectors, model="test")
    run = search_by_chunks(index, dict(zip(ids, docs)), ["q"], query[None, :], 5, score=score)
    assert len(run["q"]) == 5 and "crowd" in run["q"]
    expected = _brute_force(vectors, docs, query, 5, n)
    top = sorted(expected, key=lambda d: (-expected[d], d))[:5]
    assert max(run["q"], key=run["q"].get) == "crowd"
    assert run["q"]["crowd"] == pytest.approx(expected["crowd"], abs=1e-5)
    if score == "max":  # exact under max
        assert run["q"] == pytest.approx({d: expected[d] for d in top}, abs=1e-5)
    else:  # a sum over the retrieved chunks only: never above the sum over all of a document's chunks
        assert all(run["q"][d] <= expected[d] + 1e-6 for d in run["q"])


def test_search_by_first_chunks_goes_deeper_past_later_chunks():
    rng = np.random.default_rng(3)
    query = np.abs(rng.normal(size=8)).astype(np.float32)
    query /= np.linalg.norm(query)
    # Every document's second chunk is the query itself, its first is random: the first k chunks
    # retrieved are all second chunks, so only a deeper search finds k first chunks.
    firsts = np.abs(rng.normal(size=(6, 8))).astype(np.float32)
    firsts /= np.linalg.norm(firsts, axis=1, keepdims=True)
    vectors = np.concatenate([firsts, np.repeat(query[None, :], 6, axis=0)])
    ids = [f"d{i}#0" for i in range(6)] + [f"d{i}#1" for i in range(6)]
    chunk_docs = {c: c.partition("#")[0] for c in ids}
    index = DenseIndex.build(ids, vectors, model="test")
    run = search_by_chunks(index, chunk_docs, ["q"], query[None, :], 3, score="first", first_chunks=set(ids[:6]))
    expected = {f"d{i}": float(firsts[i] @ query) for i in range(6)}
    top = sorted(expected, key=lambda d: -expected[d])[:3]
    assert run["q"] == pytest.approx({d: expected[d] for d in top}, abs=1e-5)


def test_search_returns_every_document_when_there_are_fewer_than_k():
    vectors = np.eye(3, dtype=np.float32)
    index = DenseIndex.build(["x", "y", "z"], vectors, model="test")
    run = search_by_chunks(index, {"x": "a", "y": "a", "z": "b"}, ["q1", "q2"], vectors[:2], 100)
    assert run == {"q1": {"a": 1.0, "b": 0.0}, "q2": {"a": 1.0, "b": 0.0}}
