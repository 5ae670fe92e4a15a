"""Building a strategy into a store and searching it: incremental runs, refusals, the Retriever's hits."""

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from embedtune.engine import CountingEmbedder
from embedtune.errors import ConfigError, InputError
from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.indexer import index_documents, open_retriever
from embedtune.retriever import Retriever
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy

FAKE = EmbedderSpec(model="fake:hash-256", over_limit="truncate")


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


def slice_of_scifact(shared_datasets, n: int) -> list[Doc]:
    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    ids = sorted(collection.corpus)[:n]
    return [Doc(i, collection.documents_text(i), {"title": collection.corpus[i].title}) for i in ids]


def test_incremental_rerun_embeds_exactly_what_changed_and_keeps_other_hits(shared_datasets, minilm, tmp_path):
    """Edit 50 documents, delete 10, add 20: 70 texts embedded, and untouched documents' hits unchanged."""
    docs = slice_of_scifact(shared_datasets, 170)
    first, extra = docs[:150], docs[150:]
    strategy = Strategy(embedder=EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate"))
    counter = CountingEmbedder(minilm)
    embedder = build_embedder(strategy.embedder, cache=tmp_path / "cache.sqlite", provider=counter)
    store = EmbeddedStore(tmp_path / "index")
    report = index_documents(first, strategy, store, embedder)
    assert (report.added, report.texts_embedded, sum(counter.texts.values())) == (150, 150, 150)

    retriever = Retriever(strategy, store, embedder)
    queries = [doc.text[:80] for doc in first[100:110]]  # documents nobody edits
    before = [retriever.search_one(q, 10) for q in queries]

    edited = [Doc(d.id, d.text + " Revised.", d.metadata) for d in first[:50]]
    changed = edited + first[60:] + extra  # 10 deleted (50..59), 20 added
    counter.texts.clear()
    report = index_documents(changed, strategy, store, embedder)
    assert sum(counter.texts.values()) == 70 and report.texts_embedded == 70
    assert (report.added, report.updated, report.deleted, report.unchanged) == (20, 50, 10, 90)
    assert store.count() == 160 == store.count_chunks()
    assert not {d.id for d in first[50:60]} & set(store.content_hashes())

    touched = {d.id for d in first[:60]} | {d.id for d in extra}
    for query, old in zip(queries, before):
        new = retriever.search_one(query, 10)
        assert new[0].doc_id == old[0].doc_id  # each query copies an untouched document's opening
        floor = new[-1].score
        old_untouched = {h.doc_id: h.score for h in old if h.doc_id not in touched}
        new_untouched = {h.doc_id: h.score for h in new if h.doc_id not in touched}
        # Same scores, and every untouched document that outranked the new tenth is still there.
        assert all(new_untouched[d] == pytest.approx(s, abs=1e-6) for d, s in old_untouched.items() if s > floor)
        assert all(
            old_untouched[d] == pytest.approx(s, abs=1e-6) for d, s in new_untouched.items() if d in old_untouched
        )

    counter.texts.clear()
    report = index_documents(changed, strategy, store, embedder)  # a third run: nothing to do
    assert sum(counter.texts.values()) == 0 and not report.changed
    store.close()


def test_a_store_built_another_way_is_refused_before_anything_is_written(tmp_path):
    docs = [Doc(f"d{i}", f"text number {i} about topic {i % 3}") for i in range(20)]
    strategy = Strategy(embedder=FAKE)
    store = EmbeddedStore(tmp_path / "index")
    index_documents(docs, strategy, store, build_embedder(FAKE))
    manifest = (tmp_path / "index" / "manifest.json").read_bytes()
    hashes = store.content_hashes()
    others = [
        Strategy(embedder=EmbedderSpec(model="fake:hash-256", over_limit="truncate", dims=128)),
        Strategy(embedder=EmbedderSpec(model="fake:hash-256", over_limit="truncate", document_prefix="p: ")),
        Strategy(embedder=FAKE, chunker="fixed:size=20"),
        Strategy(embedder=FAKE, precision="float16"),
    ]
    for other in others:
        with pytest.raises(ConfigError, match="cannot take this strategy") as caught:
            index_documents(docs[:5], other, store, build_embedder(other.embedder))
        assert "\n" not in str(caught.value)
    assert (tmp_path / "index" / "manifest.json").read_bytes() == manifest
    assert store.content_hashes() == hashes
    # A query-time change (the mode) is no conflict: the manifest takes it, nothing is embedded.
    counter = CountingEmbedder(build_embedder(FAKE))
    hybrid = Strategy(embedder=FAKE, mode="hybrid", fusion="rrf")
    report = index_documents(docs, hybrid, store, counter)
    assert report.texts_embedded == 0 and sum(counter.texts.values()) == 0
    retriever = open_retriever(store, embedder=build_embedder(FAKE))
    assert retriever.strategy == hybrid
    store.close()


def test_open_retriever_refuses_an_embedder_other_than_the_stores(tmp_path):
    docs = [Doc(f"d{i}", f"text {i}") for i in range(5)]
    store = EmbeddedStore(tmp_path / "index")
    index_documents(docs, Strategy(embedder=FAKE), store, build_embedder(FAKE))
    other = build_embedder(EmbedderSpec(model="fake:hash-256", document_prefix="x: "))
    with pytest.raises(ConfigError, match="another revision or setting of fake:hash-256"):
        open_retriever(store, embedder=other)
    empty = EmbeddedStore(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="holds no index"):
        open_retriever(empty)
    store.close()


def test_hits_carry_the_best_chunk_its_offsets_and_metadata(tmp_path):
    docs = [
        Doc("rockets", "Apples are red. " * 30 + "Rockets burn liquid hydrogen and oxygen.", {"lang": "en"}),
        Doc("fruit", "Pears and apples grow on trees in the orchard. " * 3, {"lang": "en"}),
        Doc("german", "Raketen verbrennen Wasserstoff.", {"lang": "de"}),
        Doc("empty", "   ", {"lang": "en"}),
    ]
    strategy = Strategy(embedder=FAKE, chunker="fixed:size=12", mode="hybrid", fusion="rrf")
    store = EmbeddedStore(tmp_path / "index")
    index_documents(docs, strategy, store, build_embedder(FAKE))
    assert store.count() == 4  # the empty document is held (for its hash), with no chunks
    retriever = open_retriever(store, embedder=build_embedder(FAKE))
    hits = retriever.search_one("rockets burn liquid hydrogen", 3)
    assert hits[0].doc_id == "rockets"
    best = hits[0]
    assert docs[0].text[best.start : best.end] == best.text and "hydrogen" in best.text
    assert best.chunk_id.startswith("rockets#") and best.chunk_id != "rockets#0"
    assert best.metadata == {"lang": "en"}
    german = retriever.search_one("Raketen Wasserstoff", 5, where={"lang": "de"})
    assert [h.doc_id for h in german] == ["german"]
    both = retriever.search_one("apples", 5, where={"lang": ["en", "de"]})
    assert {h.doc_id for h in both} <= {"rockets", "fruit", "german"} and both
    with pytest.raises(InputError, match="query is empty"):
        retriever.search_one("  ", 3)
    store.close()


def test_search_runs_equal_the_fused_runs_compare_scores(tmp_path):
    """search() is combine(runs()): the same functions evaluation calls."""
    docs = [Doc(f"d{i}", f"document {i} mentions {'alpha' if i % 2 else 'beta'} and {i % 5}") for i in range(60)]
    strategy = Strategy(embedder=FAKE, mode="hybrid", fusion="convex", alpha=0.3)
    store = EmbeddedStore(tmp_path / "index")
    embedder = build_embedder(FAKE)
    index_documents(docs, strategy, store, embedder)
    retriever = Retriever(strategy, store, embedder)
    queries = {"a": "alpha 3", "b": "beta 4", "c": "document 7"}
    runs = retriever.runs(queries)
    assert retriever.search(queries, 10) == retriever.combine(runs, 10)
    vectors = embedder.embed(list(queries.values()), "query")
    assert retriever.dense_run_from_vectors(list(queries), vectors, 100) == runs["dense"]
    assert set(runs) == {"dense", "bm25"} and all(len(run) == 3 for run in runs.values())
    assert json.dumps(retriever.search_one("alpha", 2)[0].to_dict())
    store.close()


def test_bm25_strategy_needs_no_embedder_and_finds_words(tmp_path):
    docs = [Doc("a", "The aircraft wing stalls at high angle."), Doc("b", "Boundary layers in pipes.")]
    strategy = Strategy(mode="bm25")
    store = EmbeddedStore(tmp_path / "index")
    index_documents(docs, strategy, store, None)
    retriever = open_retriever(store)
    hits = retriever.search_one("wing stall", 5)
    assert [h.doc_id for h in hits] == ["a"] and hits[0].text == docs[0].text
    assert np.isfinite(hits[0].score)
    store.close()


def test_a_store_built_on_torch_stays_searchable_when_auto_picks_another_engine(minilm, monkeypatch, tmp_path):
    from embedtune.providers import local
    from embedtune.providers.engines import Engine

    docs = [
        Doc(f"d{i}", text) for i, text in enumerate(["rollback a deploy", "cats sleep in the sun", "vector search"])
    ]
    strategy = Strategy(embedder=EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate"))  # engine auto
    store = EmbeddedStore(tmp_path / "index")
    index_documents(docs, strategy, store, minilm)  # built when auto meant torch
    # Here auto now picks another engine, whose vectors the store does not hold.
    monkeypatch.setattr(local, "choose_engine", lambda artefacts, model: (Engine.ONNX, "onnx"))
    retriever = open_retriever(store)
    assert retriever.embedder.fingerprint("document") == minilm.fingerprint("document")
    assert next(iter(retriever.search({"q": "undo a release"}, k=1)["q"])) == "d0"
    retriever.close()
    store.close()
