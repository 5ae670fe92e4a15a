"""The Store seam: where a strategy's documents, chunks and vectors live.

A store holds documents (id, content hash, text, metadata) and, for each, its chunks (character
offsets into the document's text) with one vector per chunk. It never embeds: vectors arrive
L2-normalised from the indexer, and queries arrive as vectors. Besides vectors, a store keeps the
lexical side (a BM25 index over its documents' texts) as a derived index it can always rebuild
from the documents it holds.

Writes are per document: :meth:`Store.upsert` replaces every chunk a document had with the chunks
given, and one call is one transaction, so a process killed mid-call leaves each document either
as it was or as written, never half.

A chunk's id is ``<document id>#<n>`` (its place in the document, from 0): :func:`chunk_id` and
:func:`doc_of_chunk` convert, so hits carry their document without a lookup.

Implementations: :class:`~embedtune.stores.embedded.EmbeddedStore` (a folder: SQLite, memory-mapped
vectors, an HNSW index), :class:`~embedtune.stores.postgres.PostgresStore` (pgvector) and
:class:`~embedtune.stores.sharded.ShardedStore` (several PostgreSQL databases as one store).
:func:`embedtune.stores.open_store` picks one from a URI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import InputError
from ..search.compress import Int8Codec, Reducer

if TYPE_CHECKING:
    from ..search.bm25 import BM25Index

__all__ = [
    "MANIFEST_VERSION",
    "DocumentRecord",
    "Filter",
    "Store",
    "StoreManifest",
    "StoredChunk",
    "chunk_id",
    "content_hash",
    "doc_of_chunk",
    "is_first_chunk",
    "mask_uri",
]

MANIFEST_VERSION = 1

Filter = Mapping[str, Any]
"""Metadata filter: every key must equal its value (a list value: any of its items)."""

SearchResult = list[list[tuple[str, float]]]
"""Per query, ``(chunk id, cosine similarity)`` pairs, best first (ties by chunk id)."""


def chunk_id(doc_id: str, n: int) -> str:
    return f"{doc_id}#{n}"


def doc_of_chunk(chunk: str) -> str:
    """The document id of a chunk id (document ids may hold ``#``; the chunk number never does)."""
    return chunk.rpartition("#")[0]


def is_first_chunk(chunk: str) -> bool:
    """Whether a chunk id names its document's first chunk (chunks are numbered from 0 in text order)."""
    return chunk.rpartition("#")[2] == "0"


def content_hash(text: str, metadata: Mapping[str, Any] | None = None) -> str:
    """What decides whether a document changed: its text and its metadata."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    digest.update(b"\x00" + json.dumps(dict(metadata or {}), sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class DocumentRecord:
    """One document as written: its text, metadata, chunk offsets and one vector per chunk.

    ``vectors`` is ``None`` in a store without vectors (a BM25 strategy); otherwise a float32
    array of shape ``(len(spans), dims)``, rows L2-normalised. A document with no chunks (an empty
    text) is kept, for its hash and the lexical side, with no vectors.
    """

    doc_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    spans: Sequence[tuple[int, int]] = ()
    vectors: np.ndarray | None = None
    content_hash: str = ""

    def __post_init__(self) -> None:
        if not self.content_hash:
            object.__setattr__(self, "content_hash", content_hash(self.text, self.metadata))
        if self.vectors is not None and self.vectors.shape[0] != len(self.spans):
            raise InputError(f"document {self.doc_id!r}: {len(self.spans)} chunks but {self.vectors.shape[0]} vectors")

    @property
    def chunk_ids(self) -> list[str]:
        return [chunk_id(self.doc_id, n) for n in range(len(self.spans))]


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredChunk:
    """A chunk as a hit shows it: where it sits in its document, and its text."""

    id: str
    doc_id: str
    start: int
    end: int
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)  # its document's


@dataclass(frozen=True, kw_only=True)
class StoreManifest:
    """What a store was built with; a store refuses writes made with anything else.

    ``strategy`` is the strategy's TOML document as a dict (:meth:`Strategy.to_dict`);
    ``embedder_fingerprint`` is the document fingerprint of the embedder that wrote the vectors
    (provider, model, weights revision, dims, normalisation, prefix); ``dims`` is 0 in a store
    without vectors; ``precision`` is ``float32`` or ``float16``. ``shard`` is set on each
    database of a sharded store: ``{"id": ..., "index": i, "count": n, "store": ...}``.
    ``images`` is set when the embedder takes images: ``{"keyed_by": ..., "fingerprint": ...}``
    says that image rows are keyed by the SHA-256 of the file's bytes (a re-encoded copy of the same
    pixels is another image) under the embedder's image fingerprint (model, preprocessing, limit).
    without vectors, else the stored vectors' size (after any reduction); ``precision`` is
    ``float32``, ``float16``, ``int8`` or ``binary``. ``compression`` holds what was fitted on the
    corpus when the store was built: ``{"reduction": ..., "int8": ...}`` (see :meth:`reducer` and
    :meth:`int8_codec`); ``None`` when nothing was. ``shard`` is set on each database of a sharded
    store: ``{"id": ..., "index": i, "count": n, "store": ...}``.
    """

    strategy: Mapping[str, Any]
    model: str | None
    embedder_fingerprint: str | None
    dims: int
    precision: str
    chunker: str
    version: int = MANIFEST_VERSION
    shard: Mapping[str, Any] | None = None
    images: Mapping[str, Any] | None = None
    compression: Mapping[str, Any] | None = None

    def reducer(self) -> Reducer | None:
        """The reduction queries and documents go through before they meet the stored vectors."""
        data = (self.compression or {}).get("reduction")
        return None if data is None else Reducer.from_dict(data, what="the store manifest")

    def int8_codec(self) -> Int8Codec | None:
        """The int8 calibration, in a store of int8 vectors."""
        data = (self.compression or {}).get("int8")
        return None if data is None else Int8Codec.from_dict(data, what="the store manifest")

    @property
    def reduction(self) -> str | None:
        """How the stored size was reached (``truncate`` or ``pca``), from the strategy; None: the model's."""
        vectors = self.strategy.get("vectors")
        return vectors.get("reduction") if isinstance(vectors, Mapping) else None

    @property
    def compression_bytes(self) -> int:
        """Bytes of what was fitted and is stored beside the vectors (PCA projection, int8 calibration)."""
        reducer, codec = self.reducer(), self.int8_codec()
        return (reducer.stored_bytes if reducer else 0) + (codec.stored_bytes if codec else 0)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": "embedtune.store",
            "version": self.version,
            "model": self.model,
            "embedder_fingerprint": self.embedder_fingerprint,
            "dims": self.dims,
            "precision": self.precision,
            "chunker": self.chunker,
            "strategy": dict(self.strategy),
        }
        if self.shard is not None:
            data["shard"] = dict(self.shard)
        if self.images is not None:
            data["images"] = dict(self.images)
        if self.compression is not None:
            data["compression"] = dict(self.compression)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> StoreManifest:
        """Read a manifest back; anything malformed is one line naming ``where`` and the field."""
        if not isinstance(data, dict) or data.get("format") != "embedtune.store":
            raise InputError(f"{where} is not an embedtune store manifest; rebuild the store with embedtune index")
        if data.get("version") != MANIFEST_VERSION:
            raise InputError(
                f"{where} is store version {data.get('version')!r}; this embedtune reads version "
                f"{MANIFEST_VERSION}: rebuild the store with embedtune index"
            )
        checks: dict[str, type | tuple[type, ...]] = {
            "model": (str, type(None)),
            "embedder_fingerprint": (str, type(None)),
            "dims": int,
            "precision": str,
            "chunker": str,
            "strategy": dict,
        }
        for key, kind in checks.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise InputError(f"{where} is corrupt: field {key!r} is missing or malformed; rebuild the store")
        shard = data.get("shard")
        if shard is not None and not isinstance(shard, dict):
            raise InputError(f"{where} is corrupt: field 'shard' is malformed; rebuild the store")
        compression = data.get("compression")
        if compression is not None and not isinstance(compression, dict):
            raise InputError(f"{where} is corrupt: field 'compression' is malformed; rebuild the store")
        return cls(
            strategy=data["strategy"],
            model=data["model"],
            embedder_fingerprint=data["embedder_fingerprint"],
            dims=data["dims"],
            precision=data["precision"],
            chunker=data["chunker"],
            shard=shard,
            images=data["images"] if isinstance(data.get("images"), dict) else None,
            compression=compression,
        )

    def conflicts(self, other: StoreManifest) -> str | None:
        """What makes vectors written under ``other`` incomparable with this store's, or None."""
        for key, what in (
            ("model", "model"),
            ("dims", "dims"),
            ("chunker", "chunker"),
            ("precision", "precision"),
            ("reduction", "vectors.reduction"),
            ("embedder_fingerprint", "model revision or settings"),
        ):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                if key == "embedder_fingerprint":
                    return f"it was built by another {what} of {self.model}"
                return f"it was built with {what} {mine!r}, not {theirs!r}"
        return None


@runtime_checkable
class Store(Protocol):
    """What every store offers. No method embeds; none does I/O before it is first needed.

    - ``location``: where the store is, for messages (a URI with its password masked).
    - ``read_manifest()``: the manifest, or ``None`` for a store that does not exist yet (or is
      empty). A manifest that cannot be read raises ``InputError`` (one line) and changes nothing.
    - ``write_manifest(manifest)``: create the store, or replace its manifest (only the
      query-time part of the strategy may change; callers check :meth:`StoreManifest.conflicts`).
    - ``upsert(records)``: write whole documents in one transaction; each replaces every chunk its
      document had. Vectors are stored at the manifest's precision.
    - ``delete(doc_ids)``: remove documents and their chunks (unknown ids are ignored).
    - ``content_hashes()``: ``{doc_id: content hash}`` of every document held.
    - ``count()``: documents held; ``count_chunks()``: chunks (vectors) held.
    - ``search(query_vectors, k, where=None)``: per query, the ``k`` chunks of highest cosine
      similarity (query vectors are L2-normalised by the caller), restricted to documents whose
      metadata matches ``where``. Exact below a size threshold; above it, an approximate index
      proposes candidates that are rescored exactly.
    - ``chunks(ids)``: ``{chunk id: StoredChunk}`` for the ids that exist.
    - ``chunk_spans()``: ``{doc_id: [(start, end), ...]}``, every document's chunk offsets in
      chunk order (documents without chunks left out): what was embedded, without the vectors.
    - ``doc_ids()``: every document id held, sorted.
    - ``read_records(doc_ids)``: those documents as they were written (text, metadata, content
      hash, spans, and vectors as stored, returned as float32): for copying a store, and to check one.
    - ``documents_matching(where)``: ids of the documents whose metadata matches.
    - ``index_bytes()``: bytes the vector side takes as stored: the vectors at their precision,
      what was fitted for them (PCA projection, int8 calibration), and the approximate index where
      one is built.
    - ``lexical_index()``: the BM25 index over every document's text, kept current with the
      documents (rebuilt when they changed since it was built).
    - ``finish()``: bring derived indexes (approximate vector index, lexical) up to date; the
      indexer calls it once after writing. Searching works without it (it catches up itself).
    - ``close()``.
    """

    location: str

    def read_manifest(self) -> StoreManifest | None: ...

    def write_manifest(self, manifest: StoreManifest) -> None: ...

    def upsert(self, records: Sequence[DocumentRecord]) -> None: ...

    def delete(self, doc_ids: Sequence[str]) -> None: ...

    def content_hashes(self) -> dict[str, str]: ...

    def count(self) -> int: ...

    def count_chunks(self) -> int: ...

    def search(self, query_vectors: np.ndarray, k: int, where: Filter | None = None) -> SearchResult: ...

    def chunks(self, ids: Sequence[str]) -> dict[str, StoredChunk]: ...

    def chunk_spans(self) -> dict[str, list[tuple[int, int]]]: ...

    def doc_ids(self) -> list[str]: ...

    def read_records(self, doc_ids: Sequence[str]) -> list[DocumentRecord]: ...

    def documents_matching(self, where: Filter) -> set[str]: ...

    def index_bytes(self) -> int: ...

    def lexical_index(self) -> BM25Index: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


def mask_uri(uri: str) -> str:
    """The URI with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_filter(where: Filter | None) -> Filter | None:
    """A filter's keys must be text and its values scalars (or lists of scalars)."""
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise InputError("a metadata filter is a mapping of key to value, e.g. {'lang': 'en'}")
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise InputError(f"metadata filter key {key!r} must be non-empty text")
        values = value if isinstance(value, list) else [value]
        if not values or any(not isinstance(v, (str, int, float, bool)) for v in values):
            raise InputError(f"metadata filter {key}={value!r}: values must be text, numbers or true/false")
    return where


def metadata_matches(metadata: Mapping[str, Any], where: Filter) -> bool:
    """The reference semantics of a filter, for stores that filter in Python and for tests."""
    for key, value in where.items():
        if key not in metadata:
            return False
        allowed = value if isinstance(value, list) else [value]
        if not any(_same(metadata[key], v) for v in allowed):
            return False
    return True


def _same(a: Any, b: Any) -> bool:
    # true is not 1, and "1" is not 1: metadata compares by value and type, as JSON does.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b
