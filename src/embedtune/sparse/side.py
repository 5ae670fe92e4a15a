"""The sparse index kept in a store, beside its lexical one, in step with the store's documents.

Like the BM25 index, the sparse index is derived: the store's documents and the sparse model
determine it. Unlike BM25 it needs the model to be rebuilt, so the indexer brings it up to date
(:func:`sync_sparse_index`, after it has written the documents) and searches only read it
(:func:`open_sparse_index`). Every row comes through the encoder's cache, so bringing it up to
date after a few documents changed encodes only those.

A saved index names what it reflects: a digest of the store's ``{doc id: content hash}`` and
the model's document fingerprint. It lives in ``sparse/<digest>/`` inside an embedded store's
folder; older ones are removed once a newer one is saved.

A PostgreSQL store keeps one ``sparsevec`` row per document instead (``NAME_sparse``, with the
content hash it was encoded from, and the model's fingerprint beside it), searched by an exact
inner-product scan in the database (:class:`TableSparseIndex`); bringing it up to date encodes
only the documents without a current row. A sharded store keeps each document's row on its
shard and merges the shards' answers.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..search.runs import Run
from ..stores.base import Store
from ..stores.embedded import EmbeddedStore, save_folder_once
from ..stores.postgres import PostgresStore
from ..stores.sharded import ShardedStore
from .encoder import SparseEncoder
from .index import SparseIndex, check_queries, folder_bytes

__all__ = ["TableSparseIndex", "check_sparse_store", "open_sparse_index", "sparse_index_bytes", "sync_sparse_index"]

_FOLDER = "sparse"
_READ_BATCH = 512  # documents read and encoded per step (the cache commits per step)
_TABLES = (PostgresStore, ShardedStore)


def check_sparse_store(store: Store) -> None:
    """Refuse, in one line, a store that cannot keep a sparse index."""
    if not isinstance(store, (EmbeddedStore, *_TABLES)):
        raise ConfigError(
            f"a sparse strategy keeps its index in an embedded, PostgreSQL or sharded store; {store.location} "
            "is none of them: index into --store FOLDER or a postgresql:// URI"
        )


def _folder(store: Store) -> Path:
    assert isinstance(store, EmbeddedStore)
    return store.path / _FOLDER


def sync_sparse_index(store: Store, encoder: SparseEncoder) -> int:
    """Bring the store's sparse index up to date with its documents; the number of texts encoded
    through ``encoder`` (its cache may have held them), 0 when the saved index was current."""
    check_sparse_store(store)
    if isinstance(store, _TABLES):
        return _sync_rows(store, encoder)
    root = _folder(store)
    name = _name(store, encoder)
    if (root / name / "manifest.json").is_file():
        return 0
    ids = store.doc_ids()
    if not ids:
        raise InputError(f"{store.location} holds no documents; index some before building its sparse index")
    parts = []
    for start in range(0, len(ids), _READ_BATCH):
        texts = [record.text for record in store.read_records(ids[start : start + _READ_BATCH])]
        parts.append(encoder.encode(texts, "document"))
    import scipy.sparse as sp

    index = SparseIndex(ids, sp.vstack(parts, format="csr"), about={"model": encoder.name})
    save_folder_once(root, name, index.save)
    for older in root.iterdir():
        if older.name != name:
            shutil.rmtree(older, ignore_errors=True)
    return len(ids)


def _sync_rows(store: PostgresStore | ShardedStore, encoder: SparseEncoder) -> int:
    """Encode the documents without a current row, a batch per transaction; how many were encoded."""
    todo = store.sparse_todo(encoder.fingerprint("document"), encoder.vocab_size)
    for start in range(0, len(todo), _READ_BATCH):
        records = store.read_records(todo[start : start + _READ_BATCH])
        rows = encoder.encode([record.text for record in records], "document")
        store.write_sparse(
            [(record.doc_id, record.content_hash, *_terms(rows, i)) for i, record in enumerate(records)],
            encoder.vocab_size,
        )
    return len(todo)


def _terms(rows, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i`` of a CSR matrix as (term ids, weights)."""
    lo, hi = rows.indptr[i], rows.indptr[i + 1]
    return rows.indices[lo:hi], rows.data[lo:hi]


class TableSparseIndex:
    """The sparse rows a PostgreSQL (or sharded) store keeps, searched in the database.

    Its :meth:`search` answers as :meth:`SparseIndex.search <embedtune.sparse.index.SparseIndex.search>`
    does: each query's ``depth`` best documents by inner product, those sharing no term left out,
    ties by document id.
    """

    def __init__(self, store: PostgresStore | ShardedStore, vocab_size: int) -> None:
        self.store = store
        self.vocab_size = vocab_size

    def search(self, query_ids: Sequence[str], queries, depth: int, *, only: Collection[str] | None = None) -> Run:
        check_queries(query_ids, queries, self.vocab_size, depth)
        rows = [_terms(queries, i) for i in range(len(query_ids))]
        hits = self.store.search_sparse(rows, self.vocab_size, depth, only)
        return {qid: dict(found) for qid, found in zip(query_ids, hits)}


def open_sparse_index(store: Store, encoder: SparseEncoder) -> SparseIndex | TableSparseIndex:
    """The store's sparse index, if it reflects the store's documents and this model; else one line."""
    check_sparse_store(store)
    stale = ConfigError(
        f"{store.location} has no sparse index for its current documents and {encoder.name}; "
        "build it with embedtune index --strategy FILE --store ..."
    )
    if isinstance(store, _TABLES):
        if not store.sparse_current(encoder.fingerprint("document")):
            raise stale
        return TableSparseIndex(store, encoder.vocab_size)
    folder = _folder(store) / _name(store, encoder)
    if not (folder / "manifest.json").is_file():
        raise stale
    return SparseIndex.load(folder)


def sparse_index_bytes(store: Store, encoder: SparseEncoder) -> int:
    """Bytes of the store's current sparse index (on disk, or as the database stores it)."""
    if isinstance(store, _TABLES):
        return store.sparse_bytes()
    return folder_bytes(_folder(store) / _name(store, encoder))


def _name(store: Store, encoder: SparseEncoder) -> str:
    """What an index reflects: the store's documents (ids and content hashes) and the model."""
    digest = hashlib.sha256(encoder.fingerprint("document").encode() + b"\x00")
    for doc_id, content in sorted(store.content_hashes().items()):
        digest.update(doc_id.encode("utf-8", "surrogatepass") + b"\x00" + content.encode() + b"\x00")
    return digest.hexdigest()[:24]
