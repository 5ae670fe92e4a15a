"""Image folders and image collections through index, search and compare, with the tiny random CLIP.

The CLIP is random, so its rankings mean nothing; what is checked is that every command ranks
exactly as sentence-transformers' own vectors rank (one path), and what happens to broken files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cli import run_cli
from _clip import png
from embedtune.documents import read_documents
from embedtune.engine import CountingEmbedder
from embedtune.errors import InputError
from embedtune.evaluation import evaluate, load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.indexer import IMAGE_KEYS, index_documents, open_retriever
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy

QUERIES = ["red", "a cat", "blue sky", "dog"]


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return open_provider(EmbedderSpec(model=f"local:{tiny_clip}"))


@pytest.fixture(scope="module")
def st_model(tiny_clip):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_clip), device="cpu", local_files_only=True)


def _write_broken(folder):
    (folder / "empty.png").write_bytes(b"")
    (folder / "words.jpg").write_bytes(b"these are words, not pixels")
    (folder / "cut.png").write_bytes(png(40, 40, seed=7)[:150])


def _ranking(st_model, folder, names, query: str) -> list[str]:
    """The images of ``folder`` ranked for ``query`` by sentence-transformers' own vectors."""
    from PIL import Image as PIL

    pictures = [PIL.open(folder / name).convert("RGB") for name in names]
    images = st_model.encode(pictures, normalize_embeddings=True, show_progress_bar=False)
    text = st_model.encode([query], normalize_embeddings=True, show_progress_bar=False)[0]
    return [names[i] for i in np.argsort(-(images @ text), kind="stable")]


def test_a_folder_of_images_and_texts_is_indexed_and_searched_with_text(clip, st_model, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    names = ["a.png", "b.jpg", "sub/c.png", "d.png"]
    for i, name in enumerate(names):
        (folder / name).write_bytes(png(30 + 7 * i, 40 - 3 * i, seed=i, fmt="JPEG" if name.endswith("jpg") else "PNG"))
    _write_broken(folder)
    (folder / "notes.txt").write_text("a note about cats", encoding="utf-8")

    text_only = read_documents(folder)  # a text model's view: the images are skipped, not failed
    assert [d.id for d in text_only.documents] == ["notes.txt"] and not text_only.failures
    source = read_documents(folder, images=True)
    assert sorted(d.id for d in source.documents) == sorted([*names, "notes.txt"])
    failed = dict(source.failures)
    assert failed[str(folder / "empty.png")] == "zero bytes, not an image; remove it"
    assert failed[str(folder / "words.jpg")].startswith("not an image Pillow can read")
    assert failed[str(folder / "cut.png")].startswith("cannot decode the image")

    strategy = Strategy(embedder=EmbedderSpec(model=clip.name, over_limit="truncate"))
    counting = CountingEmbedder(clip)
    stack = build_embedder(strategy.embedder, cache=tmp_path / "cache.sqlite", provider=counting)
    store = EmbeddedStore(tmp_path / "index")
    report = index_documents(source.documents, strategy, store, stack, keep=source.failed_ids)
    assert report.added == 5 and store.count_chunks() == 5
    assert store.read_manifest().images["keyed_by"] == IMAGE_KEYS

    retriever = open_retriever(store, embedder=stack)
    for query in QUERIES:
        hits = retriever.search_one(query, k=10, where={"type": "image"})
        assert [hit.doc_id for hit in hits] == _ranking(st_model, folder, names, query)
    calls = counting.calls

    (folder / "d.png").write_bytes(png(33, 33, seed=99))  # new bytes: one document to embed again
    again = index_documents(read_documents(folder, images=True).documents, strategy, store, stack)
    assert (again.updated, again.unchanged) == (1, 4)
    assert counting.calls == calls + 1 and sum(counting.images.values()) == 5
    store.close()


def _image_collection(root, *, broken: bool = False):
    images = root / "images"
    (root / "qrels").mkdir(parents=True)
    images.mkdir()
    names = [f"p{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        (images / name).write_bytes(png(32 + i, 32, seed=20 + i))
    if broken:
        (images / "cut.png").write_bytes(png(40, 40, seed=7)[:150])
    lines = [json.dumps({"_id": f"q{i}", "text": text}) for i, text in enumerate(QUERIES)]
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    judged = "".join(f"q{i}\tp{i + 1}.png\t1\n" for i in range(len(QUERIES)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged, encoding="utf-8")
    return names


def test_compare_scores_an_image_collection_as_sentence_transformers_ranks_it(clip, st_model, tmp_path):
    root = tmp_path / "figures"
    names = _image_collection(root, broken=True)
    with pytest.raises(InputError, match=r"images/cut.png: cannot decode the image"):
        load_beir(root)
    collection = load_beir(root, strict=False)
    assert sorted(collection.corpus) == names and collection.problems

    spec = EmbedderSpec(model=clip.name, over_limit="truncate")
    result = evaluate_strategies(collection, [spec], bm25=False, providers={clip.name: clip}, index_dir=tmp_path / "s")
    run = {
        f"q{i}": {name: float(10 - rank) for rank, name in enumerate(_ranking(st_model, root / "images", names, q))}
        for i, q in enumerate(QUERIES)
    }
    expected = evaluate(collection.qrels["test"], run, ["ndcg@10"])["ndcg@10"]
    assert result.best.metrics["ndcg@10"] == pytest.approx(expected, abs=1e-9)


def test_embed_a_mixed_folder_names_each_broken_file_and_embeds_the_rest(tiny_clip, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(40, 30, seed=1))
    (folder / "wide.png").write_bytes(png(20_000, 4, seed=2))
    (folder / "notes.md").write_text("a cat sat on the mat", encoding="utf-8")
    _write_broken(folder)
    out = tmp_path / "vectors.parquet"
    result = run_cli("embed", folder, "-m", f"local:{tiny_clip}", "-o", out, home=tmp_path / "home")

    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot read {folder / 'cut.png'}: cannot decode the image (image file is truncated); repair or remove it",
        f"error: cannot read {folder / 'empty.png'}: zero bytes, not an image; remove it",
        f"error: cannot read {folder / 'words.jpg'}: not an image Pillow can read; remove it or convert it",
    ]
    assert f"note: {folder / 'wide.png'}: 20000x4 downscaled to 4096x1" in result.stderr
    assert "embedded 1 texts and 2 images" in result.stdout
    from embedtune.textio import read_vectors

    ids, vectors = read_vectors(out)
    assert ids == ["a.png", "notes.md", "wide.png"] and vectors.shape == (3, 16)
