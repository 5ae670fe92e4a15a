"""Exact dense top-k: blocked equals unblocked equals a brute-force sort; the saved index."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedtune.errors import InputError
from embedtune.search import DenseIndex, dense_run, l2_normalize, top_k_inner_product


def brute_force(queries: np.ndarray, documents: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full sort of every score: descending, equal scores by lower document index."""
    scores = queries.astype(np.float64) @ documents.astype(np.float64).T
    columns = np.arange(documents.shape[0])
    order = np.array([np.lexsort((columns, -row))[:k] for row in scores]).reshape(len(queries), -1)
    return np.take_along_axis(scores, order, axis=1), order


@st.composite
def integer_matrices(draw):
    """Small integer-valued vectors: products are exact in float32 and ties are frequent."""
    dim = draw(st.integers(1, 4))
    values = st.integers(-2, 2).map(float)
    queries = draw(arrays(np.float32, (draw(st.integers(1, 9)), dim), elements=values))
    documents = draw(arrays(np.float32, (draw(st.integers(1, 40)), dim), elements=values))
    return queries, documents


@settings(max_examples=200, deadline=None)
@given(
    integer_matrices(),
    st.integers(1, 45),
    st.integers(1, 10),
    st.integers(1, 50),
)
def test_blocked_equals_unblocked_equals_brute_force(matrices, k, query_block, document_block) -> None:
    queries, documents = matrices
    blocked = top_k_inner_product(queries, documents, k, query_block=query_block, document_block=document_block)
    unblocked = top_k_inner_product(queries, documents, k, query_block=len(queries), document_block=len(documents))
    expected_scores, expected_indices = brute_force(queries, documents, min(k, len(documents)))
    for scores, indices in (blocked, unblocked):
        assert indices.shape == (len(queries), min(k, len(documents)))
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))


def test_random_normalised_vectors_match_argsort() -> None:
    rng = np.random.default_rng(7)
    documents = l2_normalize(rng.standard_normal((3000, 64)))
    queries = l2_normalize(rng.standard_normal((50, 64)))
    scores, indices = top_k_inner_product(queries, documents, 25, query_block=16, document_block=700)
    full = queries @ documents.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_l2_normalize_keeps_zero_rows() -> None:
    normalized = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(normalized, [[0.6, 0.8], [0.0, 0.0]])
    assert normalized.dtype == np.float32


def test_dense_run_names_documents_and_caps_k() -> None:
    documents = np.eye(3, dtype=np.float32)
    run = dense_run(["q"], np.array([[0.1, 0.9, 0.5]]), ["a", "b", "c"], documents, k=10)
    assert list(run["q"]) == ["b", "c", "a"]
    assert run["q"]["b"] == pytest.approx(0.9)
    with pytest.raises(InputError, match="2 query ids but 1 query vectors"):
        dense_run(["q", "r"], np.ones((1, 3)), ["a", "b", "c"], documents, k=1)


def test_mismatched_dims_and_bad_shapes() -> None:
    with pytest.raises(InputError, match="query vectors have 2 dims but document vectors have 3"):
        top_k_inner_product(np.ones((1, 2)), np.ones((4, 3)), 1)
    with pytest.raises(InputError, match="2-D"):
        top_k_inner_product(np.ones(3), np.ones((4, 3)), 1)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k_inner_product(np.ones((1, 3)), np.ones((4, 3)), 0)


def make_index() -> DenseIndex:
    rng = np.random.default_rng(3)
    return DenseIndex.build([f"doc{i}" for i in range(200)], rng.standard_normal((200, 16)) * 5, model="test:model")


def test_build_normalises_and_search_uses_cosine() -> None:
    index = make_index()
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, rtol=1e-6)
    assert (len(index), index.dim, index.model) == (200, 16, "test:model")
    query = index.vectors[[42]] * 7.0  # a scaled copy of doc42 is nearest to doc42
    run = index.search(["q"], query, k=5)
    assert next(iter(run["q"])) == "doc42"
    assert run["q"]["doc42"] == pytest.approx(1.0, abs=1e-5)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index = make_index()
    queries = np.random.default_rng(4).standard_normal((10, 16))
    index.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["model"] == "test:model" and manifest["dim"] == 16 and manifest["count"] == 200
    for mmap in (True, False):
        loaded = DenseIndex.load(tmp_path / "index", mmap=mmap, model="test:model", dim=16)
        assert isinstance(loaded.vectors, np.memmap) is mmap
        assert loaded.ids == index.ids
        ids = [f"q{i}" for i in range(10)]
        assert loaded.search(ids, queries, 20) == index.search(ids, queries, 20)


def test_load_refuses_another_models_dims_or_name(tmp_path: Path) -> None:
    make_index().save(tmp_path / "index")
    with pytest.raises(InputError, match="holds 16-dim vectors of 'test:model' but the model gives 384-dim"):
        DenseIndex.load(tmp_path / "index", dim=384)
    with pytest.raises(InputError, match="was built with 'test:model', not 'local:other'"):
        DenseIndex.load(tmp_path / "index", model="local:other")
    index = DenseIndex.load(tmp_path / "index")
    with pytest.raises(InputError, match="query vectors have 8 dims but the index of 'test:model' has 16"):
        index.search(["q"], np.ones((1, 8)), 3)


def test_load_refuses_broken_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest.json is missing"):
        DenseIndex.load(tmp_path)
    folder = make_index().save(tmp_path / "index")
    (folder / "ids.json").write_text(json.dumps(["only", "two"]))
    with pytest.raises(InputError, match="inconsistent"):
        DenseIndex.load(folder)


def test_build_refuses_bad_input() -> None:
    with pytest.raises(InputError, match="NaN"):
        DenseIndex.build(["a"], np.array([[np.nan, 1.0]]), model="m")
    with pytest.raises(InputError, match="2 document ids but 1 vectors"):
        DenseIndex.build(["a", "b"], np.ones((1, 2)), model="m")
    with pytest.raises(InputError, match="repeat"):
        DenseIndex.build(["a", "a"], np.ones((2, 2)), model="m")


def test_float16_scan_returns_the_exact_run():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    ids = [f"d{i}" for i in range(len(vectors))]
    exact = DenseIndex.build(ids, vectors, model="m")
    half = DenseIndex.build(ids, vectors, model="m", scan="float16")
    assert half._half is not None  # torch is installed with the local extra: the float16 path runs
    queries = rng.standard_normal((20, 64)).astype(np.float32)
    qids = [f"q{i}" for i in range(20)]
    for i in range(20):  # one query at a time: the float16 path
        assert half.search(qids[i : i + 1], queries[i : i + 1], 10) == exact.search(
            qids[i : i + 1], queries[i : i + 1], 10
        )
    assert half.search(qids, queries, 10) == exact.search(qids, queries, 10)  # a large batch: the exact path
    with pytest.raises(ValueError, match="scan must be"):
        DenseIndex.build(ids, vectors, model="m", scan="int8")
