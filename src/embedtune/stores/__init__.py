"""Stores: an embedded folder (the default), PostgreSQL with pgvector, and shards of PostgreSQL.

``open_store(uri)`` picks one:

- a path (``./embedtune-index``): :class:`~embedtune.stores.embedded.EmbeddedStore`;
- ``postgresql://user@host:5432/db`` (``?table=NAME`` names its tables, default ``embedtune``):
  :class:`~embedtune.stores.postgres.PostgresStore`;
- several PostgreSQL URIs joined by commas: :class:`~embedtune.stores.sharded.ShardedStore`.

Nothing connects or opens a file until the store is first used.
"""

from __future__ import annotations

from .base import DocumentRecord, Filter, Store, StoredChunk, StoreManifest, chunk_id, doc_of_chunk, mask_uri

__all__ = [
    "DocumentRecord",
    "Filter",
    "Store",
    "StoreManifest",
    "StoredChunk",
    "chunk_id",
    "doc_of_chunk",
    "is_postgres_uri",
    "mask_uri",
    "open_store",
]

_PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_uri(uri: str) -> bool:
    return uri.strip().lower().startswith(_PG_SCHEMES)


def open_store(uri: str) -> Store:
    """The store a URI or path names (see the module docstring)."""
    parts = [part.strip() for part in uri.split(",") if part.strip()] if is_postgres_uri(uri) else [uri]
    if len(parts) > 1:
        from .sharded import ShardedStore

        return ShardedStore.from_uris(parts)
    if is_postgres_uri(uri):
        from .postgres import PostgresStore

        return PostgresStore(uri.strip())
    from .embedded import EmbeddedStore

    return EmbeddedStore(uri)
