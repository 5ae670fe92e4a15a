"""The sparse index kept in a store, beside its lexical one, in step with the store's documents.

Like the BM25 index, the sparse index is derived: the store's documents and the sparse model
determine it. Unlike BM25 it needs the model to be rebuilt, so the indexer brings it up to date
(:func:`sync_sparse_index`, after it has written the documents) and searches only read it
(:func:`open_sparse_index`). Every row comes through the encoder's cache, so bringing it up to
date after a few documents changed encodes only those.

A saved index names what it reflects: a digest of the store's ``{doc id: content hash}`` and
the model's document fingerprint. It lives in ``sparse/<digest>/`` inside an embedded store's
folder; older ones are removed once a newer one is saved. PostgreSQL and sharded stores are
refused in one line (their lexical index lives in tables; the sparse one is not wired there yet).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..errors import ConfigError, InputError
from ..stores.base import Store
from ..stores.embedded import save_folder_once
from .encoder import SparseEncoder
from .index import SparseIndex, folder_bytes

__all__ = ["check_sparse_store", "open_sparse_index", "sparse_index_bytes", "sync_sparse_index"]

_FOLDER = "sparse"
_READ_BATCH = 512  # documents read and encoded per step (the cache commits per step)


def check_sparse_store(store: Store) -> Path:
    """The folder the store keeps its sparse index in; a store that cannot keep one is one line."""
    from ..stores.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        raise ConfigError(
            f"a sparse strategy keeps its index in an embedded store (a folder); {store.location} is not one: "
            "index into --store FOLDER"
        )
    return store.path / _FOLDER


def sync_sparse_index(store: Store, encoder: SparseEncoder) -> int:
    """Bring the store's sparse index up to date with its documents; the number of texts encoded
    through ``encoder`` (its cache may have held them), 0 when the saved index was current."""
    root = check_sparse_store(store)
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


def open_sparse_index(store: Store, encoder: SparseEncoder) -> SparseIndex:
    """The saved sparse index, if it reflects the store's documents and this model; else one line."""
    folder = check_sparse_store(store) / _name(store, encoder)
    if not (folder / "manifest.json").is_file():
        raise ConfigError(
            f"{store.location} has no sparse index for its current documents and {encoder.name}; "
            "build it with embedtune index --strategy FILE --store ..."
        )
    return SparseIndex.load(folder)


def sparse_index_bytes(store: Store, encoder: SparseEncoder) -> int:
    """Bytes of the store's current sparse index on disk."""
    return folder_bytes(check_sparse_store(store) / _name(store, encoder))


def _name(store: Store, encoder: SparseEncoder) -> str:
    """What an index reflects: the store's documents (ids and content hashes) and the model."""
    digest = hashlib.sha256(encoder.fingerprint("document").encode() + b"\x00")
    for doc_id, content in sorted(store.content_hashes().items()):
        digest.update(doc_id.encode("utf-8", "surrogatepass") + b"\x00" + content.encode() + b"\x00")
    return digest.hexdigest()[:24]
