"""Compressed vectors end to end: MiniLM over a slice of SciFact, built from one cache into each store.

Every variant is built by ``index_documents`` and searched by the Retriever (the path ``compare``,
``search`` and ``serve`` share), and compared with the float32 store's exact answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from _cli import one_error_line, run_cli
from embedtune.engine import CountingEmbedder
from embedtune.errors import ConfigError, InputError
from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.indexer import index_documents, open_retriever
from embedtune.retriever import Retriever
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy, vector_options

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate")
FAKE = EmbedderSpec(model="fake:hash-64", over_limit="truncate")
DOCS = 200
K = 10


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Corpus:
    docs: list[Doc]
    queries: dict[str, str]
    embedder: object
    counter: CountingEmbedder
    reference: dict  # the float32 store's answers: exact cosine over the model's own vectors


@pytest.fixture(scope="module")
def corpus(shared_datasets, minilm, tmp_path_factory) -> Corpus:
    """200 SciFact documents embedded once into a cache; queries are the opening words of 80 of them."""
    collection = load_beir(shared_datasets / "scifact", splits=["test"])
    ids = sorted(collection.corpus)[:DOCS]
    docs = [Doc(i, collection.documents_text(i)) for i in ids]
    queries = {f"q-{doc.id}": " ".join(doc.text.split()[:12]) for doc in docs[:80]}
    folder = tmp_path_factory.mktemp("compression")
    counter = CountingEmbedder(minilm)
    embedder = build_embedder(MINILM, cache=folder / "cache.sqlite", provider=counter)
    strategy = Strategy(embedder=MINILM)
    store = EmbeddedStore(folder / "float32")
    index_documents(docs, strategy, store, embedder)
    reference = Retriever(strategy, store, embedder).search(queries, K)
    return Corpus(docs, queries, embedder, counter, reference)


def build(
    corpus: Corpus, path, setting: str, depth: int = 100, **store_options
) -> tuple[Strategy, EmbeddedStore, Retriever]:
    strategy = Strategy(embedder=MINILM, depth=depth, **vector_options(setting))
    store = EmbeddedStore(path, **store_options)
    index_documents(corpus.docs, strategy, store, corpus.embedder)
    return strategy, store, Retriever(strategy, store, corpus.embedder)  # type: ignore[arg-type]


def overlap(run: dict, reference: dict) -> float:
    """Mean recall@10 of ``run`` against the reference's top 10."""
    return float(np.mean([len(set(run[q]) & set(reference[q])) / K for q in reference]))


def own_document_first(run: dict) -> float:
    return float(np.mean([next(iter(run[q])) == q.removeprefix("q-") for q in run]))


# Recall@10 against float32's exact answer on these 80 queries; measured 0.99+, 0.99+, ~0.75, ~0.75, ~0.65.
FLOOR = {"float16": 0.98, "int8": 0.95, "binary": 0.6, "pca=64": 0.6, "dims=128": 0.5}


@pytest.mark.parametrize("setting", list(FLOOR))
def test_each_setting_keeps_most_of_float32s_answers_without_embedding_again(corpus, tmp_path, setting):
    corpus.counter.texts.clear()
    _, store, retriever = build(corpus, tmp_path / "store", setting)
    run = retriever.search(corpus.queries, K)
    assert sum(corpus.counter.texts.values()) == 0  # every variant comes from the cached float32 vectors
    assert overlap(run, corpus.reference) >= FLOOR[setting]
    assert own_document_first(run) >= 0.9
    store.close()


def test_binary_rescoring_deeper_finds_more_of_float32s_answers(corpus, tmp_path):
    # Ten deep: rescore=1 reorders Hamming's top 10, rescore=10 ranks its top 100 by the float query.
    shallow = build(corpus, tmp_path / "shallow", "binary+rescore=1", depth=K)[2].search(corpus.queries, K)
    deep = build(corpus, tmp_path / "deep", "binary+rescore=10", depth=K)[2].search(corpus.queries, K)
    assert overlap(deep, corpus.reference) > overlap(shallow, corpus.reference) + 0.02


def test_index_sizes_are_what_each_setting_stores(corpus, tmp_path):
    n, dims = DOCS, 384
    expected = {
        "float32": n * dims * 4,
        "float16": n * dims * 2,
        "int8": n * dims + 2 * dims * 4,  # the codes, and each dimension's low value and step
        "binary": n * dims // 8,
        "dims=128": n * 128 * 4,
        "pca=64": n * 64 * 4 + (dims + dims * 64) * 4,  # the vectors, the mean and the projection
        "pca=64+binary": n * 64 // 8 + (dims + dims * 64) * 4,
    }
    for setting, size in expected.items():
        store = build(corpus, tmp_path / setting, setting)[1]
        assert store.index_bytes() == size, setting
        store.close()


def test_pca_is_fitted_once_stored_with_the_store_and_applied_to_queries(corpus, tmp_path):
    strategy, store, retriever = build(corpus, tmp_path / "pca", "pca=64+int8")
    manifest = store.read_manifest()
    assert manifest is not None and manifest.dims == 64 and manifest.reduction == "pca"
    reducer = manifest.reducer()
    assert reducer is not None and reducer.components is not None and reducer.components.shape == (384, 64)
    query = next(iter(corpus.queries.values()))
    full = corpus.embedder.embed([query], "query")  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="64-dim"):
        store.search(full, K)  # the store holds reduced vectors: a query must be reduced the same way
    hits = store.search(reducer.apply(full), K)[0]
    found = retriever.search_one(query, K)
    assert [h.chunk_id for h in found] == [chunk for chunk, _ in hits]
    assert np.allclose([h.score for h in found], [score for _, score in hits], atol=1e-5)
    store.close()

    reopened = EmbeddedStore(tmp_path / "pca")  # another process, as search and serve open it
    again = open_retriever(reopened, embedder=corpus.embedder)  # type: ignore[arg-type]
    assert again.strategy == strategy
    assert again.search(corpus.queries, K) == retriever.search(corpus.queries, K)
    index_documents(corpus.docs[:150], strategy, reopened, corpus.embedder)  # incremental: keeps its projection
    assert np.array_equal(reopened.read_manifest().reducer().components, reducer.components)  # type: ignore[union-attr]
    reopened.close()


@pytest.mark.parametrize("setting", ["int8", "binary"])
def test_the_graph_proposes_candidates_as_the_exact_scan_would(corpus, tmp_path, setting):
    exact = build(corpus, tmp_path / "exact", setting)[2].search(corpus.queries, K)
    graph = build(corpus, tmp_path / "graph", setting, exact_below=50)[2].search(corpus.queries, K)
    assert (tmp_path / "graph" / "hnsw.json").is_file()
    assert overlap(graph, exact) >= 0.95


def test_read_records_come_back_writable_into_a_store_of_the_same_manifest(corpus, tmp_path):
    for setting in ("int8", "binary"):
        strategy, store, retriever = build(corpus, tmp_path / setting, setting)
        copy = EmbeddedStore(tmp_path / f"{setting}-copy")
        copy.write_manifest(store.read_manifest())  # type: ignore[arg-type]
        copy.upsert(store.read_records(store.doc_ids()))
        assert Retriever(strategy, copy, corpus.embedder).search(corpus.queries, K) == retriever.search(  # type: ignore[arg-type]
            corpus.queries, K
        )


@dataclass(frozen=True)
class Few:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


def test_bad_combinations_are_one_line_and_leave_no_store(tmp_path, fake):
    embedder = build_embedder(FAKE, provider=fake)
    docs = [Few(f"d{i}", f"text number {i} about wings") for i in range(10)]
    cases = [
        (
            Strategy(embedder=FAKE, dims=128),
            "vectors.dims 128 is larger than fake:hash-64's 64 dims; choose at most 64",
        ),
        (Strategy(embedder=FAKE, dims=32, reduction="pca"), "PCA to 32 dims needs at least 32 vectors"),
    ]
    for strategy, message in cases:
        store = EmbeddedStore(tmp_path / str(strategy.dims))
        with pytest.raises(ConfigError, match=message) as caught:
            index_documents(docs, strategy, store, embedder)
        assert "\n" not in str(caught.value)
        assert store.read_manifest() is None  # refused before anything was written
    store = EmbeddedStore(tmp_path / "ok")
    index_documents(docs, Strategy(embedder=FAKE, dims=8, reduction="pca"), store, embedder)
    assert store.read_manifest().dims == 8  # type: ignore[union-attr]


def test_compare_refuses_an_unknown_vector_setting_in_one_line(tmp_path):
    line = one_error_line(run_cli("compare", "--vectors", "float32,int4", home=tmp_path / "home", cwd=tmp_path))
    assert "unknown vector setting 'int4'" in line


# -- PostgreSQL (a real one, started by conftest's fixtures) -------------------------------------


def test_postgres_stores_bits_and_answers_as_the_embedded_binary_store(corpus, postgres_uri, tmp_path):
    import psycopg

    from embedtune.stores.postgres import PostgresStore

    strategy = Strategy(embedder=MINILM, **vector_options("binary"))
    embedded = build(corpus, tmp_path / "binary", "binary")[2].search(corpus.queries, K)
    with PostgresStore(postgres_uri) as pg:
        index_documents(corpus.docs, strategy, pg, corpus.embedder)  # type: ignore[arg-type]
        run = Retriever(strategy, pg, corpus.embedder).search(corpus.queries, K)  # type: ignore[arg-type]
        with psycopg.connect(postgres_uri) as conn:
            kind = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'embedtune_chunks'::regclass AND attname = 'embedding'"
            ).fetchone()
        assert kind == ("bit(384)",)
        assert pg.index_bytes() < DOCS * 384 * 4 / 16  # 48 bytes of bits a row, and PostgreSQL's headers
        assert overlap(run, embedded) >= 0.95  # the same candidates by Hamming, ranked by the same float scores
        assert overlap(run, corpus.reference) >= FLOOR["binary"]


def test_postgres_hnsw_over_bits_and_pca_from_the_manifest(corpus, postgres_uri, tmp_path):
    from embedtune.stores.postgres import PostgresStore

    binary = Strategy(embedder=MINILM, **vector_options("binary"))
    exact = build(corpus, tmp_path / "binary", "binary")[2].search(corpus.queries, K)
    with PostgresStore(postgres_uri, exact_below=50) as pg:  # finish() builds the bit_hamming_ops index
        index_documents(corpus.docs, binary, pg, corpus.embedder)  # type: ignore[arg-type]
        assert pg.ensure_vector_index()
        graph = Retriever(binary, pg, corpus.embedder).search(corpus.queries, K)  # type: ignore[arg-type]
        assert overlap(graph, exact) >= 0.9
    reduced = Strategy(embedder=MINILM, **vector_options("pca=64+float16"))
    embedded = build(corpus, tmp_path / "pca", "pca=64+float16")[2].search(corpus.queries, K)
    parts = urlsplit(postgres_uri)
    uri = urlunsplit(parts._replace(query=f"{parts.query}&table=reduced" if parts.query else "table=reduced"))
    with PostgresStore(uri) as pg:
        index_documents(corpus.docs, reduced, pg, corpus.embedder)  # type: ignore[arg-type]
    with PostgresStore(uri) as pg:  # reopened: the projection comes back from the manifest
        run = open_retriever(pg, embedder=corpus.embedder).search(corpus.queries, K)  # type: ignore[arg-type]
    assert overlap(run, embedded) >= 0.95


def test_postgres_refuses_int8_in_one_line(corpus, postgres_uri):
    from embedtune.stores.postgres import PostgresStore

    with PostgresStore(postgres_uri) as pg, pytest.raises(ConfigError) as caught:
        index_documents(corpus.docs[:40], Strategy(embedder=MINILM, precision="int8"), pg, corpus.embedder)  # type: ignore[arg-type]
    assert str(caught.value) == "int8 is not supported on PostgreSQL; use float16 or binary"


def test_postgres_rescoring_scores_the_float_query_against_the_bits():
    pgvector = pytest.importorskip("pgvector")
    from embedtune.stores.postgres import _rescored

    rng = np.random.default_rng(3)
    queries = rng.standard_normal((2, 20)).astype(np.float32)
    stored = rng.standard_normal((3, 20))
    rows = [
        (1, "a#0", pgvector.Bit(stored[0] > 0)),
        (2, "b#0", pgvector.Bit(stored[1] > 0)),
        (2, "c#0", pgvector.Bit(stored[2] > 0)),
    ]
    signs = np.where(stored > 0, 1.0, -1.0) / np.sqrt(20)
    expected = [queries[0] @ signs[0], queries[1] @ signs[1], queries[1] @ signs[2]]
    got = _rescored(rows, queries, 20)
    assert [row[:2] for row in got] == [(1, "a#0"), (2, "b#0"), (2, "c#0")]
    assert np.allclose([row[2] for row in got], expected, atol=1e-5)


def test_sharded_postgres_passes_compression_through(corpus, new_postgres_database, tmp_path):
    from embedtune.stores import open_store

    strategy = Strategy(embedder=MINILM, **vector_options("pca=64+binary"))
    embedded_store, embedded = build(corpus, tmp_path / "one", "pca=64+binary")[1:]
    sharded = open_store(",".join([new_postgres_database(), new_postgres_database()]))
    try:
        index_documents(corpus.docs, strategy, sharded, corpus.embedder)  # type: ignore[arg-type]
        run = open_retriever(sharded, embedder=corpus.embedder).search(corpus.queries, K)  # type: ignore[arg-type]
        assert sharded.index_bytes() > 0
    finally:
        sharded.close()
    # The same projection fitted on the same vectors, the same bits, ranked the same way.
    assert overlap(run, embedded.search(corpus.queries, K)) >= 0.95
    embedded_store.close()
