"""Training a reranker: a tiny real run on a SciFact slice, its determinism, and adapt --method reranker."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import pytest

from _cli import one_error_line, run_cli
from embedtune.adaptation.negatives import mine_hard_negatives
from embedtune.adaptation.pairs import pairs_from_qrels, split_dev
from embedtune.adaptation.reranker import MANIFEST_FILE, rerank_dev, train_reranker
from embedtune.errors import InputError
from embedtune.search.rerank import CrossEncoderScorer

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "scifact"
SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))
BASE = "local:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def scifact_slice():
    """24 SciFact train pairs with a BM25 hard negative each, and a dev set of 6 held-out queries."""
    from embedtune.evaluation import load_beir

    if not SCIFACT.is_dir():
        pytest.skip(f"SciFact is not at {SCIFACT}")
    import sentence_transformers.cross_encoder  # noqa: F401  (importing it takes longer than training: not timed)

    collection = load_beir(SCIFACT, splits=["train"])
    train, dev = split_dev(pairs_from_qrels(collection, "train")[:30], 0.2, seed=0)
    train = mine_hard_negatives(train, collection.corpus, by="bm25", count=1)
    return train, rerank_dev(dev, collection.corpus, depth=5)


def _train(pairs, dev, out: Path, seed: int):
    return train_reranker(BASE, pairs, out_dir=out, dev=dev, epochs=1, batch_size=16, max_length=32, seed=seed)


def test_tiny_training_run_is_quick_deterministic_and_loads_as_a_reranker(scifact_slice, tmp_path):
    train, dev = scifact_slice
    started = time.perf_counter()
    first = _train(train, dev, tmp_path / "a", seed=0)
    assert time.perf_counter() - started < 60
    again = _train(train, dev, tmp_path / "b", seed=0)
    other = _train(train, dev, tmp_path / "c", seed=1)
    assert first.weights_hash == again.weights_hash  # same seed, same weights, bit for bit
    assert other.weights_hash != first.weights_hash
    manifest = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    assert manifest["weights_sha256"] == first.weights_hash and manifest["seed"] == 0
    assert (
        manifest["data"]["negatives"] == sum(len(p.negatives) for p in train)
        and manifest["settings"]["max_length"] == 32
    )
    assert len(manifest["figures"]["dev"]["by_epoch"]) == 2  # the first stage's figure, then epoch 1's
    scorer = CrossEncoderScorer(tmp_path / "a")
    assert scorer.max_length == 32
    scores = scorer([("a query", "a document"), ("another", "text")])
    assert scores.shape == (2,) and scores.dtype.kind == "f"


def test_pairs_without_negatives_are_refused(scifact_slice, tmp_path):
    from dataclasses import replace

    train, _ = scifact_slice
    with pytest.raises(InputError, match="no training pair has a negative"):
        train_reranker(BASE, [replace(p, negatives=()) for p in train], out_dir=tmp_path / "x")


def test_adapt_reranker_end_to_end_then_search_and_compare_agree(tmp_path):
    """adapt --method reranker on the sample collection; a strategy file with its [rerank] table
    is indexed and searched from the command line, and compare's reranked row scores the run the
    Retriever gives."""
    home = tmp_path / "h"
    folder = tmp_path / "ce"
    trained = run_cli(
        "adapt",
        SAMPLE,
        "--method",
        "reranker",
        "--out",
        folder,
        "--max-seq-length",
        "32",
        "--batch-size",
        "16",
        home=home,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "reranker trained on" in trained.stdout and "test nDCG@10 (BM25 top 20 reranked)" in trained.stdout
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["data"]["hard_negatives"] == "bm25" and "test" in manifest["figures"]

    strategy_file = tmp_path / "s.toml"
    strategy_file.write_text(f'version = 1\n[retrieval]\nmode = "bm25"\n[rerank]\nmodel = "{folder}"\ntop = 10\n')
    store = tmp_path / "store"
    built = run_cli("index", SAMPLE, "--strategy", strategy_file, "--store", store, home=home)
    assert built.returncode == 0, built.stderr[-2000:]
    query = "who gets paged when the primary does not acknowledge"
    searched = run_cli("search", query, "--store", store, "--json", "-k", "5", home=home)
    assert searched.returncode == 0, searched.stderr[-2000:]
    cli_docs = [hit["doc_id"] for hit in json.loads(searched.stdout)]

    from embedtune.evaluation import load_beir
    from embedtune.evaluation.compare import evaluate_strategies
    from embedtune.evaluation.metrics import evaluate
    from embedtune.indexer import open_retriever
    from embedtune.search.rerank import RerankSpec
    from embedtune.stores.embedded import EmbeddedStore

    with EmbeddedStore(store) as opened:
        retriever = open_retriever(opened)
        assert [h.doc_id for h in retriever.search_one(query, 5)] == cli_docs
        collection = load_beir(SAMPLE)
        queries, qrels = collection.split("test")
        run = retriever.search(queries, 100)
    assert len(cli_docs) == 5 and set(run) == set(queries)
    result = evaluate_strategies(collection, [], bm25=True, rerank=[RerankSpec(model=str(folder), top=10)])
    row = result.strategy("bm25 > rerank@10")
    assert row.metrics["ndcg@10"] == pytest.approx(evaluate(qrels, run, ["ndcg@10"])["ndcg@10"], abs=1e-12)
    assert row.rerank_ms is not None and row.rerank_ms > 0


def test_adapt_reranker_refusals_are_one_line(tmp_path):
    api = run_cli(
        "adapt",
        SAMPLE,
        "--method",
        "reranker",
        "--out",
        tmp_path / "o",
        "--model",
        "openai:text-embedding-3-small",
        home=tmp_path / "h",
    )
    assert "not a local model" in one_error_line(api)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"query {i}", "positive": f"text {i}"}) + "\n" for i in range(40)))
    alone = run_cli("adapt", pairs, "--method", "reranker", "--out", tmp_path / "p", home=tmp_path / "h")
    assert "give a collection" in one_error_line(alone)


def test_compare_rerank_with_a_folder_that_is_not_a_reranker_is_one_line(tmp_path):
    (tmp_path / "bad").mkdir()
    result = run_cli("compare", SAMPLE, "--bm25", "--rerank", f"{tmp_path / 'bad'}:10", home=tmp_path / "h")
    assert "is not a cross-encoder" in one_error_line(result)
