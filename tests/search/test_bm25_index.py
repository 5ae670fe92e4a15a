"""BM25 through bm25s: the published SciFact figure, tokenisation, save and load."""

import sys
from pathlib import Path

import pytest

from embedtune.errors import InputError, MissingDependencyError
from embedtune.evaluation import evaluate, load_beir
from embedtune.search import BM25Index

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

TEXTS = {
    "wing": "Experimental wings: lift and drag of a wing in a propeller slipstream",
    "shock": "Shock waves in supersonic flow over a flat plate",
    "heat": "Heat transfer to a flat plate in hypersonic flow",
}


def build_tiny() -> BM25Index:
    return BM25Index.build(list(TEXTS), list(TEXTS.values()))


def test_reproduces_the_published_scifact_figures(shared_datasets: Path) -> None:
    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    ids = list(collection.corpus)
    index = BM25Index.build(ids, [collection.documents_text(doc_id) for doc_id in ids])
    queries, qrels = collection.split("test")
    scores = evaluate(qrels, index.search(queries, k=100), ["ndcg@10", "recall@100"])
    assert scores["ndcg@10"] == pytest.approx(0.6874, abs=0.01)
    assert scores["recall@100"] == pytest.approx(0.9127, abs=0.01)


def test_stemming_stopwords_and_ranking() -> None:
    run = build_tiny().search({"q": "the winged flows", "none": "the of and", "unknown": "zeppelin"}, k=10)
    assert next(iter(run["q"])) == "wing"  # "winged" and "wings" stem alike
    assert set(run["q"]) == {"wing", "shock", "heat"}  # "flows" matches "flow"
    assert run["none"] == {}  # only stopwords: no document shares a term
    assert run["unknown"] == {}
    assert all(score > 0 for score in run["q"].values())


def test_k_caps_the_run_and_larger_k_is_allowed() -> None:
    index = build_tiny()
    assert len(index.search({"q": "flat plate flow"}, k=1)["q"]) == 1
    assert set(index.search({"q": "flat plate flow"}, k=1000)["q"]) == {"shock", "heat"}
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search({"q": "flow"}, k=0)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_and_load_round_trip(tmp_path: Path, shared_datasets: Path, mmap: bool) -> None:
    collection = load_beir(shared_datasets / "adi")
    ids = list(collection.corpus)
    index = BM25Index.build(ids, [collection.documents_text(doc_id) for doc_id in ids])
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25", mmap=mmap)
    assert loaded.ids == index.ids
    queries, _ = collection.split("test")
    assert loaded.search(queries, k=20) == index.search(queries, k=20)


def test_load_refuses_broken_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest.json is missing"):
        BM25Index.load(tmp_path)
    folder = build_tiny().save(tmp_path / "bm25")
    (folder / "data.csc.index.npy").unlink()
    with pytest.raises(InputError, match="lacks a file of the bm25s index"):
        BM25Index.load(folder)


def test_build_refuses_bad_input() -> None:
    with pytest.raises(InputError, match="2 document ids but 1 texts"):
        BM25Index.build(["a", "b"], ["one"])
    with pytest.raises(InputError, match="repeat"):
        BM25Index.build(["a", "a"], ["one", "two"])
    with pytest.raises(InputError, match="no documents"):
        BM25Index.build([], [])


def test_missing_bm25s_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)  # makes `import bm25s` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"embedtune\[eval\]"):
        build_tiny()
